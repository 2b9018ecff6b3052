"""What the planning routes share: the role checks, the caller's planner, sync work in a thread, the audit log."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request

from zhizao.cloud.api.deps import Conn, get_principal, require_role
from zhizao.cloud.api.errors import ApiError
from zhizao.cloud.auth import Principal, Role
from zhizao.cloud.planning.service import Planner

Engineer = Annotated[Principal, Depends(require_role(Role.engineer))]
Operator = Annotated[Principal, Depends(require_role(Role.operator))]
Caller = Annotated[Principal, Depends(get_principal)]


def cluster_planner(principal: Principal) -> Principal:
    """The caller when it may plan the cluster (cluster-planner or admin for every site), else 403."""
    if not principal.role.includes(Role.cluster_planner) or principal.sites is not None:
        raise ApiError(403, f"role {principal.role.value!r} for sites {principal.site_list()!r} may not plan the"
                       " cluster; needs 'cluster-planner' or above for all sites ('*')", "role", principal.role.value)
    return principal


async def planner_dep(principal: Caller) -> Principal:
    """`cluster_planner` as a dependency."""
    return cluster_planner(principal)


ClusterPlanner = Annotated[Principal, Depends(planner_dep)]


def sees_all(principal: Principal) -> bool:
    """True for a cluster planner (or admin) of every site: it reads every site's planning data."""
    return principal.role.includes(Role.cluster_planner) and principal.sites is None


def planner_of(request: Request) -> Planner:
    """The app's planner (set by the service with its solver), or a greedy one on the API's database."""
    planner: Planner | None = getattr(request.app.state, "planner", None)
    if planner is None:
        planner = Planner(request.app.state.settings.require_database_url())
        request.app.state.planner = planner
    return planner


def run_sync(request: Request, fn: Any, *args: Any) -> Any:
    """Run `fn(conn, *args)` on a sync connection in a worker thread."""
    url = request.app.state.settings.require_database_url()

    def run() -> Any:
        with psycopg.connect(url) as conn:
            return fn(conn, *args)

    return asyncio.to_thread(run)


async def audit(conn: Conn, principal: Principal, action: str, site: str | None, target: str, detail: Any,
                *, commit: bool = True) -> None:
    """Write the audit-log row of a change and commit it with the change (unless a transaction block holds it):
    the answer is sent only once the change is visible to every reader."""
    await conn.execute(
        "INSERT INTO audit_log (token_id, actor, action, site_id, target, detail) VALUES (%s, %s, %s, %s, %s, %s)",
        [principal.token_id, principal.name, action, site, target, json.dumps(detail, default=str)])
    if commit:
        await conn.commit()

