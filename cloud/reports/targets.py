"""OEE targets per line (`oee_line_targets`): read, upsert, and read beside the current shift's actuals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zhizao.cloud.oee import queries as q

__all__ = ["TargetIn", "list_targets", "put_target"]


class TargetIn(BaseModel):
    """A line's OEE target as fractions (0.85 = 85 %); availability, performance and quality are optional."""

    model_config = ConfigDict(extra="forbid")
    oee: float = Field(gt=0, le=1)
    availability: float | None = Field(default=None, gt=0, le=1)
    performance: float | None = Field(default=None, gt=0, le=1)
    quality: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _reachable(self) -> TargetIn:
        a, p, qq = self.availability, self.performance, self.quality
        if a is not None and p is not None and qq is not None and a * p * qq + 1e-9 < self.oee:
            raise ValueError(f"oee {self.oee} is above availability x performance x quality = {a * p * qq:.4f}")
        return self


_COLUMNS = "t.oee, t.availability, t.performance, t.quality, t.source, t.updated_at, t.updated_by"


def _target(row: tuple[Any, ...]) -> dict[str, Any] | None:
    if row[0] is None:
        return None
    return {"oee": row[0], "availability": row[1], "performance": row[2], "quality": row[3], "source": row[4],
            "updated_at": row[5].isoformat(), "updated_by": row[6]}


async def list_targets(conn: q.AConn, site: str | None, line: str | None, scope_sql: Callable[[str], str],
                       scope_params: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Every line in scope with its target (or null) and the OEE figures of its newest shift window.

    `current` is the line's shift window that started last within the past day (running or just ended),
    summed over its machines as /api/v1/oee sums a line. `scope_sql(column)` limits a site column to the
    caller's sites (the API's `SiteScope.where`), with `scope_params`.
    """
    cur = await conn.execute(
        "SELECT l.site_id, l.line_id, e.name, e.name_zh, " + _COLUMNS + " FROM"
        " (SELECT site_id, line_id FROM machines UNION SELECT site_id, edge_node_id FROM edge_nodes"
        "  UNION SELECT site_id, line_id FROM oee_line_targets) l"
        " LEFT JOIN edge_nodes e ON e.site_id = l.site_id AND e.edge_node_id = l.line_id"
        " LEFT JOIN oee_line_targets t ON t.site_id = l.site_id AND t.line_id = l.line_id"
        " WHERE (%(site)s::text IS NULL OR l.site_id = %(site)s) AND (%(line)s::text IS NULL OR l.line_id = %(line)s)"
        f" AND {scope_sql('l.site_id')} ORDER BY 1, 2",
        {**scope_params, "site": site, "line": line},
    )
    rows = await cur.fetchall()
    cur = await conn.execute(
        f"SELECT DISTINCT ON (site_id, line_id) site_id, line_id, start_ts, end_ts, {q.SUMS_SQL},"
        " bit_or(flags) AS flags FROM oee_windows WHERE kind = 'shift' AND start_ts > %(lo)s AND start_ts <= %(now)s"
        " AND (%(site)s::text IS NULL OR site_id = %(site)s) AND (%(line)s::text IS NULL OR line_id = %(line)s)"
        f" AND {scope_sql('site_id')} GROUP BY site_id, line_id, start_ts, end_ts ORDER BY site_id, line_id, start_ts DESC",
        {**scope_params, "site": site, "line": line, "lo": now - timedelta(hours=25), "now": now},
    )
    names = [d.name for d in cur.description or []]
    actual: dict[tuple[str, str], dict[str, Any]] = {}
    for r in await cur.fetchall():
        w = dict(zip(names, r, strict=True))
        actual[(w["site_id"], w["line_id"])] = {
            "start": w["start_ts"].isoformat(), "end": w["end_ts"].isoformat(),
            **{k: v for k, v in q.ratios_of(w, one_machine=False).items()
               if k in ("availability", "performance", "quality", "oee")},
        }
    out = []
    for r in rows:
        target = _target(r[4:])
        now_fig = actual.get((r[0], r[1]))
        out.append({
            "site": r[0], "line": r[1], "name": r[2] or r[1], "name_zh": r[3], "target": target,
            "current": now_fig,
            "on_target": None if target is None or now_fig is None or now_fig["oee"] is None
            else now_fig["oee"] >= target["oee"],
        })
    return out


async def put_target(conn: q.AConn, site: str, line: str, body: TargetIn, actor: str) -> dict[str, Any]:
    """Upsert a line's target (source 'api'); returns the stored target."""
    cur = await conn.execute(
        "INSERT INTO oee_line_targets AS t (site_id, line_id, oee, availability, performance, quality, source,"
        " updated_at, updated_by) VALUES (%s, %s, %s, %s, %s, %s, 'api', now(), %s) ON CONFLICT (site_id, line_id)"
        " DO UPDATE SET oee = excluded.oee, availability = excluded.availability, performance = excluded.performance,"
        " quality = excluded.quality, source = 'api', updated_at = now(), updated_by = excluded.updated_by"
        " RETURNING " + _COLUMNS,
        [site, line, body.oee, body.availability, body.performance, body.quality, actor],
    )
    row = await cur.fetchone()
    assert row is not None
    target = _target(tuple(row))
    assert target is not None
    return target
