"""Rebuild plain-PostgreSQL rollup buckets from `samples` (bulk loads, repairs, a backend switch).

The ingest keeps rollups current by itself (`cloud.storage.plain`: merged in each inserting
transaction). `refresh` recomputes whole buckets from their source instead: minutes from `samples`,
hours from `samples_1m`. It sets absolute values, so run it for buckets no ingest is writing at the
same moment (a bulk-loaded history, a repair), not alongside live ingest of the same buckets.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from psycopg_pool import ConnectionPool

from zhizao.cloud.storage.db import translate_errors

_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_MAX_SPAN_MS = 6 * _HOUR_MS  # a wide range is rebuilt in slices, so one statement stays small

REFRESH_1M = """INSERT INTO samples_1m AS r (bucket, tag_id, min, max, sum, count, last, last_ts)
SELECT date_trunc('minute', ts, 'UTC'), tag_id, min(value), max(value), coalesce(sum(value), 0), count(value),
       (array_agg(value ORDER BY ts DESC))[1], max(ts)
FROM samples WHERE tag_id = ANY(%(tags)s) AND ts >= %(lo)s AND ts < %(hi)s
GROUP BY 1, 2
ON CONFLICT (tag_id, bucket) DO UPDATE SET min = excluded.min, max = excluded.max, sum = excluded.sum,
    count = excluded.count, last = excluded.last, last_ts = excluded.last_ts"""

REFRESH_1H = """INSERT INTO samples_1h AS r (bucket, tag_id, min, max, sum, count, last, last_ts)
SELECT date_trunc('hour', bucket, 'UTC'), tag_id, min(min), max(max), sum(sum), sum(count),
       (array_agg(last ORDER BY last_ts DESC))[1], max(last_ts)
FROM samples_1m WHERE tag_id = ANY(%(tags)s) AND bucket >= %(lo)s AND bucket < %(hi)s
GROUP BY 1, 2
ON CONFLICT (tag_id, bucket) DO UPDATE SET min = excluded.min, max = excluded.max, sum = excluded.sum,
    count = excluded.count, last = excluded.last, last_ts = excluded.last_ts"""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def refresh(pool: ConnectionPool, tags: npt.NDArray[np.int32], min_ms: int, max_ms: int) -> None:
    """Recompute every 1 m and 1 h bucket of `tags` overlapping [min_ms, max_ms] (one transaction per slice)."""
    tag_list = np.unique(tags).tolist()
    lo = min_ms - min_ms % _HOUR_MS
    end = max_ms - max_ms % _HOUR_MS + _HOUR_MS
    with translate_errors():
        while lo < end:
            hi = min(end, lo + _MAX_SPAN_MS)
            with pool.connection() as conn, conn.transaction():
                conn.execute(REFRESH_1M, {"tags": tag_list, "lo": _dt(lo), "hi": _dt(hi)})
                conn.execute(REFRESH_1H, {"tags": tag_list, "lo": _dt(lo), "hi": _dt(hi)})
            lo = hi
