"""One DB batch: sample arrays from many messages, text rows, dead letters, node health, acks to send."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cloud.host.session import NodeKey

# PostgreSQL binary COPY: timestamptz is int64 microseconds since 2000-01-01 UTC.
_PG_EPOCH_MS = 946_684_800_000
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)

# One row of the staging table (ts, tag_id, value, quality, live) as fixed-width big-endian fields, so
# a whole batch is packed by numpy in one assignment per column (no Python object per sample).
_ROW = np.dtype(
    [("nf", ">i2"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_tag", ">i4"), ("tag", ">i4"),
     ("l_val", ">i4"), ("val", ">f8"), ("l_q", ">i4"), ("q", ">i2"), ("l_live", ">i4"), ("live", "u1")]
)
_ROW_NULL = np.dtype(
    [("nf", ">i2"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_tag", ">i4"), ("tag", ">i4"),
     ("l_val", ">i4"), ("l_q", ">i4"), ("q", ">i2"), ("l_live", ">i4"), ("live", "u1")]
)


@dataclass(frozen=True)
class DeadLetter:
    """Bad input kept for inspection: where it came from, why it was refused, the raw bytes."""

    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes | None


@dataclass
class NodeHealth:
    """Edge-node health figures read from NDATA (None: not reported in this batch)."""

    last_seen_ms: int
    outbox_depth: float | None = None
    samples_per_s: float | None = None
    reconnects: float | None = None
    last_batch: int | None = None


@dataclass
class Batch:
    """Everything one DB transaction writes, and the acks to publish after its commit."""

    tag: list[npt.NDArray[np.int32]] = field(default_factory=list)
    ts_ms: list[npt.NDArray[np.int64]] = field(default_factory=list)
    value: list[npt.NDArray[np.float64]] = field(default_factory=list)
    null: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    quality: list[npt.NDArray[np.int16]] = field(default_factory=list)
    live: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    text_rows: list[tuple[int, int, str, int, bool]] = field(default_factory=list)  # ts_ms, tag, text, q, live
    dead_letters: list[DeadLetter] = field(default_factory=list)
    health: dict[NodeKey, NodeHealth] = field(default_factory=dict)
    acks: dict[NodeKey, int] = field(default_factory=dict)
    touched: set[NodeKey] = field(default_factory=set)
    samples: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(
        self,
        tag: npt.NDArray[np.int32],
        ts_ms: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        null: npt.NDArray[np.bool_],
        quality: npt.NDArray[np.int16],
        live: npt.NDArray[np.bool_],
    ) -> None:
        """Append the numeric samples of one message (arrays of equal length)."""
        if len(tag) == 0:
            return
        self.tag.append(tag)
        self.ts_ms.append(ts_ms)
        self.value.append(value)
        self.null.append(null)
        self.quality.append(quality)
        self.live.append(live)
        self.samples += len(tag)

    def empty(self) -> bool:
        """Nothing to write and nothing to acknowledge."""
        return not (self.samples or self.text_rows or self.dead_letters or self.health or self.acks)

    def numeric_copy_data(self) -> bytes:
        """The numeric samples as one PostgreSQL binary COPY stream for the staging table."""
        if not self.tag:
            return b""
        tag = np.concatenate(self.tag)
        ts_us = (np.concatenate(self.ts_ms) - _PG_EPOCH_MS) * 1000
        value = np.concatenate(self.value)
        null = np.concatenate(self.null)
        quality = np.concatenate(self.quality)
        live = np.concatenate(self.live)
        parts = [_COPY_HEADER]
        for dtype, mask in ((_ROW, ~null), (_ROW_NULL, null)):
            count = int(mask.sum())
            if not count:
                continue
            rows = np.empty(count, dtype)
            rows["nf"] = 5
            rows["l_ts"] = 8
            rows["ts"] = ts_us[mask]
            rows["l_tag"] = 4
            rows["tag"] = tag[mask]
            if dtype is _ROW:
                rows["l_val"] = 8
                rows["val"] = value[mask]
            else:
                rows["l_val"] = -1
            rows["l_q"] = 2
            rows["q"] = quality[mask]
            rows["l_live"] = 1
            rows["live"] = live[mask]
            parts.append(rows.tobytes())
        parts.append(_COPY_TRAILER)
        return b"".join(parts)
