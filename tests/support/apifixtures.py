"""API test helpers: a two-site cluster filled by plain SQL, token set, client factory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from fastapi.testclient import TestClient

from zhizao.bench.series import fill_rollups
from zhizao.cloud.api import create_app
from zhizao.cloud.settings import CloudSettings

# 2026-01-01T00:00:00Z: the samples of the temperature tag start here, one a second for two hours.
T0_MS = 1_767_225_600_000
N_SAMPLES = 7200


@dataclass(frozen=True)
class Cluster:
    """Ids of what `fill_cluster` wrote."""

    url: str
    temp_a: int  # site-a / m1 / Temperature/Spindle (double), 7200 samples
    text_a: int  # site-a / m1 / Status/Text (string)
    node_a: int  # site-a / line-1 node metric Node/Uptime
    temp_b: int  # site-b / m9 / Temperature/Spindle


def fill_cluster(url: str) -> Cluster:
    """Two sites (a: line-1 with m1, m2; b: line-9 with m9), tags, samples, rollups and latest values."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO sites (site_id, name, tz) VALUES ('site-a', 'Site A', 'Asia/Shanghai'),"
                     " ('site-b', 'Site B', 'Asia/Shanghai')")
        conn.execute(
            "INSERT INTO edge_nodes (site_id, edge_node_id, online, bd_seq, last_birth, outbox_depth,"
            " samples_per_s, reconnects, last_batch, acked_batch) VALUES"
            " ('site-a', 'line-1', true, 3, '2026-01-01T00:00:00Z', 5, 120.5, 1, 900, 899),"
            " ('site-b', 'line-9', false, 1, '2026-01-01T00:00:00Z', 0, 0, 0, 10, 10)"
        )
        conn.execute(
            "INSERT INTO machines (site_id, machine_id, edge_node_id, line_id, online, last_birth) VALUES"
            " ('site-a', 'm1', 'line-1', 'line-1', true, '2026-01-01T00:00:00Z'),"
            " ('site-a', 'm2', 'line-1', 'line-1', true, '2026-01-01T00:00:00Z'),"
            " ('site-b', 'm9', 'line-9', 'line-9', false, '2026-01-01T00:00:00Z')"
        )

        def tag(site: str, node: str, machine: str | None, name: str, datatype: int, unit: str | None) -> int:
            row = conn.execute(
                "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype, unit)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING tag_id",
                [site, node, machine, name, datatype, unit],
            ).fetchone()
            assert row is not None
            return int(row[0])

        temp_a = tag("site-a", "line-1", "m1", "Temperature/Spindle", 10, "degC")
        text_a = tag("site-a", "line-1", "m1", "Status/Text", 12, None)
        node_a = tag("site-a", "line-1", None, "Node/Uptime", 4, "s")
        temp_b = tag("site-b", "line-9", "m9", "Temperature/Spindle", 10, "degC")
        # A deterministic, bumpy signal; every 500th value is NULL (bad quality) to exercise the aggregates.
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value, quality)"
            " SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '1 second', %(tag)s,"
            "        CASE WHEN i %% 500 = 499 THEN NULL ELSE (i %% 97) * 0.5 + i / 60.0 END,"
            "        CASE WHEN i %% 500 = 499 THEN 0 ELSE 192 END"
            " FROM generate_series(0, %(n)s - 1) AS i",
            {"t0": T0_MS, "tag": temp_a, "n": N_SAMPLES},
        )
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '1 second',"
            " %(tag)s, 1000 + i FROM generate_series(0, 99) AS i",
            {"t0": T0_MS, "tag": temp_b},
        )
        conn.execute(
            "INSERT INTO samples_text (ts, tag_id, value) VALUES"
            " (to_timestamp(%(t0)s / 1000.0), %(tag)s, 'idle'),"
            " (to_timestamp(%(t0)s / 1000.0) + interval '5 seconds', %(tag)s, 'running')",
            {"t0": T0_MS, "tag": text_a},
        )
        conn.execute(
            "INSERT INTO latest_values (tag_id, ts, value, text_value) VALUES"
            " (%s, '2026-01-01T01:59:59Z', 42.5, NULL), (%s, '2026-01-01T00:00:05Z', NULL, 'running'),"
            " (%s, '2026-01-01T00:01:39Z', 1099, NULL)",
            [temp_a, text_a, temp_b],
        )
    # The rollup rows, as the ingest maintains them on plain PostgreSQL.
    with psycopg.connect(url) as conn:
        fill_rollups(conn, [temp_a, temp_b])
    return Cluster(url, temp_a, text_a, node_a, temp_b)


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
