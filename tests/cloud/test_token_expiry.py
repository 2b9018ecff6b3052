"""Token lifetimes and rotation: expired tokens get a 401 that says so, a rotation issues a new token and retires
the old one after a grace period (CLI and API, audited), and tokens from before migration 0010 never expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from click.testing import CliRunner

from tests.support.apifixtures import bearer, make_client
from tests.support.db import count
from zhizao.cli import cli
from zhizao.cloud.auth import create_token, hash_token, list_tokens, new_token, rotate_token
from zhizao.cloud.storage import apply_migrations


def _expire(url: str, token_id: int) -> None:
    """Move a token's expiry into the past (what the clock does to it later)."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_id = %s", [token_id])


def test_an_old_token_never_expires_and_an_expired_one_is_refused_with_a_message(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    old = new_token()
    with psycopg.connect(fresh_database) as conn:  # a row as the code before migration 0010 wrote it
        conn.execute("INSERT INTO api_tokens (name, role, sites, token_hash, prefix) VALUES"
                     " ('old', 'viewer', NULL, %s, %s)", [hash_token(old), old[:8]])  # fmt: skip
    short = create_token(fresh_database, "viewer", "*", "short", expires_in_s=120)
    listed = {t.name: t for t in list_tokens(fresh_database)}
    assert listed["old"].expires_at is None
    expires = listed["short"].expires_at
    assert expires is not None and timedelta(seconds=100) < expires - datetime.now(UTC) <= timedelta(seconds=120)
    with make_client(fresh_database) as client:
        assert client.get("/api/v1/me", headers=bearer(old)).status_code == 200
        assert client.get("/api/v1/me", headers=bearer(short)).status_code == 200
        _expire(fresh_database, listed["short"].token_id)
        r = client.get("/api/v1/me", headers=bearer(short))
        assert r.status_code == 401 and "expired at" in r.json()["error"]["message"], r.text
        assert r.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/v1/sites", headers=bearer(short)).status_code == 401
    assert listed["short"].state(datetime.now(UTC) + timedelta(seconds=121)) == "expired"


def test_cli_creates_with_a_lifetime_and_rotates_with_a_grace(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    runner = CliRunner()
    env = {"ZHIZAO_DATABASE_URL": fresh_database}
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "viewer", "--sites", "*", "--name", "dash",
                            "--expires-in", "2h"], env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    first = r.stdout.strip()
    assert "expires in 2h" in r.stderr
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "viewer", "--sites", "*", "--expires-in", "soon"],
                      env=env)  # fmt: skip
    assert r.exit_code == 1 and "--expires-in: 'soon' is not a duration" in r.output
    (info,) = list_tokens(fresh_database)
    r = runner.invoke(cli, ["cloud", "token", "rotate", str(info.token_id), "--grace", "10m"], env=env)
    assert r.exit_code == 0, r.output
    second = r.stdout.strip()
    assert second.startswith("zz_") and second != first
    new, old = list_tokens(fresh_database)
    assert (new.name, new.role, new.sites) == (old.name, old.role, old.sites) == ("dash", old.role, None)
    assert old.replaced_by == new.token_id and old.state(datetime.now(UTC)) == "rotated"
    assert old.expires_at is not None and old.expires_at - datetime.now(UTC) <= timedelta(minutes=10)
    # The new token has the old one's lifetime (2 h), counted from now.
    assert new.expires_at is not None and timedelta(minutes=119) < new.expires_at - datetime.now(UTC)
    listed = runner.invoke(cli, ["cloud", "token", "list"], env=env).output
    assert "rotated until" in listed and f"(replaced by {new.token_id})" in listed
    with make_client(fresh_database) as client:
        assert client.get("/api/v1/me", headers=bearer(first)).status_code == 200  # inside the grace
        assert client.get("/api/v1/me", headers=bearer(second)).status_code == 200
        _expire(fresh_database, old.token_id)  # the grace is over
        assert client.get("/api/v1/me", headers=bearer(first)).status_code == 401
        assert client.get("/api/v1/me", headers=bearer(second)).status_code == 200
    # A token that is no longer valid cannot be rotated.
    assert rotate_token(fresh_database, old.token_id) is None
    r = runner.invoke(cli, ["cloud", "token", "rotate", str(old.token_id)], env=env)
    assert r.exit_code == 1 and "no valid token" in r.output
    assert count(fresh_database, "SELECT count(*) FROM audit_log WHERE action = 'token.rotate'") == 1


def test_api_rotation_by_an_admin_and_by_the_token_itself(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO sites (site_id) VALUES ('site-a'), ('site-b')")
    admin = create_token(fresh_database, "admin", "*", "admin")
    admin_a = create_token(fresh_database, "admin", "site-a", "admin a")
    viewer = create_token(fresh_database, "viewer", "site-b", "viewer b")
    viewer_id = next(t.token_id for t in list_tokens(fresh_database) if t.name == "viewer b")
    with make_client(fresh_database) as client:
        # A site-a admin does not see site-b's tokens: 404, as for any object outside its sites.
        r = client.post(f"/api/v1/tokens/{viewer_id}/rotate", json={}, headers=bearer(admin_a))
        assert r.status_code == 404, r.text
        assert client.post(f"/api/v1/tokens/{viewer_id}/rotate", headers=bearer(viewer)).status_code == 403
        r = client.post(f"/api/v1/tokens/{viewer_id}/rotate", json={"grace_s": 0, "expires_in_s": 3600},
                        headers=bearer(admin))  # fmt: skip
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["replaced"] == viewer_id and body["expires_at"] is not None
        assert client.get("/api/v1/me", headers=bearer(viewer)).status_code == 401  # no grace: retired at once
        me = client.get("/api/v1/me", headers=bearer(body["token"])).json()
        assert (me["role"], me["sites"], me["name"]) == ("viewer", ["site-b"], "viewer b")
        # The new token renews itself; the one it replaces keeps working for the grace period.
        r = client.post("/api/v1/me/rotate", json={"grace_s": 600}, headers=bearer(body["token"]))
        assert r.status_code == 201, r.text
        third = r.json()
        assert client.get("/api/v1/me", headers=bearer(body["token"])).status_code == 200
        assert client.get("/api/v1/me", headers=bearer(third["token"])).status_code == 200
        assert client.post("/api/v1/me/rotate", json={"grace_s": -1}, headers=bearer(admin)).status_code == 400
        # A new token through the API can be given a lifetime too.
        r = client.post("/api/v1/tokens", json={"name": "bot", "role": "viewer", "sites": ["site-a"],
                                                "expires_in_s": 600}, headers=bearer(admin))  # fmt: skip
        assert r.status_code == 201 and r.json()["expires_at"] is not None, r.text
    with psycopg.connect(fresh_database) as conn:
        actions = [a for (a,) in conn.execute("SELECT action FROM audit_log WHERE action LIKE 'token.rotate'"
                                              " ORDER BY id").fetchall()]  # fmt: skip
    assert actions == ["token.rotate", "token.rotate"]
