"""The asset tree: sites > lines (edge nodes) > machines > tags, each limited to the caller's sites."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from zhizao.cloud.api.deps import Conn, Scope, SiteScope
from zhizao.cloud.api.errors import not_found
from zhizao.cloud.api.models import Line, LineDetail, Machine, MachineDetail, Site, SiteDetail, Tag
from zhizao.cloud.api.params import LineId, MachineId, SiteId

router = APIRouter(prefix="/api/v1", tags=["assets"])


_SITE_SQL = (
    "SELECT s.site_id, s.name, s.tz, s.first_seen, s.last_seen,"
    " (SELECT count(*) FROM edge_nodes e WHERE e.site_id = s.site_id) AS lines,"
    " (SELECT count(*) FROM machines m WHERE m.site_id = s.site_id) AS machines"
    " FROM sites s WHERE {scope}"
)
_LINE_SQL = (
    "SELECT e.site_id, e.edge_node_id AS line_id, e.edge_node_id, e.name, e.online, e.last_birth, e.last_death,"
    " coalesce((SELECT array_agg(m.machine_id ORDER BY m.machine_id) FROM machines m"
    "           WHERE m.site_id = e.site_id AND m.edge_node_id = e.edge_node_id), '{{}}') AS machines"
    " FROM edge_nodes e WHERE {scope} AND e.site_id = %(site)s"
)
_MACHINE_SQL = (
    "SELECT site_id, machine_id, coalesce(device_id, machine_id) AS device_id, edge_node_id, line_id, name,"
    " ideal_rate_per_min, online, last_birth, last_death"
    " FROM machines WHERE {scope} AND site_id = %(site)s"
)
_TAG_SQL = (
    "SELECT tag_id, site_id, edge_node_id, machine_id, name, datatype, unit, first_seen, last_seen"
    " FROM tags WHERE {scope}"
)


async def _rows(conn: AsyncConnection[Any], sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def _site(conn: AsyncConnection[Any], scope: SiteScope, site: str) -> dict[str, Any]:
    rows = await _rows(conn, _SITE_SQL.format(scope=scope.where("s.site_id")) + " AND s.site_id = %(site)s",
                       scope.params(site=site))
    if not rows:
        raise not_found("site", site)
    return rows[0]


async def _line(conn: AsyncConnection[Any], scope: SiteScope, site: str, line: str) -> dict[str, Any]:
    await _site(conn, scope, site)
    rows = await _rows(conn, _LINE_SQL.format(scope=scope.where("e.site_id")) + " AND e.edge_node_id = %(line)s",
                       scope.params(site=site, line=line))
    if not rows:
        raise not_found("line", line)
    return rows[0]


async def _machine(conn: AsyncConnection[Any], scope: SiteScope, site: str, machine: str) -> dict[str, Any]:
    await _site(conn, scope, site)
    rows = await _rows(conn, _MACHINE_SQL.format(scope=scope.where()) + " AND machine_id = %(machine)s",
                       scope.params(site=site, machine=machine))
    if not rows:
        raise not_found("machine", machine)
    return rows[0]


@router.get("/sites", response_model=list[Site], summary="Sites the token may see")
async def list_sites(conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """Every site inside the token's scope."""
    return await _rows(conn, _SITE_SQL.format(scope=scope.where("s.site_id")) + " ORDER BY s.site_id",
                       scope.params())


@router.get("/sites/{site}", response_model=SiteDetail, summary="One site with its lines")
async def get_site(site: SiteId, conn: Conn, scope: Scope) -> dict[str, Any]:
    """A site and its lines; 404 when unknown or outside the token's sites."""
    row = await _site(conn, scope, site)
    row["line_list"] = await _rows(conn, _LINE_SQL.format(scope=scope.where("e.site_id"))
                                   + " ORDER BY e.edge_node_id", scope.params(site=site))
    return row


@router.get("/sites/{site}/lines", response_model=list[Line], summary="Lines (edge nodes) of a site")
async def list_lines(site: SiteId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """The lines of a site."""
    await _site(conn, scope, site)
    return await _rows(conn, _LINE_SQL.format(scope=scope.where("e.site_id")) + " ORDER BY e.edge_node_id",
                       scope.params(site=site))


@router.get("/sites/{site}/lines/{line}", response_model=LineDetail, summary="One line with its machines")
async def get_line(site: SiteId, line: LineId, conn: Conn, scope: Scope) -> dict[str, Any]:
    """A line, its machines and the edge node's own metrics."""
    row = await _line(conn, scope, site, line)
    row["machine_list"] = await _rows(
        conn, _MACHINE_SQL.format(scope=scope.where()) + " AND edge_node_id = %(line)s ORDER BY machine_id",
        scope.params(site=site, line=line))
    row["node_tags"] = await _rows(
        conn, _TAG_SQL.format(scope=scope.where()) + " AND site_id = %(site)s AND edge_node_id = %(line)s"
        " AND machine_id IS NULL ORDER BY name", scope.params(site=site, line=line))
    return row


@router.get("/sites/{site}/lines/{line}/machines", response_model=list[Machine], summary="Machines of a line")
async def list_line_machines(site: SiteId, line: LineId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """The machines served by one edge node."""
    await _line(conn, scope, site, line)
    return await _rows(
        conn, _MACHINE_SQL.format(scope=scope.where()) + " AND edge_node_id = %(line)s ORDER BY machine_id",
        scope.params(site=site, line=line))


@router.get("/sites/{site}/machines", response_model=list[Machine], summary="Machines of a site")
async def list_machines(site: SiteId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """Every machine of a site."""
    await _site(conn, scope, site)
    return await _rows(conn, _MACHINE_SQL.format(scope=scope.where()) + " ORDER BY machine_id",
                       scope.params(site=site))


@router.get("/sites/{site}/machines/{machine}", response_model=MachineDetail, summary="One machine with its tags")
async def get_machine(site: SiteId, machine: MachineId, conn: Conn, scope: Scope) -> dict[str, Any]:
    """A machine and its tags."""
    row = await _machine(conn, scope, site, machine)
    row["tags"] = await _rows(
        conn, _TAG_SQL.format(scope=scope.where()) + " AND site_id = %(site)s AND machine_id = %(machine)s"
        " ORDER BY name", scope.params(site=site, machine=machine))
    return row


@router.get("/sites/{site}/machines/{machine}/tags", response_model=list[Tag], summary="Tags of a machine")
async def list_machine_tags(site: SiteId, machine: MachineId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """The tags (signals) of a machine."""
    await _machine(conn, scope, site, machine)
    return await _rows(
        conn, _TAG_SQL.format(scope=scope.where()) + " AND site_id = %(site)s AND machine_id = %(machine)s"
        " ORDER BY name", scope.params(site=site, machine=machine))


@router.get("/tags/{tag_id}", response_model=Tag, summary="One tag by id")
async def get_tag(tag_id: int, conn: Conn, scope: Scope) -> dict[str, Any]:
    """A tag; 404 when unknown or outside the token's sites."""
    rows = await _rows(conn, _TAG_SQL.format(scope=scope.where()) + " AND tag_id = %(tag_id)s",
                       scope.params(tag_id=tag_id))
    if not rows:
        raise not_found("tag", tag_id)
    return rows[0]
