"""Shared fixtures: the real services the tests talk to. A missing service fails the test loudly."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

MQTT_URL = os.environ.get("ZHIZAO_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
DATABASE_URL = os.environ.get("ZHIZAO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _require_tcp(url: str, what: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    assert port is not None, f"{what} URL {url!r} has no port"
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as exc:
        pytest.fail(f"{what} is not reachable at {host}:{port} ({exc}); start it (see .ci/run)", pytrace=False)


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """URL of the real Mosquitto broker the tests use."""
    _require_tcp(MQTT_URL, "MQTT broker")
    return MQTT_URL


@pytest.fixture(scope="session")
def database_url() -> str:
    """URL of the real PostgreSQL server's test database (shared; use `fresh_database` for isolation)."""
    _require_tcp(DATABASE_URL, "PostgreSQL")
    return DATABASE_URL


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, empty database on the real server, dropped after the test."""
    import psycopg

    name = f"zhizao_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(database_url)
    url = parts._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def unique_id() -> str:
    """A fresh lowercase id, so concurrent tests on the shared broker never see each other's topics."""
    return f"t{uuid.uuid4().hex[:10]}"
