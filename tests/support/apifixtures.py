"""API test helpers: a two-site cluster filled by plain SQL (zhizao/bench/attacks.py, the attack suite's
target too), token set, client factory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from fastapi.testclient import TestClient

from zhizao.bench.attacks import N_SAMPLES, T0_MS, Cluster, fill_cluster
from zhizao.cloud.api import create_app
from zhizao.cloud.settings import CloudSettings


@dataclass(frozen=True)
class Tokens:
    """One token per case the tests need."""

    viewer_a: str
    viewer_b: str
    admin_all: str
    admin_a: str
    operator_ab: str


def make_client(url: str, **settings: object) -> TestClient:
    """A TestClient over a fresh app (its lifespan opens and closes the pool)."""
    return TestClient(create_app(CloudSettings(database_url=url, **settings)))  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}



@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the test server for a whole module (read-only tests share one fill)."""
    name = f"zhizao_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_tokens(url: str) -> Tokens:
    """One token per case, created through `create_token` (the CLI path)."""
    from zhizao.cloud.auth import create_token

    return Tokens(
        viewer_a=create_token(url, "viewer", "site-a", "viewer a"),
        viewer_b=create_token(url, "viewer", ["site-b"], "viewer b"),
        admin_all=create_token(url, "admin", "*", "admin all"),
        admin_a=create_token(url, "admin", "site-a", "admin a"),
        operator_ab=create_token(url, "operator", "site-a,site-b", "operator ab"),
    )


__all__ = ["N_SAMPLES", "T0_MS", "Cluster", "Tokens", "bearer", "fill_cluster", "make_client", "make_tokens",
           "scratch_database"]
