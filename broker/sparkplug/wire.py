"""A numba reader of the Sparkplug B protobuf wire format for the hot path (DATA messages into arrays).

`scan()` walks the payload bytes once and fills per-metric arrays without building protobuf objects. It
handles every scalar field and `bytes_value` (the Sparkplug array datatypes; as offsets, like strings); metrics
it cannot represent in arrays (unusual properties, datasets, templates) are flagged so the caller can take the protobuf path for that payload. Malformed bytes give a negative
status, never an exception, so the caller can report them through one place.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

from zhizao.broker.contract.quality import QUALITY_GOOD

# Value kinds in `kind`.
K_NONE, K_INT, K_LONG, K_FLOAT, K_DOUBLE, K_BOOL, K_STRING, K_COMPLEX, K_BYTES = 0, 1, 2, 3, 4, 5, 6, 7, 8


@nb.njit(cache=True, nogil=True)
def _varint(buf: npt.NDArray[np.uint8], pos: int, end: int) -> tuple[Any, int]:
    """(value as uint64 bits in an int64, new position), position -1 when the varint runs past `end`."""
    result = np.uint64(0)
    shift = np.uint64(0)
    while pos < end:
        b = np.uint64(buf[pos])
        pos += 1
        result |= (b & np.uint64(0x7F)) << shift
        if b < np.uint64(0x80):
            return np.int64(result), pos
        shift += np.uint64(7)
        if shift >= np.uint64(70):
            return 0, -1
    return 0, -1


@nb.njit(cache=True, nogil=True)
def _skip(buf: npt.NDArray[np.uint8], pos: int, end: int, wire: int) -> int:
    """Position after a field of this wire type, or -1 when malformed."""
    if wire == 0:
        _, pos = _varint(buf, pos, end)
        return pos
    if wire == 1:
        return pos + 8 if pos + 8 <= end else -1
    if wire == 2:
        n, pos = _varint(buf, pos, end)
        if pos < 0 or n < 0 or pos + n > end:
            return -1
        end_of_field: int = pos + n
        return end_of_field
    if wire == 5:
        return pos + 4 if pos + 4 <= end else -1
    return -1


_QUALITY = np.frombuffer(b"Quality", np.uint8)


@nb.njit(cache=True, nogil=True)
def _quality(buf: npt.NDArray[np.uint8], pos: int, end: int) -> int:
    """The Int32 "Quality" property of a PropertySet, -1 when absent, -2 when it cannot be read here."""
    key_index = 0
    quality_index = -1
    value_index = 0
    while pos < end:
        key, pos = _varint(buf, pos, end)
        if pos < 0:
            return -2
        f = key >> 3
        w = key & 7
        if w != 2:
            pos = _skip(buf, pos, end, w)
            if pos < 0:
                return -2
            continue
        ln, pos = _varint(buf, pos, end)
        if pos < 0 or ln < 0 or pos + ln > end:
            return -2
        if f == 1:
            if value_index > 0:
                return -2  # keys after values: leave it to the protobuf path
            if ln == 7:
                same = True
                for k in range(7):
                    if buf[pos + k] != _QUALITY[k]:
                        same = False
                        break
                if same and quality_index < 0:
                    quality_index = key_index
            key_index += 1
        elif f == 2:
            if value_index == quality_index:
                vend = pos + ln
                p = pos
                while p < vend:
                    vkey, p = _varint(buf, p, vend)
                    if p < 0:
                        return -2
                    if (vkey >> 3) in (3, 4) and (vkey & 7) == 0:
                        v, p = _varint(buf, p, vend)
                        if p < 0:
                            return -2
                        v32: int = v & 0xFFFFFFFF
                        return v32 - 4294967296 if v32 >= 2147483648 else v32
                    p = _skip(buf, p, vend, vkey & 7)
                    if p < 0:
                        return -2
                return -2
            value_index += 1
        pos += ln
    return -1


@nb.njit(cache=True, nogil=True)
def scan(buf: npt.NDArray[np.uint8]) -> tuple[Any, ...]:
    """Read a Payload: returns (status, header[timestamp, has_ts, seq, has_seq], metric arrays...).

    status: number of metrics (>= 0) or -1 for malformed bytes. Per metric: alias, has_alias, datatype,
    ts (-1 when absent), flags (bit0 historical, bit1 null, bit2 properties the scan could not read), kind,
    raw (uint64 bits of int/long/bool, or the float64 bits for float/double), quality (QUALITY_GOOD when absent),
    name_off, name_len, str_off, str_len.
    """
    end = buf.shape[0]
    cap = end // 2 + 1
    alias = np.zeros(cap, np.uint64)
    has_alias = np.zeros(cap, np.bool_)
    datatype = np.zeros(cap, np.uint32)
    ts = np.full(cap, -1, np.int64)
    flags = np.zeros(cap, np.uint8)
    kind = np.zeros(cap, np.uint8)
    raw = np.zeros(cap, np.uint64)
    quality = np.full(cap, QUALITY_GOOD, np.int16)
    name_off = np.zeros(cap, np.int64)
    name_len = np.zeros(cap, np.int64)
    str_off = np.zeros(cap, np.int64)
    str_len = np.zeros(cap, np.int64)
    header = np.zeros(4, np.int64)
    n = 0
    pos = 0
    while pos < end:
        key, pos = _varint(buf, pos, end)
        if pos < 0:
            return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
        field = key >> 3
        wire = key & 7
        if field == 2 and wire == 2:
            mlen, pos = _varint(buf, pos, end)
            if pos < 0 or mlen < 0 or pos + mlen > end:
                return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
            mend = pos + mlen
            while pos < mend:
                mkey, pos = _varint(buf, pos, mend)
                if pos < 0:
                    return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
                f = mkey >> 3
                w = mkey & 7
                if w == 0 and (f == 2 or f == 3 or f == 4 or f == 5 or f == 6 or f == 7 or f == 10 or f == 11 or f == 14):
                    v, pos = _varint(buf, pos, mend)
                    if pos < 0:
                        return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
                    if f == 2:
                        alias[n] = np.uint64(v)
                        has_alias[n] = True
                    elif f == 3:
                        ts[n] = v
                    elif f == 4:
                        datatype[n] = np.uint32(v & 0xFFFFFFFF)
                    elif f == 5:
                        if v != 0:
                            flags[n] |= 1
                    elif f == 7:
                        if v != 0:
                            flags[n] |= 2
                    elif f == 10:
                        kind[n] = K_INT
                        raw[n] = np.uint64(v) & np.uint64(0xFFFFFFFF)
                    elif f == 11:
                        kind[n] = K_LONG
                        raw[n] = np.uint64(v)
                    elif f == 14:
                        kind[n] = K_BOOL
                        raw[n] = np.uint64(1) if v != 0 else np.uint64(0)
                elif w == 1 and f == 13:
                    if pos + 8 > mend:
                        return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
                    bits = np.uint64(0)
                    for k in range(8):
                        bits |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
                    raw[n] = bits
                    kind[n] = K_DOUBLE
                    pos += 8
                elif w == 5 and f == 12:
                    if pos + 4 > mend:
                        return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
                    bits = np.uint64(0)
                    for k in range(4):
                        bits |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
                    raw[n] = bits
                    kind[n] = K_FLOAT
                    pos += 4
                elif w == 2:
                    ln, pos = _varint(buf, pos, mend)
                    if pos < 0 or ln < 0 or pos + ln > mend:
                        return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
                    if f == 1:
                        name_off[n] = pos
                        name_len[n] = ln
                    elif f == 15 or f == 16:  # string_value, bytes_value (arrays): offsets into the payload
                        kind[n] = K_STRING if f == 15 else K_BYTES
                        str_off[n] = pos
                        str_len[n] = ln
                    elif f == 9:
                        q = _quality(buf, pos, pos + ln)
                        if q == -2:
                            flags[n] |= 4
                        elif q != -1:
                            quality[n] = q
                    elif f == 17 or f == 18 or f == 19:
                        kind[n] = K_COMPLEX
                    pos += ln
                else:
                    pos = _skip(buf, pos, mend, w)
                    if pos < 0:
                        return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
            n += 1
        elif field == 1 and wire == 0:
            v, pos = _varint(buf, pos, end)
            header[0] = v
            header[1] = 1
        elif field == 3 and wire == 0:
            v, pos = _varint(buf, pos, end)
            header[2] = v
            header[3] = 1
        else:
            pos = _skip(buf, pos, end, wire)
        if pos < 0:
            return -1, header, alias, has_alias, datatype, ts, flags, kind, raw, quality, name_off, name_len, str_off, str_len
    return (n, header, alias[:n], has_alias[:n], datatype[:n], ts[:n], flags[:n], kind[:n], raw[:n],
            quality[:n], name_off[:n], name_len[:n], str_off[:n], str_len[:n])
