"""TimescaleDB backend: hypertables, compression, retention and continuous aggregates (1 min, 1 h)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from cloud.storage.migrate import TimescaleHorizons

log = logging.getLogger(__name__)

_CAGGS: dict[str, str] = {"samples_1m": "1 minute", "samples_1h": "1 hour"}


def _is_hypertable(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = %s", [table]
    ).fetchone()
    return bool(row and row[0])


def _compression_enabled(conn: psycopg.Connection[tuple[object, ...]], table: str) -> bool:
    row = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
        [table],
    ).fetchone()
    return bool(row and row[0])


def _relkind(conn: psycopg.Connection[tuple[object, ...]], name: str) -> str | None:
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname = current_schema()",
        [name],
    ).fetchone()
    return str(row[0]) if row else None


def _is_cagg(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE view_name = %s", [name]
    ).fetchone()
    return bool(row and row[0])


def setup(conn: psycopg.Connection[tuple[object, ...]], horizons: TimescaleHorizons) -> None:
    """Turn the core tables into hypertables and (re)apply every policy from `horizons` (autocommit conn)."""
    for table in ("samples", "samples_text"):
        if not _is_hypertable(conn, table):
            # migrate_data: a database that started on plain PostgreSQL keeps its rows.
            conn.execute(
                "SELECT create_hypertable(%s::regclass, 'ts', chunk_time_interval => %s::interval,"
                " if_not_exists => true, migrate_data => true)",
                [table, horizons.chunk_interval],
            )
            log.info("%s is now a hypertable (chunks of %s)", table, horizons.chunk_interval)
        else:
            conn.execute("SELECT set_chunk_time_interval(%s::regclass, %s::interval)", [table, horizons.chunk_interval])
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
            conn.execute(
                "SELECT add_compression_policy(%s::regclass, compress_after => %s::interval)",
                [table, horizons.compress_after],
            )
        conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", [table])
        if horizons.retain_raw_for:
            conn.execute(
                "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)", [table, horizons.retain_raw_for]
            )
    for view, width in _CAGGS.items():
        _setup_cagg(conn, view, width, horizons)


def _setup_cagg(
    conn: psycopg.Connection[tuple[object, ...]], view: str, width: str, horizons: TimescaleHorizons
) -> None:
    if _relkind(conn, view) is not None and not _is_cagg(conn, view):
        # Left over from running on plain PostgreSQL: derived data only, rebuilt below from samples.
        log.warning("dropping the plain rollup table %s: a continuous aggregate replaces it", view)
        conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(view)))
    conn.execute(
        sql.SQL(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} WITH (timescaledb.continuous) AS"
            " SELECT time_bucket({width}::interval, ts) AS bucket, tag_id,"
            " min(value) AS min, max(value) AS max, avg(value) AS avg,"
            " last(value, ts) AS last, count(value) AS count"
            " FROM samples GROUP BY bucket, tag_id WITH NO DATA"
        ).format(view=sql.Identifier(view), width=sql.Literal(width))
    )
    # Real-time aggregation: queries see the newest rows before the next refresh.
    conn.execute(
        sql.SQL("ALTER MATERIALIZED VIEW {} SET (timescaledb.materialized_only = false)").format(
            sql.Identifier(view)
        )
    )
    every, lookback = (
        (horizons.refresh_1m_every, horizons.refresh_1m_lookback)
        if view == "samples_1m"
        else (horizons.refresh_1h_every, horizons.refresh_1h_lookback)
    )
    conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)", [view])
    conn.execute(
        "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval,"
        " end_offset => %s::interval, schedule_interval => %s::interval)",
        [view, lookback, width, every],
    )
    retain = horizons.retain_1m_for if view == "samples_1m" else horizons.retain_1h_for
    conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", [view])
    if retain:
        conn.execute("SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)", [view, retain])
