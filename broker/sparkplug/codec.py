"""Sparkplug B payload codec on arrays: births, deaths, many-sample DATA messages, commands.

DATA payloads are built from and decoded into parallel numpy arrays (one entry per sample), so the edge
publisher and the cloud ingest never hold a Python object per sample beyond the protobuf message itself.
Births and commands are small and use `BirthMetric` records.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from zhizao.broker.contract.quality import QUALITY_BAD, QUALITY_GOOD
from zhizao.broker.sparkplug import sparkplug_b_pb2 as pb
from zhizao.broker.sparkplug import wire
from zhizao.broker.sparkplug.datatypes import INT_TYPES, LONG_TYPES, SIGNED_BITS, TEXT_TYPES, DataType
from zhizao.broker.sparkplug.typed import (
    ARRAY_TYPES,
    EXACT_LIMIT,
    bytes_of_text,
    bytes_text,
    pack_array,
    unpack_array,
)

_QUALITY = "Quality"
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

# Signed ints travel as two's complement of their own width (Int8 -1 -> 255, Int32 -5 -> 4294967291).
_INT_MASK = {1: 0xFF, 2: 0xFFFF, 3: _U32, 5: 0xFF, 6: 0xFFFF, 7: _U32}

Value = float | int | bool | str | None

log = logging.getLogger(__name__)


class _WireReader:
    """The numba wire reader, compiled (or loaded from numba's cache) in a background thread on first use.

    A cold compile takes seconds of CPU; until it is done `decode` takes the protobuf path, which gives the same
    result, so the first messages after a fresh install are not held up by the JIT."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    def ready(self, wait_s: float = 0.0) -> bool:
        """True once `wire.scan` is compiled; the first call starts the compile; waits up to `wait_s`."""
        if self._ready.is_set():
            return True
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._compile, name="zhizao-wire-jit", daemon=True).start()
        return self._ready.wait(wait_s) if wait_s > 0 else False

    def _compile(self) -> None:
        probe = pb.Payload(timestamp=1, seq=0)
        probe.metrics.add(alias=1, timestamp=1, datatype=int(DataType.Double), double_value=1.0)
        try:
            wire.scan(np.frombuffer(probe.SerializeToString(), np.uint8))
        except Exception:  # pragma: no cover - numba missing or broken: the protobuf path keeps working
            log.exception("the numba Sparkplug reader did not compile; decoding with protobuf only")
            return
        self._ready.set()


WIRE = _WireReader()


class PayloadError(ValueError):
    """Bytes that are not a valid Sparkplug B payload, or values that cannot be encoded."""


@dataclass(frozen=True)
class BirthMetric:
    """A named metric with its datatype and value, as carried in births and commands."""

    name: str
    datatype: DataType
    value: Value
    alias: int | None = None
    timestamp_ms: int | None = None
    properties: dict[str, tuple[DataType, Value]] | None = None
    is_historical: bool = False


def _set_value(target: pb.Payload.Metric | pb.Payload.PropertyValue, datatype: int, value: Value) -> None:
    """Put `value` into the oneof field its datatype travels in (two's complement for signed ints)."""
    if value is None or (isinstance(value, float) and math.isnan(value) and datatype not in (9, 10)):
        target.is_null = True
        return
    if datatype in INT_TYPES:
        target.int_value = int(value) & _INT_MASK[datatype]
    elif datatype in LONG_TYPES:
        target.long_value = int(value) & _U64  # int() of a str: an exact 64-bit integer's canonical text
    elif datatype == DataType.Double:
        target.double_value = float(value)
    elif datatype == DataType.Float:
        target.float_value = float(value)
    elif datatype == DataType.Boolean:
        target.boolean_value = bool(value)
    elif datatype in TEXT_TYPES:
        target.string_value = str(value)
    elif datatype == DataType.Bytes and isinstance(target, pb.Payload.Metric) and isinstance(value, bytes | str):
        try:  # bytes, or their canonical text (base64)
            target.bytes_value = value if isinstance(value, bytes) else bytes_of_text(value)
        except ValueError as exc:
            raise PayloadError(f"datatype {datatype}: cannot encode value {value!r}: {exc}") from None
    elif datatype in ARRAY_TYPES and isinstance(target, pb.Payload.Metric) and isinstance(value, str):
        try:
            target.bytes_value = pack_array(datatype, value)
        except ValueError as exc:
            raise PayloadError(f"datatype {datatype}: cannot encode value {value!r}: {exc}") from None
    else:
        raise PayloadError(f"datatype {datatype}: cannot encode value {value!r}")


def _set_side(metric: pb.Payload.Metric, datatype: int, text: str) -> bool:
    """Put a side-lane value (canonical text) into the field of its datatype; False when it does not fit."""
    if datatype in TEXT_TYPES:
        metric.string_value = text
    elif datatype in ARRAY_TYPES:
        try:
            metric.bytes_value = pack_array(datatype, text)
        except ValueError:
            return False
    elif datatype == DataType.Bytes:
        try:
            metric.bytes_value = bytes_of_text(text)
        except ValueError:
            return False
    elif datatype in (DataType.Int64, DataType.UInt64) and text.lstrip("-").isdigit():
        v = int(text)
        lo, hi = (-(1 << 63), (1 << 63) - 1) if datatype == DataType.Int64 else (0, _U64)
        if not lo <= v <= hi:
            return False
        metric.long_value = v & _U64
    else:
        return False
    return True


def _add_quality(metric: pb.Payload.Metric, quality: int) -> None:
    props = metric.properties
    props.keys.append(_QUALITY)
    pv = props.values.add()
    pv.type = DataType.Int32
    pv.int_value = quality & _U32


def _fill_named(
    metric: pb.Payload.Metric, m: BirthMetric, timestamp_ms: int, with_datatype: bool, with_name: bool = True
) -> None:
    if with_name or m.alias is None:
        metric.name = m.name
    if m.alias is not None:
        metric.alias = m.alias
    metric.timestamp = m.timestamp_ms if m.timestamp_ms is not None else timestamp_ms
    if with_datatype:
        metric.datatype = int(m.datatype)
    if m.is_historical:
        metric.is_historical = True
    _set_value(metric, int(m.datatype), m.value)
    if m.properties:
        props = metric.properties
        for key, (ptype, pvalue) in m.properties.items():
            props.keys.append(key)
            pv = props.values.add()
            pv.type = int(ptype)
            _set_value(pv, int(ptype), pvalue)


def encode_birth(seq: int, timestamp_ms: int, metrics: Sequence[BirthMetric]) -> bytes:
    """NBIRTH/DBIRTH payload: every metric with name, alias (if any), datatype, timestamp and value."""
    payload = pb.Payload(timestamp=timestamp_ms, seq=seq)
    for m in metrics:
        _fill_named(payload.metrics.add(), m, timestamp_ms, with_datatype=True)
    return payload.SerializeToString()


def encode_metrics(timestamp_ms: int, metrics: Sequence[BirthMetric], seq: int | None = None) -> bytes:
    """A small payload of named metrics (NCMD/DCMD, NDATA of node metrics); datatypes included."""
    payload = pb.Payload(timestamp=timestamp_ms)
    if seq is not None:
        payload.seq = seq
    for m in metrics:
        _fill_named(payload.metrics.add(), m, timestamp_ms, with_datatype=True)
    return payload.SerializeToString()


def encode_death(timestamp_ms: int | None, bd_seq: int | None = None, seq: int | None = None) -> bytes:
    """NDEATH (exactly one metric `bdSeq` Int64, no seq) or DDEATH (timestamp and seq, no metrics)."""
    payload = pb.Payload()
    if timestamp_ms is not None:
        payload.timestamp = timestamp_ms
    if bd_seq is not None:
        m = payload.metrics.add()
        m.name = "bdSeq"
        m.datatype = DataType.Int64
        m.long_value = bd_seq
        if timestamp_ms is not None:
            m.timestamp = timestamp_ms
    if seq is not None:
        payload.seq = seq
    return payload.SerializeToString()


def encode_data(
    seq: int,
    timestamp_ms: int,
    alias: npt.NDArray[np.uint64] | npt.NDArray[np.int64] | npt.NDArray[np.int32],
    ts_ms: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    datatype: npt.NDArray[np.uint32] | npt.NDArray[np.int32],
    *,
    historical: bool | npt.NDArray[np.bool_] = False,
    quality: npt.NDArray[np.int16] | None = None,
    text: Sequence[tuple[int, str]] = (),
    extra: Sequence[BirthMetric] = (),
) -> bytes:
    """NDATA/DDATA carrying many samples: alias-only metrics with per-metric timestamps, in the given order.

    Every metric carries its datatype (optional in DATA per Sparkplug 3.0, but hosts and payload libraries
    that do not keep birth datatypes need it). `text` holds the side lane: (sample index, canonical text) of the
    values float64 cannot carry (`broker.sparkplug.typed`): strings, arrays, 64-bit integers beyond 2**53; one
    that does not fit its datatype goes as a null value with bad quality. `extra` metrics with an alias (born in the NBIRTH/DBIRTH) go by
    alias only; those without one go by name."""
    n = len(alias)
    if not (len(ts_ms) == len(value) == len(datatype) == n):
        raise PayloadError(
            f"encode_data: array lengths differ (alias={n}, ts_ms={len(ts_ms)}, value={len(value)}, "
            f"datatype={len(datatype)})"
        )
    payload = pb.Payload(timestamp=timestamp_ms, seq=seq)
    add = payload.metrics.add
    texts = dict(text)
    hist_all = bool(historical) if isinstance(historical, bool) else False
    hist = None if isinstance(historical, bool) else historical.tolist()
    quals = quality.tolist() if quality is not None else None
    for i, (a, t, v, d) in enumerate(zip(alias.tolist(), ts_ms.tolist(), value.tolist(), datatype.tolist(), strict=True)):
        m = add(alias=a, timestamp=t, datatype=d)
        if hist_all or (hist is not None and hist[i]):
            m.is_historical = True
        if i in texts:
            if not _set_side(m, d, texts[i]):
                m.is_null = True  # a value that does not fit the signal's datatype: no value, bad quality
                _add_quality(m, QUALITY_BAD)
                continue
        elif v != v:  # NaN: no value (is_null) for non-float types, a real NaN for Double/Float
            if d == 10:
                m.double_value = v
            elif d == 9:
                m.float_value = v
            else:
                m.is_null = True
        elif d == 10:
            m.double_value = v
        elif d in INT_TYPES:
            m.int_value = int(v) & _INT_MASK[d]
        elif d in LONG_TYPES:
            m.long_value = int(v) & _U64
        elif d == 11:
            m.boolean_value = v != 0.0
        elif d == 9:
            m.float_value = v
        else:  # a number for a text or array signal (the device changed type): no value, bad quality
            m.is_null = True
            _add_quality(m, QUALITY_BAD)
            continue
        if quals is not None and quals[i] != QUALITY_GOOD:
            _add_quality(m, quals[i])
    for e in extra:
        _fill_named(payload.metrics.add(), e, timestamp_ms, with_datatype=True, with_name=False)
    return payload.SerializeToString()


@dataclass
class Decoded:
    """A decoded payload as parallel arrays, one entry per metric; the rare values float64 cannot carry are in
    the side dicts `text`, `arrays` and `exact` (metric index -> value)."""

    timestamp_ms: int | None
    seq: int | None
    n: int
    alias: npt.NDArray[np.uint64]
    has_alias: npt.NDArray[np.bool_]
    names: list[str]
    datatype: npt.NDArray[np.uint32]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    is_null: npt.NDArray[np.bool_]
    is_historical: npt.NDArray[np.bool_]
    quality: npt.NDArray[np.int16]
    text: dict[int, str] = field(default_factory=dict)  # string values
    arrays: dict[int, str] = field(default_factory=dict)  # bytes_value: arrays' canonical JSON, Bytes as base64
    exact: dict[int, int] = field(default_factory=dict)  # Int64/UInt64 values beyond 2**53 (`value` is nearest)

    def index_of(self, name: str) -> int | None:
        """Index of the first metric with this name, or None."""
        try:
            return self.names.index(name)
        except ValueError:
            return None


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw


def decode(payload: bytes, datatype_by_alias: Mapping[int, int] | None = None) -> Decoded:
    """Decode any Sparkplug B payload into columnar arrays; raise PayloadError for bytes that are not one.

    Signed integers are read using the metric's own datatype, else `datatype_by_alias` (from the birth).
    Scalar metrics go through the numba wire reader; payloads with datasets, templates or unusual property
    sets take the protobuf path. Both give the same result.
    """
    if not WIRE.ready():
        return _decode_protobuf(payload, datatype_by_alias)
    buf = np.frombuffer(payload, np.uint8)
    (n, header, alias, has_alias, datatype, ts, flags, kind, raw, quality,
     name_off, name_len, str_off, str_len) = wire.scan(buf)
    if n < 0 or (flags & 4).any() or (kind == wire.K_COMPLEX).any():
        return _decode_protobuf(payload, datatype_by_alias)
    ts0 = int(header[0]) if header[1] else None
    seq = int(header[2]) if header[3] else None
    missing = (datatype == 0) & has_alias
    if datatype_by_alias and missing.any():
        keys, inverse = np.unique(alias[missing], return_inverse=True)
        table = np.array([datatype_by_alias.get(int(k), 0) for k in keys], np.uint32)
        datatype[missing] = table[inverse]
    ts[ts < 0] = ts0 if ts0 is not None else 0
    value = np.full(n, np.nan, np.float64)
    m = kind == wire.K_DOUBLE
    value[m] = raw[m].view(np.float64)
    m = kind == wire.K_FLOAT
    value[m] = raw[m].astype(np.uint32).view(np.float32)
    m = kind == wire.K_BOOL
    value[m] = raw[m]
    m = kind == wire.K_LONG
    if m.any():
        signed = m & (datatype == DataType.Int64)
        value[signed] = raw[signed].view(np.int64)
        unsigned = m & ~signed
        value[unsigned] = raw[unsigned]
    m = kind == wire.K_INT
    if m.any():
        value[m] = raw[m]
        for code, bits in ((1, 8), (2, 16), (3, 32)):
            s = m & (datatype == code)
            if s.any():
                v = (raw[s] & np.uint64((1 << bits) - 1)).astype(np.int64)
                value[s] = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    is_null = kind == wire.K_NONE
    names = [""] * n
    for i in np.flatnonzero(name_len).tolist():
        names[i] = payload[name_off[i] : name_off[i] + name_len[i]].decode("utf-8", "replace")
    text = {
        i: payload[str_off[i] : str_off[i] + str_len[i]].decode("utf-8", "replace")
        for i in np.flatnonzero(kind == wire.K_STRING).tolist()
    }
    arrays: dict[int, str] = {}
    for i in np.flatnonzero(kind == wire.K_BYTES).tolist():
        arrays_value(arrays, i, int(datatype[i]), payload[str_off[i] : str_off[i] + str_len[i]], alias, has_alias)
    exact: dict[int, int] = {}
    m = kind == wire.K_LONG
    if m.any():
        signed = raw.view(np.int64)
        big = m & (((datatype == DataType.Int64) & ((signed > EXACT_LIMIT) | (signed < -EXACT_LIMIT)))
                   | ((datatype == DataType.UInt64) & (raw > np.uint64(EXACT_LIMIT))))
        for i in np.flatnonzero(big).tolist():
            exact[i] = _signed(int(raw[i]), 64) if datatype[i] == DataType.Int64 else int(raw[i])
    return Decoded(
        ts0, seq, n, alias, has_alias, names, datatype, ts, value, is_null,
        (flags & 1).astype(np.bool_), quality, text, arrays, exact,
    )


def arrays_value(
    arrays: dict[int, str], i: int, datatype: int, data: bytes,
    alias: npt.NDArray[np.uint64], has_alias: npt.NDArray[np.bool_],
) -> None:
    """Unpack metric `i`'s `bytes_value` into `arrays` when its datatype is an array one (PayloadError if the
    bytes do not fit it), or Bytes (their base64 text); `File` and unknown datatypes are left without a value."""
    if datatype == DataType.Bytes:
        arrays[i] = bytes_text(data)
        return
    if datatype not in ARRAY_TYPES:
        return
    try:
        arrays[i] = unpack_array(datatype, data)
    except (ValueError, UnicodeDecodeError) as exc:
        ident = f"alias {int(alias[i])}" if has_alias[i] else f"metric {i}"
        raise PayloadError(f"{ident}: datatype {datatype}: {exc}") from None


def _decode_protobuf(payload: bytes, datatype_by_alias: Mapping[int, int] | None = None) -> Decoded:
    """The protobuf-object decoder: the reference path and the fallback for non-scalar metrics."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise PayloadError(f"payload of {len(payload)} bytes is not a Sparkplug B protobuf: {exc}") from None
    metrics = msg.metrics
    n = len(metrics)
    ts0 = msg.timestamp if msg.HasField("timestamp") else None
    alias = np.zeros(n, np.uint64)
    has_alias = np.zeros(n, np.bool_)
    datatype = np.zeros(n, np.uint32)
    ts = np.full(n, ts0 if ts0 is not None else 0, np.int64)
    value = np.full(n, np.nan, np.float64)
    is_null = np.zeros(n, np.bool_)
    hist = np.zeros(n, np.bool_)
    quality = np.full(n, QUALITY_GOOD, np.int16)
    names: list[str] = [""] * n
    text: dict[int, str] = {}
    arrays: dict[int, str] = {}
    exact: dict[int, int] = {}
    lookup = datatype_by_alias or {}
    for i, m in enumerate(metrics):
        if m.name:
            names[i] = m.name
        a = m.alias
        if a or m.HasField("alias"):
            alias[i] = a
            has_alias[i] = True
        d = m.datatype or lookup.get(a, 0)
        datatype[i] = d
        if m.HasField("timestamp"):
            ts[i] = m.timestamp
        if m.is_historical:
            hist[i] = True
        kind = m.WhichOneof("value")
        if kind == "double_value":
            value[i] = m.double_value
        elif kind == "int_value":
            v = m.int_value
            bits = SIGNED_BITS.get(DataType(d)) if d in (1, 2, 3) else None
            value[i] = _signed(v & ((1 << bits) - 1), bits) if bits else v
        elif kind == "long_value":
            v = _signed(m.long_value, 64) if d == DataType.Int64 else m.long_value
            value[i] = v
            if abs(v) > EXACT_LIMIT and d in (DataType.Int64, DataType.UInt64):
                exact[i] = v
        elif kind == "boolean_value":
            value[i] = 1.0 if m.boolean_value else 0.0
        elif kind == "float_value":
            value[i] = m.float_value
        elif kind == "string_value":
            text[i] = m.string_value
        elif kind == "bytes_value":
            arrays_value(arrays, i, d, m.bytes_value, alias, has_alias)
        elif kind is None:
            is_null[i] = True
        if m.HasField("properties"):
            props = m.properties
            for key, pv in zip(props.keys, props.values, strict=False):
                if key == _QUALITY:
                    quality[i] = _signed(pv.int_value, 32) if pv.WhichOneof("value") == "int_value" else pv.long_value
    seq = msg.seq if msg.HasField("seq") else None
    return Decoded(ts0, seq, n, alias, has_alias, names, datatype, ts, value, is_null, hist, quality, text, arrays,
                   exact)


ENG_UNIT = "engUnit"
"""The Sparkplug metric property naming a metric's engineering unit (a String), as births carry it."""


def birth_units(payload: bytes) -> dict[str, str]:
    """metric name -> engineering unit (`engUnit` property) of a birth payload; births are rare, so protobuf."""
    message = pb.Payload()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    units: dict[str, str] = {}
    for metric in message.metrics:
        props = metric.properties
        for key, value in zip(props.keys, props.values, strict=False):
            if key == ENG_UNIT and value.WhichOneof("value") == "string_value" and value.string_value:
                units[metric.name] = value.string_value
    return units


def metric_value(decoded: Decoded, name: str) -> float | str | None:
    """Value of the first metric with this name (a string for text metrics), or None if absent or null."""
    i = decoded.index_of(name)
    if i is None or decoded.is_null[i]:
        return None
    if i in decoded.text:
        return decoded.text[i]
    return float(decoded.value[i])


def bdseq_of(decoded: Decoded) -> int | None:
    """The `bdSeq` metric of an NBIRTH or NDEATH, or None."""
    v = metric_value(decoded, "bdSeq")
    return None if v is None or isinstance(v, str) else int(v)
