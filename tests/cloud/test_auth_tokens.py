"""Tokens: stored only as sha256, roles ordered, site lists checked, revocation."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from zhizao.cloud.auth import (
    AuthError,
    Role,
    create_token,
    hash_token,
    list_tokens,
    parse_sites,
    revoke_token,
    tokens_match,
)
from zhizao.cloud.storage import apply_migrations


def test_plaintext_is_never_stored(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    token = create_token(fresh_database, "engineer", "site-a,site-b", "line engineer")
    assert token.startswith("zz_") and len(token) >= 40
    with psycopg.connect(fresh_database) as conn:
        dump = conn.execute("SELECT row_to_json(t)::text FROM api_tokens t").fetchall()
        audit = conn.execute("SELECT row_to_json(a)::text FROM audit_log a").fetchall()
        stored = conn.execute("SELECT token_hash, role, sites FROM api_tokens").fetchone()
    assert len(dump) == 1
    assert token not in dump[0][0] and token[8:] not in dump[0][0]
    assert all(token[8:] not in row[0] for row in audit)
    assert stored is not None
    assert bytes(stored[0]) == hashlib.sha256(token.encode()).digest()
    assert (stored[1], stored[2]) == ("engineer", ["site-a", "site-b"])
    assert tokens_match(bytes(stored[0]), token) and not tokens_match(bytes(stored[0]), token + "x")


def test_two_tokens_differ_and_list_shows_no_secret(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    a = create_token(fresh_database, "viewer", "*", "a")
    b = create_token(fresh_database, "viewer", "*", "b")
    assert a != b and hash_token(a) != hash_token(b)
    listed = list_tokens(fresh_database)
    assert [(t.name, t.sites, t.prefix) for t in listed] == [("b", None, b[:8]), ("a", None, a[:8])]
    assert revoke_token(fresh_database, listed[0].token_id)
    assert list_tokens(fresh_database)[0].revoked_at is not None


def test_roles_are_ordered() -> None:
    assert Role.admin.includes(Role.operator) and Role.engineer.includes(Role.engineer)
    assert not Role.viewer.includes(Role.operator)
    assert [r.value for r in sorted(Role, key=lambda r: r.rank)] == ["viewer", "operator", "engineer", "cluster-planner", "admin"]
    with pytest.raises(AuthError, match=r"role: 'root' is not a role \(one of viewer, operator, engineer, admin, cluster-planner\)"):
        Role.parse("root")


@pytest.mark.parametrize(
    "value,expected",
    [("*", None), (None, None), ("b,a,a", ("a", "b")), (["site-1"], ("site-1",)), (" x , y ", ("x", "y"))],
)
def test_parse_sites(value: object, expected: object) -> None:
    assert parse_sites(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value,message",
    [("", "sites: '' is empty"), ("a,*", "mixes \\* with site ids"), ("Site_A", "sites: 'Site_A' is not a site id"),
     ("a,,b", "sites: '' is not a site id")],
)
def test_bad_sites_name_the_value(value: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        parse_sites(value)


def test_bad_name_is_refused_before_touching_the_database() -> None:
    with pytest.raises(AuthError, match="name: ''"):
        create_token("postgresql://nowhere.invalid/x", "viewer", "*", "  ")
