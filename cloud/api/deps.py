"""Request dependencies: the database pool, the caller (bearer token), and the site scope every query filters by."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from zhizao.cloud.api.errors import ApiError, not_found
from zhizao.cloud.auth import TOKEN_PREFIX, Principal, Role, hash_token, principal_from_row, tokens_match

__all__ = ["Caller", "Conn", "Pool", "Scope", "SiteScope", "get_principal", "require_role"]

_bearer = HTTPBearer(auto_error=False, description="A token from `zhizao cloud token create`.")
# Writing last_used on every request would turn each read into a write; once a minute per token is plenty.
_LAST_USED_EVERY_S = 60.0


def get_pool(request: Request) -> AsyncConnectionPool:
    """The app's async connection pool."""
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_conn(pool: Pool) -> AsyncIterator[AsyncConnection[Any]]:
    """One pooled connection per request, shared by the token check and the route (one health check)."""
    async with pool.connection() as conn:
        yield conn


# scope="function": the connection goes back to the pool (committing what the route wrote) when the route
# returns, before the answer is sent. With FastAPI's default ("request", after the answer) a client that
# created something and asked for it at once could be told 404, because the creating transaction had not
# committed yet (schemathesis' stateful phase found it on POST then DELETE /api/v1/tokens).
Conn = Annotated[AsyncConnection[Any], Depends(get_conn, scope="function")]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "Authorization", None)


async def get_principal(
    request: Request,
    conn: Conn,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller behind the bearer token; 401 when it is missing, unknown, revoked or expired."""
    if credentials is None:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = credentials.credentials.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        raise _unauthorized("invalid bearer token")
    digest = hash_token(token)
    cur = await conn.execute(
        "SELECT token_id, name, role, sites, token_hash, expires_at, expires_at <= now() FROM api_tokens"
        " WHERE token_hash = %s AND revoked_at IS NULL",
        [digest],
    )
    row = await cur.fetchone()
    if row is None or not tokens_match(bytes(row[4]), token):
        raise _unauthorized("invalid or revoked bearer token")
    if row[6]:  # the database's clock decides, as it set the expiry
        raise _unauthorized(f"bearer token expired at {row[5].isoformat()}; rotate it before it expires, "
                            "or create a new one (`zhizao cloud token create`)")  # fmt: skip
    principal = principal_from_row(row)
    seen: dict[int, float] = request.app.state.token_last_used
    now = time.monotonic()
    if now - seen.get(principal.token_id, -_LAST_USED_EVERY_S) >= _LAST_USED_EVERY_S:
        seen[principal.token_id] = now
        await conn.execute("UPDATE api_tokens SET last_used = now() WHERE token_id = %s", [principal.token_id])
    return principal


Caller = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True)
class SiteScope:
    """The sites a caller may see, as SQL: every query that touches site data filters with `where()`."""

    principal: Principal

    def where(self, column: str = "site_id") -> str:
        """SQL condition limiting `column` to the caller's sites (uses the named parameters of `params()`)."""
        return f"(%(scope_all)s OR {column} = ANY(%(scope_sites)s))"

    def params(self, **extra: Any) -> dict[str, Any]:
        """Named parameters for `where()`, merged with the query's own."""
        sites = self.principal.site_list()
        return {"scope_all": sites is None, "scope_sites": sites or [], **extra}

    def sees(self, site_id: str) -> bool:
        """True when `site_id` is inside the scope (for checks that need no query)."""
        return self.principal.sees(site_id)

    async def check(self, conn: AsyncConnection[Any], site: str | None) -> None:
        """404 when a list route's `site` filter names a site that does not exist or lies outside the scope,
        like every route that names a site in its path (an empty list would tell the two cases apart)."""
        if site is None:
            return
        if not self.sees(site) or await (await conn.execute(
                "SELECT 1 FROM sites WHERE site_id = %s", [site])).fetchone() is None:  # fmt: skip
            raise not_found("site", site)


def get_scope(principal: Caller) -> SiteScope:
    """The caller's site scope."""
    return SiteScope(principal)


Scope = Annotated[SiteScope, Depends(get_scope)]


def require_role(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency factory: the caller, or 403 when their role is below `role`."""

    async def check(principal: Caller) -> Principal:
        if not principal.role.includes(role):
            raise ApiError(403, f"role {principal.role.value!r} may not do this; needs {role.value!r} or above",
                           "role", principal.role.value)
        return principal

    return check
