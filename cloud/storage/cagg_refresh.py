"""Off-the-hot-path refresh of continuous aggregates for rows written older than the policies look back.

The refresh policies recompute only the last `refresh_1m_lookback` / `refresh_1h_lookback`, and real-time
aggregation only adds rows newer than the last refresh. Rows committed further back (an edge outbox
replaying old data) would stay out of `samples_1m` / `samples_1h` for ever. `AggregateRefresher.note` is a
commit listener: it only compares the batch's oldest time with a threshold and, for an old batch, records
its range. A background thread coalesces the ranges and refreshes them on its own autocommit connection,
so the ingest never waits for it. At start it also refreshes once over everything the policies do not
cover, which picks up old rows whose refresh a previous process did not get to (TimescaleDB keeps their
invalidations, and a refresh with nothing invalidated costs milliseconds).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from zhizao.cloud.storage.db import StorageError, StorageUnavailable, translate_errors
from zhizao.cloud.storage.migrate import TimescaleHorizons
from zhizao.cloud.storage.timescale import AGGREGATES, HOUR_MS, bucket_span, refresh_aggregates

log = logging.getLogger(__name__)

_MAX_PENDING = 256  # ranges kept apart; beyond that they are merged into one span (still exact, just wider)
_RETENTION_MARGIN_MS = 24 * HOUR_MS  # at least this far inside the raw retention edge (chunks go whole)
_BUSY_RETRY_S = 1.0


class _Busy(Exception):
    """Another session (a policy job) is refreshing the same continuous aggregate."""


@dataclass(frozen=True)
class _Window:
    view: str
    width_ms: int
    uncovered_ms: int  # rows older than now - this are not refreshed by the view's policy


def _ms(conn: psycopg.Connection[tuple[object, ...]], interval: str) -> int:
    row = conn.execute("SELECT (extract(epoch FROM %s::interval) * 1000)::int8::text", [interval]).fetchone()
    assert row is not None
    return int(str(row[0]))


def coalesce(ranges: list[tuple[int, int]], width_ms: int) -> list[tuple[int, int]]:
    """Sorted union of [lo, hi) ranges after widening each to whole buckets (touching ranges merge)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(bucket_span(lo, hi, width_ms) for lo, hi in ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class AggregateRefresher:
    """Refreshes `samples_1m` / `samples_1h` over ranges of committed batches the policies will not reach.

    `note(tag, ts_ms, value)` is the commit listener (cheap, never blocks); `start()` resolves the horizons
    and starts the thread; `stop(timeout)` refreshes what is pending within `timeout`, then ends it.
    `flush(timeout)` waits until every range noted so far is refreshed (tests, tools).
    """

    def __init__(self, conninfo: str, horizons: TimescaleHorizons, *, retry_s: float = 5.0) -> None:
        self._conninfo = conninfo
        self._horizons = horizons
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[tuple[int, int]] = []
        self._noted = 0  # ranges noted so far; `_done` catches up when they are refreshed
        self._done = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._windows: tuple[_Window, ...] = ()
        self._trigger_ms = 0  # a batch older than now - this is handed to the thread
        self._floor_ms: int | None = None  # never refresh before now - this (raw retention), None: no floor
        self.refreshed_ranges = 0
        self.last_error: str | None = None

    def start(self) -> None:
        """Resolve the horizons to milliseconds (by PostgreSQL) and start the refresh thread."""
        with translate_errors(), psycopg.connect(self._conninfo, autocommit=True) as conn:
            windows = []
            for agg in AGGREGATES:
                lookback = _ms(conn, agg.lookback(self._horizons))
                every = _ms(conn, agg.every(self._horizons))
                # The policy's next run covers [now + every - lookback, ...]; older rows are ours.
                windows.append(_Window(agg.view, agg.width_ms, max(0, lookback - every)))
            retain = self._horizons.retain_raw_for
            if retain:
                margin = max(_RETENTION_MARGIN_MS, _ms(conn, self._horizons.chunk_interval))
                self._floor_ms = max(0, _ms(conn, retain) - margin)
        self._windows = tuple(windows)
        self._trigger_ms = min(w.uncovered_ms for w in self._windows)
        # Catch up once: old rows a previous process committed but did not get to refresh.
        now = int(time.time() * 1000)
        self._add((0, now - self._trigger_ms))
        self._thread = threading.Thread(target=self._run, name="zhizao-cagg-refresh", daemon=True)
        self._thread.start()

    def note(
        self, tag: npt.NDArray[np.int32], ts_ms: npt.NDArray[np.int64], value: npt.NDArray[np.float64]
    ) -> None:
        """Commit listener: queue the batch's time range when it reaches older than a policy looks back."""
        if not len(ts_ms):
            return
        lo = int(ts_ms.min())
        if lo >= int(time.time() * 1000) - self._trigger_ms:
            return  # live data: the policies and real-time aggregation cover it
        self._add((lo, int(ts_ms.max()) + 1))

    def _add(self, span: tuple[int, int]) -> None:
        with self._lock:
            self._pending.append(span)
            if len(self._pending) > _MAX_PENDING:
                self._pending = [(min(p[0] for p in self._pending), max(p[1] for p in self._pending))]
            self._noted += 1
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until every range noted before this call is refreshed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            target = self._noted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._idle.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Refresh what is pending within `timeout`, then stop the thread and close its connection."""
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(1.0, timeout))
        if self._conn is not None and (self._thread is None or not self._thread.is_alive()):
            self._conn.close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                taken, self._pending = self._pending, []
                noted = self._noted
            if not taken:
                continue
            try:
                self._refresh(taken)
            except _Busy:
                # A policy job refreshes the same aggregate right now (TimescaleDB refuses two at once).
                with self._lock:
                    self._pending.extend(taken)
                self._sleep(_BUSY_RETRY_S)
                self._wake.set()
                continue
            except StorageUnavailable as exc:
                # The database is away: keep the ranges and try again later.
                self._record_error(exc)
                with self._lock:
                    self._pending.extend(taken)
                self._sleep(self._retry_s)
                self._wake.set()
                continue
            except StorageError as exc:
                # Not a connectivity problem: retrying the same ranges would fail again. The invalidations
                # stay in TimescaleDB, so the catch-up at the next start gets them.
                self._record_error(exc)
            except Exception:  # a bug here must not end the thread: later ranges still deserve a refresh
                log.exception("refreshing continuous aggregates failed")
            with self._idle:
                self._done = max(self._done, noted)
                self._idle.notify_all()
        if self._conn is not None:
            self._conn.close()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))

    def _record_error(self, exc: StorageError) -> None:
        if self.last_error is None:
            log.warning("refreshing continuous aggregates for old rows failed: %s", exc)
        self.last_error = str(exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _refresh(self, ranges: list[tuple[int, int]]) -> None:
        now = int(time.time() * 1000)
        floor = None if self._floor_ms is None else now - self._floor_ms
        with translate_errors():
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
            for window in self._windows:
                # Only what this view's policy will not reach, and never where retention already dropped
                # raw chunks (a refresh there would replace kept aggregates with what is left).
                edge = now - window.uncovered_ms
                clipped = [(lo if floor is None else max(lo, floor), min(hi, edge)) for lo, hi in ranges]
                for lo, hi in coalesce([(lo, hi) for lo, hi in clipped if lo < hi], window.width_ms):
                    try:
                        refresh_aggregates(self._conn, lo, hi, (window.view,))
                    except psycopg.errors.LockNotAvailable as exc:
                        raise _Busy from exc
                    self.refreshed_ranges += 1
        if self.last_error is not None:
            log.warning("refreshing continuous aggregates works again")
            self.last_error = None
