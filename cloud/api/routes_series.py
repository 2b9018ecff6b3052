"""`/api/v1/series` (one tag's history, raw or bucketed, paged) and `/api/v1/latest` (latest value per tag)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import WithJsonSchema

from zhizao.broker.contract.ids import Id
from zhizao.broker.sparkplug.datatypes import INT_TYPES, TEXT_TYPES, DataType
from zhizao.broker.sparkplug.typed import ARRAY_TYPES, SIDE_TYPES, iso_ms
from zhizao.cloud.api.deps import Conn, Scope, SiteScope
from zhizao.cloud.api.errors import bad_request, not_found
from zhizao.cloud.api.models import LatestValue, Series
from zhizao.cloud.api.params import SiteQuery, TimeQuery
from zhizao.cloud.api.series import (
    AGG_PATTERN,
    BUCKET_PATTERN,
    Cursor,
    SeriesQuery,
    from_ms,
    parse_aggs,
    parse_bucket,
    parse_time,
    to_ms,
)
from zhizao.cloud.settings import CloudSettings

router = APIRouter(prefix="/api/v1", tags=["data"])

_TAG_COLS = "tag_id, site_id, edge_node_id, machine_id, name, datatype, unit, first_seen, last_seen"
_DEFAULT_SPAN = timedelta(hours=1)
_DEFAULT_LIMIT = 10_000


async def _resolve_tag(
    conn: AsyncConnection[Any], scope: SiteScope, tag_id: int | None, site: str | None,
    machine: str | None, edge_node: str | None, name: str | None,
) -> dict[str, Any]:
    """The tag by id, or by site + machine (or edge node) + name; 404 when unknown or out of scope."""
    if tag_id is not None:
        if name is not None:
            raise bad_request("name", name, "give either tag_id or site/machine/name, not both")
        params: dict[str, Any]
        where, params, shown = "tag_id = %(tag_id)s", {"tag_id": tag_id}, str(tag_id)
    else:
        if site is None or name is None or (machine is None and edge_node is None):
            raise bad_request("tag_id", None, "give tag_id, or site + machine (or edge_node) + name")
        where = "site_id = %(site)s AND name = %(name)s"
        params = {"site": site, "name": name}
        if machine is not None:
            where += " AND machine_id = %(machine)s"
            params["machine"] = machine
            if edge_node is not None:
                where += " AND edge_node_id = %(edge_node)s"
                params["edge_node"] = edge_node
        else:
            where += " AND edge_node_id = %(edge_node)s AND machine_id IS NULL"
            params["edge_node"] = edge_node
        shown = "/".join(p for p in (site, machine or edge_node, name) if p)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_TAG_COLS} FROM tags WHERE {scope.where()} AND {where} ORDER BY tag_id LIMIT 2",
                          scope.params(**params))
        rows = await cur.fetchall()
    if not rows:
        raise not_found("tag", shown)
    if len(rows) > 1:
        raise bad_request("name", name, "matches tags of several edge nodes; add edge_node or use tag_id")
    return rows[0]


@router.get("/series", response_model=Series, summary="History of one tag: raw or bucketed, paged")
async def get_series(
    request: Request,
    conn: Conn,
    scope: Scope,
    tag_id: Annotated[int | None, Query(description="tag id (or give site + machine/edge_node + name)")] = None,
    site: Annotated[Id | None, Query()] = None,
    machine: Annotated[Id | None, Query()] = None,
    edge_node: Annotated[Id | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=200, description="tag name, e.g. Temperature/Spindle")] = None,
    start: Annotated[TimeQuery, Query(description="epoch ms or ISO 8601; default end - 1 h")] = None,
    end: Annotated[TimeQuery, Query(description="epoch ms or ISO 8601, exclusive; default now")] = None,
    # Checked by parse_bucket / parse_aggs (with messages that say what to give); documented as patterns.
    bucket: Annotated[str | None, WithJsonSchema({"type": "string", "pattern": BUCKET_PATTERN}),
                      Query(description="raw (default), or a width of 1 s to 999 d: 10s, 1m, 1h, 1d")] = None,
    agg: Annotated[str | None, WithJsonSchema({"type": "string", "pattern": AGG_PATTERN}),
                   Query(description="bucketed: any of min,max,avg,last,count (default all)")] = None,
    source: Annotated[str, Query(pattern="^(auto|raw|samples_1m|samples_1h)$")] = "auto",
    limit: Annotated[int | None, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100_000}),
                     Query(description="points per page, 1..ZHIZAO_SERIES_MAX_POINTS (100000)")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> Response:
    """Raw samples or min/max/avg/last/count per bucket (buckets aligned to the epoch), as column arrays."""
    settings: CloudSettings = request.app.state.settings
    end_dt = parse_time("end", end) if end is not None else datetime.now(UTC)
    start_dt = parse_time("start", start) if start is not None else end_dt - _DEFAULT_SPAN
    if start_dt >= end_dt:
        raise bad_request("start", start, f"must be before end ({end_dt.isoformat()})")
    max_range = timedelta(days=settings.series_max_range_days)
    if end_dt - start_dt > max_range:
        raise bad_request("end", end, f"range of {(end_dt - start_dt).days} days is over the limit of "
                          f"{settings.series_max_range_days:g} days per request")
    page = _DEFAULT_LIMIT if limit is None else limit
    if page < 1 or page > settings.series_max_points:
        raise bad_request("limit", limit, f"points per page must be 1..{settings.series_max_points}")
    bucket_ms = parse_bucket(bucket)
    aggs = parse_aggs(agg)
    if bucket_ms is not None:
        # Buckets are whole: the range widens to bucket boundaries, so raw and rollup answers agree.
        start_ms = to_ms(start_dt) // bucket_ms * bucket_ms
        end_ms = -(-to_ms(end_dt) // bucket_ms) * bucket_ms
        n_buckets = (end_ms - start_ms) // bucket_ms
        if n_buckets > settings.series_max_buckets:
            raise bad_request("bucket", bucket, f"gives {n_buckets} buckets over the range; at most "
                              f"{settings.series_max_buckets} per request (use a wider bucket or a shorter range)")
        start_dt, end_dt = from_ms(start_ms), from_ms(end_ms)
    elif agg:  # agg= (empty) is the same as no agg
        raise bad_request("agg", agg, "aggregates need a bucket (e.g. bucket=1m)")

    tag = await _resolve_tag(conn, scope, tag_id, site, machine, edge_node, name)
    datatype = int(tag["datatype"])
    text = datatype in SIDE_TYPES
    if text and bucket_ms is not None:
        kind = "text" if datatype in TEXT_TYPES else DataType(datatype).name
        raise bad_request("bucket", bucket, f"tag {tag['name']!r} holds {kind}; only raw history is available")
    after = Cursor.decode(cursor, tag["tag_id"], bucket_ms).after_ms if cursor else None
    fresh = to_ms(datetime.now(UTC)) - int(settings.series_rollup_lag_s * 1000)
    query = SeriesQuery(tag["tag_id"], text, start_dt, end_dt, bucket_ms, aggs, page, after, fresh,
                        exact=datatype in LONG_INTEGERS)
    src = query.source(source, request.app.state.rollups)
    sql, params = query.sql(src, scope.where("g.site_id"))
    # Binary rows: thousands of float8/int8 values parse about twice as fast as their text form.
    cur = await conn.execute(sql, scope.params(**params), binary=True)
    rows = await cur.fetchall()

    more = len(rows) > page
    rows = rows[:page]
    columns = list(zip(*rows, strict=True)) if rows else []

    def col(i: int) -> list[Any]:
        return list(columns[i]) if columns else []

    points: dict[str, Any] = {"ts": col(0)}
    if bucket_ms is None and query.exact:  # the exact integer (text) where there is one, else the float64's
        points["value"] = [int(e) if e is not None else None if v is None else int(v)
                           for v, e in zip(col(1), col(2), strict=True)]
        points["quality"] = col(3)
    elif bucket_ms is None:
        values = col(1)
        if datatype in _INTEGERS:
            values = [None if v is None else int(v) for v in values]
        elif datatype in ARRAY_TYPES:
            values = [_array(v) for v in values]
        elif datatype == DataType.Text:
            values = [_document(v) for v in values]
        points["value"], points["quality"] = values, col(2)
    else:
        for i, name_ in enumerate(aggs, start=1):
            points[name_] = col(i)
    next_cursor = Cursor(tag["tag_id"], rows[-1][0], bucket_ms).encode() if more else None
    body = Series.model_validate({"tag": tag, "start": to_ms(start_dt), "end": to_ms(end_dt), "bucket_ms": bucket_ms,
                                  "source": src, "points": points, "next_cursor": next_cursor})
    # pydantic's JSON encoder is ~10x faster than the stdlib path FastAPI would take for thousands of floats.
    return Response(body.model_dump_json(), media_type="application/json")


async def _machine_exists(conn: AsyncConnection[Any], scope: SiteScope, site: str, machine: str) -> None:
    """404 for an unknown machine (an empty answer then means: known, but no values yet)."""
    cur = await conn.execute(f"SELECT 1 FROM machines WHERE {scope.where()} AND site_id = %(site)s"
                             " AND machine_id = %(machine)s", scope.params(site=site, machine=machine))
    if await cur.fetchone() is None:
        raise not_found("machine", machine)


@router.get("/latest", response_model=list[LatestValue], summary="Latest live value per tag")
async def get_latest(
    conn: Conn,
    scope: Scope,
    site: SiteQuery,
    machine: Annotated[Id | None, Query()] = None,
    edge_node: Annotated[Id | None, Query()] = None,
) -> list[dict[str, Any]]:
    """Latest live value of every tag (that has one) of a site, a machine, or an edge node."""
    where = "t.site_id = %(site)s"
    params: dict[str, Any] = {"site": site}
    if machine is not None:
        where += " AND t.machine_id = %(machine)s"
        params["machine"] = machine
    if edge_node is not None:
        where += " AND t.edge_node_id = %(edge_node)s"
        params["edge_node"] = edge_node
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT 1 FROM sites WHERE {scope.where()} AND site_id = %(site)s",
                          scope.params(site=site))
        if await cur.fetchone() is None:
            raise not_found("site", site)
        await cur.execute(
            "SELECT t.tag_id, t.site_id, t.edge_node_id, t.machine_id, t.name, t.unit,"
            " floor(extract(epoch FROM l.ts) * 1000)::int8 AS ts,"
            " coalesce(l.text_value, l.int_value::text, CASE WHEN l.value IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"
            "          THEN NULL ELSE l.value::text END) AS raw_value,"
            " l.text_value IS NOT NULL AS is_text, l.quality, t.datatype"
            f" FROM tags t JOIN latest_values l ON l.tag_id = t.tag_id WHERE {scope.where('t.site_id')}"
            f" AND {where} ORDER BY t.machine_id NULLS FIRST, t.name",
            scope.params(**params),
        )
        rows = await cur.fetchall()
    if machine is not None and not rows:
        await _machine_exists(conn, scope, site, machine)
    for row in rows:
        row.pop("is_text")
        datatype = int(row.pop("datatype"))
        row["datatype"] = _datatype_name(datatype)
        row["value"] = typed_value(datatype, row.pop("raw_value"))
    return rows


def _datatype_name(datatype: int) -> str:
    try:
        return DataType(datatype).name
    except ValueError:
        return str(datatype)


LONG_INTEGERS = frozenset({int(DataType.Int64), int(DataType.UInt64)})
_INTEGERS = frozenset(int(t) for t in (*INT_TYPES, *LONG_INTEGERS))


def _array(raw: object) -> Any:
    """An array tag's stored JSON as a list; a text that is not one (written by hand) comes back as it is."""
    if not isinstance(raw, str):
        return None if raw is None else str(raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _document(raw: object) -> Any:
    """A Text tag's stored value: a JSON object or array (matrices, structures, LocalizedText) as that object or
    array; any other text (a third-party node's plain Text) as it is."""
    if isinstance(raw, str) and raw[:1] in ("{", "["):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return None if raw is None else str(raw)


def typed_value(datatype: int, raw: object) -> Any:
    """A stored value as the JSON value of its tag's datatype: integers as integers (64-bit ones exact), arrays
    as arrays, Text JSON documents as objects or arrays, text, DateTime (ISO 8601) and Bytes (base64) as strings,
    Float/Double and Boolean (0 or 1) as numbers."""
    if raw is None:
        return None
    if datatype in ARRAY_TYPES:
        return _array(raw)
    if datatype == DataType.Text:
        return _document(raw)
    if datatype == DataType.DateTime and "T" not in str(raw):
        return iso_ms(int(float(str(raw))))  # an instant stored as epoch ms (a third-party node, before 0013)
    if datatype in SIDE_TYPES:
        return str(raw)
    if datatype in _INTEGERS:
        text = str(raw)
        return int(text) if text.lstrip("-").isdigit() else int(float(text))
    return float(raw)  # type: ignore[arg-type]
