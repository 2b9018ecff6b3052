"""The Sparkplug codec, held against an independent decoder (pysparkplug) and the standards' vectors."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pysparkplug as psp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zhizao.broker.contract.quality import QUALITY_BAD
from zhizao.broker.sparkplug import codec, typed
from zhizao.broker.sparkplug import sparkplug_b_pb2 as pb
from zhizao.broker.sparkplug.codec import BirthMetric, PayloadError
from zhizao.broker.sparkplug.datatypes import DataType

TS = 1486144502122  # the spec's example timestamp


def test_nbirth_matches_the_reference_vector_v9() -> None:
    raw = codec.encode_birth(
        0,
        TS,
        [
            BirthMetric("bdSeq", DataType.Int64, 0),
            BirthMetric("Node Control/Rebirth", DataType.Boolean, False),
            BirthMetric("temp", DataType.Int32, -5),
        ],
    )
    expected = bytes.fromhex(
        "08eaf2f5a8a02b12120a05626453657118eaf2f5a8a02b2004580012210a144e6f646520436f6e74726f6c2f52656269"
        "72746818eaf2f5a8a02b200b700012150a0474656d7018eaf2f5a8a02b200350fbffffff0f1800"
    )
    ours, ref = psp.NBirth.decode(raw), psp.NBirth.decode(expected)
    assert ours.seq == ref.seq == 0
    assert ours.timestamp == ref.timestamp == TS
    assert [(m.name, m.datatype, m.value, m.timestamp) for m in ours.metrics] == [
        (m.name, m.datatype, m.value, m.timestamp) for m in ref.metrics
    ]
    back = codec.decode(raw)
    assert back.names == ["bdSeq", "Node Control/Rebirth", "temp"]
    assert back.value.tolist() == [0.0, 0.0, -5.0]
    assert codec.bdseq_of(back) == 0


@pytest.mark.parametrize(
    ("datatype", "value", "field", "raw"),
    [
        (DataType.Int8, -1, "int_value", 255),
        (DataType.Int32, -5, "int_value", 4294967291),
        (DataType.Int64, -1, "long_value", 18446744073709551615),
    ],
)
def test_signed_values_use_twos_complement_v8(datatype: DataType, value: int, field: str, raw: int) -> None:
    from zhizao.broker.sparkplug import sparkplug_b_pb2 as pb

    data = codec.encode_birth(0, TS, [BirthMetric("x", datatype, value)])
    msg = pb.Payload.FromString(data)
    assert getattr(msg.metrics[0], field) == raw
    assert codec.decode(data).value[0] == value
    assert psp.NBirth.decode(data).metrics[0].value == value


def test_ddata_carries_many_samples_alias_only_and_decodes_with_pysparkplug() -> None:
    names = {1: ("State", DataType.Int32), 2: ("Counts/Total", DataType.Int64), 3: ("Temperature/Spindle", DataType.Double)}
    birth_raw = codec.encode_birth(
        1, TS, [BirthMetric(n, d, 0, alias=a) for a, (n, d) in names.items()]
    )
    birth = psp.DBirth.decode(birth_raw)
    alias = np.array([1, 2, 3, 3, 2], np.uint64)
    ts = np.arange(5, dtype=np.int64) + TS
    value = np.array([10000.0, 2**40, 21.5, -3.25, 2**40 + 1])
    dtype = np.array([names[int(a)][1] for a in alias], np.uint32)
    quality = np.array([192, 192, 0, 192, 192], np.int16)
    raw = codec.encode_data(2, TS, alias, ts, value, dtype, historical=True, quality=quality)
    ref = psp.DData.decode(raw, birth=birth)
    assert ref.seq == 2
    assert [m.name for m in ref.metrics] == ["State", "Counts/Total", "Temperature/Spindle", "Temperature/Spindle", "Counts/Total"]
    assert [m.value for m in ref.metrics] == [10000, 2**40, 21.5, -3.25, 2**40 + 1]
    assert [m.timestamp for m in ref.metrics] == ts.tolist()
    assert all(m.is_historical for m in ref.metrics)
    ours = codec.decode(raw, {a: int(d) for a, (_, d) in names.items()})
    assert ours.n == 5 and ours.seq == 2
    assert ours.alias.tolist() == alias.tolist()
    assert ours.value.tolist() == value.tolist()
    assert ours.quality.tolist() == quality.tolist()
    assert ours.is_historical.all()
    assert ours.names == [""] * 5  # DATA carries aliases only
    assert (ours.datatype == 0).sum() == 0  # taken from the birth mapping


def test_text_null_and_extra_named_metrics() -> None:
    raw = codec.encode_data(
        7,
        TS,
        np.array([5, 6], np.uint64),
        np.array([TS, TS + 1], np.int64),
        np.array([math.nan, math.nan]),
        np.array([DataType.String, DataType.Int32], np.uint32),
        text=[(0, "hello")],
        extra=[BirthMetric("zhizao/Batch", DataType.Int64, 42)],
    )
    d = codec.decode(raw)
    assert d.text == {0: "hello"}
    assert d.is_null.tolist() == [False, True, False]
    assert codec.metric_value(d, "zhizao/Batch") == 42.0


def test_ndeath_has_only_bdseq_and_no_seq() -> None:
    raw = codec.encode_death(None, bd_seq=3)
    ref = psp.NDeath.decode(raw)
    assert ref.bd_seq == 3 if hasattr(ref, "bd_seq") else True
    d = codec.decode(raw)
    assert d.seq is None and d.names == ["bdSeq"] and codec.bdseq_of(d) == 3


def test_garbage_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="not a Sparkplug B protobuf"):
        codec.decode(b"\xff\xff\xff\xff not protobuf")


def test_length_mismatch_is_named() -> None:
    with pytest.raises(PayloadError, match="array lengths differ"):
        codec.encode_data(0, TS, np.zeros(2, np.uint64), np.zeros(1, np.int64), np.zeros(2), np.zeros(2, np.uint32))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 500),
            st.integers(0, 2**41),
            st.floats(-1e9, 1e9, allow_nan=False),
        ),
        max_size=50,
    )
)
def test_data_round_trip(samples: list[tuple[int, int, float]]) -> None:
    kinds = [DataType.Int32, DataType.Int64, DataType.Double, DataType.Boolean]
    alias = np.array([s[0] for s in samples], np.uint64)
    ts = np.array([s[1] for s in samples], np.int64)
    dtype = np.array([int(kinds[a % 4]) for a, _, _ in samples], np.uint32)
    vals = []
    for (a, _, v) in samples:
        d = kinds[a % 4]
        if d == DataType.Int32:
            vals.append(float(int(v) % 2**31 * (1 if v >= 0 else -1)))
        elif d == DataType.Int64:
            vals.append(float(int(v)))
        elif d == DataType.Boolean:
            vals.append(1.0 if v > 0 else 0.0)
        else:
            vals.append(v)
    value = np.array(vals, np.float64)
    d = codec.decode(codec.encode_data(3, TS, alias, ts, value, dtype), {int(a): int(t) for a, t in zip(alias, dtype, strict=True)})
    assert d.alias.tolist() == alias.tolist()
    assert d.ts_ms.tolist() == ts.tolist()
    assert d.value.tolist() == value.tolist()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 40),
            st.integers(0, 2**42),
            st.one_of(st.floats(-1e12, 1e12), st.just(math.nan)),
            st.sampled_from([192, 192, 0, 500]),
            st.booleans(),
        ),
        max_size=40,
    ),
    st.lists(st.text(max_size=12), max_size=3),
)
def test_wire_reader_agrees_with_protobuf_path(samples: list[tuple[int, int, float, int, bool]], texts: list[str]) -> None:
    kinds = [DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64, DataType.Double,
             DataType.Boolean, DataType.Float, DataType.UInt32, DataType.UInt64]
    alias = np.array([s[0] for s in samples], np.uint64)
    dtype = np.array([int(kinds[a % len(kinds)]) for a, *_ in samples], np.uint32)
    value = np.array([s[2] for s in samples], np.float64)
    for i, d in enumerate(dtype.tolist()):
        if d not in (9, 10) and not math.isnan(value[i]):
            value[i] = float(int(value[i]) % 100) - 50 if d in (1, 2, 3, 4) else float(abs(int(value[i])) % 100)
    ts = np.array([s[1] for s in samples], np.int64)
    quality = np.array([s[3] for s in samples], np.int16)
    hist = np.array([s[4] for s in samples], np.bool_)
    text = [(i, t) for i, t in enumerate(texts) if i < len(samples)]
    raw = codec.encode_data(9, TS, alias, ts, value, dtype, historical=hist, quality=quality, text=text,
                            extra=[BirthMetric("zhizao/Batch", DataType.Int64, 5)])
    lookup = {int(a): int(kinds[int(a) % len(kinds)]) for a in alias}
    assert codec.WIRE.ready(wait_s=120), "the numba wire reader did not compile"
    fast, slow = codec.decode(raw, lookup), codec._decode_protobuf(raw, lookup)
    assert fast.n == slow.n and fast.seq == slow.seq and fast.timestamp_ms == slow.timestamp_ms
    assert fast.names == slow.names and fast.text == slow.text
    assert fast.arrays == slow.arrays and fast.exact == slow.exact
    for name in ("alias", "has_alias", "datatype", "ts_ms", "is_null", "is_historical", "quality"):
        assert getattr(fast, name).tolist() == getattr(slow, name).tolist(), name
    np.testing.assert_array_equal(fast.value, slow.value)


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_truncated_payloads_are_payload_errors(cut: int) -> None:
    raw = codec.encode_data(1, TS, np.array([1, 2], np.uint64), np.array([TS, TS], np.int64),
                            np.array([1.5, 2.5]), np.array([10, 10], np.uint32))
    with pytest.raises(PayloadError):
        codec.decode(raw[: len(raw) - cut])


# Typed values (broker.sparkplug.typed): the side lane's canonical texts on the wire, read by pysparkplug.
TYPED = [  # (datatype, canonical text, what pysparkplug decodes)
    (DataType.Int64, str(2**63 - 1), 2**63 - 1),
    (DataType.Int64, str(-(2**53) - 1), -(2**53) - 1),
    (DataType.UInt64, str(2**64 - 1), 2**64 - 1),
    (DataType.DoubleArray, "[1.5,-0.0,1e+300]", (1.5, -0.0, 1e300)),
    (DataType.FloatArray, "[0.5,-1.25]", (0.5, -1.25)),
    (DataType.Int8Array, "[-128,127]", (-128, 127)),
    (DataType.UInt16Array, "[0,65535]", (0, 65535)),
    (DataType.Int64Array, f"[{-(2**63)},{2**63 - 1}]", (-(2**63), 2**63 - 1)),
    (DataType.UInt64Array, f"[{2**64 - 1},0]", (2**64 - 1, 0)),
    (DataType.BooleanArray, "[false,false,true,true,false,true,false,false,true,true,false,true]",
     (False, False, True, True, False, True, False, False, True, True, False, True)),
    (DataType.StringArray, '["ab","漢字",""]', ("ab", "漢字", "")),
    (DataType.DateTimeArray, '["2026-01-01T00:00:00.123Z"]',
     (datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC),)),
    (DataType.Int32Array, "[]", ()),
]


def test_typed_values_travel_exactly_and_pysparkplug_reads_them_with_the_birth() -> None:
    n = len(TYPED) + 1
    dts = np.array([int(d) for d, _, _ in TYPED] + [int(DataType.DateTime)], np.uint32)
    values = np.full(n, np.nan)
    values[-1] = 1_767_225_600_123.0  # DateTime: epoch ms in the float64 lane
    alias = np.arange(n, dtype=np.uint64) + 100
    raw = codec.encode_data(3, TS, alias, np.full(n, TS, np.int64), values, dts,
                            text=[(i, text) for i, (_, text, _) in enumerate(TYPED)])
    birth = psp.DBirth.decode(codec.encode_birth(
        0, TS, [BirthMetric(f"m{i}", DataType(int(d)), None, alias=100 + i) for i, d in enumerate(dts)]))
    got = psp.DData.decode(raw, birth=birth)
    assert [m.value for m in got.metrics] == [v for _, _, v in TYPED] + [datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)]
    assert codec.WIRE.ready(wait_s=120), "the numba wire reader did not compile"
    for d in (codec.decode(raw), codec._decode_protobuf(raw)):
        assert d.exact == {0: 2**63 - 1, 1: -(2**53) - 1, 2: 2**64 - 1}
        assert d.arrays == {i: text for i, (dt, text, _) in enumerate(TYPED) if dt not in (4, 8)}
        assert d.value[-1] == 1_767_225_600_123.0
    # the spec's example: [false, false, true, true, false, true, false, false, true, true, false, true]
    assert typed.pack_array(DataType.BooleanArray, TYPED[9][1]) == bytes.fromhex("0c00000034d0")


def test_a_value_that_does_not_fit_its_datatype_goes_as_null_with_bad_quality() -> None:
    dts = np.array([DataType.Int32Array, DataType.Int64, DataType.StringArray, DataType.String], np.uint32)
    raw = codec.encode_data(0, TS, np.arange(4, dtype=np.uint64), np.full(4, TS, np.int64),
                            np.array([np.nan, np.nan, np.nan, 5.0]), dts,
                            text=[(0, "[1.5]"), (1, str(2**64)), (2, '["a\\u0000b"]')])
    d = codec.decode(raw)
    assert d.is_null.tolist() == [True, True, True, True]
    assert d.quality.tolist() == [QUALITY_BAD] * 4


def test_array_bytes_that_do_not_fit_their_datatype_are_a_payload_error() -> None:
    payload = pb.Payload(timestamp=TS, seq=0)
    payload.metrics.add(alias=7, timestamp=TS, datatype=int(DataType.Int32Array), bytes_value=b"\x01\x02\x03")
    assert codec.WIRE.ready(wait_s=120), "the numba wire reader did not compile"
    for decode in (codec.decode, codec._decode_protobuf):
        with pytest.raises(PayloadError, match="alias 7: datatype 24"):
            decode(payload.SerializeToString())


def test_bytes_and_json_documents_travel_exactly_and_pysparkplug_reads_them() -> None:
    """ByteString as Sparkplug Bytes (base64 canonical text at both ends), JSON documents as Text; text that is
    not base64 for a Bytes metric goes as null with bad quality."""
    docs = [(DataType.Bytes, "AP96aGk="), (DataType.Text, '{"locale":"de","text":"Presse"}'),
            (DataType.Text, "[[1.0,2.0],[3.0,4.0]]"), (DataType.Bytes, ""), (DataType.Bytes, "not base64!")]
    n = len(docs)
    dts = np.array([int(d) for d, _ in docs], np.uint32)
    alias = np.arange(n, dtype=np.uint64) + 100
    raw = codec.encode_data(1, TS, alias, np.full(n, TS, np.int64), np.full(n, np.nan), dts,
                            text=list(enumerate(t for _, t in docs)))
    birth = psp.DBirth.decode(codec.encode_birth(
        0, TS, [BirthMetric(f"m{i}", DataType(int(d)), v if i < 4 else None, alias=100 + i)
                for i, (d, v) in enumerate(docs)]))
    got = psp.DData.decode(raw, birth=birth)
    assert [m.value for m in got.metrics] == [b"\x00\xffzhi", docs[1][1], docs[2][1], b"", None]
    assert codec.WIRE.ready(wait_s=120), "the numba wire reader did not compile"
    for d in (codec.decode(raw), codec._decode_protobuf(raw)):
        assert d.arrays == {0: "AP96aGk=", 3: ""}
        assert d.text == {1: docs[1][1], 2: docs[2][1]}
        assert d.is_null.tolist() == [False, False, False, False, True]
        assert d.quality[4] == QUALITY_BAD
