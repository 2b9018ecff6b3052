"""Read side of OEE for the API (async psycopg): windows rolled up by sums, losses, pareto, state timelines."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from pydantic import ValidationError

from zhizao.analytics import Category, OeeConfig
from zhizao.broker.contract.calendar import Calendar, StateClasses
from zhizao.cloud.oee.calendar import PlannedStop, SiteCalendar, all_day_calendar, oee_config
from zhizao.cloud.oee.engine import SUM_FIELDS

AConn = AsyncConnection[Any]
# Every additive column of oee_windows summed (flags are OR-ed separately: bit_or(flags)).
SUMS_SQL = ", ".join(f"sum({f})::float8 AS {f}" for f in SUM_FIELDS if f != "flags")
LOSS_FIELDS = {
    "equipment_failure_s": "loss_failure_s", "setup_adjustment_s": "loss_setup_s",
    "idling_minor_stops_s": "loss_minor_s", "reduced_speed_s": "loss_speed_s",
    "process_defects_s": "loss_defect_s", "startup_rejects_s": "loss_startup_s",
    "material_stops_s": "loss_material_s",
}  # fmt: skip
# The loss classes of an /api/v1/oee row (seconds): the six big losses and material stops of their own.
ROW_LOSSES = {name.removesuffix("_s"): col for name, col in LOSS_FIELDS.items()}


def store_ms(value: datetime) -> int:
    """tz-aware datetime -> epoch ms."""
    return round(value.timestamp() * 1000)


def scope_filter(scope: str, site: str | None, ident: str) -> tuple[str, dict[str, Any]]:
    """SQL condition on oee_windows (or a table with site_id/machine_id) for an OEE scope."""
    if scope == "machine":
        return "site_id = %(site)s AND machine_id = %(id)s", {"site": site, "id": ident}
    if scope == "line":
        return "site_id = %(site)s AND line_id = %(id)s", {"site": site, "id": ident}
    if scope == "site":
        return "site_id = %(site)s", {"site": site}
    return "TRUE", {}


def ratios_of(row: dict[str, Any], *, one_machine: bool) -> dict[str, Any]:
    """A, P, Q, OEE, TEEP from summed figures: planned time and ideal output weight every machine.

    One machine: Q = good / total, as the kernel defines it. A group of machines (different products and
    rates): Q = good output at ideal cycle time / all output at ideal cycle time, so that A x P x Q equals
    the group's good output at ideal cycle time / planned time.
    """
    planned, run, ideal, good_ideal = row["planned_s"], row["run_s"], row["ideal_s"], row["good_ideal_s"]
    total, good = row["total"], row["good"]
    all_s = row.get("machine_all_s", row["all_s"])  # TEEP: planned time of every machine over its all time
    a = run / planned if planned > 0 else None
    p = min(1.0, ideal / run) if run > 0 else (1.0 if ideal > 0 else None)
    by_units = good / total if total > 0 else None
    q = by_units if one_machine or ideal <= 0 else good_ideal / ideal
    oee = None if planned <= 0 else (0.0 if total == 0 else (a or 0.0) * (p or 0.0) * (q or 0.0))
    teep = oee * planned / all_s if oee is not None and all_s > 0 else None
    return {"availability": a, "performance": p, "quality": q, "oee": oee, "teep": teep,
            # From the group's own sums: one hour (or one machine) above its ideal rate does not cap a day.
            "performance_capped": bool(ideal > run),
            # It ran but no unit is complete yet (a slow machine early in a window): OEE is 0 by the
            # definition, which the dashboard says in words instead of a red 0 %.
            "no_output": bool(run > 0 and total == 0)}


def row_figures(row: dict[str, Any], *, one_machine: bool) -> dict[str, Any]:
    """The figures of one summed window row for the API: times, counts, ratios, losses, stops, MTBF/MTTR.

    `all_s` is wall-clock time (the longest elapsed part among the group's machines, not machine-seconds).
    A group's output is given at ideal cycle time (`output_ideal_s`, `good_output_ideal_s`), which weighs
    units of different products by their ideal time; raw units per machine are in `units` (and `total`/`good`
    are the raw units of one machine only)."""
    failures = int(row["failures"])
    out: dict[str, Any] = {
        "all_s": row["all_s"], "planned_s": row["planned_s"], "run_s": row["run_s"],
        "total": int(row["total"]) if one_machine else None, "good": int(row["good"]) if one_machine else None,
        "output_ideal_s": row["ideal_s"], "good_output_ideal_s": row["good_ideal_s"],
        **ratios_of(row, one_machine=one_machine),
        "losses": {name: float(row[col]) for name, col in ROW_LOSSES.items()},
        "stops": int(row["stops"]), "failures": failures, "microstops": int(row["microstops"]),
        "repair_s": float(row["repair_s"]),
        "mtbf_s": row["run_s"] / failures if failures else None,
        "mttr_s": float(row["repair_s"]) / failures if failures else None,
    }  # fmt: skip
    if not one_machine:
        out["units"] = row.get("units") or {}
    return out


async def oee_rows(conn: AConn, where: str, params: dict[str, Any], kind: str, lo: datetime, hi: datetime,
                   scope_sql: str) -> list[dict[str, Any]]:
    """Windows of `kind` overlapping [lo, hi) matching `where`, summed per window start."""
    sql = (
        f"SELECT start_ts, max(end_ts) AS end_ts, {SUMS_SQL}, bit_or(flags) AS flags, min(site_id) AS site_id,"
        " max(all_s)::float8 AS wall_s, jsonb_object_agg(site_id || '/' || machine_id,"
        " jsonb_build_object('total', total, 'good', good)) AS units"
        f" FROM oee_windows WHERE kind = %(kind)s AND start_ts < %(hi)s AND end_ts > %(lo)s AND {where}"
        # No window is longer than a (25-hour) day: this bound lets the (kind, start_ts) index do the work.
        " AND start_ts > %(lo)s - interval '25 hours'"
        f" AND {scope_sql} GROUP BY start_ts ORDER BY start_ts"
    )
    cur = await conn.execute(sql, {**params, "kind": kind, "lo": lo, "hi": hi})
    names = [d.name for d in cur.description or []]
    rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    for row in rows:
        row["machine_all_s"], row["all_s"] = row["all_s"], row.pop("wall_s")
    return rows


async def loss_totals(conn: AConn, where: str, params: dict[str, Any], lo: datetime, hi: datetime,
                      scope_sql: str) -> dict[str, Any]:
    """The loss classes in seconds over [lo, hi), exact wherever stored windows tile the range.

    Per machine, the range is covered by the largest windows inside it: days, then shifts, then hours
    (a shift starting at 06:30 is its own stored window, so its losses are exact). `covered_s` is the
    machine-time so covered; a range cutting through an hour leaves that hour out."""
    cols = ", ".join(LOSS_FIELDS.values())
    cur = await conn.execute(
        f"SELECT site_id, machine_id, kind, start_ts, end_ts, all_s, {cols} FROM oee_windows"
        f" WHERE start_ts >= %(lo)s AND end_ts <= %(hi)s AND {where} AND {scope_sql}"
        " ORDER BY site_id, machine_id, CASE kind WHEN 'day' THEN 0 WHEN 'shift' THEN 1 ELSE 2 END, start_ts",
        {**params, "lo": lo, "hi": hi},
    )
    totals = dict.fromkeys(LOSS_FIELDS, 0.0)
    covered = 0.0
    chosen: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
    for site, machine, _kind, ws, we, all_s, *losses in await cur.fetchall():
        taken = chosen.setdefault((site, machine), [])
        if any(ws < b and a < we for a, b in taken):
            continue
        taken.append((ws, we))
        covered += float(all_s)
        for name, value in zip(LOSS_FIELDS, losses, strict=True):
            totals[name] += float(value)
    return {**totals, "covered_s": covered}


async def site_calendars(conn: AConn, sites: list[str]) -> dict[str, SiteCalendar]:
    """The calendar of each site (shifts, breaks, planned stops; all day where none is stored)."""
    out: dict[str, SiteCalendar] = {}
    for site in sites:
        cur = await conn.execute("SELECT tz, calendar, microstop_s, startup_s FROM oee_site_config WHERE site_id = %s",
                                 [site])
        row = await cur.fetchone()
        cur = await conn.execute("SELECT start_ts, end_ts, code FROM oee_planned_stops WHERE site_id = %s"
                                 " ORDER BY start_ts", [site])
        stops = [PlannedStop(store_ms(a), store_ms(b), int(c)) for a, b, c in await cur.fetchall()]
        calendar = all_day_calendar()
        if row is not None:
            with contextlib.suppress(ValidationError):
                calendar = Calendar.model_validate(row[1])
        out[site] = SiteCalendar(site, str(row[0]) if row else "UTC", calendar, None, stops)
    return out


def split_by_plan(lo: int, hi: int, starts: Any, ends: Any) -> int:
    """Milliseconds of [lo, hi) inside the planned production intervals (sorted, non-overlapping)."""
    return int(sum(max(0, min(hi, int(e)) - max(lo, int(s))) for s, e in zip(starts, ends, strict=True)
                   if e > lo and s < hi))


async def site_configs(conn: AConn, sites: list[str]) -> dict[str, OeeConfig]:
    """The kernel configuration of each site (analytics defaults where none is stored)."""
    cur = await conn.execute("SELECT site_id, state_classes FROM oee_site_config WHERE site_id = ANY(%s)", [sites])
    out = {s: OeeConfig() for s in sites}
    for site, classes in await cur.fetchall():
        # A hand-edited row that does not validate: the defaults are a sane reading.
        with contextlib.suppress(ValidationError):
            out[site] = oee_config(StateClasses.model_validate(classes) if classes is not None else None)
    return out


_TIMELINE = """
WITH ch AS (
    SELECT c.site_id, c.machine_id, c.ts, c.code, r.code AS reason_code,
           lead(c.ts) OVER (PARTITION BY c.site_id, c.machine_id ORDER BY c.ts) AS next_ts
    FROM oee_state_changes c
    LEFT JOIN oee_stop_reasons r USING (site_id, machine_id, ts)
    WHERE {where} AND {scope} AND c.ts < %(hi)s
      AND c.ts >= coalesce((SELECT max(p.ts) FROM oee_state_changes p WHERE p.site_id = c.site_id
                            AND p.machine_id = c.machine_id AND p.ts <= %(lo)s), '-infinity')
)
SELECT site_id, machine_id, greatest(ts, %(lo)s) AS start_ts, least(coalesce(next_ts, %(now)s), %(hi)s) AS end_ts,
       code, reason_code, ts AS stop_ts
FROM ch WHERE coalesce(next_ts, %(now)s) > %(lo)s ORDER BY machine_id, ts
"""


async def timeline(conn: AConn, machines: list[tuple[str, str]] | None, lo: datetime, hi: datetime,
                   now: datetime, scope_sql: str, scope_params: dict[str, Any]) -> list[dict[str, Any]]:
    """State intervals clipped to [lo, hi) (the last one runs until `now`), with operator reasons.

    `machines`: (site, machine) pairs, or None for every machine inside the scope condition.
    """
    where = "TRUE"
    params: dict[str, Any] = {**scope_params, "lo": lo, "hi": hi, "now": now}
    if machines is not None:
        where = "(c.site_id, c.machine_id) IN (SELECT * FROM unnest(%(ms)s::text[], %(mm)s::text[]))"
        params["ms"], params["mm"] = [m[0] for m in machines], [m[1] for m in machines]
    cur = await conn.execute(_TIMELINE.format(where=where, scope=scope_sql), params)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in await cur.fetchall() if r[3] > r[2]]


def category_name(config: OeeConfig, code: int) -> str:
    """Lower-case category of a code under a site's configuration."""
    return Category(config.category_of(code)).name.lower()
