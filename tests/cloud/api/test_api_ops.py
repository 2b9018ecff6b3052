"""`GET /api/v1/me`, `GET /api/v1/sites/{site}/stop-reasons`, `GET /api/v1/state-codes`, and bad ids on every route."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.apifixtures import Cluster, Tokens, bearer
from zhizao.cloud.auth import create_token


def test_me_tells_the_token_its_role_and_sites(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    viewer = client.get("/api/v1/me", headers=bearer(tokens.viewer_a))
    assert viewer.status_code == 200, viewer.text
    assert {k: viewer.json()[k] for k in ("name", "role", "sites")} == {
        "name": "viewer a",
        "role": "viewer",
        "sites": ["site-a"],
    }
    assert isinstance(viewer.json()["token_id"], int)
    admin = client.get("/api/v1/me", headers=bearer(tokens.admin_all)).json()
    assert (admin["role"], admin["sites"]) == ("admin", None)
    operator = client.get("/api/v1/me", headers=bearer(tokens.operator_ab)).json()
    assert (operator["role"], operator["sites"]) == ("operator", ["site-a", "site-b"])
    assert "token" not in operator and "token_hash" not in operator
    missing = client.get("/api/v1/me")
    assert missing.status_code == 401 and missing.json()["error"]["field"] == "Authorization"


def test_stop_reasons_are_the_catalogue_from_50000_with_the_sites_categories(
    client: TestClient, cluster: Cluster, tokens: Tokens
) -> None:
    r = client.get("/api/v1/sites/site-a/stop-reasons", headers=bearer(tokens.viewer_a))
    assert r.status_code == 200, r.text
    reasons = {x["code"]: x for x in r.json()}
    assert min(reasons) == 50000 and max(reasons) == 220000 and len(reasons) == 18
    assert [x["code"] for x in r.json()] == sorted(reasons), "ordered by code"
    assert reasons[60000]["name"] == "inlet jam"
    # Analytics defaults (no stored state classes): preventive maintenance is planned, a failure a failure.
    assert reasons[210000]["category"] == "planned"
    assert reasons[180000]["category"] == "failure"
    assert reasons[60000]["category"] == "material"

    # The site's own state classes decide the category: an engineer makes maintenance a loss, jams a speed loss.
    engineer = create_token(cluster.url, "engineer", "site-a", "engineer a")
    body = {
        "shifts": [{"name": "day", "start": "06:00", "hours": 12}],
        "state_classes": {
            "planned": [150000, 160000, 170000],
            "availability_loss": [40000, 180000, 210000],
            "performance_loss": [20000, 50000, 60000],
        },
    }
    put = client.put("/api/v1/sites/site-a/calendar", json=body, headers=bearer(engineer))
    assert put.status_code == 200, put.text
    after = {
        x["code"]: x
        for x in client.get("/api/v1/sites/site-a/stop-reasons", headers=bearer(tokens.viewer_a)).json()
    }
    assert after[210000]["category"] == "failure"
    assert after[60000]["category"] == "material"  # a performance loss kept in run time, in its own class
    assert after[150000]["category"] == "planned"


def test_stop_reasons_outside_the_tokens_sites_are_404(client: TestClient, tokens: Tokens) -> None:
    foreign = client.get("/api/v1/sites/site-b/stop-reasons", headers=bearer(tokens.viewer_a))
    assert foreign.status_code == 404 and foreign.json()["error"]["field"] == "site"
    assert client.get("/api/v1/sites/site-b/stop-reasons", headers=bearer(tokens.viewer_b)).status_code == 200
    unknown = client.get("/api/v1/sites/site-zz/stop-reasons", headers=bearer(tokens.admin_all))
    assert unknown.status_code == 404
    bad = client.get("/api/v1/sites/Not_A_Site/stop-reasons", headers=bearer(tokens.admin_all))
    assert bad.status_code == 400 and "site" in bad.json()["error"]["message"]
    assert client.get("/api/v1/sites/site-a/stop-reasons").status_code == 401


def test_state_codes_are_the_contract_catalogue(client: TestClient, tokens: Tokens) -> None:
    r = client.get("/api/v1/state-codes", headers=bearer(tokens.viewer_a))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["categories"][:3] == ["running", "reduced_speed", "microstop"] and len(body["categories"]) == 10
    assert (body["min"], body["max"]) == (10000, 230000)
    codes = {c["code"]: c for c in body["codes"]}
    assert sorted(codes) == list(range(10000, 230000, 10000))
    assert codes[180000] == {"code": 180000, "name": "equipment failure", "name_zh": "设备故障", "category": "failure"}
    assert codes[150000]["category"] == "planned"
    assert client.get("/api/v1/state-codes").status_code == 401


def test_every_route_refuses_a_bad_id_alike(client: TestClient, tokens: Tokens) -> None:
    auth = bearer(tokens.admin_all)
    for path, params in [
        ("/api/v1/sites/Site_A", {}),  # assets
        ("/api/v1/sites/Site_A/lines", {}),
        ("/api/v1/sites/Site_A/calendar", {}),  # OEE
        ("/api/v1/sites/Site_A/stop-reasons", {}),
        ("/api/v1/states", {"site": "Site_A", "machine": "m1"}),
        ("/api/v1/latest", {"site": "Site_A"}),  # series
        ("/api/v1/edge-nodes", {"site": "Site_A"}),  # status
    ]:
        r = client.get(path, params=params, headers=auth)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert (error["field"], error["value"]) == ("site", "Site_A"), path
        assert error["message"].startswith("site='Site_A': not a valid id (lowercase letters"), path
    r = client.get("/api/v1/sites/site-a/machines/M-1", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("machine='M-1': not a valid id")
