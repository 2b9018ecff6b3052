"""On-disk record format of the outbox: one record per appended `SampleBlock`, header + arrays + checksums.

Layout (little endian), 32-byte header then payload:

    magic "ZOB1" | version u16 | reserved u16 | position i64 | n u32 | text_len u32 | payload_crc u32 | header_crc u32
    payload = signal i32[n] | ts_ms i64[n] | value f64[n] | quality i16[n] | text (UTF-8 JSON [[index, "s"], ...])

`header_crc` covers the first 28 header bytes and `payload_crc` the payload, so a record torn by kill -9 or
power loss (short header, short payload, or garbage) is detected and never misread as samples.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from zhizao.edge.samples import SampleBlock

MAGIC = b"ZOB1"
VERSION = 1
_HEAD = struct.Struct("<4sHHqIII")  # without header_crc
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size
BYTES_PER_SAMPLE = 4 + 8 + 8 + 2
MAX_SAMPLES = 50_000_000  # sanity bound: a header claiming more is corrupt


class RecordError(ValueError):
    """A record that fails its checks (torn, corrupt, or not an outbox record)."""


@dataclass(frozen=True)
class RecordInfo:
    """Where one record lives: position, byte offset and length in its segment, sample count."""

    position: int
    offset: int
    length: int
    n: int


def encode_record(position: int, block: SampleBlock) -> bytes:
    """Serialize one block as a record with header and checksums."""
    n = len(block)
    text = (
        json.dumps([[int(i), s] for i, s in block.text], ensure_ascii=False).encode() if block.text else b""
    )
    payload = b"".join(
        (
            np.ascontiguousarray(block.signal, "<i4").tobytes(),
            np.ascontiguousarray(block.ts_ms, "<i8").tobytes(),
            np.ascontiguousarray(block.value, "<f8").tobytes(),
            np.ascontiguousarray(block.quality, "<i2").tobytes(),
            text,
        )
    )
    head = _HEAD.pack(MAGIC, VERSION, 0, position, n, len(text), zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


def parse_header(head: bytes) -> tuple[int, int, int, int]:
    """(position, n, text_len, payload_crc) of a header; RecordError when it is not a valid header."""
    if len(head) < HEADER_SIZE:
        raise RecordError(f"short header ({len(head)} of {HEADER_SIZE} bytes)")
    fields = _HEAD.unpack_from(head)
    (crc,) = _CRC.unpack_from(head, _HEAD.size)
    if fields[0] != MAGIC or zlib.crc32(head[: _HEAD.size]) != crc:
        raise RecordError("bad magic or header checksum")
    if fields[1] != VERSION:
        raise RecordError(f"record version {fields[1]} (this build reads {VERSION})")
    _, _, _, position, n, text_len, payload_crc = fields
    if n > MAX_SAMPLES:
        raise RecordError(f"header claims {n} samples")
    return position, n, text_len, payload_crc


def decode_payload(payload: bytes, n: int, text_len: int, payload_crc: int) -> SampleBlock:
    """Arrays of a record payload; RecordError when it is short or its checksum fails."""
    if len(payload) != n * BYTES_PER_SAMPLE + text_len:
        raise RecordError(f"short payload ({len(payload)} of {n * BYTES_PER_SAMPLE + text_len} bytes)")
    if zlib.crc32(payload) != payload_crc:
        raise RecordError("payload checksum mismatch")
    o = 0
    signal = np.frombuffer(payload, "<i4", n, o).astype(np.int32)
    o += 4 * n
    ts = np.frombuffer(payload, "<i8", n, o).astype(np.int64)
    o += 8 * n
    value = np.frombuffer(payload, "<f8", n, o).astype(np.float64)
    o += 8 * n
    quality = np.frombuffer(payload, "<i2", n, o).astype(np.int16)
    o += 2 * n
    text: tuple[tuple[int, str], ...] = ()
    if text_len:
        text = tuple((int(i), str(s)) for i, s in json.loads(payload[o : o + text_len].decode()))
    return SampleBlock(signal, ts, value, quality, text)


def read_record(fd: int, info: RecordInfo) -> SampleBlock:
    """Read and verify the record described by `info` from an open segment file."""
    raw = os.pread(fd, info.length, info.offset)
    position, n, text_len, crc = parse_header(raw[:HEADER_SIZE])
    if position != info.position:
        raise RecordError(f"expected record {info.position}, found {position}")
    return decode_payload(raw[HEADER_SIZE:], n, text_len, crc)


def scan_segment(data: bytes) -> tuple[list[RecordInfo], int, str | None]:
    """Valid records at the start of a segment's bytes, the length of that valid prefix, and why it stopped."""
    infos: list[RecordInfo] = []
    off = 0
    size = len(data)
    while off < size:
        try:
            position, n, text_len, crc = parse_header(data[off : off + HEADER_SIZE])
            end = off + HEADER_SIZE + n * BYTES_PER_SAMPLE + text_len
            payload = data[off + HEADER_SIZE : end]
            if len(payload) != end - off - HEADER_SIZE:
                raise RecordError(f"short payload ({len(payload)} of {end - off - HEADER_SIZE} bytes)")
            if zlib.crc32(payload) != crc:
                raise RecordError("payload checksum mismatch")
        except RecordError as exc:
            return infos, off, f"{exc} at byte {off}"
        infos.append(RecordInfo(position, off, end - off, n))
        off = end
    return infos, off, None


def iter_segment_blocks(path: os.PathLike[str] | str) -> Iterator[tuple[int, SampleBlock]]:
    """(position, block) of every valid record in one segment file, stopping at a torn tail."""
    with open(path, "rb") as f:
        data = f.read()
    infos, _, _ = scan_segment(data)
    for info in infos:
        _, n, text_len, crc = parse_header(data[info.offset : info.offset + HEADER_SIZE])
        payload = data[info.offset + HEADER_SIZE : info.offset + info.length]
        yield info.position, decode_payload(payload, n, text_len, crc)
