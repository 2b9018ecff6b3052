"""API-wide input rules, applied by the app factory to every route (also to a route added after it, as other
components do): NUL and control characters in parameters are a 400 naming the parameter, never a 500; empty
times are unset; the OpenAPI lists every status; 405 names every method of the path."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.support.apifixtures import Cluster, Tokens, bearer
from zhizao.cloud.api import create_app
from zhizao.cloud.api.deps import Caller, Conn
from zhizao.cloud.settings import CloudSettings


@pytest.mark.parametrize(
    "path,field",
    [
        ("/api/v1/series?site=site-a&machine=m1&name=Temperature%00Spindle", "name"),
        ("/api/v1/series?tag_id=1&cursor=ab%00c", "cursor"),
        ("/api/v1/latest?site=site-a%00", "site"),
        ("/api/v1/quarantine?site=site-a&reason=non_finite%00", "reason"),
        ("/api/v1/oee?scope=site&site=site-a&from=1%01", "from"),
        ("/api/v1/sites/site%00a/machines", "site"),
        ("/api/v1/sites/site-a/machines/m%001/tags", "machine"),
        ("/api/v1/tags/1%00", "tag_id"),
    ],
)
def test_a_nul_or_control_character_in_any_parameter_is_a_400_naming_it(
    client: TestClient, tokens: Tokens, path: str, field: str
) -> None:
    r = client.get(path, headers=bearer(tokens.admin_all))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field, r.text


def test_empty_times_are_unset_and_bad_ones_name_the_parameter(client: TestClient, tokens: Tokens, cluster: Cluster) -> None:
    auth = bearer(tokens.admin_all)
    r = client.get(f"/api/v1/series?tag_id={cluster.temp_a}&start=&end=&bucket=&agg=", headers=auth)
    assert r.status_code == 200, r.text
    for path in ("/api/v1/oee?scope=site&site=site-a&from=&to=", "/api/v1/losses?from=&to=",
                 "/api/v1/states?site=site-a&machine=m1&from=&to="):  # fmt: skip
        assert client.get(path, headers=auth).status_code == 200, path
    r = client.get("/api/v1/oee?from=soon", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["field"] == "from", r.text
    # Far times are clamped, never a 500 (year 1 with an offset is before the first UTC instant).
    r = client.get("/api/v1/oee?from=0001-01-01T00:00:00%2B05:00&to=0001-01-02T00:00:00Z", headers=auth)
    assert r.status_code in (200, 400), r.text


def test_every_operation_documents_the_errors_it_answers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "ErrorBody" in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert "422" not in codes, (method, path)
            assert {"400", "404", "503"} <= codes, (method, path, codes)
            if op.get("security"):
                assert {"401", "403"} <= codes, (method, path, codes)
            if "requestBody" in op:
                assert "413" in codes, (method, path, codes)
    assert "401" not in schema["paths"]["/healthz"]["get"]["responses"]
    # String parameters say which characters they refuse, as the middleware does.
    series = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/series"]["get"]["parameters"]}
    assert "\\u0000" in series["name"]["anyOf"][0]["pattern"]


def test_405_lists_every_method_of_the_path(client: TestClient, tokens: Tokens) -> None:
    r = client.request("OPTIONS", "/api/v1/sites/site-a/calendar", headers=bearer(tokens.admin_all))
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, PUT"
    r = client.request("PATCH", "/api/v1/tokens", headers=bearer(tokens.admin_all))
    assert r.status_code == 405 and r.headers["allow"] == "POST"


class _Note(BaseModel):
    note: str


def test_a_value_the_database_refuses_is_a_400_on_a_route_added_later(cluster: Cluster, tokens: Tokens) -> None:
    app = create_app(CloudSettings(database_url=cluster.url))

    @app.post("/api/v1/probe-notes")
    async def probe(body: _Note, conn: Conn, caller: Caller) -> dict[str, Any]:
        cur = await conn.execute("SELECT %s::text", [body.note])
        return {"echo": (await cur.fetchone() or [None])[0]}

    with TestClient(app) as client:
        auth = bearer(tokens.admin_all)
        assert client.post("/api/v1/probe-notes", json={"note": "ok"}, headers=auth).json() == {"echo": "ok"}
        r = client.post("/api/v1/probe-notes", json={"note": "a\u0000b"}, headers=auth)
        assert r.status_code == 400, r.text
        assert "cannot store" in r.json()["error"]["message"]
        r = client.get("/api/v1/probe-notes", headers=auth)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        schema = client.get("/openapi.json").json()["paths"]["/api/v1/probe-notes"]["post"]["responses"]
        assert {"400", "401", "403", "404", "413", "503"} <= set(schema)
