"""API tokens: roles, site scopes, hashing, creation, revocation and the audit log."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg

from zhizao.broker.contract.ids import ID_RULE, is_id
from zhizao.cloud.storage.db import translate_errors

__all__ = [
    "ALL_SITES",
    "AuthError",
    "Principal",
    "Role",
    "TokenInfo",
    "audit_sync",
    "check_token_name",
    "create_token",
    "hash_token",
    "known_sites",
    "list_tokens",
    "parse_duration",
    "parse_sites",
    "principal_from_row",
    "revoke_token",
    "rotate_token",
    "tokens_match",
    "unknown_sites",
]

# A token is this prefix plus 43 url-safe characters (32 random bytes): guessing one is hopeless, so a plain
# sha256 (no salt, no slow KDF) is enough to keep a database dump from handing out working tokens.
TOKEN_PREFIX = "zz_"
ALL_SITES = "*"
_NAME = re.compile(r"^[\w .@:/*,+-]{1,100}$")


class AuthError(ValueError):
    """A role, site list, token name or token id that cannot be used; the message names the field and value."""


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    viewer = "viewer"
    operator = "operator"
    engineer = "engineer"
    admin = "admin"
    cluster_planner = "cluster-planner"  # an engineer who sees and plans across the cluster's sites (issue 14)

    @property
    def rank(self) -> int:
        """Position in viewer < operator < engineer < cluster-planner < admin."""
        return _RANKS[self]

    def includes(self, other: Role) -> bool:
        """True when this role may do everything `other` may."""
        return self.rank >= other.rank

    @classmethod
    def parse(cls, value: str, field: str = "role") -> Role:
        """The role named `value`, or AuthError naming the field and the allowed values."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(r.value for r in cls)
            raise AuthError(f"{field}: {value!r} is not a role (one of {allowed})") from None


_RANKS = {Role.viewer: 0, Role.operator: 1, Role.engineer: 2, Role.admin: 4, Role.cluster_planner: 3}


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid token: who, which role, which sites (None = all)."""

    token_id: int
    name: str
    role: Role
    sites: frozenset[str] | None

    def sees(self, site_id: str) -> bool:
        """True when the token's scope contains `site_id`."""
        return self.sites is None or site_id in self.sites

    def site_list(self) -> list[str] | None:
        """The scope as a sorted list for SQL parameters (None = all sites)."""
        return None if self.sites is None else sorted(self.sites)


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as listed by `list_tokens` (never the token itself)."""

    token_id: int
    name: str
    role: Role
    sites: tuple[str, ...] | None
    prefix: str
    created_at: datetime
    last_used: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None  # None: never expires
    replaced_by: int | None = None  # the token a rotation issued in its place

    def state(self, now: datetime) -> str:
        """revoked, expired, rotated (still valid until expires_at), or active."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.replaced_by is not None:
            return "rotated"
        return "active"


def hash_token(token: str) -> bytes:
    """sha256 of the token text: the only form in which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def tokens_match(stored_hash: bytes, token: str) -> bool:
    """Constant-time comparison of a stored hash with a presented token."""
    return hmac.compare_digest(stored_hash, hash_token(token))


def parse_sites(value: str | Iterable[str] | None, field: str = "sites") -> tuple[str, ...] | None:
    """`*`/None -> all sites (None); `a,b` or ["a", "b"] -> ("a", "b"), each id checked."""
    if value is None:
        return None
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s).strip() for s in value]
    if items == [ALL_SITES]:
        return None
    if not items or items == [""]:
        raise AuthError(f"{field}: {value!r} is empty; give site ids (a,b) or * for all sites")
    for item in items:
        if item == ALL_SITES:
            raise AuthError(f"{field}: {value!r} mixes * with site ids; give one or the other")
        if not is_id(item):
            raise AuthError(f"{field}: {item!r} is not a site id ({ID_RULE})")
    return tuple(sorted(set(items)))


def check_token_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise AuthError(f"name: {name!r} must be 1-100 letters, digits, spaces or . @ : / * , + - _")
    return name


def new_token() -> str:
    """A fresh random token (shown to its owner once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def principal_from_row(row: Sequence[Any]) -> Principal:
    """Principal from a (token_id, name, role, sites) row of api_tokens."""
    token_id, name, role, sites = row[0], row[1], row[2], row[3]
    return Principal(int(token_id), str(name), Role(role), None if sites is None else frozenset(sites))


def insert_token_sql() -> str:
    """The INSERT used by both the CLI and the API (one statement, one place); expiry from the database clock."""
    return (
        "INSERT INTO api_tokens (name, role, sites, token_hash, prefix, created_by, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s::float8))"
        " RETURNING token_id, expires_at"
    )


def token_row(
    role: Role, sites: tuple[str, ...] | None, name: str, token: str, created_by: str,
    expires_in_s: float | None = None,
) -> list[Any]:  # fmt: skip
    """Parameters for `insert_token_sql` (`expires_in_s` None: the token never expires)."""
    return [name, role.value, None if sites is None else list(sites), hash_token(token), token[:8], created_by,
            check_lifetime(expires_in_s)]  # fmt: skip


# Longest lifetime a token may be given, and longest grace a rotated token keeps.
MAX_LIFETIME_S = 10 * 366 * 86_400
MAX_GRACE_S = 30 * 86_400
_DURATION = re.compile(r"^\s*(\d{1,9})\s*(s|m|h|d|w)?\s*$")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(value: str, field: str = "expires-in") -> int:
    """`90d`, `12h`, `30m`, `2w` or plain seconds -> seconds; AuthError naming the field otherwise."""
    m = _DURATION.match(value)
    if m is None:
        raise AuthError(f"{field}: {value!r} is not a duration (e.g. 3600, 30m, 12h, 90d, 2w)")
    return int(m.group(1)) * _DURATION_S[m.group(2) or "s"]


def check_lifetime(expires_in_s: float | None, field: str = "expires_in") -> float | None:
    """A token lifetime in seconds (None: never expires), or AuthError naming the field."""
    if expires_in_s is not None and not 60 <= expires_in_s <= MAX_LIFETIME_S:
        raise AuthError(f"{field}: {expires_in_s!r} s is outside 60 s .. {MAX_LIFETIME_S} s (10 years)")
    return expires_in_s


# A rotation in three statements shared by the CLI (sync) and the API (async), run in one transaction.
ROTATE_LOCK_SQL = (
    "SELECT name, role, sites, extract(epoch FROM expires_at - created_at) FROM api_tokens"
    " WHERE token_id = %s AND revoked_at IS NULL AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > now())"
    " FOR UPDATE"
)
ROTATE_RETIRE_SQL = (
    "UPDATE api_tokens SET replaced_by = %s,"
    " expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => %s::float8))"
    " WHERE token_id = %s RETURNING expires_at"
)


def rotation_lifetime(old_lifetime_s: float | None, expires_in_s: float | None) -> float | None:
    """The new token's lifetime: as asked, else the old token's own (None: never expires)."""
    if expires_in_s is not None:
        return check_lifetime(expires_in_s)
    return None if old_lifetime_s is None else min(max(old_lifetime_s, 60.0), float(MAX_LIFETIME_S))


def check_grace(grace_s: float, field: str = "grace") -> float:
    """How long a rotated token stays valid, 0 .. MAX_GRACE_S seconds, or AuthError naming the field."""
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise AuthError(f"{field}: {grace_s!r} s is outside 0 .. {MAX_GRACE_S} s (30 days)")
    return grace_s


def create_token(
    conninfo: str,
    role: str | Role,
    sites: str | Iterable[str] | None,
    name: str,
    *,
    created_by: str = "cli",
    expires_in_s: float | None = None,
) -> str:
    """Store a new token (hashed) with a role and site scope (None or "*" = all); return the plaintext once.

    `expires_in_s`: the token is refused (401) that many seconds from now; None: it never expires."""
    role_ = role if isinstance(role, Role) else Role.parse(role)
    sites_ = parse_sites(sites)
    name_ = check_token_name(name)
    token = new_token()
    with translate_errors(), psycopg.connect(conninfo) as conn:
        row = conn.execute(insert_token_sql(),
                           token_row(role_, sites_, name_, token, created_by, expires_in_s)).fetchone()  # fmt: skip
        assert row is not None
        _audit(conn, None, created_by, "token.create", None, str(row[0]),
               {"name": name_, "role": role_.value, "sites": sites_, "expires_at": _iso(row[1])})
    return token


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


@dataclass(frozen=True)
class Rotation:
    """A rotation's outcome: the new token (shown once), its id and expiry, and until when the old one works."""

    old_id: int
    new_id: int
    token: str
    expires_at: datetime | None
    old_valid_until: datetime | None


def rotate_token(
    conninfo: str, token_id: int, *, grace_s: float = 3600.0, expires_in_s: float | None = None, actor: str = "cli"
) -> Rotation | None:
    """Issue a new token with the same name, role and sites as `token_id` and let the old one expire after
    `grace_s` (sooner if it expired sooner anyway); None if `token_id` is not a valid token or was rotated
    already (rotate its successor then). Audited."""
    grace = check_grace(grace_s)
    with translate_errors(), psycopg.connect(conninfo) as conn:
        old = conn.execute(ROTATE_LOCK_SQL, [token_id]).fetchone()
        if old is None:
            return None
        name, role, sites, lifetime = old
        life = rotation_lifetime(None if lifetime is None else float(lifetime), expires_in_s)
        token = new_token()
        row = conn.execute(insert_token_sql(),
                           token_row(Role(role), None if sites is None else tuple(sites), name, token, actor, life)
                           ).fetchone()  # fmt: skip
        assert row is not None
        retired = conn.execute(ROTATE_RETIRE_SQL, [row[0], grace, token_id]).fetchone()
        assert retired is not None
        rotation = Rotation(token_id, int(row[0]), token, row[1], retired[0])
        _audit(conn, None, actor, "token.rotate", None, str(token_id), rotation_detail(rotation, grace))
    return rotation


def rotation_detail(rotation: Rotation, grace_s: float) -> dict[str, Any]:
    """The audit detail of a rotation (never the token)."""
    return {"new_token_id": rotation.new_id, "grace_s": grace_s, "expires_at": _iso(rotation.expires_at),
            "old_valid_until": _iso(rotation.old_valid_until)}  # fmt: skip


def known_sites(conninfo: str) -> list[str]:
    """The site ids in the database, sorted."""
    with translate_errors(), psycopg.connect(conninfo) as conn:
        return [str(r[0]) for r in conn.execute("SELECT site_id FROM sites ORDER BY 1").fetchall()]


def unknown_sites(conninfo: str, sites: str | Iterable[str] | None) -> list[str]:
    """The sites of a token scope (as `parse_sites` reads it) that the database does not know; [] for '*'."""
    wanted = parse_sites(sites)
    if wanted is None:
        return []
    known = set(known_sites(conninfo))
    return [s for s in wanted if s not in known]


def revoke_token(conninfo: str, token_id: int, *, actor: str = "cli") -> bool:
    """Revoke a token by id; True if it was active, False if unknown or already revoked."""
    with translate_errors(), psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL"
            " RETURNING token_id",
            [token_id],
        ).fetchone()
        if row is not None:
            _audit(conn, None, actor, "token.revoke", None, str(token_id), None)
        return row is not None


def list_tokens(conninfo: str) -> list[TokenInfo]:
    """Every stored token, newest first (hashes and plaintexts are never returned)."""
    with translate_errors(), psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT token_id, name, role, sites, prefix, created_at, last_used, revoked_at, expires_at, replaced_by"
            " FROM api_tokens ORDER BY token_id DESC"
        ).fetchall()
    return [
        TokenInfo(int(r[0]), str(r[1]), Role(r[2]), None if r[3] is None else tuple(r[3]), str(r[4]),
                  r[5], r[6], r[7], r[8], None if r[9] is None else int(r[9]))
        for r in rows
    ]


def audit_sync(
    conninfo: str, actor: str, action: str, site_id: str | None, target: str | None, detail: Any
) -> None:
    """Write one audit-log row from a synchronous caller (CLI, services)."""
    with translate_errors(), psycopg.connect(conninfo) as conn:
        _audit(conn, None, actor, action, site_id, target, detail)


def audit_params(
    token_id: int | None, actor: str, action: str, site_id: str | None, target: str | None, detail: Any
) -> tuple[str, list[Any]]:
    """SQL and parameters of one audit-log row (shared by the sync and async writers)."""
    return (
        "INSERT INTO audit_log (token_id, actor, action, site_id, target, detail) VALUES (%s, %s, %s, %s, %s, %s)",
        [token_id, actor, action, site_id, target, None if detail is None else json.dumps(detail)],
    )


def _audit(
    conn: psycopg.Connection[Any],
    token_id: int | None,
    actor: str,
    action: str,
    site_id: str | None,
    target: str | None,
    detail: Any,
) -> None:
    sql, params = audit_params(token_id, actor, action, site_id, target, detail)
    conn.execute(sql, params)
