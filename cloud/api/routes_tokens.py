"""Token rotation: a new token with the same role and sites, the old one valid for a grace period, audited.

`POST /api/v1/tokens/{token_id}/rotate` (admin, for tokens whose sites lie inside the caller's) and
`POST /api/v1/me/rotate` (any token, for itself: a client renews its own credential before it expires). A token
that was rotated already is not rotated again (404): rotate its successor.
The CLI does the same with `zhizao cloud token rotate` (`cloud.auth.rotate_token`, the same statements).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from zhizao.cloud.api.deps import Caller, Conn, require_role
from zhizao.cloud.api.errors import not_found
from zhizao.cloud.api.params import JsonIntCheck
from zhizao.cloud.auth import (
    MAX_GRACE_S,
    MAX_LIFETIME_S,
    ROTATE_LOCK_SQL,
    ROTATE_RETIRE_SQL,
    Principal,
    Role,
    Rotation,
    audit_params,
    insert_token_sql,
    new_token,
    rotation_detail,
    rotation_lifetime,
    token_row,
)

router = APIRouter(tags=["admin"])


class RotateIn(BaseModel):
    """How long the old token stays valid, and the new one's lifetime."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is not a number of seconds
    grace_s: Annotated[int, Field(ge=0, le=MAX_GRACE_S), JsonIntCheck] = Field(
        default=3600, description="seconds the old token keeps working")
    expires_in_s: Annotated[int, Field(ge=60, le=MAX_LIFETIME_S), JsonIntCheck] | None = Field(
        default=None, description="the new token's lifetime; null = the old token's own")


class TokenRotated(BaseModel):
    """The new token (shown this once) and until when the old one works."""

    token_id: int
    token: str
    expires_at: datetime | None
    replaced: int
    old_valid_until: datetime | None


async def _rotate(conn: Any, caller: Principal, token_id: int, body: RotateIn) -> dict[str, Any]:
    async with conn.transaction():
        cur = await conn.execute(ROTATE_LOCK_SQL, [token_id])
        old = await cur.fetchone()
        if old is None:
            raise not_found("token", token_id)
        name, role, sites, lifetime = old
        if caller.sites is not None and (sites is None or not set(sites) <= caller.sites):
            raise not_found("token", token_id)
        life = rotation_lifetime(None if lifetime is None else float(lifetime), body.expires_in_s)
        token = new_token()
        cur = await conn.execute(insert_token_sql(), token_row(Role(role), None if sites is None else tuple(sites),
                                                               name, token, caller.name, life))  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(ROTATE_RETIRE_SQL, [row[0], body.grace_s, token_id])
        retired = await cur.fetchone()
        assert retired is not None
        rotation = Rotation(token_id, int(row[0]), token, row[1], retired[0])
        sql, params = audit_params(caller.token_id, caller.name, "token.rotate", None, str(token_id),
                                   rotation_detail(rotation, body.grace_s))  # fmt: skip
        await conn.execute(sql, params)
    return {"token_id": rotation.new_id, "token": rotation.token, "expires_at": rotation.expires_at,
            "replaced": token_id, "old_valid_until": rotation.old_valid_until}  # fmt: skip


@router.post("/api/v1/tokens/{token_id}/rotate", response_model=TokenRotated, status_code=201,
             summary="Rotate a token (admin): a new one with the same role and sites; the old one expires after a grace")
async def rotate(
    token_id: Annotated[int, Path(ge=1, le=2**53)], conn: Conn,
    caller: Annotated[Principal, Depends(require_role(Role.admin))],
    body: Annotated[RotateIn, Body()] = RotateIn(),  # noqa: B008 (a constant default body)
) -> dict[str, Any]:
    """Tokens outside the caller's sites, revoked or expired answer 404."""
    return await _rotate(conn, caller, token_id, body)


@router.post("/api/v1/me/rotate", response_model=TokenRotated, status_code=201,
             summary="Rotate the caller's own token: a new one with the same role and sites")
async def rotate_own(
    conn: Conn, caller: Caller, body: Annotated[RotateIn, Body()] = RotateIn(),  # noqa: B008
) -> dict[str, Any]:
    """The token sending this request keeps working for `grace_s` seconds, then only the new one does."""
    return await _rotate(conn, caller, caller.token_id, body)
