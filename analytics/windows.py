"""Window edges for `fleet_oee`: calendar hours/days in a site's time zone, rolling windows, shift edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"tz: unknown time zone {tz!r}") from exc


def _check_span(start_ms: int, end_ms: int) -> None:
    if end_ms < start_ms:
        raise ValueError(f"end_ms: {end_ms} is before start_ms {start_ms}")


def calendar_windows(start_ms: int, end_ms: int, tz: str, unit: str = "day") -> tuple[I64, I64]:
    """Edges of the local hours or days (midnight to midnight in `tz`) that overlap [start_ms, end_ms).

    Days follow daylight saving time (23- and 25-hour days); the first and last windows are whole
    calendar units, so they may reach outside the span.
    """
    _check_span(start_ms, end_ms)
    if unit not in ("hour", "day"):
        raise ValueError(f"unit: expected 'hour' or 'day', got {unit!r}")
    zone = _zone(tz)
    if unit == "hour":
        # Align to the local hour (zones with half-hour offsets differ from UTC hours), then step.
        local = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone)
        first = local.replace(minute=0, second=0, microsecond=0)
        first_ms = int(first.astimezone(UTC).timestamp() * 1000)
        edges = np.arange(first_ms, max(end_ms, first_ms + 1) + 3_600_000, 3_600_000, dtype=np.int64)
    else:
        day = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone).date()
        out = []
        while True:
            midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
            ms = int(midnight.astimezone(UTC).timestamp() * 1000)
            out.append(ms)
            if ms >= end_ms and len(out) > 1:
                break
            day += timedelta(days=1)
        edges = np.array(out, dtype=np.int64)
    starts, ends = edges[:-1], edges[1:]
    keep = (ends > start_ms) & (starts < max(end_ms, start_ms + 1))
    return np.ascontiguousarray(starts[keep]), np.ascontiguousarray(ends[keep])


def rolling_windows(end_ms: int, length_ms: int, step_ms: int, count: int) -> tuple[I64, I64]:
    """`count` windows of `length_ms`, the last ending at `end_ms`, each `step_ms` after the previous."""
    if length_ms <= 0 or step_ms <= 0 or count < 0:
        raise ValueError(f"length_ms, step_ms must be > 0 and count >= 0, got {length_ms}, {step_ms}, {count}")
    ends = end_ms - step_ms * np.arange(count - 1, -1, -1, dtype=np.int64)
    return ends - length_ms, ends


def fleet_windows(per_machine: list[tuple[I64, I64]]) -> tuple[I64, I64, I64]:
    """Concatenate per-machine (starts, ends) into `window_offsets, window_start, window_end`."""
    counts = [len(s) for s, _ in per_machine]
    offsets = np.zeros(len(per_machine) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    if not per_machine:
        return offsets, np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([np.asarray(s, np.int64) for s, _ in per_machine])
    ends = np.concatenate([np.asarray(e, np.int64) for _, e in per_machine])
    return offsets, starts, ends
