"""Plain PostgreSQL backend: BRIN time indexes and rollup tables that the ingest service maintains."""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

ROLLUPS: dict[str, str] = {"samples_1m": "minute", "samples_1h": "hour"}


def setup(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the plain-PostgreSQL objects (idempotent): BRIN indexes on ts, rollup tables."""
    # BRIN: samples arrive roughly in time order, so a tiny block-range index serves time-range scans;
    # the unique (tag_id, ts) btree from the core migration serves per-tag queries and ON CONFLICT.
    conn.execute("CREATE INDEX IF NOT EXISTS samples_ts_brin ON samples USING brin (ts)")
    conn.execute("CREATE INDEX IF NOT EXISTS samples_text_ts_brin ON samples_text USING brin (ts)")
    for table in ROLLUPS:
        # sum and last_ts let the hour rollup be derived from the minute rollup exactly.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " bucket timestamptz NOT NULL, tag_id integer NOT NULL,"
            " min double precision, max double precision,"
            " sum double precision NOT NULL DEFAULT 0, count bigint NOT NULL DEFAULT 0,"
            " last double precision, last_ts timestamptz NOT NULL,"
            " avg double precision GENERATED ALWAYS AS (CASE WHEN count > 0 THEN sum / count END) STORED,"
            f" PRIMARY KEY (tag_id, bucket))"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_bucket_brin ON {table} USING brin (bucket)")
