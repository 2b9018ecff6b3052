"""Values that do not travel as float64: their canonical text, and the Sparkplug 3.0 array encodings.

Samples are float64 arrays end to end; the few values a float64 cannot hold exactly take the side lane of a
sample block (its `text`) in one canonical text form, decided by the signal's datatype:

| datatype | canonical text | on the wire (Sparkplug 3.0 "Datatype Details") |
|---|---|---|
| String, Text, UUID | the string itself | `string_value` |
| Int64, UInt64 beyond +-2**53 | decimal digits, `-9223372036854775808` | `long_value` (two's complement) |
| Int8Array ... DoubleArray | JSON array of numbers, `[1,2,3]`, `[0.5,1.0]` | `bytes_value`, little-endian packed elements |
| BooleanArray | JSON array of `true`/`false` | `bytes_value`: UInt32 LE count, then bits, first value in the top bit |
| StringArray | JSON array of strings | `bytes_value`: each UTF-8 string followed by a NUL byte |
| DateTimeArray | JSON array of ISO 8601 UTC texts with milliseconds | `bytes_value`: Int64 LE epoch milliseconds |
| Bytes | base64 (RFC 4648, with padding) | `bytes_value`, the bytes themselves |
| Text | a JSON document: matrices (nested arrays), structures (objects of their fields), LocalizedText `{"locale":..,"text":..}` | `string_value` |

Text is zhizao's datatype for JSON documents (String stays plain text): to any other Sparkplug host both are
strings, and the cloud answers a Text value that is a JSON object or array as that object or array.

Scalar DateTime values stay in the float64 lane as epoch milliseconds (exact: 2**53 ms is some 285,000 years).
The edge builds these texts (adapters), the codec packs them; the cloud codec unpacks `bytes_value` into the
same text, which storage keeps as it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from zhizao.broker.sparkplug.datatypes import DataType

__all__ = [
    "ARRAY_TYPES", "EXACT_LIMIT", "SIDE_TYPES", "array_text", "bytes_of_text", "bytes_text", "iso_ms", "json_text",
    "ms_of_iso", "pack_array", "unpack_array",
]

EXACT_LIMIT = 2**53
"""Integers of magnitude up to this are exact in float64; larger 64-bit integers travel as text."""

_ELEMENT = {
    DataType.Int8Array: "b", DataType.Int16Array: "h", DataType.Int32Array: "i", DataType.Int64Array: "q",
    DataType.UInt8Array: "B", DataType.UInt16Array: "H", DataType.UInt32Array: "I", DataType.UInt64Array: "Q",
    DataType.FloatArray: "f", DataType.DoubleArray: "d", DataType.DateTimeArray: "q",
}
ARRAY_TYPES = frozenset({*_ELEMENT, DataType.BooleanArray, DataType.StringArray})
SIDE_TYPES = frozenset({*ARRAY_TYPES, DataType.String, DataType.Text, DataType.UUID, DataType.DateTime,
                        DataType.Bytes})
"""Datatypes the cloud stores as text (`samples_text`): text, JSON documents (Text), arrays (canonical JSON),
DateTime (ISO 8601), Bytes (base64)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
MAX_DATETIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant an ISO 8601 text holds


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> `2026-01-01T00:00:00.000Z` (ValueError outside 1970..9999)."""
    if not 0 <= ms <= MAX_DATETIME_MS:
        raise ValueError(f"{ms} ms is outside 1970-01-01 .. 9999-12-31")
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_of_iso(text: str) -> int:
    """ISO 8601 text with a zone -> epoch milliseconds (floored)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return (parsed - _EPOCH) // _MS


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return iso_ms((aware - _EPOCH) // _MS)
    return value


def json_text(document: object) -> str:
    """Canonical text of a JSON document (a Text value): compact, UTF-8 kept, datetimes as ISO 8601."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=_plain_or_fail)


def _plain_or_fail(value: object) -> object:
    if isinstance(value, datetime):
        return _plain(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def bytes_text(data: bytes) -> str:
    """Canonical text of a Bytes value: base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def bytes_of_text(text: str) -> bytes:
    """The bytes of a Bytes value's canonical text; ValueError when it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not base64: {text[:40]!r}") from None


def array_text(values: Iterable[object]) -> str:
    """Canonical text of an array value (numbers, booleans, strings or datetimes)."""
    return json.dumps([_plain(v) for v in values], ensure_ascii=False, separators=(",", ":"))


def pack_array(datatype: int, text: str) -> bytes:
    """The `bytes_value` of an array datatype from its canonical text; ValueError when the values do not fit."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON array: {exc}") from None
    if not isinstance(values, list):
        raise ValueError(f"not a JSON array: {text[:80]!r}")
    dt = DataType(datatype)
    if dt == DataType.StringArray:
        if not all(isinstance(s, str) and "\0" not in s for s in values):
            raise ValueError("StringArray elements must be strings without NUL characters")
        return b"".join(s.encode("utf-8") + b"\0" for s in values)
    if dt == DataType.BooleanArray:
        if not all(isinstance(b, bool) for b in values):
            raise ValueError("BooleanArray elements must be true or false")
        bits = bytearray((len(values) + 7) // 8)
        for k, b in enumerate(values):
            if b:
                bits[k // 8] |= 0x80 >> (k % 8)
        return struct.pack("<I", len(values)) + bytes(bits)
    code = _ELEMENT.get(dt)
    if code is None:
        raise ValueError(f"datatype {datatype} is not an array datatype")
    if dt == DataType.DateTimeArray:
        values = [ms_of_iso(v) if isinstance(v, str) else v for v in values]
    if code in "fd":
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{dt.name} elements must be numbers")
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{dt.name} elements must be integers")
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except struct.error as exc:
        raise ValueError(f"{dt.name}: {exc}") from None


def unpack_array(datatype: int, data: bytes) -> str:
    """The canonical text of an array datatype's `bytes_value`; ValueError when the bytes do not fit it."""
    dt = DataType(datatype)
    if dt == DataType.StringArray:
        if data and not data.endswith(b"\0"):
            raise ValueError("StringArray bytes do not end with a NUL byte")
        return array_text(s.decode("utf-8") for s in data.split(b"\0")[:-1])
    if dt == DataType.BooleanArray:
        if len(data) < 4:
            raise ValueError("BooleanArray bytes shorter than their 4-byte count")
        (count,) = struct.unpack_from("<I", data)
        if len(data) != 4 + (count + 7) // 8:
            raise ValueError(f"BooleanArray of {count} values in {len(data) - 4} bytes")
        return array_text(bool(data[4 + k // 8] & (0x80 >> (k % 8))) for k in range(count))
    code = _ELEMENT.get(dt)
    if code is None:
        raise ValueError(f"datatype {datatype} is not an array datatype")
    size = struct.calcsize(code)
    if len(data) % size:
        raise ValueError(f"{dt.name}: {len(data)} bytes is not a whole number of {size}-byte elements")
    values = list(struct.unpack(f"<{len(data) // size}{code}", data))
    if dt == DataType.DateTimeArray:
        return array_text(iso_ms(v) for v in values)
    return array_text(values)
