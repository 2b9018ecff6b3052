"""Window helpers: local midnights across daylight saving time, rolling windows, fleet offsets."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from zhizao.analytics.windows import calendar_windows, fleet_windows, rolling_windows


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_days_follow_local_midnight_and_dst() -> None:
    # Berlin switches to summer time on 2026-03-29: that local day has 23 hours.
    starts, ends = calendar_windows(ms(2026, 3, 28, 12), ms(2026, 3, 30, 12), "Europe/Berlin", "day")
    assert starts[0] == ms(2026, 3, 27, 23)  # local midnight, UTC+1
    assert list((ends - starts) // 3_600_000) == [24, 23, 24]
    assert np.all(starts[1:] == ends[:-1])


def test_hours_in_a_half_hour_zone() -> None:
    starts, ends = calendar_windows(ms(2026, 1, 1, 0, 10), ms(2026, 1, 1, 3), "Asia/Kolkata", "hour")
    assert starts[0] == ms(2025, 12, 31, 23, 30)  # 05:00 local
    assert np.all(ends - starts == 3_600_000)
    assert ends[-1] >= ms(2026, 1, 1, 3)


def test_rolling_and_fleet() -> None:
    s, e = rolling_windows(10_000, 4_000, 1_000, 3)
    assert list(s) == [4_000, 5_000, 6_000] and list(e) == [8_000, 9_000, 10_000]
    off, starts, ends = fleet_windows([(s, e), (s[:1], e[:1])])
    assert list(off) == [0, 3, 4] and starts.size == ends.size == 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tz: unknown time zone 'Mars/Olympus'"):
        calendar_windows(0, 1, "Mars/Olympus")
    with pytest.raises(ValueError, match="unit"):
        calendar_windows(0, 1, "UTC", "week")
    with pytest.raises(ValueError, match="end_ms"):
        calendar_windows(10, 1, "UTC")
    with pytest.raises(ValueError, match="length_ms"):
        rolling_windows(0, 0, 1, 1)
