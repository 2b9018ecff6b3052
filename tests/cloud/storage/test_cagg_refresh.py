"""Ranges handed to the continuous-aggregate refresh: whole buckets, overlapping and touching ones merged."""

from __future__ import annotations

from zhizao.cloud.storage.cagg_refresh import coalesce
from zhizao.cloud.storage.timescale import bucket_span

MIN = 60_000
HOUR = 3_600_000


def test_bucket_span_widens_to_whole_buckets_and_never_to_nothing() -> None:
    assert bucket_span(HOUR + 1, 2 * HOUR - 1, HOUR) == (HOUR, 2 * HOUR)
    assert bucket_span(HOUR, 2 * HOUR, HOUR) == (HOUR, 2 * HOUR)
    assert bucket_span(HOUR, HOUR, HOUR) == (HOUR, 2 * HOUR)  # an empty range still covers its bucket
    assert bucket_span(90 * MIN + 5, 90 * MIN + 6, MIN) == (90 * MIN, 91 * MIN)


def test_coalesce_merges_overlapping_and_touching_ranges_in_bucket_units() -> None:
    ranges = [
        (5 * HOUR + 10, 5 * HOUR + 20),
        (HOUR + 1, HOUR + 2),
        (2 * HOUR - 1, 2 * HOUR + 1),
        (9 * HOUR, 9 * HOUR),
    ]
    assert coalesce(ranges, HOUR) == [(HOUR, 3 * HOUR), (5 * HOUR, 6 * HOUR), (9 * HOUR, 10 * HOUR)]
    assert coalesce(ranges, MIN) == [
        (HOUR, HOUR + MIN),
        (2 * HOUR - MIN, 2 * HOUR + MIN),
        (5 * HOUR, 5 * HOUR + MIN),
        (9 * HOUR, 9 * HOUR + MIN),
    ]
    assert coalesce([], HOUR) == []
