"""Migrations on a real PostgreSQL: idempotent, recorded, safe when workers start together; plain backend.

The plain backend is asked for explicitly, so these pass on a server with TimescaleDB too (the TimescaleDB
path has its own tests in test_timescale.py).
"""

from __future__ import annotations

import threading

import psycopg

from zhizao.cloud.storage.migrate import StorageInfo, TimescaleHorizons, apply_migrations, migration_files

PLAIN = TimescaleHorizons(use_timescale=False)


def test_migrations_apply_once_and_twice_is_a_no_op(fresh_database: str) -> None:
    first = apply_migrations(fresh_database, horizons=PLAIN)
    names = [name for _, name, _ in migration_files()]
    assert first.applied == tuple(names) and "0001_core.sql" in names
    second = apply_migrations(fresh_database, horizons=PLAIN)
    assert second.applied == ()
    with psycopg.connect(fresh_database) as conn:
        recorded = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
        assert recorded == names
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {
            "sites",
            "edge_nodes",
            "machines",
            "tags",
            "samples",
            "samples_text",
            "latest_values",
            "dead_letters",
            "samples_1m",
            "samples_1h",
        } <= tables
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'samples'")}
        assert {"samples_tag_ts", "samples_ts_brin"} <= indexes


def test_concurrent_workers_apply_each_migration_exactly_once(fresh_database: str) -> None:
    results: list[StorageInfo] = []
    threads = [
        threading.Thread(target=lambda: results.append(apply_migrations(fresh_database, horizons=PLAIN)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3
    assert sorted(len(r.applied) for r in results)[:2] == [0, 0]
    assert sum(len(r.applied) for r in results) == len(migration_files())


def test_plain_postgresql_is_detected_and_named(fresh_database: str) -> None:
    info = apply_migrations(fresh_database, horizons=PLAIN)
    assert info.timescale is False and info.version is None
    assert info.kind.startswith("PostgreSQL ") and "plain" in info.kind


def test_default_settings_use_timescaledb_only_where_the_server_preloads_it(fresh_database: str) -> None:
    # Where the extension is installed but not preloaded (as on a stock server with the package added),
    # CREATE EXTENSION would end the session; the migration must stay on plain PostgreSQL instead.
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_settings WHERE name = 'timescaledb.disable_load' AND setting = 'off'"
        ).fetchone()
    preloaded = bool(row and row[0])
    info = apply_migrations(fresh_database)
    assert info.timescale is preloaded and info.timescale_preloaded is preloaded
    assert apply_migrations(fresh_database).timescale is preloaded  # and again, on a fresh session
    with psycopg.connect(fresh_database) as conn:
        created = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    assert created == (int(preloaded),)


def test_samples_are_unique_on_tag_and_time(fresh_database: str) -> None:
    apply_migrations(fresh_database, horizons=PLAIN)
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO samples (ts, tag_id, value) VALUES ('2026-01-01Z', 1, 1.0)")
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) VALUES ('2026-01-01Z', 1, 2.0) ON CONFLICT (tag_id, ts) DO NOTHING"
        )
        row = conn.execute("SELECT count(*), max(value) FROM samples").fetchone()
        assert row == (1, 1.0)
