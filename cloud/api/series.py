"""Parsing and SQL of `/api/v1/series`: times, buckets, cursors, and raw / date_bin / rollup queries."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from zhizao.cloud.api.errors import bad_request

__all__ = ["AGGREGATES", "Cursor", "SeriesQuery", "parse_aggs", "parse_bucket", "parse_time", "to_ms"]

AGGREGATES = ("min", "max", "avg", "last", "count")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUCKET = re.compile(r"^(\d{1,9})(ms|s|m|h|d)$")
# Exactly what the bucket and agg parameters accept (their OpenAPI patterns; empty = not given): a bucket of
# 1 s to 999 days, aggregates as a comma list.
BUCKET_PATTERN = r"^(|raw|[1-9][0-9]{0,5}(s|m)|[1-9][0-9]{0,4}h|[1-9][0-9]{0,2}d|[1-9][0-9]{3,8}ms)$"
AGG_PATTERN = r"^(|(min|max|avg|last|count)(,(min|max|avg|last|count))*)$"
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Rollup tables, widest first: a bucket that is a whole multiple of a rollup's width can be served from it.
ROLLUPS = (("samples_1h", 3_600_000), ("samples_1m", 60_000))


def to_ms(ts: datetime) -> int:
    """Epoch milliseconds of a tz-aware datetime."""
    return (ts - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """tz-aware UTC datetime of epoch milliseconds."""
    return _EPOCH + timedelta(milliseconds=ms)


# Times are clamped to these, so widening a range to whole buckets or adding a span never leaves what a
# datetime holds (a time in the year 3 is as much "long ago" as one in the year 5).
TIME_MIN = datetime(5, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(9995, 1, 1, tzinfo=UTC)


def clamp_time(ts: datetime) -> datetime:
    """`ts` limited to TIME_MIN..TIME_MAX."""
    return min(max(ts, TIME_MIN), TIME_MAX)


def parse_time(field: str, value: str) -> datetime:
    """Epoch milliseconds or ISO 8601 with a zone -> tz-aware UTC; 400 naming the field otherwise."""
    text = value.strip()
    try:
        if re.fullmatch(r"-?\d{1,15}", text):
            return clamp_time(from_ms(int(text)))
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(field, value, "not a time; give epoch milliseconds or ISO 8601 with a zone") from None
    except OverflowError:
        raise bad_request(field, value, "outside the years 1..9999") from None
    if parsed.tzinfo is None:
        raise bad_request(field, value, "ISO 8601 time without a zone; add Z or +hh:mm")
    try:
        return clamp_time(parsed.astimezone(UTC))
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first UTC instant a datetime holds
        return TIME_MIN if parsed.year == 1 else TIME_MAX


def parse_bucket(value: str | None) -> int | None:
    """`1m`, `15s`, `1h`, `1d`, `raw` -> bucket width in ms (None = raw); at least 1 s."""
    if value is None or value in ("", "raw"):
        return None
    match = _BUCKET.match(value)
    if not match:
        raise bad_request("bucket", value, "not a bucket width; use e.g. 10s, 1m, 15m, 1h, 1d or raw")
    width = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if width < 1000:
        raise bad_request("bucket", value, "buckets are at least 1s wide")
    if not re.fullmatch(BUCKET_PATTERN, value):
        raise bad_request("bucket", value, "a width of 1s to 999d, without leading zeros")
    return width


def parse_aggs(value: str | None) -> tuple[str, ...]:
    """`min,max` -> ("min", "max"); default every aggregate."""
    if value is None or value == "":
        return AGGREGATES
    for name in value.split(","):
        if name not in AGGREGATES:
            raise bad_request("agg", value, f"unknown aggregate {name!r}; use any of {', '.join(AGGREGATES)}")
    return tuple(dict.fromkeys(value.split(",")))


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this epoch-ms time, for this tag and bucket."""

    tag_id: int
    after_ms: int
    bucket_ms: int | None

    def encode(self) -> str:
        """Opaque url-safe text for `next_cursor`."""
        raw = json.dumps([self.tag_id, self.after_ms, self.bucket_ms], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, tag_id: int, bucket_ms: int | None) -> Cursor:
        """Parse a cursor; 400 naming `cursor` when it is damaged or belongs to another query."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            tag, after, bucket = json.loads(raw)
            cursor = cls(int(tag), int(after), None if bucket is None else int(bucket))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise bad_request("cursor", text, "not a cursor from a previous page") from None
        if cursor.tag_id != tag_id or cursor.bucket_ms != bucket_ms:
            raise bad_request("cursor", text, "belongs to another tag or bucket; repeat the same query")
        return cursor


def _clean(expr: str) -> str:
    # NaN and infinities cannot travel in JSON; they come back as null.
    return f"nullif(nullif(nullif({expr}, 'NaN'::float8), 'Infinity'::float8), '-Infinity'::float8)"


_MS = "floor(extract(epoch FROM {col}) * 1000)::int8"
_RAW_AGGS = {
    "min": "min(value)", "max": "max(value)", "avg": "avg(value)",
    "last": "(array_agg(value ORDER BY ts DESC))[1]", "count": "count(value)",
}
_ROLLUP_AGGS = {
    "min": "min(min)", "max": "max(max)", "avg": "sum(avg * count) / nullif(sum(count), 0)",
    "last": "(array_agg(last ORDER BY bucket DESC))[1]", "count": "sum(count)::int8",
}
_TAG_IN_SCOPE = "EXISTS (SELECT 1 FROM tags g WHERE g.tag_id = %(tag)s AND {scope})"


@dataclass(frozen=True)
class SeriesQuery:
    """A validated series request: tag, [start, end), bucket width or raw, aggregates, page size."""

    tag_id: int
    text: bool  # the tag's values are in samples_text (text, arrays, DateTime)
    start: datetime
    end: datetime
    bucket_ms: int | None
    aggs: tuple[str, ...]
    limit: int
    after_ms: int | None
    fresh_from_ms: int = 0  # rollups are trusted only before this time (epoch ms); raw samples after it
    exact: bool = False  # a 64-bit integer tag: raw rows also carry the exact value from samples_int (or null)

    def source(self, requested: str, rollups: set[str]) -> str:
        """raw, samples_1m or samples_1h: a rollup when it exists and the bucket is a multiple of its width."""
        if self.bucket_ms is None or requested == "raw":
            return "raw"
        for table, width in ROLLUPS:
            if table in rollups and self.bucket_ms % width == 0 and requested in ("auto", table):
                return table
        if requested not in ("auto", "raw"):
            raise bad_request("source", requested, f"bucket of {self.bucket_ms} ms cannot be served from it")
        return "raw"

    def sql(self, source: str, scope_where: str) -> tuple[str, dict[str, Any]]:
        """SQL and named parameters for one page (scope parameters are added by the caller)."""
        params: dict[str, Any] = {"tag": self.tag_id, "start": self.start, "end": self.end, "lim": self.limit + 1}
        in_scope = _TAG_IN_SCOPE.format(scope=scope_where)
        if self.bucket_ms is None:
            table = "samples_text" if self.text else "samples"
            value = "value" if self.text else _clean("value")
            after = ""
            if self.after_ms is not None:
                after = " AND ts > %(after)s"
                params["after"] = from_ms(self.after_ms)
            if self.exact:  # the exact integer where float64 only holds its nearest value
                value += (", (SELECT x.value::text FROM samples_int x"
                          " WHERE x.tag_id = samples.tag_id AND x.ts = samples.ts)")
            sql = (f"SELECT {_MS.format(col='ts')}, {value}, quality FROM {table}"
                   f" WHERE tag_id = %(tag)s AND {in_scope} AND ts >= %(start)s AND ts < %(end)s{after}"
                   " ORDER BY ts LIMIT %(lim)s")
            return sql, params
        params["width"] = timedelta(milliseconds=self.bucket_ms)
        params["origin"] = _EPOCH
        lower = self.start if self.after_ms is None else max(self.start, from_ms(self.after_ms + self.bucket_ms))
        params["lower"] = lower
        raw = (f"SELECT date_bin(%(width)s, ts, %(origin)s) AS b, {self._aggs(_RAW_AGGS)} FROM samples"
               f" WHERE tag_id = %(tag)s AND {in_scope} AND ts >= {{lo}} AND ts < %(end)s GROUP BY b")
        if source == "raw":
            inner = raw.format(lo="%(lower)s")
        else:
            # Rollups are refreshed after commits, so the newest buckets come from the raw samples; `fresh`
            # is on the requested bucket grid, so each answer bucket comes whole from one side.
            params["fresh"] = max(lower, from_ms(self.fresh_from_ms // self.bucket_ms * self.bucket_ms))
            where = (f" FROM {source} WHERE tag_id = %(tag)s AND {in_scope} AND bucket >= %(lower)s"
                     " AND bucket < least(%(end)s, %(fresh)s)")
            if self.bucket_ms == dict(ROLLUPS)[source]:
                # The rollup's own width: its rows are the answer, no regrouping.
                rolled = "SELECT bucket AS b, " + ", ".join(f"{a} AS a_{a}" for a in self.aggs) + where
            else:
                rolled = f"SELECT date_bin(%(width)s, bucket, %(origin)s) AS b, {self._aggs(_ROLLUP_AGGS)}{where} GROUP BY b"
            inner = f"{rolled} UNION ALL {raw.format(lo='%(fresh)s')}"
        select = ", ".join(f"a_{a}" if a == "count" else _clean(f"a_{a}") for a in self.aggs)
        sql = f"SELECT {_MS.format(col='b')}, {select} FROM ({inner}) AS u ORDER BY b LIMIT %(lim)s"
        return sql, params

    def _aggs(self, exprs: dict[str, str]) -> str:
        return ", ".join(f"{exprs[a]} AS a_{a}" for a in self.aggs)
