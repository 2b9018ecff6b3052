"""TimescaleDB backend: hypertables, compression, retention and continuous aggregates (1 min, 1 h).

`setup` runs at every start under the migration lock and is idempotent: tables become hypertables once
(`migrate_data`, so a database that started on plain PostgreSQL keeps its rows), every policy is removed
and added again so changed horizons apply, and plain rollup tables left from plain PostgreSQL are replaced
by continuous aggregates materialized over the whole history at once.

The refresh policies only look back `refresh_1m_lookback` / `refresh_1h_lookback`; rows written further
back (an edge outbox replaying old data) reach the aggregates through `refresh_aggregates`, which the
ingest calls off its hot path (`cloud.storage.cagg_refresh`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from zhizao.cloud.storage.db import StorageError

if TYPE_CHECKING:
    from zhizao.cloud.storage.migrate import TimescaleHorizons

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Aggregate:
    """One continuous aggregate over `samples` and the horizons that drive its refresh policy."""

    view: str
    width: str  # time_bucket width
    width_ms: int

    def every(self, h: TimescaleHorizons) -> str:
        """How often the refresh policy runs."""
        return h.refresh_1m_every if self.view == "samples_1m" else h.refresh_1h_every

    def lookback(self, h: TimescaleHorizons) -> str:
        """How far back the refresh policy recomputes (its start_offset)."""
        return h.refresh_1m_lookback if self.view == "samples_1m" else h.refresh_1h_lookback

    def retain(self, h: TimescaleHorizons) -> str | None:
        """Retention of the aggregate itself (None: kept for ever)."""
        return h.retain_1m_for if self.view == "samples_1m" else h.retain_1h_for

    def fields(self) -> tuple[str, str]:
        """Names of the horizon fields behind `every` and `lookback`, for error messages."""
        suffix = "1m" if self.view == "samples_1m" else "1h"
        return f"refresh_{suffix}_every", f"refresh_{suffix}_lookback"


# Further (tag_id, ts) time series that become hypertables with the samples' policies: the anomaly scores
# of condition monitoring (migration 0008), the exact 64-bit integers (0013).
HYPERTABLES_EXTRA = ("anomaly_scores", "samples_int")

AGGREGATES = (Aggregate("samples_1m", "1 minute", 60_000), Aggregate("samples_1h", "1 hour", HOUR_MS))

Conn = psycopg.Connection[tuple[object, ...]]


def _one(conn: Conn, query: str, params: list[object]) -> object:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _is_hypertable(conn: Conn, table: str) -> bool:
    return bool(
        _one(
            conn,
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            [table],
        )
    )


def _compression_enabled(conn: Conn, table: str) -> bool:
    return bool(
        _one(
            conn,
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            [table],
        )
    )


def _relkind(conn: Conn, name: str) -> str | None:
    kind = _one(
        conn,
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname = current_schema()",
        [name],
    )
    return None if kind is None else str(kind)


def _is_cagg(conn: Conn, name: str) -> bool:
    return bool(
        _one(
            conn,
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
            [name],
        )
    )


def is_converted(conn: Conn) -> bool:
    """True when `samples` is a hypertable (the database already runs on TimescaleDB)."""
    if not _one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'", []):
        return False
    return _is_hypertable(conn, "samples")


def setup(conn: Conn, horizons: TimescaleHorizons) -> None:
    """Turn the core tables into hypertables and (re)apply every policy from `horizons` (autocommit conn)."""
    for table in ("samples", "samples_text", *HYPERTABLES_EXTRA):
        _setup_hypertable(conn, table, horizons)
    for agg in AGGREGATES:
        _setup_cagg(conn, agg, horizons)


def _setup_hypertable(conn: Conn, table: str, horizons: TimescaleHorizons) -> None:
    if not _is_hypertable(conn, table):
        rows = _one(conn, f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1) AS x", [])
        if rows:
            log.warning(
                "converting %s into a hypertable; its rows are moved into chunks (takes a while)", table
            )
        # migrate_data: a database that started on plain PostgreSQL keeps its rows. No default index on
        # ts: the unique (tag_id, ts) index serves per-tag reads and ON CONFLICT, chunks bound time scans.
        _policy(
            conn,
            "SELECT create_hypertable(%s::regclass, 'ts', chunk_time_interval => %s::interval,"
            " create_default_indexes => false, if_not_exists => true, migrate_data => true)",
            [table, horizons.chunk_interval],
            "chunk_interval",
            horizons.chunk_interval,
        )
        log.info("%s is now a hypertable (chunks of %s)", table, horizons.chunk_interval)
    else:
        _policy(
            conn,
            "SELECT set_chunk_time_interval(%s::regclass, %s::interval)",
            [table, horizons.chunk_interval],
            "chunk_interval",
            horizons.chunk_interval,
        )
    if not _compression_enabled(conn, table):
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = 'tag_id', timescaledb.compress_orderby = 'ts')"
            ).format(sql.Identifier(table))
        )
    # Remove then add: a changed horizon in the settings takes effect at the next start.
    conn.execute("SELECT remove_compression_policy(%s::regclass, if_exists => true)", [table])
    if horizons.compress_after:
        _policy(
            conn,
            "SELECT add_compression_policy(%s::regclass, compress_after => %s::interval)",
            [table, horizons.compress_after],
            "compress_after",
            horizons.compress_after,
        )
    conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", [table])
    if horizons.retain_raw_for:
        _policy(
            conn,
            "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
            [table, horizons.retain_raw_for],
            "retain_raw_for",
            horizons.retain_raw_for,
        )


def _policy(conn: Conn, query: str, params: list[object], field: str, value: str) -> None:
    """Run one setup call; a value TimescaleDB refuses becomes an error naming the horizon and its value."""
    try:
        conn.execute(query, params)
    except psycopg.DataError as exc:
        raise StorageError(f"TimescaleDB horizon {field}={value!r} refused: {exc}".strip()) from exc


def _setup_cagg(conn: Conn, agg: Aggregate, horizons: TimescaleHorizons) -> None:
    view = agg.view
    if _relkind(conn, view) is not None and not _is_cagg(conn, view):
        # Left over from running on plain PostgreSQL: derived data only, rebuilt below from samples.
        log.warning("dropping the plain rollup table %s: a continuous aggregate replaces it", view)
        conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(view)))
    created = not _is_cagg(conn, view)
    if created:
        conn.execute(
            sql.SQL(
                "CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS"
                " SELECT time_bucket({width}::interval, ts) AS bucket, tag_id,"
                " min(value) AS min, max(value) AS max, avg(value) AS avg,"
                " last(value, ts) AS last, count(value) AS count"
                " FROM samples GROUP BY bucket, tag_id WITH NO DATA"
            ).format(view=sql.Identifier(view), width=sql.Literal(agg.width))
        )
        # The refresh policy only looks back a little: materialize the whole history once, or rows older
        # than the lookback would vanish from the aggregate as soon as the policy moves its watermark.
        if _one(conn, "SELECT count(*) FROM (SELECT 1 FROM samples LIMIT 1) AS x", []):
            log.warning("materializing %s over the whole history of samples", view)
            conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", [view])
    # Real-time aggregation: queries see the newest rows before the next refresh.
    conn.execute(
        sql.SQL("ALTER MATERIALIZED VIEW {} SET (timescaledb.materialized_only = false)").format(
            sql.Identifier(view)
        )
    )
    every, lookback = agg.every(horizons), agg.lookback(horizons)
    conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)", [view])
    every_field, lookback_field = agg.fields()
    try:
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval,"
            " end_offset => %s::interval, schedule_interval => %s::interval)",
            [view, lookback, agg.width, every],
        )
    except psycopg.Error as exc:
        raise StorageError(
            f"TimescaleDB horizons {lookback_field}={lookback!r}, {every_field}={every!r} refused for {view}"
            f" (the lookback must span at least two {agg.width} buckets more than the newest bucket): {exc}"
        ) from exc
    retain = agg.retain(horizons)
    conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", [view])
    if retain:
        suffix = "1m" if view == "samples_1m" else "1h"
        _policy(
            conn,
            "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
            [view, retain],
            f"retain_{suffix}_for",
            retain,
        )


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def refresh_aggregates(conn: Conn, start_ms: int, end_ms: int, views: tuple[str, ...] | None = None) -> None:
    """Recompute the continuous aggregates (or those in `views`) over [start_ms, end_ms), in whole buckets.

    `conn` must be in autocommit mode: `refresh_continuous_aggregate` refuses to run inside a transaction
    block. Only ranges with changes since the last refresh are recomputed, so a repeated call is cheap.
    """
    if not conn.autocommit:
        raise StorageError(
            "refresh_aggregates needs an autocommit connection (it cannot run in a transaction)"
        )
    for agg in AGGREGATES:
        if views is None or agg.view in views:
            lo, hi = bucket_span(start_ms, end_ms, agg.width_ms)
            conn.execute(
                "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, %s::timestamptz)",
                [agg.view, _dt(lo), _dt(hi)],
            )


def bucket_span(start_ms: int, end_ms: int, width_ms: int) -> tuple[int, int]:
    """[start, end) widened to whole buckets of `width_ms` (at least one bucket)."""
    lo = start_ms - start_ms % width_ms
    hi = -(-end_ms // width_ms) * width_ms
    return lo, max(hi, lo + width_ms)
