"""The record file: every value the simulator published (node, source timestamp, value), append-only.

Layout: the magic line `ZHIZAO-SIM-RECORD 1\\n`, then chunks. A chunk is a 12-byte header (4-byte tag, uint64
little-endian payload length) and its payload: `NODE` holds a JSON list of node ids (appended to the table),
`DATA` holds packed rows (int32 node index, int64 ts ms, float64 value), 20 bytes each, little-endian. A
reader stops at a truncated final chunk, so a file cut off by a crash still reads up to its last flush.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

MAGIC = b"ZHIZAO-SIM-RECORD 1\n"
ROW = np.dtype([("i", "<i4"), ("t", "<i8"), ("v", "<f8")])
_HEADER = struct.Struct("<4sQ")


class RecordError(ValueError):
    """A file that is not a simulator record."""


class Recorder:
    """Appends published values to a record file; flushes at most `flush_s` after a value was added."""

    def __init__(self, path: Path | str, node_ids: list[str], *, flush_s: float = 0.5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: BinaryIO = self.path.open("wb")
        self._fh.write(MAGIC)
        self._chunk(b"NODE", json.dumps(node_ids).encode())
        self._pending: list[npt.NDArray[np.void]] = []
        self._pending_rows = 0
        self._flush_s = flush_s
        self._last_flush = time.monotonic()
        self.rows = 0

    def _chunk(self, tag: bytes, payload: bytes) -> None:
        self._fh.write(_HEADER.pack(tag, len(payload)))
        self._fh.write(payload)

    def append(
        self, index: npt.NDArray[np.int64], ts_ms: int | npt.NDArray[np.int64], value: npt.NDArray[np.float64]
    ) -> None:
        """Queue rows: node indices, their source timestamp(s) and values."""
        rows = np.empty(len(index), dtype=ROW)
        rows["i"], rows["t"], rows["v"] = index, ts_ms, value
        self._pending.append(rows)
        self._pending_rows += len(rows)
        self.rows += len(rows)
        if self._pending_rows >= 65536 or time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        """Write queued rows as one chunk and flush the file to the OS."""
        if self._pending:
            self._chunk(b"DATA", np.concatenate(self._pending).tobytes())
            self._pending, self._pending_rows = [], 0
        self._fh.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close."""
        if not self._fh.closed:
            self.flush()
            self._fh.close()


def read_record(
    path: Path | str,
) -> tuple[list[str], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Read a record file: (node_ids, node_index i32[n], ts_ms i64[n], value f64[n]) in publish order."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise RecordError(f"{path}: not a simulator record (magic {data[: len(MAGIC)]!r})")
    pos = len(MAGIC)
    node_ids: list[str] = []
    parts: list[npt.NDArray[np.void]] = []
    while pos + _HEADER.size <= len(data):
        tag, size = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + size
        if end > len(data):
            break  # truncated tail: the writer died mid-chunk
        if tag == b"NODE":
            node_ids.extend(json.loads(data[start:end]))
        elif tag == b"DATA":
            parts.append(np.frombuffer(data, dtype=ROW, count=size // ROW.itemsize, offset=start))
        else:
            raise RecordError(f"{path}: unknown chunk tag {tag!r} at byte {pos}")
        pos = end
    rows = np.concatenate(parts) if parts else np.empty(0, dtype=ROW)
    return (
        node_ids,
        rows["i"].astype(np.int32),
        rows["t"].astype(np.int64),
        rows["v"].astype(np.float64),
    )
