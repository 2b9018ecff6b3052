"""The durable outbox: every sample block is appended to disk before it is published, kept until acknowledged.

Files in the outbox directory:
- `{first_position:020d}.seg`: append-only segments of records (`edge.outbox.records`), rolled at
  `segment_bytes`, deleted once every record in them is released.
- `state.json`: the released watermark (first position not yet released) and the reserved batch ids.
- `lock`: an exclusive `flock`, so two agents never share one outbox.

Lifecycle of a record: `append` (written to the OS at once; fsync at most every `fsync_interval_s`) ->
published live (`take_live`) or replayed as history after a (re)birth (`begin_session`, `take_replay`) ->
`mark_published(positions, batch)` -> released by `ack(batch)` once a batch id >= the one it was published in
is acknowledged, in position order (a contiguous watermark). A (re)birth clears every mark, so only a batch of
the current session releases records, and an ack beyond the last batch id handed out releases nothing.

Policy when full: `append` refuses the new block with `OutboxFullError` and counts it in `rejected_samples`;
data already in the outbox is never dropped to make room, because none of it is acknowledged yet.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from zhizao.edge.node.config import OutboxConfig
from zhizao.edge.outbox.records import (
    RecordError,
    RecordInfo,
    encode_record,
    iter_segment_blocks,
    read_record,
    scan_segment,
)
from zhizao.edge.samples import SampleBlock

log = logging.getLogger(__name__)

# Batch ids reserved per state write; a restart skips the unused rest, so ids stay strictly increasing.
BATCH_RESERVE = 100_000
_SUFFIX = ".seg"


class OutboxError(Exception):
    """The outbox cannot be opened or written (locked by another agent, disk error)."""


class OutboxFullError(OutboxError):
    """The disk budget is spent: the new block was refused (never silently dropped)."""


@dataclass
class _Segment:
    path: Path
    size: int
    last_position: int


class Outbox:
    """Durable store-and-forward of `SampleBlock`s with batch acknowledgements (see module docstring)."""

    def __init__(self, directory: Path, config: OutboxConfig, label: str = "") -> None:
        self.dir = Path(directory)
        self.config = config
        self.label = label or str(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise OutboxError(f"outbox {self.dir} is in use by another process") from None
        # Record index, one entry per unreleased record (lists from `_head` on; compacted now and then).
        self._pos: list[int] = []
        self._n: list[int] = []
        self._seg: list[int] = []
        self._off: list[int] = []
        self._len: list[int] = []
        self._pub: list[int] = []  # lowest batch id the record was published in, 0 = not yet
        self._head = 0
        self._segments: dict[int, _Segment] = {}
        self._read_fds: dict[int, int] = {}
        self._write_fd: int | None = None
        self._write_seg: int | None = None
        self._bytes = 0
        self._depth = 0
        self.rejected_samples = 0
        self.appended_samples = 0
        self._warned = False
        self._full_logged = False
        self._last_sync = time.monotonic()
        self._dirty = False
        self._live_on = False
        self._live_blocks: list[SampleBlock] = []
        self._live_pos: list[int] = []
        self._replay_pos = 0
        self._replay_end = 0
        state = self._load_state()
        self._released = int(state.get("released", 0))
        self._load_segments()
        last = self._pos[-1] + 1 if self._pos else 0
        self._next_pos = max(last, self._released)
        self._next_batch = max(int(state.get("batch_reserved", 1)), 1)
        self._reserved = self._next_batch
        self._reserve_batches()

    # ---- startup -------------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, int]:
        path = self.dir / "state.json"
        if not path.exists():
            return {}
        try:
            doc = json.loads(path.read_text())
            return {k: int(doc[k]) for k in ("released", "batch_reserved")}
        except (ValueError, KeyError, TypeError) as exc:
            # Losing the watermark only means replaying acked data again; batch ids resume past the segments.
            log.error("outbox %s: state.json unreadable (%s); replaying everything on disk", self.label, exc)
            return {}

    def _load_segments(self) -> None:
        for path in sorted(self.dir.glob(f"*{_SUFFIX}")):
            data = path.read_bytes()
            infos, valid, why = scan_segment(data)
            if why is not None:
                log.warning(
                    "outbox %s: dropped %d bytes of torn/corrupt tail in %s (%s)",
                    self.label,
                    len(data) - valid,
                    path.name,
                    why,
                )
                with open(path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            keep = [
                i
                for i in infos
                if i.position >= self._released and (not self._pos or i.position > self._pos[-1])
            ]
            if not keep:
                path.unlink()
                continue
            seg_id = int(path.stem)
            self._segments[seg_id] = _Segment(path, valid, keep[-1].position)
            self._bytes += valid
            for info in keep:
                self._index(info.position, info.n, seg_id, info.offset, info.length)
        if self._pos:
            log.info("outbox %s: %d samples in %d records to replay", self.label, self._depth, len(self._pos))

    def _index(self, position: int, n: int, seg: int, off: int, length: int) -> None:
        self._pos.append(position)
        self._n.append(n)
        self._seg.append(seg)
        self._off.append(off)
        self._len.append(length)
        self._pub.append(0)
        self._depth += n

    def _save_state(self, durable: bool) -> None:
        tmp = self.dir / "state.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"released": self._released, "batch_reserved": self._reserved}, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / "state.json")

    def _reserve_batches(self) -> None:
        self._reserved = self._next_batch + BATCH_RESERVE
        self._save_state(durable=True)

    # ---- append --------------------------------------------------------------------------------------
    def append(self, block: SampleBlock) -> int:
        """Write a block durably (to the OS now, fsync on the interval); return its position, -1 if empty."""
        n = len(block)
        if n == 0:
            return -1
        position = self._next_pos
        record = encode_record(position, block)
        if self._bytes + len(record) > self.config.max_bytes:
            self.rejected_samples += n
            if not self._full_logged:
                self._full_logged = True
                log.error(
                    "outbox %s: FULL (%d of %d bytes); refusing new samples until the host acknowledges",
                    self.label,
                    self._bytes,
                    self.config.max_bytes,
                )
            raise OutboxFullError(
                f"outbox {self.label} is full ({self._bytes} of {self.config.max_bytes} bytes)"
            )
        fd, seg = self._writer()
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._segments[seg].size)  # no half record left behind
            raise OutboxError(f"outbox {self.label}: write failed: {exc}") from exc
        segment = self._segments[seg]
        self._index(position, n, seg, segment.size, len(record))
        segment.size += len(record)
        segment.last_position = position
        self._bytes += len(record)
        self._next_pos = position + 1
        self.appended_samples += n
        self._dirty = True
        if self._live_on:
            self._live_blocks.append(block)
            self._live_pos.append(position)
        self._check_budget()
        self.maybe_sync()
        return position

    def _writer(self) -> tuple[int, int]:
        if self._write_fd is not None and self._write_seg is not None:
            if self._segments[self._write_seg].size < self.config.segment_bytes:
                return self._write_fd, self._write_seg
            self._close_writer()
        seg = self._next_pos
        path = self.dir / f"{seg:020d}{_SUFFIX}"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._write_seg = seg
        self._segments[seg] = _Segment(path, 0, seg)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name survives power loss
        finally:
            os.close(dir_fd)
        return self._write_fd, seg

    def _close_writer(self) -> None:
        if self._write_fd is not None:
            if self._dirty:
                os.fsync(self._write_fd)
                self._dirty = False
            os.close(self._write_fd)
        self._write_fd = None
        self._write_seg = None

    def _check_budget(self) -> None:
        fill = self._bytes / self.config.max_bytes
        if fill >= self.config.warn_fraction and not self._warned:
            self._warned = True
            log.warning(
                "outbox %s: %.0f%% of its disk budget used (%d of %d bytes); is the host acknowledging?",
                self.label,
                100 * fill,
                self._bytes,
                self.config.max_bytes,
            )
        elif fill < self.config.warn_fraction and self._warned:
            self._warned = False
            self._full_logged = False
            log.info(
                "outbox %s: back below %.0f%% of its disk budget", self.label, 100 * self.config.warn_fraction
            )

    def maybe_sync(self) -> None:
        """fsync the open segment if data is pending and the interval has passed (power-loss window)."""
        if not self._dirty or self._write_fd is None:
            return
        now = time.monotonic()
        if now - self._last_sync >= self.config.fsync_interval_s:
            os.fsync(self._write_fd)
            self._dirty = False
            self._last_sync = now

    # ---- publishing ----------------------------------------------------------------------------------
    def begin_session(self) -> None:
        """A (re)birth: everything not yet released is history to replay; later appends are live.

        Publication marks of earlier sessions are cleared: only a batch of this session, acknowledged after
        the host committed it, may release a record (a late ack of an old batch releases nothing)."""
        for i in range(self._head, len(self._pub)):
            self._pub[i] = 0
        self._replay_pos = self._pos[self._head] if self._head < len(self._pos) else self._next_pos
        self._replay_end = self._next_pos
        self._live_on = True
        self._live_blocks.clear()
        self._live_pos.clear()

    def end_session(self) -> None:
        """The session is gone: stop keeping live blocks in memory (they stay on disk for the next replay)."""
        self._live_on = False
        self._live_blocks.clear()
        self._live_pos.clear()

    def take_live(self) -> tuple[SampleBlock, list[int]]:
        """Blocks appended since the last call in this session, joined, with their record positions."""
        block = SampleBlock.concat(self._live_blocks)
        positions = self._live_pos
        self._live_blocks = []
        self._live_pos = []
        return block, positions

    @property
    def replay_pending(self) -> bool:
        """True while history of the current session remains to be replayed."""
        return self._replay_pos < self._replay_end

    def take_replay(self, max_samples: int) -> tuple[SampleBlock, list[int]]:
        """The next records of history (at least one, about `max_samples` samples), read back from disk."""
        blocks: list[SampleBlock] = []
        positions: list[int] = []
        total = 0
        i = max(bisect.bisect_left(self._pos, self._replay_pos, lo=self._head), self._head)
        while i < len(self._pos) and self._pos[i] < self._replay_end and (total < max_samples or not blocks):
            try:
                block = read_record(self._read_fd(self._seg[i]), self._record_info(i))
            except (RecordError, OSError) as exc:
                # Corrupt after start-up (disk fault): count it as delivered so the watermark moves on.
                log.error("outbox %s: record %d unreadable (%s); skipped", self.label, self._pos[i], exc)
                self._pub[i] = self._pub[i] or 1
                i += 1
                continue
            blocks.append(block)
            positions.append(self._pos[i])
            total += len(block)
            i += 1
        self._replay_pos = self._pos[i] if i < len(self._pos) else self._replay_end
        return SampleBlock.concat(blocks), positions

    def _record_info(self, i: int) -> RecordInfo:
        return RecordInfo(self._pos[i], self._off[i], self._len[i], self._n[i])

    def _read_fd(self, seg: int) -> int:
        fd = self._read_fds.get(seg)
        if fd is None:
            fd = os.open(self._segments[seg].path, os.O_RDONLY)
            self._read_fds[seg] = fd
        return fd

    def next_batch(self) -> int:
        """A new batch id, strictly greater than every id handed out before (also across restarts)."""
        batch = self._next_batch
        self._next_batch += 1
        if self._next_batch >= self._reserved:
            self._reserve_batches()
        return batch

    @property
    def last_batch(self) -> int:
        """The most recent batch id handed out (0 before the first)."""
        return self._next_batch - 1

    def mark_published(self, positions: list[int], batch: int) -> None:
        """Record that these records went out in `batch` (an ack >= batch releases them)."""
        pos = self._pos
        for p in positions:
            i = bisect.bisect_left(pos, p, lo=self._head)
            if i < len(pos) and pos[i] == p and self._pub[i] == 0:
                self._pub[i] = batch

    def ack(self, batch: int) -> int:
        """Release every record, in order, published in a batch <= `batch`; return the samples released.

        An ack for a batch id this outbox never handed out is refused (logged, nothing released): the host can
        only acknowledge what this edge sent."""
        if batch > self.last_batch:
            log.warning("outbox %s: ignored an ack for batch %d, beyond the last batch sent (%d)",
                        self.label, batch, self.last_batch)  # fmt: skip
            return 0
        released = 0
        i = self._head
        while i < len(self._pos) and 0 < self._pub[i] <= batch:
            released += self._n[i]
            i += 1
        if i == self._head:
            return 0
        self._head = i
        self._depth -= released
        self._released = self._pos[i] if i < len(self._pos) else self._next_pos
        self._save_state(durable=False)
        self._drop_released_segments()
        if self._head > 1024 and self._head * 2 > len(self._pos):
            for lst in (self._pos, self._n, self._seg, self._off, self._len, self._pub):
                del lst[: self._head]
            self._head = 0
        return released

    def _drop_released_segments(self) -> None:
        for seg_id in [s for s, seg in self._segments.items() if seg.last_position < self._released]:
            if seg_id == self._write_seg:
                self._close_writer()
            fd = self._read_fds.pop(seg_id, None)
            if fd is not None:
                os.close(fd)
            segment = self._segments.pop(seg_id)
            self._bytes -= segment.size
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()
        self._check_budget()

    # ---- health and shutdown -------------------------------------------------------------------------
    def oldest_sample_ms(self) -> int | None:
        """Epoch ms of the oldest sample not yet released (read from disk: for health reports, not hot paths)."""
        if self._head >= len(self._pos):
            return None
        try:
            block = read_record(self._read_fd(self._seg[self._head]), self._record_info(self._head))
        except (RecordError, OSError):
            return None
        return int(block.ts_ms.min()) if len(block) else None

    @property
    def depth_samples(self) -> int:
        """Samples not yet released."""
        return self._depth

    @property
    def depth_bytes(self) -> int:
        """Bytes of segment files on disk (what the budget counts)."""
        return self._bytes

    def close(self) -> None:
        """fsync and close every file; safe to call twice."""
        self._close_writer()
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def read_outbox(directory: Path) -> list[tuple[int, SampleBlock]]:
    """(position, block) of every valid record on disk, in order (inspection and tests; no lock taken)."""
    out: list[tuple[int, SampleBlock]] = []
    for path in sorted(Path(directory).glob(f"*{_SUFFIX}")):
        out.extend(iter_segment_blocks(path))
    return out
