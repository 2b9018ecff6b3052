"""Report routes: the shift report (JSON, CSV, PDF; English and Chinese), its comments, OEE targets per line.

A shift is named by its site and its start (`shift_start`: epoch ms, ISO 8601 with a zone, or ISO 8601 without
one, read as the site's local time); the site's calendar must have a shift starting exactly then, and it must
have ended. Sites outside the token's scope, and unknown lines, answer 404.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Conn, Scope, SiteScope, require_role
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.params import LineId, SiteId, SiteQuery
from zhizao.cloud.api.series import from_ms
from zhizao.cloud.auth import Principal, Role, audit_params
from zhizao.cloud.oee.calendar import SiteCalendar
from zhizao.cloud.reports import targets as tg
from zhizao.cloud.reports.csvfile import report_csv
from zhizao.cloud.reports.pdf import FontMissing, find_font, report_pdf
from zhizao.cloud.reports.shift import (
    Lang,
    ShiftNotFinished,
    ShiftRef,
    UnknownShift,
    build_report,
    find_shift,
    finished_shifts,
    load_calendar,
)

router = APIRouter(prefix="/api/v1", tags=["reports"])

Format = Literal["json", "csv", "pdf"]
_MAX_DAYS = 62


async def _site(conn: Conn, scope: SiteScope, site: str) -> None:
    """404 unless the site is in the token's scope and known."""
    if not scope.sees(site):
        raise not_found("site", site)
    cur = await conn.execute("SELECT 1 FROM sites WHERE site_id = %(s)s UNION ALL"
                             " SELECT 1 FROM oee_windows WHERE site_id = %(s)s LIMIT 1", {"s": site})
    if await cur.fetchone() is None:
        raise not_found("site", site)


async def _line(conn: Conn, site: str, line: str) -> None:
    cur = await conn.execute(
        "SELECT 1 FROM machines WHERE site_id = %(s)s AND line_id = %(l)s UNION ALL"
        " SELECT 1 FROM edge_nodes WHERE site_id = %(s)s AND edge_node_id = %(l)s LIMIT 1", {"s": site, "l": line})
    if await cur.fetchone() is None:
        raise not_found("line", f"{site}/{line}")


def _start(cal: SiteCalendar, value: str) -> datetime:
    """`shift_start` as UTC: epoch ms, ISO 8601 with a zone, or without one in the site's local time."""
    text = value.strip()
    if re.fullmatch(r"-?\d{1,15}", text):
        return from_ms(int(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request("shift_start", value, "not a time; give epoch ms or ISO 8601 (local time of the site"
                          " when it has no zone, e.g. 2026-11-02T08:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=cal.zone)
    return parsed.astimezone(UTC)


async def _shift(conn: Conn, scope: SiteScope, site: str, shift_start: str) -> tuple[SiteCalendar, ShiftRef]:
    await _site(conn, scope, site)
    cal = await load_calendar(conn, site)
    try:
        return cal, find_shift(cal, _start(cal, shift_start), datetime.now(UTC))
    except UnknownShift as exc:
        raise ApiError(404, str(exc), "shift_start", shift_start) from None
    except ShiftNotFinished as exc:
        raise ApiError(409, str(exc), "shift_start", shift_start) from None


@router.get("/reports/shift", summary="Shift report of a finished shift: per line and for the site",
            response_model=None)
async def get_shift_report(
    request: Request, conn: Conn, scope: Scope,
    site: SiteQuery,
    shift_start: Annotated[str, Query(min_length=1, description="the shift's start: epoch ms, ISO 8601, or local time of the site")],
    line: Annotated[Id | None, Query(description="one line (default: every line and the site)")] = None,
    fmt: Annotated[Format, Query(alias="format")] = "json",
    lang: Annotated[Lang, Query(description="language of names and headings")] = "en",
) -> Response | dict[str, Any]:
    """OEE with A/P/Q, the six losses, top stops with reasons, counts, MTBF/MTTR, targets and comments."""
    cal, shift = await _shift(conn, scope, site, shift_start)
    if line is not None:
        await _line(conn, site, line)
    report = await build_report(conn, cal, shift, line, lang, datetime.now(UTC))
    if fmt == "json":
        return report
    stem = f"shift-report-{site}{'-' + line if line else ''}-{shift.start.astimezone(cal.zone):%Y%m%d-%H%M}-{lang}"
    if fmt == "csv":
        return Response(report_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'})
    try:
        font = find_font(request.app.state.settings.report_font)
        body = await asyncio.to_thread(report_pdf, report, font)
    except FontMissing as exc:
        raise ApiError(503, str(exc), "lang" if lang == "zh" else "font", lang) from None
    return Response(body, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{stem}.pdf"'})


@router.get("/reports/shifts", summary="Finished shifts of a site, newest first (to pick a report)")
async def get_shifts(
    conn: Conn, scope: Scope, site: SiteQuery,
    days: Annotated[int, Query(ge=1, le=_MAX_DAYS, description="how far back")] = 7,
) -> list[dict[str, Any]]:
    """`[{name, start, end, local_start}]` of the shifts that ended in the last `days` days."""
    await _site(conn, scope, site)
    cal = await load_calendar(conn, site)
    return [{"name": s.name, "start": s.start.isoformat(), "end": s.end.isoformat(),
             "local_start": s.start.astimezone(cal.zone).isoformat(timespec="minutes")}
            for s in finished_shifts(cal, datetime.now(UTC), days)]


class CommentIn(BaseModel):
    """A comment on a shift report: the site's shift by its start, one line or (no line) the whole site."""

    model_config = ConfigDict(extra="forbid")
    site: Id
    shift_start: str
    line: Id | None = None
    text: str = Field(min_length=1, max_length=2000)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank; write what happened")
        return value.strip()


@router.post("/reports/shift/comments", status_code=201,
             summary="Add a comment to a shift report (operator or above; audited)")
async def post_comment(
    conn: Conn, scope: Scope,
    principal: Annotated[Principal, Depends(require_role(Role.operator))],
    body: Annotated[CommentIn, Body()],
) -> dict[str, Any]:
    """The shift must exist and have started (operators note things while it runs); the comment is stored and audited."""
    await _site(conn, scope, body.site)
    cal = await load_calendar(conn, body.site)
    start = _start(cal, body.shift_start)
    try:
        # A comment may be written while the shift runs: any shift that has started is fine.
        shift = find_shift(cal, start, datetime.max.replace(tzinfo=UTC))
    except UnknownShift as exc:
        raise ApiError(404, str(exc), "shift_start", body.shift_start) from None
    if shift.start > datetime.now(UTC):
        raise ApiError(409, f"shift_start={body.shift_start!r}: shift {shift.name} has not started yet",
                       "shift_start", body.shift_start)
    if body.line is not None:
        await _line(conn, body.site, body.line)
    await conn.commit()  # the token check opened a transaction
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO shift_report_comments (site_id, line_id, shift_start, shift_name, body, author, token_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, created_at",
            [body.site, body.line, shift.start, shift.name, body.text, principal.name, principal.token_id],
        )
        row = await cur.fetchone()
        assert row is not None
        sql, params = audit_params(principal.token_id, principal.name, "report.comment.add", body.site,
                                   body.line or body.site, {"shift_start": shift.start.isoformat(),
                                                            "shift": shift.name, "comment_id": int(row[0])})
        await conn.execute(sql, params)
    return {"id": int(row[0]), "site": body.site, "line": body.line, "shift": shift.name,
            "shift_start": shift.start.isoformat(), "text": body.text, "author": principal.name,
            "at": row[1].isoformat()}


@router.get("/targets", summary="OEE targets per line beside the current shift's actuals")
async def get_targets(
    conn: Conn, scope: Scope,
    site: Annotated[Id | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Every line in scope (or of `site`): `{site, line, name, name_zh, target, current, on_target}`."""
    if site is not None:
        await _site(conn, scope, site)
    return await tg.list_targets(conn, site, None, scope.where, scope.params(), datetime.now(UTC))


@router.get("/sites/{site}/lines/{line}/target", summary="A line's OEE target and current shift actuals")
async def get_target(site: SiteId, line: LineId, conn: Conn, scope: Scope) -> dict[str, Any]:
    """`{site, line, name, name_zh, target (or null), current, on_target}`."""
    await _site(conn, scope, site)
    await _line(conn, site, line)
    rows = await tg.list_targets(conn, site, line, scope.where, scope.params(), datetime.now(UTC))
    return rows[0]


@router.put("/sites/{site}/lines/{line}/target", summary="Set a line's OEE target (engineer or above; audited)")
async def put_target(
    site: SiteId, line: LineId, conn: Conn, scope: Scope,
    principal: Annotated[Principal, Depends(require_role(Role.engineer))],
    body: Annotated[tg.TargetIn, Body()],
) -> dict[str, Any]:
    """Body `{oee, availability?, performance?, quality?}` as fractions; seeding again keeps it."""
    await _site(conn, scope, site)
    await _line(conn, site, line)
    await conn.commit()
    async with conn.transaction():
        cur = await conn.execute("SELECT oee, availability, performance, quality FROM oee_line_targets"
                                 " WHERE site_id = %s AND line_id = %s", [site, line])
        old = await cur.fetchone()
        target = await tg.put_target(conn, site, line, body, principal.name)
        sql, params = audit_params(principal.token_id, principal.name, "oee.target.put", site, line,
                                   {"new": body.model_dump(), "old": None if old is None else dict(
                                       zip(("oee", "availability", "performance", "quality"), old, strict=True))})
        await conn.execute(sql, params)
    return {"site": site, "line": line, "target": target}
