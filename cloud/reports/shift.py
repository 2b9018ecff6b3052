"""The shift report of a finished shift, per line and for the site: built from the stored OEE windows by sums.

Every figure is a sum of the machines' `shift` windows in `oee_windows` (planned, run and ideal time, counts,
losses, stop counts); ratios are derived from those sums exactly as `/api/v1/oee` derives them, never averaged.
Top stops come from the state timeline (`oee_state_changes` with operator reasons from `oee_stop_reasons`),
counted inside the shift's planned production time only (a break that falls inside a failure is not a loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from zhizao.analytics import OeeConfig
from zhizao.broker.contract import states
from zhizao.broker.contract.calendar import Calendar, StateClasses
from zhizao.cloud.oee import queries as q
from zhizao.cloud.oee.calendar import PlannedStop, SiteCalendar, all_day_calendar
from zhizao.cloud.oee.engine import SUM_FIELDS

__all__ = [
    "Lang",
    "ShiftNotFinished",
    "ShiftRef",
    "UnknownShift",
    "build_report",
    "find_shift",
    "finished_shifts",
    "load_calendar",
]

Lang = Literal["en", "zh"]
# The six big losses (DESIGN.md section 4) as the report names them, and the oee_windows column of each.
LOSSES = {
    "equipment_failure": "loss_failure_s", "setup_adjustment": "loss_setup_s",
    "idling_minor_stops": "loss_minor_s", "reduced_speed": "loss_speed_s",
    "process_defects": "loss_defect_s", "startup_rejects": "loss_startup_s",
}  # fmt: skip
# Categories whose time the report lists as stops (running, reduced speed, unknown and planned time are not).
_STOP_CATEGORIES = {"microstop", "failure", "setup", "material", "operator", "unspecified"}
_SUMS = [f for f in SUM_FIELDS if f != "flags"]
TOP_STOPS = 10
LONGEST_STOPS = 5


class UnknownShift(LookupError):
    """No shift of the site's calendar starts at the given instant; the message lists that day's shifts."""


class ShiftNotFinished(ValueError):
    """The shift has not ended yet; the message says when it ends."""


@dataclass(frozen=True)
class ShiftRef:
    """One shift of a site: its calendar name and [start, end) in UTC."""

    name: str
    start: datetime
    end: datetime


async def load_calendar(conn: q.AConn, site: str) -> SiteCalendar:
    """The site's calendar from oee_site_config and oee_planned_stops (one 24-hour shift a day when none is stored)."""
    cur = await conn.execute("SELECT tz, calendar, state_classes FROM oee_site_config WHERE site_id = %s", [site])
    row = await cur.fetchone()
    cur = await conn.execute("SELECT start_ts, end_ts, code FROM oee_planned_stops WHERE site_id = %s", [site])
    stops = [PlannedStop(_ms(s), _ms(e), int(c)) for s, e, c in await cur.fetchall()]
    if row is None:
        cur = await conn.execute("SELECT tz FROM sites WHERE site_id = %s", [site])
        tz = await cur.fetchone()
        return SiteCalendar(site, str(tz[0]) if tz else "UTC", all_day_calendar(), None, stops)
    try:
        calendar = Calendar.model_validate(row[1])
        classes = StateClasses.model_validate(row[2]) if row[2] is not None else None
    except ValueError:
        # The OEE service reads a hand-broken row the same way (cloud/oee/store.py load_site).
        calendar, classes = all_day_calendar(), None
    return SiteCalendar(site, str(row[0]), calendar, classes, stops)


def find_shift(cal: SiteCalendar, start: datetime, now: datetime) -> ShiftRef:
    """The shift of `cal` that starts exactly at `start` and has ended by `now`.

    UnknownShift names the value and lists the shifts of that local day; ShiftNotFinished says when it ends.
    """
    t = _ms(start)
    for s, e, shift in cal.shifts(t - 1, t + 1):
        if s == t:
            ref = ShiftRef(shift.name, _dt(s), _dt(e))
            if ref.end > now:
                raise ShiftNotFinished(
                    f"shift_start={start.isoformat()!r}: shift {shift.name} of site {cal.site} runs until"
                    f" {_local(cal, ref.end)} and is not finished yet; a report is made for finished shifts"
                )
            return ref
    day = start.astimezone(cal.zone).date()
    options = [f"{name} {_local(cal, _dt(s))}" for name, s, _ in _shifts_of_day(cal, day)]
    listed = "; shifts starting that day: " + ", ".join(options) if options else "; no shift starts that day"
    raise UnknownShift(f"shift_start={start.isoformat()!r}: no shift of site {cal.site} starts then ({_local(cal, start)}"
                       f" local){listed}")


def finished_shifts(cal: SiteCalendar, now: datetime, days: int) -> list[ShiftRef]:
    """Shifts that ended in the last `days` days, newest first."""
    lo = _ms(now - timedelta(days=days))
    return [ShiftRef(sh.name, _dt(s), _dt(e)) for s, e, sh in reversed(cal.shifts(lo, _ms(now)))
            if lo <= e <= _ms(now)]


def _shifts_of_day(cal: SiteCalendar, day: date) -> list[tuple[str, int, int]]:
    return cal.clock.shifts_on(day)


@dataclass
class _Group:
    """Sums of machine windows plus what the timeline adds (stop time per code, the longest stops)."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMS, 0.0))
    flags: int = 0
    machines: int = 0
    stops: dict[int, dict[str, Any]] = field(default_factory=dict)
    longest: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: _Group) -> None:
        for k, v in other.sums.items():
            self.sums[k] += v
        self.flags |= other.flags
        self.machines += other.machines
        for code, s in other.stops.items():
            mine = self.stops.setdefault(code, {**s, "seconds": 0.0, "count": 0, "machines": [], "with_reason": 0})
            mine["seconds"] += s["seconds"]
            mine["count"] += s["count"]
            mine["with_reason"] += s["with_reason"]
            mine["machines"] = sorted(set(mine["machines"]) | set(s["machines"]))
        self.longest.extend(other.longest)


def figures(g: _Group, *, one_machine: bool) -> dict[str, Any]:
    """A, P, Q, OEE and every summed figure of a group, with the six losses, counts, MTBF and MTTR."""
    s = g.sums
    ratios = q.ratios_of({**s, "flags": g.flags}, one_machine=one_machine)
    # Repair time is the failures' whole duration (a break inside a failure does not repair the machine);
    # the equipment-failure loss counts only their planned part.
    repair_s, material_s = s["repair_s"], s["loss_material_s"]
    losses = {name: s[col] for name, col in LOSSES.items()}
    losses["material_stops"] = material_s
    failures = int(s["failures"])
    return {
        "machines": g.machines,
        "all_s": s["all_s"], "planned_s": s["planned_s"], "run_s": s["run_s"], "ideal_s": s["ideal_s"],
        "good_ideal_s": s["good_ideal_s"], "total": int(s["total"]), "good": int(s["good"]),
        "rejects": int(s["total"] - s["good"]),
        **ratios,
        "losses_s": losses,
        "stops": int(s["stops"]), "failures": failures, "microstops": int(s["microstops"]),
        "repair_s": repair_s, "material_stop_s": material_s,
        # DESIGN.md section 4: MTBF = operating (run) time / failures, MTTR = repair time / repairs.
        "mtbf_s": s["run_s"] / failures if failures else None,
        "mttr_s": repair_s / failures if failures else None,
    }  # fmt: skip


def _overlap(a: int, b: int, plan: list[tuple[int, int]]) -> int:
    return sum(max(0, min(b, pe) - max(a, ps)) for ps, pe in plan)


async def build_report(conn: q.AConn, cal: SiteCalendar, shift: ShiftRef, line: str | None, lang: Lang,
                       now: datetime) -> dict[str, Any]:
    """The report of `shift` at the site of `cal`: every line (or just `line`), and the site when no line is given."""
    site = cal.site
    cur = await conn.execute("SELECT name, name_zh FROM sites WHERE site_id = %s", [site])
    site_row = await cur.fetchone()
    lines = await _lines(conn, site, line)
    by_line: dict[str, _Group] = {ln: _Group() for ln in lines}
    machines: dict[str, dict[str, Any]] = {}
    cols = ", ".join(f"sum({f})::float8" for f in _SUMS)
    cur = await conn.execute(
        f"SELECT line_id, machine_id, {cols}, bit_or(flags) FROM oee_windows WHERE site_id = %s AND kind = 'shift'"
        " AND start_ts = %s AND (%s::text IS NULL OR line_id = %s) GROUP BY line_id, machine_id ORDER BY 1, 2",
        [site, shift.start, line, line],
    )
    groups: dict[tuple[str, str], _Group] = {}
    for row in await cur.fetchall():
        g = _Group(dict(zip(_SUMS, (float(v) for v in row[2:-1]), strict=True)), int(row[-1] or 0), 1)
        groups[(str(row[0]), str(row[1]))] = g
        by_line.setdefault(str(row[0]), _Group())
    cur = await conn.execute("SELECT machine_id, line_id, name FROM machines WHERE site_id = %s", [site])
    names = {str(m): (str(ln), n) for m, ln, n in await cur.fetchall()}
    config = (await q.site_configs(conn, [site]))[site]
    await _add_timeline(conn, cal, config, shift, groups, names, line, now)
    for (ln, m), g in sorted(groups.items()):
        by_line[ln].add(g)
        machines[m] = {"id": m, "line": ln, "name": names.get(m, (ln, None))[1] or m,
                       **figures(g, one_machine=True)}
    targets = await _targets(conn, site)
    out_lines = []
    for ln in sorted(by_line):
        g = by_line[ln]
        name, name_zh = lines.get(ln, (None, None))
        fig = figures(g, one_machine=False)
        target = targets.get(ln)
        out_lines.append({
            "id": ln, "name": name or ln, "name_zh": name_zh, "label": _label(ln, name, name_zh, lang),
            **fig, "target": target, "on_target": _on_target(fig, target),
            "top_stops": _top(g.stops, lang), "longest_stops": _longest(g.longest, lang),
            "machine_list": [m for m in machines.values() if m["line"] == ln],
        })
    comments = await _comments(conn, cal, shift.start, line)
    site_name, site_zh = (site_row[0], site_row[1]) if site_row else (None, None)
    report: dict[str, Any] = {
        "kind": "shift_report", "lang": lang, "generated_at": now.isoformat(),
        "site": {"id": site, "name": site_name or site, "name_zh": site_zh,
                 "label": _label(site, site_name, site_zh, lang), "timezone": cal.tz},
        "line": line,
        "shift": {"name": shift.name, "start": shift.start.isoformat(), "end": shift.end.isoformat(),
                  "local_start": _local(cal, shift.start), "local_end": _local(cal, shift.end)},
        "lines": out_lines,
        "comments": comments,
    }
    if line is None:
        total = _Group()
        for g in by_line.values():
            total.add(g)
        report["site_figures"] = {**figures(total, one_machine=False), "top_stops": _top(total.stops, lang),
                                  "longest_stops": _longest(total.longest, lang)}
    return report


async def _lines(conn: q.AConn, site: str, line: str | None) -> dict[str, tuple[str | None, str | None]]:
    """Lines of the site (or just `line`): id -> (name, Chinese name)."""
    cur = await conn.execute(
        "SELECT l.line_id, e.name, e.name_zh FROM (SELECT DISTINCT line_id FROM machines WHERE site_id = %(s)s"
        " UNION SELECT edge_node_id FROM edge_nodes WHERE site_id = %(s)s) l"
        " LEFT JOIN edge_nodes e ON e.site_id = %(s)s AND e.edge_node_id = l.line_id"
        " WHERE %(l)s::text IS NULL OR l.line_id = %(l)s",
        {"s": site, "l": line},
    )
    return {str(r[0]): (r[1], r[2]) for r in await cur.fetchall()}


async def _add_timeline(conn: q.AConn, cal: SiteCalendar, config: OeeConfig, shift: ShiftRef,
                        groups: dict[tuple[str, str], _Group], names: dict[str, tuple[str, str | None]],
                        line: str | None, now: datetime) -> None:
    """Stop time per code and the longest stops of each machine, inside the shift's planned time."""
    lo, hi = _ms(shift.start), _ms(shift.end)
    starts, ends = cal.plan_intervals(lo, hi)
    plan = [(max(int(s), lo), min(int(e), hi)) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
            if e > lo and s < hi]
    machines = [(cal.site, m) for m, (ln, _) in names.items() if line is None or ln == line]
    machines += [(cal.site, m) for (ln, m) in groups if m not in names]
    if not machines:
        return
    rows = await q.timeline(conn, machines, shift.start, shift.end, now, "TRUE", {})
    for r in rows:
        m = str(r["machine_id"])
        code = int(r["reason_code"] if r["reason_code"] is not None else r["code"])
        category = q.category_name(config, code)
        if category not in _STOP_CATEGORIES:
            continue
        secs = _overlap(_ms(r["start_ts"]), _ms(r["end_ts"]), plan) / 1000
        if secs <= 0:
            continue
        ln = names.get(m, (None, None))[0]
        key = (ln, m) if ln is not None else next((k for k in groups if k[1] == m), None)
        if key is None:
            continue
        g = groups.setdefault(key, _Group())
        entry = g.stops.setdefault(code, {"code": code, "category": category, "seconds": 0.0, "count": 0,
                                          "machines": [], "with_reason": 0})
        entry["seconds"] += secs
        entry["count"] += 1
        entry["with_reason"] += r["reason_code"] is not None
        if m not in entry["machines"]:
            entry["machines"].append(m)
        g.longest.append({"machine": m, "start": r["start_ts"].isoformat(), "end": r["end_ts"].isoformat(),
                          "seconds": secs, "code": code, "category": category,
                          "original_code": int(r["code"]) if r["reason_code"] is not None else None})


def _names(code: int) -> dict[str, str]:
    entry = states.CATALOGUE.get(states.base_of(code))
    return {"name": entry.name if entry else states.state_name(code), "name_zh": entry.name_zh if entry else "未知"}


def _top(stops: dict[int, dict[str, Any]], lang: Lang) -> list[dict[str, Any]]:
    ranked = sorted(stops.values(), key=lambda e: (-e["seconds"], e["code"]))[:TOP_STOPS]
    out = []
    for e in ranked:
        n = _names(e["code"])
        out.append({**e, **n, "label": n["name_zh"] if lang == "zh" else n["name"], "machines": sorted(e["machines"])})
    return out


def _longest(stops: list[dict[str, Any]], lang: Lang) -> list[dict[str, Any]]:
    ranked = sorted(stops, key=lambda e: (-e["seconds"], e["start"], e["machine"]))[:LONGEST_STOPS]
    out = []
    for e in ranked:
        n = _names(e["code"])
        out.append({**e, **n, "label": n["name_zh"] if lang == "zh" else n["name"]})
    return out


async def _targets(conn: q.AConn, site: str) -> dict[str, dict[str, Any]]:
    cur = await conn.execute("SELECT line_id, oee, availability, performance, quality FROM oee_line_targets"
                             " WHERE site_id = %s", [site])
    return {str(r[0]): {"oee": r[1], "availability": r[2], "performance": r[3], "quality": r[4]}
            for r in await cur.fetchall()}


def _on_target(fig: Mapping[str, Any], target: Mapping[str, Any] | None) -> bool | None:
    if target is None or fig.get("oee") is None:
        return None
    return bool(fig["oee"] >= target["oee"])


async def _comments(conn: q.AConn, cal: SiteCalendar, start: datetime, line: str | None) -> list[dict[str, Any]]:
    site = cal.site
    cur = await conn.execute(
        "SELECT id, line_id, body, author, created_at FROM shift_report_comments WHERE site_id = %s"
        " AND shift_start = %s AND (%s::text IS NULL OR line_id IS NULL OR line_id = %s) ORDER BY created_at, id",
        [site, start, line, line],
    )
    return [{"id": int(i), "line": ln, "text": body, "author": author, "at": at.isoformat(), "local_at": _local(cal, at)}
            for i, ln, body, author, at in await cur.fetchall()]


def _label(ident: str, name: str | None, name_zh: str | None, lang: Lang) -> str:
    if lang == "zh" and name_zh:
        return name_zh
    return name or ident


def _local(cal: SiteCalendar, t: datetime) -> str:
    """`2026-11-02 08:00+08:00`: the site's wall clock with its offset."""
    local = t.astimezone(cal.zone)
    return local.strftime("%Y-%m-%d %H:%M") + local.isoformat()[19:]


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(t / 1000, UTC)
