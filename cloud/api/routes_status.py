"""Service status: `/healthz` (open), `/metrics` (Prometheus), `/api/v1/edge-nodes`, `/api/v1/me`, token administration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from psycopg.rows import dict_row

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Caller, Conn, Pool, Scope, require_role
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.models import EdgeNode, Health, TokenCreate, TokenCreated
from zhizao.cloud.auth import (
    AuthError,
    Principal,
    Role,
    audit_params,
    check_token_name,
    insert_token_sql,
    new_token,
    parse_sites,
    token_row,
)

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["status"], summary="Liveness (no token needed)")
async def healthz(request: Request, pool: Pool) -> Any:
    """Database reachable, storage kind, ingest counters; 503 when the database does not answer."""
    stats_fn: Callable[[], dict[str, float]] | None = request.app.state.ingest_stats
    try:
        ingest = {k: float(v) for k, v in stats_fn().items()} if stats_fn else {}
    except Exception as exc:  # noqa: BLE001 - health must answer even when the ingest is broken
        log.warning("ingest stats failed: %s", exc)
        ingest = {}
    if ingest.get("workers_alive", 1.0) < 1.0:  # a worker thread ended; the watchdog restarts it
        body = {"status": "degraded", "database": "unknown", "storage": request.app.state.storage_kind,
                "ingest": ingest}  # fmt: skip
        return JSONResponse(body, status_code=503)
    try:
        async with pool.connection(timeout=3.0) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure here means "not healthy", never a 500
        log.warning("healthz: database unreachable: %s", exc)
        body = {"status": "degraded", "database": "unreachable", "storage": request.app.state.storage_kind,
                "ingest": ingest}
        return JSONResponse(body, status_code=503)
    return {"status": "ok", "database": "ok", "storage": request.app.state.storage_kind, "ingest": ingest}


@router.get("/metrics", tags=["status"], summary="Prometheus metrics (token needed)",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(_: Caller) -> Response:
    """Process, API and ingest metrics in the Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/edge-nodes", response_model=list[EdgeNode], tags=["status"],
            summary="Edge agents: online state, last birth, outbox depth and fill, refusals, quarantine, samples/s")
async def edge_nodes(
    conn: Conn, scope: Scope, site: Annotated[Id | None, Query()] = None
) -> list[dict[str, Any]]:
    """Every edge node in the token's sites (or one site)."""
    where = ""
    params: dict[str, Any] = {}
    if site is not None:
        where, params["site"] = " AND site_id = %(site)s", site
    async with conn.cursor(row_factory=dict_row) as cur:
        if site is not None:
            await cur.execute(f"SELECT 1 FROM sites WHERE {scope.where()} AND site_id = %(site)s",
                              scope.params(site=site))
            if await cur.fetchone() is None:
                raise not_found("site", site)
        await cur.execute(
            "SELECT site_id, edge_node_id, online, bd_seq, last_birth, last_death, last_seen, outbox_depth,"
            " samples_per_s, reconnects, last_batch, acked_batch,"
            f" {_health('Health/OutboxFill')} AS outbox_fill,"
            f" {_health('Health/OutboxRefusedSamples')}::bigint AS outbox_refused_samples,"
            f" {_health('Health/CommandsRefused')}::bigint AS commands_refused,"
            " (SELECT count(*) FROM quarantine q JOIN tags t USING (tag_id) WHERE t.site_id = n.site_id"
            "  AND t.edge_node_id = n.edge_node_id) AS quarantined_samples"
            f" FROM edge_nodes n WHERE {scope.where()}{where} ORDER BY site_id, edge_node_id",
            scope.params(**params),
        )
        return await cur.fetchall()


def _health(metric: str) -> str:
    """SQL for the latest value of one of the node's own health metrics (a node tag, edge/node/messages.py)."""
    return ("(SELECT lv.value FROM tags t JOIN latest_values lv USING (tag_id) WHERE t.site_id = n.site_id"
            f" AND t.edge_node_id = n.edge_node_id AND coalesce(t.machine_id, '') = '' AND t.name = '{metric}')")


@router.get("/api/v1/me", tags=["status"], summary="The caller's own token: name, role and sites")
async def me(caller: Caller) -> dict[str, Any]:
    """Who the token belongs to, its role and its sites (null = all), so a client can show what the role may do."""
    return {
        "token_id": caller.token_id,
        "name": caller.name,
        "role": caller.role.value,
        "sites": caller.site_list(),
    }


Admin = Annotated[Principal, Depends(require_role(Role.admin))]


@router.post("/api/v1/tokens", response_model=TokenCreated, status_code=201, tags=["admin"],
             summary="Create a token (admin); its sites must lie inside the caller's")
async def create_token(body: TokenCreate, caller: Admin, conn: Conn) -> dict[str, Any]:
    """A new token with a role and sites no wider than the caller's; written to the audit log."""
    try:
        role = Role.parse(body.role.value)
        sites = parse_sites(body.sites)
        name = check_token_name(body.name)
    except AuthError as exc:
        field = str(exc).split(":", 1)[0]
        raise ApiError(400, str(exc), field, getattr(body, field, None)) from None
    if caller.sites is not None:
        if sites is None:
            raise bad_request("sites", None, "a site-scoped admin cannot create an all-sites token")
        outside = sorted(set(sites) - caller.sites)
        if outside:
            raise bad_request("sites", ",".join(outside), "outside the caller's sites")
    token = new_token()
    cur = await conn.execute(insert_token_sql(), token_row(role, sites, name, token, caller.name, body.expires_in_s))
    row = await cur.fetchone()
    assert row is not None
    expires_at = None if row[1] is None else row[1].isoformat()
    sql, params = audit_params(caller.token_id, caller.name, "token.create", None, str(row[0]),
                               {"name": name, "role": role.value, "sites": sites, "expires_at": expires_at})
    await conn.execute(sql, params)
    return {"token_id": row[0], "name": name, "role": role.value, "sites": None if sites is None else list(sites),
            "token": token, "expires_at": expires_at}


@router.delete("/api/v1/tokens/{token_id}", status_code=204, tags=["admin"], summary="Revoke a token (admin)")
async def revoke(token_id: Annotated[int, Path(ge=1, le=2**53)], caller: Admin, conn: Conn) -> Response:
    """Revoke a token whose sites lie inside the caller's; 404 otherwise."""
    cur = await conn.execute("SELECT sites FROM api_tokens WHERE token_id = %s AND revoked_at IS NULL",
                             [token_id])
    row = await cur.fetchone()
    sites = None if row is None else row[0]
    if row is None or (caller.sites is not None and (sites is None or not set(sites) <= caller.sites)):
        raise not_found("token", token_id)
    await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s", [token_id])
    sql, params = audit_params(caller.token_id, caller.name, "token.revoke", None, str(token_id), None)
    await conn.execute(sql, params)
    return Response(status_code=204)
