"""401 without a valid token, 404 outside the token's sites on every route, roles, and the asset tree."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.apifixtures import Cluster, Tokens, bearer
from zhizao.cloud.auth import revoke_token


def _site_b_urls(c: Cluster) -> list[str]:
    """Every read of a site-b object; a site-a token must get 404 from each."""
    return [
        "/api/v1/sites/site-b",
        "/api/v1/sites/site-b/lines",
        "/api/v1/sites/site-b/lines/line-9",
        "/api/v1/sites/site-b/lines/line-9/machines",
        "/api/v1/sites/site-b/machines",
        "/api/v1/sites/site-b/machines/m9",
        "/api/v1/sites/site-b/machines/m9/tags",
        f"/api/v1/tags/{c.temp_b}",
        f"/api/v1/series?tag_id={c.temp_b}&start=1767225600000&end=1767232800000",
        "/api/v1/series?site=site-b&machine=m9&name=Temperature/Spindle&start=1767225600000&end=1767232800000",
        "/api/v1/latest?site=site-b",
        "/api/v1/latest?site=site-b&machine=m9",
        "/api/v1/edge-nodes?site=site-b",
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer zz_not-a-real-token"}, {"Authorization": "Basic dXNlcjpwYXNz"},
     {"Authorization": "Bearer "}],
    ids=["none", "unknown", "basic", "empty"],
)
def test_every_route_but_healthz_needs_a_token(client: TestClient, cluster: Cluster, headers: dict[str, str]) -> None:
    for url in ["/api/v1/sites", "/api/v1/edge-nodes", "/metrics", *_site_b_urls(cluster)]:
        r = client.get(url, headers=headers)
        assert r.status_code == 401, url
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["field"] == "Authorization"
    assert client.get("/healthz", headers=headers).status_code == 200


def test_a_site_a_token_sees_nothing_of_site_b(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    for url in _site_b_urls(cluster):
        r = client.get(url, headers=bearer(tokens.viewer_a))
        assert r.status_code == 404, (url, r.text)
        # The same URLs answer for a token that does include site-b: 404 really means "outside your sites".
        assert client.get(url, headers=bearer(tokens.viewer_b)).status_code == 200, url
    sites = client.get("/api/v1/sites", headers=bearer(tokens.viewer_a)).json()
    assert [s["site_id"] for s in sites] == ["site-a"]
    nodes = client.get("/api/v1/edge-nodes", headers=bearer(tokens.viewer_a)).json()
    assert [(n["site_id"], n["edge_node_id"]) for n in nodes] == [("site-a", "line-1")]


def test_unknown_objects_are_404_like_foreign_ones(client: TestClient, tokens: Tokens) -> None:
    own = client.get("/api/v1/sites/site-zz", headers=bearer(tokens.admin_all))
    foreign = client.get("/api/v1/sites/site-b", headers=bearer(tokens.viewer_a))
    assert own.status_code == foreign.status_code == 404
    assert own.json()["error"]["message"] == "site 'site-zz' not found"
    assert foreign.json()["error"]["message"] == "site 'site-b' not found"


def test_all_sites_token_sees_every_site(client: TestClient, tokens: Tokens) -> None:
    sites = client.get("/api/v1/sites", headers=bearer(tokens.admin_all)).json()
    assert [(s["site_id"], s["lines"], s["machines"]) for s in sites] == [("site-a", 1, 2), ("site-b", 1, 1)]


def test_asset_tree(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    h = bearer(tokens.viewer_a)
    site = client.get("/api/v1/sites/site-a", headers=h).json()
    assert site["tz"] == "Asia/Shanghai"
    assert [(ln["line_id"], ln["machines"]) for ln in site["line_list"]] == [("line-1", ["m1", "m2"])]
    line = client.get("/api/v1/sites/site-a/lines/line-1", headers=h).json()
    assert [m["machine_id"] for m in line["machine_list"]] == ["m1", "m2"]
    assert [t["name"] for t in line["node_tags"]] == ["Node/Uptime"]
    machine = client.get("/api/v1/sites/site-a/machines/m1", headers=h).json()
    assert sorted(t["name"] for t in machine["tags"]) == ["Status/Text", "Temperature/Spindle"]
    tag = client.get(f"/api/v1/tags/{cluster.temp_a}", headers=h).json()
    assert (tag["machine_id"], tag["unit"], tag["datatype"]) == ("m1", "degC", 10)
    assert client.get("/api/v1/sites/site-a/machines/m9", headers=h).status_code == 404
    assert client.get("/api/v1/sites/site-a/lines/line-9/machines", headers=h).status_code == 404


def test_edge_nodes_report_health(client: TestClient, tokens: Tokens) -> None:
    nodes = client.get("/api/v1/edge-nodes", headers=bearer(tokens.operator_ab)).json()
    a = next(n for n in nodes if n["site_id"] == "site-a")
    assert (a["online"], a["outbox_depth"], a["samples_per_s"], a["bd_seq"]) == (True, 5, 120.5, 3)
    assert a["last_birth"].startswith("2026-01-01T00:00:00")
    assert {n["site_id"] for n in nodes} == {"site-a", "site-b"}


def test_latest_values(client: TestClient, tokens: Tokens) -> None:
    rows = client.get("/api/v1/latest?site=site-a&machine=m1", headers=bearer(tokens.viewer_a)).json()
    by_name = {r["name"]: r for r in rows}
    assert by_name["Temperature/Spindle"]["value"] == 42.5
    assert by_name["Temperature/Spindle"]["ts"] == 1_767_232_799_000
    assert by_name["Status/Text"]["value"] == "running"
    site_rows = client.get("/api/v1/latest?site=site-a", headers=bearer(tokens.viewer_a)).json()
    assert {r["name"] for r in site_rows} == {"Status/Text", "Temperature/Spindle"}  # Node/Uptime has no value
    assert client.get("/api/v1/latest?site=site-a&machine=m2", headers=bearer(tokens.viewer_a)).json() == []
    assert client.get("/api/v1/latest?site=site-a&machine=m7", headers=bearer(tokens.viewer_a)).status_code == 404


def test_revoked_token_is_refused(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    h = bearer(tokens.viewer_a)
    assert client.get("/api/v1/sites", headers=h).status_code == 200
    with psycopg.connect(cluster.url) as conn:
        row = conn.execute("SELECT token_id FROM api_tokens WHERE name = 'viewer a'").fetchone()
    assert row is not None
    assert revoke_token(cluster.url, int(row[0])) is True
    assert revoke_token(cluster.url, int(row[0])) is False
    assert client.get("/api/v1/sites", headers=h).status_code == 401


def test_token_admin_needs_the_admin_role(client: TestClient, tokens: Tokens) -> None:
    body = {"name": "new one", "role": "viewer", "sites": ["site-a"]}
    r = client.post("/api/v1/tokens", json=body, headers=bearer(tokens.operator_ab))
    assert r.status_code == 403
    assert "'operator'" in r.json()["error"]["message"]
    created = client.post("/api/v1/tokens", json=body, headers=bearer(tokens.admin_a))
    assert created.status_code == 201, created.text
    new = created.json()["token"]
    assert [s["site_id"] for s in client.get("/api/v1/sites", headers=bearer(new)).json()] == ["site-a"]
    # A site-a admin cannot mint a token for site-b, nor an all-sites token.
    r = client.post("/api/v1/tokens", json={**body, "sites": ["site-b"]}, headers=bearer(tokens.admin_a))
    assert r.status_code == 400
    assert r.json()["error"] == {"status": 400, "field": "sites", "value": "site-b",
                                 "message": "sites='site-b': outside the caller's sites"}
    r = client.post("/api/v1/tokens", json={**body, "sites": None}, headers=bearer(tokens.admin_a))
    assert r.status_code == 400
    r = client.post("/api/v1/tokens", json={**body, "role": "boss"}, headers=bearer(tokens.admin_all))
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "role"
    assert "'boss'" in r.json()["error"]["message"]
    # Revoke: a site-a admin may revoke the token it made, then it stops working.
    token_id = created.json()["token_id"]
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=bearer(tokens.admin_a)).status_code == 204
    assert client.get("/api/v1/sites", headers=bearer(new)).status_code == 401


def test_token_writes_are_audited(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    r = client.post("/api/v1/tokens", json={"name": "audited", "role": "operator", "sites": ["site-b"]},
                    headers=bearer(tokens.admin_all))
    assert r.status_code == 201
    with psycopg.connect(cluster.url) as conn:
        rows = conn.execute("SELECT actor, action, target, detail FROM audit_log ORDER BY id").fetchall()
    assert ("admin all", "token.create", str(r.json()["token_id"])) == rows[-1][:3]
    assert rows[-1][3] == {"name": "audited", "role": "operator", "sites": ["site-b"], "expires_at": None}
    # The CLI path audits too: one row per create_token call of the fixture.
    assert sum(1 for row in rows if row[0] == "cli" and row[1] == "token.create") == 5
