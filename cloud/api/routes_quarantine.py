"""Quarantine: refused samples of known tags, kept whole by the ingest, listed and re-ingested once fixed.

A sample is held when its tag is known but its value or time is not acceptable (a device clock ahead or never
set, a NaN or Inf that claims good quality, a value that does not fit the datatype its tag was born with). The
ingest acknowledges such a batch to the edge only after the held samples are committed to `quarantine`, so
nothing the edge deletes is lost. After the cause is fixed (the clock corrected, the value understood, the tag
re-born with the datatype its values have), `POST /api/v1/quarantine/reingest` moves the samples into the time
series, with a time shift for a clock offset, and leaves whatever still does not pass where it is.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from zhizao.broker.contract.ids import Id
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.api.deps import Conn, Scope, require_role
from zhizao.cloud.api.errors import not_found
from zhizao.cloud.api.params import JsonIntCheck, SiteQuery
from zhizao.cloud.auth import Principal, Role, audit_params
from zhizao.cloud.ingest.decode import MIN_TS_MS, QUARANTINE_REASONS, fits_sql
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.storage import plain

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])

_MAX_FUTURE_MS = int(IngestSettings().max_future_s * 1000)
Reason = Annotated[str | None, Query(description=f"one of {', '.join(QUARANTINE_REASONS)}",
                                     pattern="^(" + "|".join(QUARANTINE_REASONS) + ")$")]  # fmt: skip


async def _site_in_scope(conn: Any, scope: Any, site: str) -> None:
    cur = await conn.execute(f"SELECT 1 FROM sites WHERE {scope.where()} AND site_id = %(site)s",
                             scope.params(site=site))  # fmt: skip
    if await cur.fetchone() is None:
        raise not_found("site", site)


def _number(value: float | None) -> tuple[float | None, str | None]:
    """JSON has no NaN or Inf: such values travel as null plus their spelling."""
    if value is None or math.isfinite(value):
        return value, None
    return None, repr(value)


@router.get("", summary="Samples held in quarantine for a site, with counts by reason")
async def list_quarantine(
    conn: Conn, scope: Scope, site: SiteQuery, reason: Reason = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """The newest held samples (up to `limit`) and the count of every reason, for one site in the token's scope."""
    await _site_in_scope(conn, scope, site)
    params = {"site": site, "reason": reason, "limit": limit}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT q.reason, count(*) AS n FROM quarantine q JOIN tags t USING (tag_id)"
            " WHERE t.site_id = %(site)s GROUP BY 1 ORDER BY 1", params)  # fmt: skip
        by_reason = {str(r["reason"]): int(r["n"]) for r in await cur.fetchall()}
        await cur.execute(
            "SELECT q.id, q.received_at, t.edge_node_id, t.machine_id, t.name AS tag, q.ts_ms, q.value,"
            " q.text_value, q.quality, q.live, q.reason FROM quarantine q JOIN tags t USING (tag_id)"
            " WHERE t.site_id = %(site)s AND (%(reason)s::text IS NULL OR q.reason = %(reason)s)"
            " ORDER BY q.id DESC LIMIT %(limit)s", params)  # fmt: skip
        rows = await cur.fetchall()
    samples = []
    for r in rows:
        value, spelled = _number(r["value"])
        samples.append({**r, "received_at": r["received_at"].isoformat(), "value": value, "value_text": spelled})
    total = sum(by_reason.values()) if reason is None else by_reason.get(reason, 0)
    return {"site": site, "total": total, "by_reason": by_reason, "samples": samples}


class ReingestIn(BaseModel):
    """Which held samples to move back into the time series, and how to correct them."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `true` is not a time shift
    site: Id = Field(description="site id whose held samples are re-ingested")
    reason: str | None = Field(None, pattern="^(" + "|".join(QUARANTINE_REASONS) + ")$")
    ids: list[Annotated[int, Field(ge=1, le=2**53), JsonIntCheck]] | None = Field(
        None, max_length=100_000, description="only these quarantine ids")
    shift_ms: Annotated[int, Field(ge=-(10**13), le=10**13), JsonIntCheck] = Field(
        0, description="added to each sample's time (e.g. -3600000 for a clock 1 h ahead)")
    nan_as_null: bool = Field(False, description="store NaN/Inf values as 'no value' instead of holding them")


# A held 64-bit integer beyond 2**53 keeps its exact decimal text (the ingest's `Held.text`).
_EXACT = (f"(t.datatype IN ({int(DataType.Int64)}, {int(DataType.UInt64)}) AND CASE WHEN q.text_value ~ '^-?[0-9]{{1,20}}$'"
          " THEN abs(q.text_value::numeric) > 2::numeric ^ 53 ELSE false END)")


def _reingest_sql(service_rollups: bool) -> str:
    merge = plain.merge_returning_ctes("ins") if service_rollups else ""
    return (
        "WITH moved AS (DELETE FROM quarantine q USING tags t WHERE q.tag_id = t.tag_id AND t.site_id = %(site)s"
        " AND (%(reason)s::text IS NULL OR q.reason = %(reason)s)"
        " AND (%(ids)s::bigint[] IS NULL OR q.id = ANY(%(ids)s::bigint[]))"
        " AND q.ts_ms + %(shift)s BETWEEN %(min_ts)s AND %(max_ts)s"
        # The value must fit the tag's datatype as the latest birth declares it (a tag re-born as String
        # takes the text it refused before; 2.5 passes once the tag is born Double).
        " AND " + fits_sql("q.value", "q.text_value", "t.datatype") +
        " AND (q.text_value IS NOT NULL OR q.value IS NULL OR %(nan_as_null)s"
        "      OR q.value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8))"
        " RETURNING q.tag_id, 'epoch'::timestamptz + (q.ts_ms + %(shift)s) * interval '1 millisecond' AS ts,"
        " CASE WHEN q.value IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN NULL"
        f" WHEN {_EXACT} THEN q.text_value::float8 ELSE q.value END AS value,"
        # stored as the ingest stores them: a 64-bit integer's exact text in samples_int (and its float64 in
        # samples), a DateTime's epoch ms as its ISO 8601 text in samples_text
        f" CASE WHEN {_EXACT} THEN NULL WHEN t.datatype = {int(DataType.DateTime)} AND q.text_value IS NULL"
        "  AND q.value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN to_char("
        "  ('epoch'::timestamptz + q.value * interval '1 millisecond') AT TIME ZONE 'UTC',"
        "  'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') ELSE q.text_value END AS text_value,"
        f" CASE WHEN {_EXACT} THEN q.text_value::numeric END AS exact, q.quality)"
        ", ins AS (INSERT INTO samples (ts, tag_id, value, quality) SELECT ts, tag_id, value, quality FROM moved"
        " WHERE text_value IS NULL ON CONFLICT (tag_id, ts) DO NOTHING RETURNING ts, tag_id, value)"
        + merge
        + ", txt AS (INSERT INTO samples_text (ts, tag_id, value, quality) SELECT ts, tag_id, text_value, quality"
        " FROM moved WHERE text_value IS NOT NULL ON CONFLICT (tag_id, ts) DO NOTHING RETURNING 1)"
        ", ints AS (INSERT INTO samples_int (ts, tag_id, value, quality) SELECT ts, tag_id, exact, quality"
        " FROM moved WHERE exact IS NOT NULL ON CONFLICT (tag_id, ts) DO NOTHING)"
        " SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM ins) + (SELECT count(*) FROM txt)"
    )


@router.post("/reingest", summary="Move held samples into the time series (engineer or above)")
async def reingest(
    conn: Conn, scope: Scope,
    principal: Annotated[Principal, Depends(require_role(Role.engineer))],
    body: Annotated[ReingestIn, Body()],
) -> dict[str, Any]:
    """Samples whose corrected time and value now pass are stored once (idempotent on tag and time) and leave
    the quarantine; the others stay. Answers how many moved, how many were new rows, and how many remain."""
    await _site_in_scope(conn, scope, body.site)
    cur = await conn.execute("SELECT relkind FROM pg_class WHERE relname = 'samples_1m' AND relkind = 'r'")
    service_rollups = await cur.fetchone() is not None  # plain PostgreSQL: the service maintains the rollups
    params = {"site": body.site, "reason": body.reason, "ids": body.ids, "shift": body.shift_ms,
              "min_ts": MIN_TS_MS, "max_ts": int(time.time() * 1000) + _MAX_FUTURE_MS,
              "nan_as_null": body.nan_as_null}  # fmt: skip
    async with conn.transaction():
        cur = await conn.execute(_reingest_sql(service_rollups), params)
        moved, stored = await cur.fetchone() or (0, 0)
        sql, audit = audit_params(principal.token_id, principal.name, "quarantine.reingest", body.site, None,
                                  {**body.model_dump(exclude={"ids"}), "ids": len(body.ids or []),
                                   "moved": moved, "stored": stored})  # fmt: skip
        await conn.execute(sql, audit)
        cur = await conn.execute(
            "SELECT count(*) FROM quarantine q JOIN tags t USING (tag_id) WHERE t.site_id = %s", [body.site])
        remaining = (await cur.fetchone() or (0,))[0]
    await conn.commit()
    return {"site": body.site, "moved": int(moved), "stored": int(stored), "remaining": int(remaining)}
