"""A site's OEE setup: shift calendar -> planned intervals and windows (hour, shift, day), state classes -> OeeConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics import Category, OeeConfig, calendar_windows
from zhizao.broker.contract import states
from zhizao.broker.contract.calendar import Calendar, CalendarClock, Shift, StateClasses, minutes_of

I64 = NDArray[np.int64]
WINDOW_KINDS = ("hour", "shift", "day")
DAY_MS = 86_400_000

_STOPS = {Category[c.name] for c in states.STOP_CATEGORIES}


def all_day_calendar() -> Calendar:
    """The calendar of a site nobody configured: one 24-hour shift every day (everything is planned)."""
    return Calendar(shifts=[Shift(name="day", start="00:00", hours=24, days=[1, 2, 3, 4, 5, 6, 7])])


def oee_config(classes: StateClasses | None, microstop_s: float = 120.0, startup_s: float = 0.0) -> OeeConfig:
    """The kernel configuration for a site's state classes (None: the analytics defaults), its microstop
    threshold and its startup-reject period.

    Planned codes are excluded time; availability-loss codes are stops (they cut run time); performance-loss
    stop codes stay in run time (as microstops do) so their cost shows in performance; 20000 is reduced speed.
    Material stops (60000-90000) keep their own loss class either way: listed as performance losses, their
    time stays in run time (`OeeConfig.material_in_run`).
    """
    if classes is None:
        return OeeConfig(microstop_s=microstop_s, startup_s=startup_s)
    base = OeeConfig()
    ranges = dict(base.ranges)
    for code in classes.planned:
        ranges[code // 10_000] = Category.PLANNED
    for code in classes.availability_loss:
        # A code the defaults do not count as a stop (e.g. preventive maintenance) becomes its kind of stop.
        r = code // 10_000
        if ranges[r] not in _STOPS:
            ranges[r] = Category[states.CATALOGUE[code].as_stop.name]
    material_in_run = False
    for code in classes.performance_loss:
        r = code // 10_000
        if base.ranges[r] == Category.MATERIAL:
            material_in_run = True
            ranges[r] = Category.MATERIAL
        else:
            ranges[r] = Category.REDUCED_SPEED if r <= 2 else Category.MICROSTOP
    return OeeConfig(ranges=ranges, microstop_s=microstop_s, startup_s=startup_s, material_in_run=material_in_run)


@dataclass(frozen=True)
class PlannedStop:
    """A one-off planned stop of a site: [start_ms, end_ms) with a state code."""

    start_ms: int
    end_ms: int
    code: int


@dataclass
class SiteCalendar:
    """Shift calendar, time zone, planned stops and state classes of one site, answering in epoch ms."""

    site: str
    tz: str
    calendar: Calendar
    classes: StateClasses | None = None
    planned_stops: list[PlannedStop] = field(default_factory=list)
    microstop_s: float = 120.0
    startup_s: float = 0.0

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.tz)
        self.clock = CalendarClock(self.calendar, self.tz)
        self.config = oee_config(self.classes, self.microstop_s, self.startup_s)

    def _days(self, lo: int, hi: int) -> list[object]:
        first = datetime.fromtimestamp(lo / 1000, UTC).astimezone(self.zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(hi / 1000, UTC).astimezone(self.zone).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def shifts(self, lo: int, hi: int) -> list[tuple[int, int, Shift]]:
        """Shifts overlapping [lo, hi): (start ms, end ms, shift), in start order."""
        by_name = {s.name: s for s in self.calendar.shifts}
        out = []
        for day in self._days(lo, hi):
            for name, s, e in self.clock.shifts_on(day):  # type: ignore[arg-type]
                if e > lo and s < hi:
                    out.append((s, e, by_name[name]))
        return sorted(out, key=lambda x: x[0])

    def plan_intervals(self, lo: int, hi: int) -> tuple[I64, I64]:
        """Planned production intervals overlapping [lo, hi): shifts minus their breaks and planned stops."""
        work: list[tuple[int, int]] = []
        holes: list[tuple[int, int]] = [(p.start_ms, p.end_ms) for p in self.planned_stops]
        for s, e, shift in self.shifts(lo, hi):
            work.append((s, e))
            begin = minutes_of(shift.start)
            for brk in shift.breaks:
                offset = (minutes_of(brk.start) - begin) % 1440
                b0 = s + offset * 60_000
                holes.append((b0, b0 + round(brk.minutes * 60_000)))
        pieces = _subtract(_union(work), _union(holes))
        starts = np.array([p[0] for p in pieces], np.int64)
        ends = np.array([p[1] for p in pieces], np.int64)
        return starts, ends

    def windows(self, kind: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """Windows of `kind` (hour, shift, day) overlapping [lo, hi), as (start ms, end ms)."""
        if kind == "shift":
            return [(s, e) for s, e, _ in self.shifts(lo, hi)]
        starts, ends = calendar_windows(lo, max(hi, lo + 1), self.tz, kind)
        return list(zip(starts.tolist(), ends.tolist(), strict=True))

    def earliest_start(self, t: int) -> int:
        """The earliest start of any window (hour, shift, day) that contains instant `t`."""
        return min(s for kind in WINDOW_KINDS for s, e in self.windows(kind, t, t + 1) if s <= t < e)

    def atom_edges(self, lo: int, hi: int) -> I64:
        """Edges of the pieces every window is a union of (hour grid split at shift and day edges), over [lo, hi)."""
        # Every edge of every window near the span (also of a shift that ended just before it), so that the
        # grid is the same whichever span asks: atoms computed at different times never overlap.
        edges: set[int] = set()
        for kind in WINDOW_KINDS:
            for s, e in self.windows(kind, lo - 2 * DAY_MS, hi + DAY_MS):
                edges.add(s)
                edges.add(e)
        arr = np.array(sorted(edges), np.int64)
        first = max(int(np.searchsorted(arr, lo, side="right")) - 1, 0)
        last = int(np.searchsorted(arr, hi, side="left"))
        return arr[first:last + 1]


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _subtract(spans: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in spans:
        cur = s
        for hs, he in holes:
            if he <= cur or hs >= e:
                continue
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
        if cur < e:
            out.append((cur, e))
    return out
