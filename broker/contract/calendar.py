"""Shift calendars (the domain model) and `CalendarClock`, which resolves one at UTC instants.

A site's calendar: shifts with breaks in local time, and no-shift periods; outside every shift is code
160000 (no shift). `StateClasses` says which base stop codes a site counts as planned, availability loss or
performance loss. Pure functions of the model, shared by the simulator (edge) and OEE windows (cloud).
"""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from zhizao.broker.contract.states import CATALOGUE, NO_SHIFT, SLOWER, StopCode

__all__ = ["HHMM", "Break", "Calendar", "CalendarClock", "NoShiftPeriod", "Shift", "StateClasses", "minutes_of"]

HHMM = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Break(_Model):
    """A planned break inside a shift, in local time."""

    start: HHMM
    minutes: float = Field(gt=0, le=240)
    code: StopCode = 150000


class Shift(_Model):
    """A shift: local start time, length and the ISO weekdays (1 = Monday) it runs on."""

    name: str = Field(min_length=1)
    start: HHMM
    hours: float = Field(gt=0, le=24)
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    breaks: list[Break] = Field(default_factory=list)

    @model_validator(mode="after")
    def _breaks_inside(self) -> Shift:
        begin = minutes_of(self.start)
        for i, brk in enumerate(self.breaks):
            offset = (minutes_of(brk.start) - begin) % 1440
            if offset + brk.minutes > self.hours * 60:
                raise ValueError(
                    f"breaks[{i}].start: {brk.start!r} + {brk.minutes} min lies outside the shift"
                )
        return self


class NoShiftPeriod(_Model):
    """Whole local days without production (holidays, shutdowns), inclusive."""

    name: str = Field(min_length=1)
    first_day: date
    last_day: date
    code: StopCode = NO_SHIFT

    @model_validator(mode="after")
    def _ordered(self) -> NoShiftPeriod:
        if self.last_day < self.first_day:
            raise ValueError(f"last_day {self.last_day} is before first_day {self.first_day}")
        return self


class Calendar(_Model):
    """The shift calendar of a site: shifts, breaks inside them, and no-shift periods; outside shifts is code 160000."""

    shifts: list[Shift] = Field(min_length=1)
    no_shift: list[NoShiftPeriod] = Field(default_factory=list)


class StateClasses(_Model):
    """Which base stop codes are planned (excluded), availability loss or performance loss at a site."""

    planned: list[int]
    availability_loss: list[int]
    performance_loss: list[int]

    @model_validator(mode="after")
    def _disjoint_catalogue(self) -> StateClasses:
        seen: dict[int, str] = {}
        for name in ("planned", "availability_loss", "performance_loss"):
            for i, code in enumerate(getattr(self, name)):
                if code not in CATALOGUE or code < SLOWER:
                    raise ValueError(f"{name}[{i}]: {code} is not a base stop code of DESIGN.md section 4")
                if code in seen:
                    raise ValueError(f"{name}[{i}]: {code} is already listed under {seen[code]}")
                seen[code] = name
        return self


def minutes_of(hhmm: str) -> int:
    """Minutes after local midnight of an `HH:MM` time."""
    t = time.fromisoformat(hhmm)
    return t.hour * 60 + t.minute


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
                begin = minutes_of(shift.start)
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
                begin_min = minutes_of(shift.start)
                begin = self._local_ms(start_day, begin_min)
                out.append((begin, self._local_ms(start_day, begin_min + shift.hours * 60), 0))
                for brk in shift.breaks:
                    offset = (minutes_of(brk.start) - begin_min) % 1440
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
