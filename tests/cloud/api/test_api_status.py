"""/healthz, /metrics, /docs, JSON errors for every failure, and the request-body limit."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.apifixtures import Cluster, Tokens, bearer, make_client
from zhizao.cloud.api import create_app
from zhizao.cloud.settings import CloudSettings


def test_healthz_needs_no_token_and_reports_storage(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert body["storage"].startswith("postgresql 15")
    assert body["ingest"] == {}


def test_healthz_carries_ingest_stats(cluster: Cluster) -> None:
    app = create_app(CloudSettings(database_url=cluster.url), ingest_stats=lambda: {"samples_total": 12.0})
    with TestClient(app) as client:
        assert client.get("/healthz").json()["ingest"] == {"samples_total": 12.0}


def test_healthz_is_503_when_the_database_is_gone(cluster: Cluster) -> None:
    import psycopg

    with make_client(cluster.url) as client:
        assert client.get("/healthz").status_code == 200
        # Kill the pool's server connections: the next check fails to reconnect to a dropped database.
        with psycopg.connect(cluster.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            name = cluster.url.rsplit("/", 1)[1]
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        try:
            r = client.get("/healthz")
            assert r.status_code == 503
            assert r.json()["database"] == "unreachable"
        finally:
            with psycopg.connect(cluster.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_metrics_needs_a_token_and_counts_requests(client: TestClient, tokens: Tokens) -> None:
    assert client.get("/metrics").status_code == 401
    client.get("/api/v1/sites", headers=bearer(tokens.viewer_a))
    r = client.get("/metrics", headers=bearer(tokens.viewer_a))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'zhizao_api_requests_total{route="/api/v1/sites",status="200"}' in r.text
    assert "zhizao_api_request_seconds_bucket" in r.text


def test_docs_and_openapi(client: TestClient) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    for path in ["/api/v1/sites", "/api/v1/series", "/api/v1/latest", "/api/v1/edge-nodes", "/healthz", "/metrics"]:
        assert path in spec["paths"], path
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_docs_can_be_switched_off(cluster: Cluster) -> None:
    with make_client(cluster.url, api_docs=False) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404


def test_unknown_route_and_bad_path_are_json(client: TestClient, tokens: Tokens) -> None:
    r = client.get("/api/v1/nothing-here", headers=bearer(tokens.viewer_a))
    assert r.status_code == 404 and r.json()["error"]["status"] == 404
    r = client.get("/api/v1/tags/abc", headers=bearer(tokens.viewer_a))
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "tag_id" and r.json()["error"]["value"] == "abc"
    r = client.get("/api/v1/sites/Bad Site!", headers=bearer(tokens.viewer_a))
    assert r.status_code == 400 and r.json()["error"]["field"] == "site"


def test_request_body_limit(cluster: Cluster, tokens: Tokens) -> None:
    with make_client(cluster.url, max_body_bytes=2048) as client:
        big = {"name": "x", "role": "viewer", "sites": ["site-a"] * 400}
        r = client.post("/api/v1/tokens", json=big, headers=bearer(tokens.admin_all))
        assert r.status_code == 413
        assert r.json()["error"]["field"] == "content-length"
        assert "over the limit of 2048 bytes" in r.json()["error"]["message"]

        def chunks() -> object:
            yield b'{"name": "x", "role": "viewer", "sites": ['
            for _ in range(400):
                yield b'"site-a",'
            yield b'"site-a"]}'

        r = client.post("/api/v1/tokens", content=chunks(), headers={**bearer(tokens.admin_all),  # type: ignore[arg-type]
                                                                      "content-type": "application/json"})
        assert r.status_code == 413


def test_body_with_unknown_field_names_it(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/api/v1/tokens", json={"name": "x", "role": "viewer", "colour": "red"},
                    headers=bearer(tokens.admin_all))
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "colour" and r.json()["error"]["value"] == "red"
