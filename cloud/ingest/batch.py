"""One DB batch: sample arrays from many messages, text rows, exact-integer rows, samples held in quarantine, dead letters, node
health, acks to send."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zhizao.broker.extensions import Ack
from zhizao.cloud.host.session import NodeKey
from zhizao.cloud.ingest.decode import Columns, Held

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
    exact_rows: list[tuple[int, int, int, int, bool]] = field(default_factory=list)  # ts_ms, tag, int, q, live
    dead_letters: list[DeadLetter] = field(default_factory=list)
    held: list[tuple[int, Held]] = field(default_factory=list)  # (received_ms, refused samples of known tags)
    health: dict[NodeKey, NodeHealth] = field(default_factory=dict)
    acks: dict[NodeKey, Ack] = field(default_factory=dict)
    touched: set[NodeKey] = field(default_factory=set)
    sessions: dict[NodeKey, int | None] = field(default_factory=dict)  # bdSeq of each touched node's session
    # Shared subscriptions: batch ids of the messages kept whole, per (node, session generation), for the ack
    # ledger (cloud/host/shared.py); the acks then come from the ledger, computed in the batch's transaction.
    ledger: dict[tuple[NodeKey, int], list[int]] = field(default_factory=dict)
    samples: int = 0
    started: float = field(default_factory=time.monotonic)
    births: list[Columns] = field(default_factory=list)
    _columns: Columns | None = None

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
        return not (
            self.samples or self.text_rows or self.exact_rows or self.held or self.dead_letters or self.health
            or self.acks or self.births or self.ledger
        )

    def columns(self) -> Columns:
        """The numeric samples concatenated and sorted by (tag, ts), computed once per batch."""
        if self._columns is None:
            if not self.tag:
                empty = np.zeros(0, np.int64)
                self._columns = Columns(
                    empty.astype(np.int32), empty, empty.astype(np.float64), empty.astype(np.bool_),
                    empty.astype(np.int16), empty.astype(np.bool_),
                )
            else:
                tag = np.concatenate(self.tag)
                ts = np.concatenate(self.ts_ms)
                # (tag, ts) order: btree inserts into neighbouring leaf pages, and "latest" is a last-per-run.
                order = np.lexsort((ts, tag))
                tag, ts = tag[order], ts[order]
                # A (tag, ts) repeated inside the batch keeps its first arrival, as ON CONFLICT would.
                first = np.ones(len(tag), np.bool_)
                first[1:] = (tag[1:] != tag[:-1]) | (ts[1:] != ts[:-1])
                order = order[first]
                self._columns = Columns(
                    tag[first], ts[first], np.concatenate(self.value)[order], np.concatenate(self.null)[order],
                    np.concatenate(self.quality)[order], np.concatenate(self.live)[order],
                )
        return self._columns

    def numeric_copy_data(self) -> bytes:
        """The numeric samples as one PostgreSQL binary COPY stream for the staging table."""
        c = self.columns()
        if not len(c.tag):
            return _COPY_HEADER + _COPY_TRAILER
        ts_us = (c.ts_ms - _PG_EPOCH_MS) * 1000
        parts = [_COPY_HEADER]
        for dtype, mask in ((_ROW, ~c.null), (_ROW_NULL, c.null)):
            count = int(mask.sum())
            if not count:
                continue
            rows = np.empty(count, dtype)
            rows["nf"] = 5
            rows["l_ts"] = 8
            rows["ts"] = ts_us[mask]
            rows["l_tag"] = 4
            rows["tag"] = c.tag[mask]
            if dtype is _ROW:
                rows["l_val"] = 8
                rows["val"] = c.value[mask]
            else:
                rows["l_val"] = -1
            rows["l_q"] = 2
            rows["q"] = c.quality[mask]
            rows["l_live"] = 1
            rows["live"] = c.live[mask]
            parts.append(rows.tobytes())
        parts.append(_COPY_TRAILER)
        return b"".join(parts)

    def add_birth_values(
        self,
        tag: npt.NDArray[np.int32],
        ts_ms: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        null: npt.NDArray[np.bool_],
        quality: npt.NDArray[np.int16],
    ) -> None:
        """Current values from a birth: they move "latest" but are not historized (the edge's outbox
        delivers every observation as DATA; a birth repeats the last one, possibly with a new timestamp).
        A null birth value says "not known yet", so it never replaces a real latest value."""
        keep = ~null
        if keep.any():
            self.births.append(
                Columns(tag[keep], ts_ms[keep], value[keep], null[keep], quality[keep], np.ones(int(keep.sum()), np.bool_))
            )

    def latest(self) -> Columns:
        """The newest live value of every tag in the batch (historical samples never count)."""
        c = self.columns()
        idx = np.flatnonzero(c.live)
        if self.births:
            parts = [Columns(*(col[idx] for col in c)), *self.births]  # type: ignore[arg-type]
            merged = [np.concatenate([p[i] for p in parts]) for i in range(6)]
            order = np.lexsort((merged[1], merged[0]))
            c = Columns(*(col[order] for col in merged))
            idx = np.arange(len(order))
        tags = c.tag[idx]
        last = idx[np.append(tags[1:] != tags[:-1], True)] if len(idx) else idx
        return Columns(c.tag[last], c.ts_ms[last], c.value[last], c.null[last], c.quality[last], c.live[last])
