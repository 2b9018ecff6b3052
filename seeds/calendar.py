"""Shift calendars resolved at UTC instants: planned-stop codes (0 = working) and shift windows.

Pure functions of a site's `Calendar`, shared by the simulator (edge) and OEE windows (cloud).
"""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from zhizao.seeds.model import Calendar

NO_SHIFT = 160000


class CalendarClock:
    """Answers `code_at(ts_ms)` for one site; caches one local day of boundaries at a time."""

    def __init__(self, calendar: Calendar, timezone: str) -> None:
        self._cal = calendar
        self._zone = ZoneInfo(timezone)
        self._days: dict[date, tuple[list[int], list[int]]] = {}
        self._day_end: dict[date, int] = {}
        self._lo, self._hi, self._code = 0, 0, 0

    def code_at(self, ts_ms: int) -> int:
        """The planned-stop code at `ts_ms` (UTC epoch ms): 0 working, a break code, or a no-shift code."""
        if self._lo <= ts_ms < self._hi:  # the sim asks about the same stretch step after step
            return self._code
        day = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(self._zone).date()
        table = self._days.get(day)
        if table is None:
            if len(self._days) > 8:  # the sim moves forward; keep the cache small
                self._days.clear()
                self._day_end.clear()
            table = self._days[day] = self._build_day(day)
            self._day_end[day] = self._local_ms(day + timedelta(days=1), 0)
        bounds, codes = table
        i = bisect.bisect_right(bounds, ts_ms) - 1
        # Remember the stretch, clipped to this local day (the next day's table may split it differently).
        self._lo = max(bounds[i], bounds[1])
        self._hi = bounds[i + 1] if i + 1 < len(bounds) else self._day_end[day]
        self._code = codes[i]
        return self._code

    def shifts_on(self, day: date) -> list[tuple[str, int, int]]:
        """Shifts that start on local `day`: (name, start ms, end ms), in start order; none on no-shift days."""
        if self._no_shift_code(day) is not None:
            return []
        out = []
        for shift in self._cal.shifts:
            if day.isoweekday() in shift.days:
                begin = _minutes(shift.start)
                out.append(
                    (shift.name, self._local_ms(day, begin), self._local_ms(day, begin + shift.hours * 60))
                )
        return sorted(out, key=lambda s: s[1])

    def _local_ms(self, day: date, minutes: float) -> int:
        base = datetime.combine(day, time(0), tzinfo=self._zone)
        return int((base + timedelta(minutes=minutes)).timestamp() * 1000)

    def _no_shift_code(self, day: date) -> int | None:
        for period in self._cal.no_shift:
            if period.first_day <= day <= period.last_day:
                return period.code
        return None

    def _intervals(self, day: date) -> list[tuple[int, int, int]]:
        """(start_ms, end_ms, code) of shift work and breaks that touch `day`, from shifts started the day before."""
        out: list[tuple[int, int, int]] = []
        for start_day in (day - timedelta(days=1), day):
            if self._no_shift_code(start_day) is not None:
                continue
            for shift in self._cal.shifts:
                if start_day.isoweekday() not in shift.days:
                    continue
                begin_min = _minutes(shift.start)
                begin = self._local_ms(start_day, begin_min)
                out.append((begin, self._local_ms(start_day, begin_min + shift.hours * 60), 0))
                for brk in shift.breaks:
                    offset = (_minutes(brk.start) - begin_min) % 1440
                    b0 = self._local_ms(start_day, begin_min + offset)
                    out.append((b0, self._local_ms(start_day, begin_min + offset + brk.minutes), brk.code))
        return out

    def _slow_code(self, ts_ms: int, day: date, intervals: list[tuple[int, int, int]]) -> int:
        in_shift = False
        for start, end, code in intervals:
            if start <= ts_ms < end:
                if code:
                    return code  # a break inside a running shift
                in_shift = True
        if in_shift:
            return 0
        return self._no_shift_code(day) or NO_SHIFT

    def _build_day(self, day: date) -> tuple[list[int], list[int]]:
        day0, day1 = self._local_ms(day, 0), self._local_ms(day + timedelta(days=1), 0)
        intervals = self._intervals(day)
        points = {day0}
        for start, end, _ in intervals:
            points.update(p for p in (start, end) if day0 < p < day1)
        bounds = sorted(points)
        codes = [self._slow_code(p, day, intervals) for p in bounds]
        # A sentinel far in the past keeps bisect in range for instants exactly at day0.
        return [-(2**62), *bounds], [codes[0], *codes]


def _minutes(hhmm: str) -> int:
    t = time.fromisoformat(hhmm)
    return t.hour * 60 + t.minute
