"""Plain-PostgreSQL rollups: a thread recomputing the 1-minute and 1-hour buckets that commits touched.

Each refresh recomputes whole buckets from their source (minutes from `samples`, hours from
`samples_1m`), so it is exact and idempotent whatever was replayed or duplicated; it runs after the
commit, off the path that acknowledges data, and coalesces what several batches touched.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from psycopg_pool import ConnectionPool

from cloud.storage.db import StorageError, translate_errors

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_MAX_SPAN_MS = 6 * _HOUR_MS  # a wide replay is refreshed in slices, so one statement stays small

REFRESH_1M = """INSERT INTO samples_1m AS r (bucket, tag_id, min, max, sum, count, last, last_ts)
SELECT date_trunc('minute', ts), tag_id, min(value), max(value), coalesce(sum(value), 0), count(value),
       (array_agg(value ORDER BY ts DESC))[1], max(ts)
FROM samples WHERE tag_id = ANY(%(tags)s) AND ts >= %(lo)s AND ts < %(hi)s
GROUP BY 1, 2
ON CONFLICT (tag_id, bucket) DO UPDATE SET min = excluded.min, max = excluded.max, sum = excluded.sum,
    count = excluded.count, last = excluded.last, last_ts = excluded.last_ts"""

REFRESH_1H = """INSERT INTO samples_1h AS r (bucket, tag_id, min, max, sum, count, last, last_ts)
SELECT date_trunc('hour', bucket), tag_id, min(min), max(max), sum(sum), sum(count),
       (array_agg(last ORDER BY last_ts DESC))[1], max(last_ts)
FROM samples_1m WHERE tag_id = ANY(%(tags)s) AND bucket >= %(lo)s AND bucket < %(hi)s
GROUP BY 1, 2
ON CONFLICT (tag_id, bucket) DO UPDATE SET min = excluded.min, max = excluded.max, sum = excluded.sum,
    count = excluded.count, last = excluded.last, last_ts = excluded.last_ts"""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def refresh(conn_pool: ConnectionPool, tags: npt.NDArray[np.int32], min_ms: int, max_ms: int) -> None:
    """Recompute every 1 m and 1 h bucket of `tags` overlapping [min_ms, max_ms] (one transaction per slice)."""
    tag_list = tags.tolist()
    lo = min_ms - min_ms % _HOUR_MS
    end = max_ms - max_ms % _HOUR_MS + _HOUR_MS
    with translate_errors():
        while lo < end:
            hi = min(end, lo + _MAX_SPAN_MS)
            # Minutes only where data may have changed; hours are cheap to rebuild from their minutes.
            m_lo = max(lo, min_ms - min_ms % _MINUTE_MS)
            m_hi = min(hi, max_ms - max_ms % _MINUTE_MS + _MINUTE_MS)
            with conn_pool.connection() as conn, conn.transaction():
                conn.execute(REFRESH_1M, {"tags": tag_list, "lo": _dt(m_lo), "hi": _dt(m_hi)})
                conn.execute(REFRESH_1H, {"tags": tag_list, "lo": _dt(lo), "hi": _dt(hi)})
            lo = hi


class RollupRefresher:
    """Background thread: coalesce (tags, time range) from committed batches and refresh their buckets."""

    def __init__(self, pool: ConnectionPool, *, retry_s: float = 1.0) -> None:
        self._pool = pool
        self._retry_s = retry_s
        self._cond = threading.Condition()
        self._tags: list[npt.NDArray[np.int32]] = []
        self._range: tuple[int, int] | None = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="zhizao-rollups", daemon=True)
        self.refreshes = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def submit(self, tags: npt.NDArray[np.int32], min_ms: int, max_ms: int) -> None:
        """Note buckets touched by a commit (cheap; never blocks on the database)."""
        with self._cond:
            self._tags.append(tags)
            lo, hi = self._range or (min_ms, max_ms)
            self._range = (min(lo, min_ms), max(hi, max_ms))
            self._cond.notify()

    def idle(self) -> bool:
        """Nothing pending and nothing running."""
        with self._cond:
            return self._range is None and not self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted range is refreshed (tests, clean shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Refresh what is pending, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._range is None and not self._stopping:
                    self._cond.wait()
                if self._range is None:
                    return
                tags = np.unique(np.concatenate(self._tags)).astype(np.int32)
                lo, hi = self._range
                self._tags, self._range, self._busy = [], None, True
            try:
                refresh(self._pool, tags, lo, hi)
                self.refreshes += 1
            except StorageError as exc:
                log.warning("rollup refresh failed, retrying: %s", exc)
                time.sleep(self._retry_s)
                self.submit(tags, lo, hi)
                if self._stopping:
                    with self._cond:
                        self._busy = False
                    return
            finally:
                with self._cond:
                    self._busy = False
