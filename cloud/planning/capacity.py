"""Capacity per line and day: calendar time x expected availability x expected performance, minus planned stops
and work already planned.

Estimator (per line, from the `day` OEE windows of the line's machines over the last `LOOKBACK_DAYS` days):
A = (sum run_s + K * A0) / (sum planned_s + K) and P = (sum ideal_s + K * P0) / (sum run_s + K), a mean shrunk
towards the prior (A0, P0) by a pseudo-observation of K seconds per machine (one 8-hour shift), floored at
`FLOOR`. A line with no measured windows plans at the prior; a week of measured shifts dominates it. Quality is
the capability's seeded yield (per product), applied when lot times are computed, not here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from zhizao.cloud.oee.calendar import SiteCalendar
from zhizao.cloud.oee.store import load_site
from zhizao.cloud.planning.network import LineInfo, NetworkModel

__all__ = ["A0", "FLOOR", "LOOKBACK_DAYS", "P0", "Expected", "LineDay", "expected_ap", "line_days", "net_intervals"]

Conn = psycopg.Connection[Any]
A0, P0 = 0.85, 0.90
K_S = 8 * 3600.0
FLOOR = 0.25
LOOKBACK_DAYS = 7


@dataclass(frozen=True)
class Expected:
    """Expected availability and performance of a line and the measured planned time they rest on."""

    availability: float
    performance: float
    measured_planned_s: float


@dataclass(frozen=True)
class LineDay:
    site: str
    line: str
    kind: str
    day: str  # site-local date
    planned_s: float  # from the shift calendar
    stops_s: float  # planned stops (maintenance) inside it
    availability: float
    performance: float
    capacity_s: float  # (planned - stops) x A x P: effective production seconds
    booked_s: float  # of that, taken by production orders
    free_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_ap(conn: Conn, lines: list[LineInfo], now: datetime) -> dict[str, Expected]:
    """A and P per line key `site/line` by the shrunk-mean estimator of the module docstring."""
    out = {ln.key: Expected(A0, P0, 0.0) for ln in lines}
    rows = conn.execute(
        "SELECT site_id, line_id, count(DISTINCT machine_id), coalesce(sum(planned_s), 0), coalesce(sum(run_s), 0),"
        " coalesce(sum(ideal_s), 0) FROM oee_windows WHERE kind = 'day' AND start_ts >= %s AND start_ts < %s"
        " GROUP BY site_id, line_id",
        [now - timedelta(days=LOOKBACK_DAYS), now],
    ).fetchall()
    for site, line, n, planned, run, ideal in rows:
        key = f"{site}/{line}"
        if key not in out:
            continue
        k = K_S * max(int(n), 1)
        a = (float(run) + k * A0) / (float(planned) + k)
        p = (float(ideal) + k * P0) / (float(run) + k)
        out[key] = Expected(max(FLOOR, min(1.0, a)), max(FLOOR, min(1.0, p)), float(planned))
    return out


def net_intervals(cal: SiteCalendar, lo_ms: int, hi_ms: int, *, with_stops: bool = True) -> list[tuple[int, int]]:
    """Planned production intervals of a site clipped to [lo, hi) (minus its planned stops unless told not to)."""
    c = cal if with_stops else SiteCalendar(cal.site, cal.tz, cal.calendar, cal.classes, [])
    starts, ends = c.plan_intervals(lo_ms, hi_ms)
    s = np.clip(starts, lo_ms, hi_ms)
    e = np.clip(ends, lo_ms, hi_ms)
    return [(int(a), int(b)) for a, b in zip(s.tolist(), e.tolist(), strict=True) if b > a]


def _overlap(spans: list[tuple[int, int]], lo: int, hi: int) -> int:
    return sum(max(0, min(e, hi) - max(s, lo)) for s, e in spans)


def line_days(conn: Conn, model: NetworkModel, lines: list[LineInfo], days: int, now: datetime) -> list[LineDay]:
    """Capacity of each line for each site-local day from today on (today from `now`)."""
    expected = expected_ap(conn, lines, now)
    now_ms = int(now.timestamp() * 1000)
    cals: dict[str, SiteCalendar] = {}
    booked: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for site, line, start, end in conn.execute(
            "SELECT site_id, line_id, planned_start, planned_end FROM production_orders"
            " WHERE status IN ('planned', 'started') AND planned_end > %s", [now]).fetchall():
        booked.setdefault((str(site), str(line)), []).append(
            (max(now_ms, int(start.timestamp() * 1000)), int(end.timestamp() * 1000)))
    out = []
    for ln in lines:
        cal = cals.get(ln.site) or cals.setdefault(ln.site, load_site(conn, ln.site))
        today = now.astimezone(cal.zone).date()
        exp = expected[ln.key]
        for i in range(days):
            d0, d1 = _day_bounds(cal, today + timedelta(days=i))
            lo = max(d0, now_ms)
            if lo >= d1:
                continue
            gross = net_intervals(cal, lo, d1, with_stops=False)
            net = net_intervals(cal, lo, d1)
            planned = _overlap(gross, lo, d1) / 1000
            net_s = _overlap(net, lo, d1) / 1000
            taken = sum(_overlap(net, s, e) for s, e in booked.get((ln.site, ln.line), [])) / 1000
            factor = exp.availability * exp.performance
            cap = net_s * factor
            used = min(cap, taken * factor)
            out.append(LineDay(ln.site, ln.line, ln.kind, (today + timedelta(days=i)).isoformat(), planned,
                               planned - net_s, exp.availability, exp.performance, cap, used, cap - used))
    return out


def _day_bounds(cal: SiteCalendar, day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=cal.zone)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=cal.zone)
    return int(start.astimezone(UTC).timestamp() * 1000), int(end.astimezone(UTC).timestamp() * 1000)
