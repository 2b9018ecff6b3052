"""fastdecode gives exactly what asyncua's own decoder gives, for every DataValue shape (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from zhizao.edge.adapters.opcua.adapter import _quality, _to_block
from zhizao.edge.adapters.opcua.fastdecode import DataChangeArrays, decode_publish_response

NOW_MS = 1_767_225_600_000
VT = ua.VariantType
SCALARS: dict[Any, Any] = {
    VT.Boolean: st.booleans(),
    VT.SByte: st.integers(-128, 127),
    VT.Byte: st.integers(0, 255),
    VT.Int16: st.integers(-(2**15), 2**15 - 1),
    VT.UInt16: st.integers(0, 2**16 - 1),
    VT.Int32: st.integers(-(2**31), 2**31 - 1),
    VT.UInt32: st.integers(0, 2**32 - 1),
    VT.Int64: st.integers(-(2**63), 2**63 - 1),
    VT.UInt64: st.integers(0, 2**64 - 1),
    VT.Float: st.floats(width=32, allow_nan=False),
    VT.Double: st.floats(allow_nan=False),
    VT.String: st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["5", "2.5", "nan", ""])),
}
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
# DateTime values also before 1970 (no Sparkplug DateTime: no value), at millisecond and finer resolution.
instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


def _array(elements: Any, vtype: Any) -> Any:
    return st.lists(elements, max_size=4).map(lambda v: ua.Variant(v, vtype, is_array=True))


OTHER = {  # the typed side lane: arrays, DateTime, Guid, LocalizedText (the fast loop reads them too)
    "array": _array(st.floats(allow_nan=False), VT.Double),
    "int64s": _array(st.integers(-(2**63), 2**63 - 1), VT.Int64),
    "uint64s": _array(st.integers(0, 2**64 - 1), VT.UInt64),
    "bools": _array(st.booleans(), VT.Boolean),
    "strings": _array(st.text(max_size=4), VT.String),
    "stamps": _array(instants, VT.DateTime),
    "labels": _array(st.text(max_size=4).map(ua.LocalizedText), VT.LocalizedText),
    "text": st.tuples(st.text(max_size=5), st.one_of(st.none(), st.just("de"))).map(
        lambda t: ua.Variant(ua.LocalizedText(t[0], t[1]), VT.LocalizedText)),
    "instant": instants.map(lambda t: ua.Variant(t, VT.DateTime)),
    "guid": st.uuids().map(lambda u: ua.Variant(u, VT.Guid)),
    "null": st.just(ua.Variant()),
    # read by the fast loop: ByteString (base64), XmlElement, StatusCode (its code) ...
    "bytes": st.one_of(st.none(), st.binary(max_size=6)).map(lambda b: ua.Variant(b, VT.ByteString)),
    "blobs": _array(st.binary(max_size=3), VT.ByteString),
    "xml": st.text(max_size=6).map(lambda x: ua.Variant(ua.XmlElement(x), VT.XmlElement)),
    "status": st.sampled_from([0, 0x80340000, 0x40000000]).map(lambda c: ua.Variant(ua.StatusCode(c), VT.StatusCode)),
    # ... and those the whole response then goes to asyncua for: NodeId, QualifiedName, matrices
    "nodeid": st.sampled_from([ua.NodeId("Foo", 2), ua.NodeId(7, 3), ua.NodeId(85, 0)]).map(
        lambda n: ua.Variant(n, VT.NodeId)),
    "qname": st.text(max_size=4).map(lambda n: ua.Variant(ua.QualifiedName(n, 2), VT.QualifiedName)),
    "matrix": st.lists(st.floats(allow_nan=False), min_size=6, max_size=6).map(
        lambda v: ua.Variant([v[:3], v[3:]], VT.Double, Dimensions=[2, 3], is_array=True)),
}


@st.composite
def variants(draw: Any, vtype: Any) -> Any:
    if vtype in OTHER:
        return draw(OTHER[vtype])
    return ua.Variant(draw(SCALARS[vtype]), vtype)


@st.composite
def notifications(draw: Any) -> list[ua.MonitoredItemNotification]:
    kinds = [*SCALARS, *OTHER] if draw(st.booleans()) else [draw(st.sampled_from(list(SCALARS)))]
    same_mask = draw(st.booleans())
    mask = (draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))
    items = []
    for _ in range(draw(st.integers(0, 12))):
        has_status, has_src, has_srv = mask if same_mask else (draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))
        dv = ua.DataValue(draw(variants(draw(st.sampled_from(kinds)))))
        dv.StatusCode = ua.StatusCode(draw(st.sampled_from([0, 0x40000000, 0x80000000, 0x80340000]))) if has_status else None
        dv.SourceTimestamp = draw(times) if has_src else None
        dv.ServerTimestamp = draw(times) if has_srv else None
        items.append(ua.MonitoredItemNotification(ClientHandle=draw(st.integers(0, 2**32 - 1)), Value=dv))
    return items


def generic_block(items: list[ua.MonitoredItemNotification]) -> tuple[Any, ...]:
    b = _to_block(np.zeros(len(items), np.int32), [it.Value for it in items], NOW_MS)
    return [it.ClientHandle for it in items], b.ts_ms.tolist(), b.value, b.quality.tolist(), list(b.text)


def fast_block(a: DataChangeArrays) -> tuple[Any, ...]:
    ts = np.where(a.has_ts, a.ts_ms, NOW_MS)
    return a.handles.tolist(), ts.tolist(), a.value, _quality(a.status).tolist(), list(a.text)


@settings(max_examples=150, deadline=None)
@given(st.lists(notifications(), min_size=1, max_size=3), st.booleans())
def test_fast_decode_equals_asyncua(batches: list[list[ua.MonitoredItemNotification]], with_status: bool) -> None:
    data: list[Any] = [ua.DataChangeNotification(MonitoredItems=items) for items in batches]
    if with_status:
        data.insert(1, ua.StatusChangeNotification(Status=ua.StatusCode(0x80AB0000)))
    resp = ua.PublishResponse()
    resp.Parameters = ua.PublishResult(SubscriptionId=7, AvailableSequenceNumbers=[3, 4], MoreNotifications=False,
                                       NotificationMessage=ua.NotificationMessage(SequenceNumber=4, NotificationData=data))
    raw = struct_to_binary(resp)
    fast = decode_publish_response(Buffer(raw))
    slow = struct_from_binary(ua.PublishResponse, Buffer(raw))
    assert fast.Parameters.SubscriptionId == 7 and fast.Parameters.NotificationMessage.SequenceNumber == 4
    assert fast.Parameters.AvailableSequenceNumbers == [3, 4]
    got_data, want_data = fast.Parameters.NotificationMessage.NotificationData, slow.Parameters.NotificationMessage.NotificationData
    assert len(got_data) == len(want_data)
    for got, want in zip(got_data, want_data, strict=True):
        if isinstance(want, ua.StatusChangeNotification):
            assert got == want
            continue
        expected = generic_block(want.MonitoredItems)
        actual = fast_block(got) if isinstance(got, DataChangeArrays) else generic_block(got.MonitoredItems)
        assert actual[0] == expected[0] and actual[1] == expected[1] and actual[3] == expected[3]
        assert actual[4] == expected[4]
        np.testing.assert_array_equal(actual[2], expected[2])


def test_homogeneous_notification_is_one_frombuffer_and_exact() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    items = [ua.MonitoredItemNotification(ClientHandle=k + 1, Value=ua.DataValue(
        ua.Variant(k * 0.5, VT.Double), SourceTimestamp=t + timedelta(microseconds=999 * k), ServerTimestamp=t))
        for k in range(1000)]
    resp = ua.PublishResponse()
    resp.Parameters = ua.PublishResult(SubscriptionId=1, NotificationMessage=ua.NotificationMessage(
        SequenceNumber=1, NotificationData=[ua.DataChangeNotification(MonitoredItems=items)]))
    arrays = decode_publish_response(Buffer(struct_to_binary(resp))).Parameters.NotificationMessage.NotificationData[0]
    assert isinstance(arrays, DataChangeArrays)
    assert arrays.handles.tolist() == list(range(1, 1001))
    assert arrays.value.tolist() == [k * 0.5 for k in range(1000)]
    assert arrays.ts_ms.tolist() == [NOW_MS + (999 * k) // 1000 for k in range(1000)]  # floored to ms


def test_typed_values_take_the_side_lane_exactly() -> None:
    t = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    values = [ua.Variant(2**63 - 1, VT.Int64), ua.Variant(2**53, VT.Int64), ua.Variant(2**64 - 1, VT.UInt64),
              ua.Variant(t, VT.DateTime), ua.Variant(ua.LocalizedText("Presse", "de"), VT.LocalizedText),
              ua.Variant([2**53 + 1, -1], VT.Int64, is_array=True), ua.Variant([t], VT.DateTime, is_array=True),
              ua.Variant(b"\x00\xffzhi", VT.ByteString), ua.Variant(ua.XmlElement("<a x='1'>b</a>"), VT.XmlElement),
              ua.Variant(ua.StatusCode(0x80340000), VT.StatusCode),
              ua.Variant([ua.LocalizedText("a", "en"), ua.LocalizedText("b")], VT.LocalizedText, is_array=True)]
    items = [ua.MonitoredItemNotification(ClientHandle=k + 1, Value=ua.DataValue(v, SourceTimestamp=t))
             for k, v in enumerate(values)]
    resp = ua.PublishResponse()
    resp.Parameters = ua.PublishResult(SubscriptionId=1, NotificationMessage=ua.NotificationMessage(
        SequenceNumber=1, NotificationData=[ua.DataChangeNotification(MonitoredItems=items)]))
    arrays = decode_publish_response(Buffer(struct_to_binary(resp))).Parameters.NotificationMessage.NotificationData[0]
    assert isinstance(arrays, DataChangeArrays)
    ms = 1_767_268_800_123
    # exact in float64: DateTime as epoch ms, StatusCode as its code
    assert arrays.value[[1, 3, 9]].tolist() == [2.0**53, float(ms), float(0x80340000)]
    assert arrays.text == [(0, str(2**63 - 1)), (2, str(2**64 - 1)), (4, '{"locale":"de","text":"Presse"}'),
                           (5, f"[{2**53 + 1},-1]"), (6, '["2026-01-01T12:00:00.123Z"]'), (7, "AP96aGk="),
                           (8, "<a x='1'>b</a>"), (10, '[{"locale":"en","text":"a"},{"locale":"","text":"b"}]')]
    assert np.isnan(arrays.value[[0, 2, 4, 5, 6, 7, 8, 10]]).all()
    assert list(generic_block(items)[4]) == arrays.text  # asyncua's objects give the same through the adapter
