"""Database side of the OEE service (sync psycopg, used from its worker thread): tags, calendars, history, windows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from pydantic import ValidationError

from zhizao.broker.contract.calendar import Calendar, StateClasses
from zhizao.cloud.oee.calendar import PlannedStop, SiteCalendar, all_day_calendar
from zhizao.cloud.oee.engine import F64, I64, SUM_FIELDS

Conn = psycopg.Connection[Any]

# Sparkplug metric names of the machine signals OEE reads (DESIGN.md section 2).
ROLES = {"State": "state", "Counts/Total": "total", "Counts/Good": "good", "Rate/Ideal": "rate"}


@dataclass(frozen=True)
class TagInfo:
    """What the OEE service needs to know about a tag: its machine and role (state, total, good, rate, other)."""

    site: str
    line: str
    machine: str
    role: str


def dt(ms: int) -> datetime:
    """Epoch ms -> tz-aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def ms(value: datetime) -> int:
    """tz-aware datetime -> epoch ms."""
    return round(value.timestamp() * 1000)


def lookup_tags(conn: Conn, tag_ids: list[int]) -> dict[int, TagInfo | None]:
    """Machine and role of each tag id (None: not a machine tag)."""
    rows = conn.execute(
        "SELECT t.tag_id, t.site_id, t.machine_id, coalesce(m.line_id, t.edge_node_id), t.name FROM tags t"
        " LEFT JOIN machines m ON m.site_id = t.site_id AND m.machine_id = t.machine_id"
        " WHERE t.tag_id = ANY(%s)",
        [tag_ids],
    ).fetchall()
    out: dict[int, TagInfo | None] = dict.fromkeys(tag_ids)
    for tag_id, site, machine, line, name in rows:
        if machine is not None:
            out[int(tag_id)] = TagInfo(site, line, machine, ROLES.get(name, "other"))
    return out


def load_site(conn: Conn, site: str) -> SiteCalendar:
    """The site's calendar from oee_site_config (a 24/7 calendar in the site's zone when it has none)."""
    row = conn.execute("SELECT tz, calendar, state_classes, microstop_s, startup_s FROM oee_site_config"
                       " WHERE site_id = %s", [site]).fetchone()
    stops = [
        PlannedStop(ms(s), ms(e), int(c))
        for s, e, c in conn.execute(
            "SELECT start_ts, end_ts, code FROM oee_planned_stops WHERE site_id = %s ORDER BY start_ts", [site]
        ).fetchall()
    ]
    if row is None:
        tz_row = conn.execute("SELECT tz FROM sites WHERE site_id = %s", [site]).fetchone()
        return SiteCalendar(site, str(tz_row[0]) if tz_row else "UTC", all_day_calendar(), None, stops)
    try:
        calendar = Calendar.model_validate(row[1])
        classes = StateClasses.model_validate(row[2]) if row[2] is not None else None
    except ValidationError:
        # A row edited by hand into something invalid must not stop OEE for the whole fleet.
        calendar, classes = all_day_calendar(), None
    return SiteCalendar(site, str(row[0]), calendar, classes, stops, float(row[3]), float(row[4]))


def _series(conn: Conn, tag: int | None, since: int) -> tuple[I64, F64]:
    """Samples of `tag` from `since` on, plus the last one before it (the baseline)."""
    if tag is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    rows = conn.execute(
        "(SELECT ts, value FROM samples WHERE tag_id = %(t)s AND ts < %(s)s AND value IS NOT NULL"
        "  ORDER BY ts DESC LIMIT 1)"
        " UNION ALL (SELECT ts, value FROM samples WHERE tag_id = %(t)s AND ts >= %(s)s AND value IS NOT NULL"
        "  ORDER BY ts)",
        {"t": tag, "s": dt(since)},
    ).fetchall()
    rows.sort(key=lambda r: r[0])
    t = np.array([ms(r[0]) for r in rows], np.int64)
    v = np.array([float(r[1]) for r in rows], np.float64)
    return t, v


def load_history(conn: Conn, site: str, machine: str, since: int, state_since: int) -> dict[str, Any]:
    """A machine's OEE signals from the samples table (states from `state_since`, the rest from `since`)."""
    tags = {
        name: int(tag_id)
        for tag_id, name in conn.execute(
            "SELECT tag_id, name FROM tags WHERE site_id = %s AND machine_id = %s AND name = ANY(%s)",
            [site, machine, list(ROLES)],
        ).fetchall()
    }
    out: dict[str, Any] = {}
    out["state"] = _series(conn, tags.get("State"), state_since)
    out["total"] = _series(conn, tags.get("Counts/Total"), since)
    out["good"] = _series(conn, tags.get("Counts/Good"), since)
    out["rate"] = _series(conn, tags.get("Rate/Ideal"), since)
    horizon = conn.execute(
        "SELECT max(l.ts) FROM latest_values l JOIN tags t USING (tag_id) WHERE t.site_id = %s AND t.machine_id = %s",
        [site, machine],
    ).fetchone()
    out["horizon"] = ms(horizon[0]) if horizon and horizon[0] is not None else None
    out["reasons"] = {
        ms(ts): int(code)
        for ts, code in conn.execute(
            "SELECT ts, code FROM oee_stop_reasons WHERE site_id = %s AND machine_id = %s", [site, machine]
        ).fetchall()
    }
    return out


def save_state_changes(conn: Conn, rows: list[tuple[str, str, int, int]]) -> None:
    """Insert state changes (site, machine, ts ms, code); repeats are ignored."""
    if rows:
        conn.execute(
            "INSERT INTO oee_state_changes (site_id, machine_id, ts, code)"
            " SELECT s, m, 'epoch'::timestamptz + t * interval '1 millisecond', c"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::integer[]) AS x(s, m, t, c)"
            " ON CONFLICT DO NOTHING",
            [list(col) for col in zip(*rows, strict=True)],
        )


def replace_state_changes(conn: Conn, site: str, machine: str, ts: list[int], codes: list[int]) -> None:
    """Make the stored state changes from `ts[0]` on equal to (ts, codes), the changes of every state sample
    from that instant on (a reload from the samples table). The first entry is no change when the last one
    stored before it has the same code."""
    if not ts:
        return
    row = conn.execute(
        "SELECT code FROM oee_state_changes WHERE site_id = %s AND machine_id = %s AND ts < %s ORDER BY ts DESC LIMIT 1",
        [site, machine, dt(ts[0])],
    ).fetchone()
    conn.execute("DELETE FROM oee_state_changes WHERE site_id = %s AND machine_id = %s AND ts >= %s",
                 [site, machine, dt(ts[0])])
    if row is not None and int(row[0]) == codes[0]:
        ts, codes = ts[1:], codes[1:]
    save_state_changes(conn, [(site, machine, t, c) for t, c in zip(ts, codes, strict=True)])


_UPSERT = (
    "INSERT INTO oee_windows (site_id, machine_id, line_id, kind, start_ts, end_ts, "
    + ", ".join(SUM_FIELDS)
    + ", updated_at) SELECT x.site, x.machine, x.line, x.kind,"
    " 'epoch'::timestamptz + x.ws * interval '1 millisecond', 'epoch'::timestamptz + x.we * interval '1 millisecond', "
    + ", ".join(f"x.{f}" for f in SUM_FIELDS)
    + ", now() FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], "
    + ", ".join("%s::double precision[]" for _ in SUM_FIELDS)
    + ") AS x(site, machine, line, kind, ws, we, "
    + ", ".join(SUM_FIELDS)
    + ") ON CONFLICT (site_id, machine_id, kind, start_ts) DO UPDATE SET end_ts = excluded.end_ts, line_id = excluded.line_id, "
    + ", ".join(f"{f} = excluded.{f}" for f in SUM_FIELDS)
    + ", updated_at = now()"
)


def save_windows(conn: Conn, rows: list[tuple[str, str, str, str, int, int, F64]]) -> None:
    """Upsert window rows (site, machine, line, kind, start ms, end ms, sums) in one statement."""
    if not rows:
        return
    sums = np.stack([r[6] for r in rows])
    params: list[Any] = [[r[i] for r in rows] for i in range(6)]
    params += [sums[:, j].tolist() for j in range(len(SUM_FIELDS))]
    conn.execute(_UPSERT, params)  # doubles into integer columns: an assignment cast
