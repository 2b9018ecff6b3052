"""Storage tests share the ingest helpers and fixtures; the TimescaleDB ones need their own server.

test_timescale.py runs against a PostgreSQL server with TimescaleDB preloaded, named by
ZHIZAO_TEST_TIMESCALE_URL (see cloud/storage/README.md). Without the variable the module is not
collected at all (the CI servers have no TimescaleDB, and tests are never skipped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

TIMESCALE_URL = os.environ.get("ZHIZAO_TEST_TIMESCALE_URL", "")

collect_ignore = [] if TIMESCALE_URL else ["test_timescale.py"]


@pytest.fixture(scope="session")
def timescale_server() -> str:
    """URL of a database on the TimescaleDB server (the fresh test databases are created next to it)."""
    try:
        with psycopg.connect(TIMESCALE_URL, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_settings WHERE name = 'timescaledb.disable_load' AND setting = 'off'"
            ).fetchone()
    except psycopg.OperationalError as exc:
        pytest.fail(f"ZHIZAO_TEST_TIMESCALE_URL={TIMESCALE_URL!r} is not reachable: {exc}", pytrace=False)
    if not (row and row[0]):
        pytest.fail(
            f"ZHIZAO_TEST_TIMESCALE_URL={TIMESCALE_URL!r}: the server does not preload timescaledb"
            " (shared_preload_libraries); see cloud/storage/README.md",
            pytrace=False,
        )
    return TIMESCALE_URL


@pytest.fixture
def timescale_database(timescale_server: str) -> Iterator[str]:
    """A new database on the TimescaleDB server (from template1, so it may or may not hold the extension)."""
    name = f"zhizao_ts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(timescale_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(timescale_server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(timescale_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
