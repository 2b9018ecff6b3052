"""Alarm points after ISA-18.2 / IEC 62682: the state model, its transitions, and how they are stored.

An alarm point (one row of `alarms`, unique by `key`) is in one of the states of the standard's state model,
from two booleans -- the condition is active, the alarm is acknowledged -- and three overriding states:

    normal      inactive, acknowledged          unack       active, not acknowledged
    ack         active, acknowledged            rtn_unack   returned to normal, not acknowledged
    shelved     an operator shelved it until `shelved_until` (expires by itself)
    suppressed  suppressed by the system during an alarm flood (EEMUA 191: >= 10 alarms in 10 minutes per site)
    out_of_service  taken out of service by an engineer

Conditions raise and clear (data time); people acknowledge, shelve, unshelve and take out of / return to
service (wall time). Every transition writes an `alarm_history` row, an `audit_log` row (actor `system` for
the service's own) and, where it is announced, one delivery
per matching webhook into the outbox -- all in the caller's transaction, so a restart can neither lose nor
repeat one. Re-activating a point that is not back to normal counts as the same alarm (de-duplication); three
activations within a minute mark it chattering, and its further activations are recorded but not announced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from zhizao.cloud.auth import audit_params

__all__ = [
    "CHATTER_COUNT",
    "FLOOD_COUNT",
    "AlarmEngine",
    "ConditionEvent",
    "Transition",
    "derive_state",
]

CHATTER_COUNT = 3           # activations ...
CHATTER_WINDOW = timedelta(minutes=1)  # ... within this window make a point chattering
FLOOD_COUNT = 10            # EEMUA 191: a flood is >= 10 alarms ...
FLOOD_WINDOW = timedelta(minutes=10)   # ... in 10 minutes (per site console)
STATES = ("normal", "unack", "ack", "rtn_unack", "shelved", "suppressed", "out_of_service")
ROW = ("id, key, site_id, line_id, machine_id, tag_id, source, rule_id, priority, message, state, active, acked,"
       " shelved_until, suppressed, out_of_service, chattering, activations, value, limit_value, raised_ts,"
       " cleared_ts, acked_at, acked_by, comment, updated_at")
Row = dict[str, Any]


def derive_state(row: Row, now: datetime | None = None) -> str:
    """The ISA-18.2 state of a row from its booleans (overriding states first)."""
    if row["out_of_service"]:
        return "out_of_service"
    shelved = row["shelved_until"]
    if shelved is not None and (now is None or shelved > now):
        return "shelved"
    if row["suppressed"]:
        return "suppressed"
    if row["active"]:
        return "ack" if row["acked"] else "unack"
    return "normal" if row["acked"] else "rtn_unack"


@dataclass(frozen=True)
class ConditionEvent:
    """An alarm condition was raised or cleared at `ts_ms` (data time)."""

    key: str
    site: str
    line: str | None
    machine: str | None
    tag_id: int | None
    source: str  # anomaly, threshold, rate, failure, microstops, offline, stale, flood
    rule_id: int | None
    priority: str
    message: str
    ts_ms: int
    active: bool
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class Transition:
    """One change of an alarm point, as stored in alarm_history and sent to webhooks and the live stream."""

    event: str
    from_state: str
    to_state: str
    actor: str
    data_ts: datetime | None
    comment: str | None = None
    value: float | None = None
    announce: bool = True


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def alarm_json(row: Row) -> dict[str, Any]:
    """An alarm row as the API and the live stream show it."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[k] = v.isoformat() if isinstance(v, datetime) else v
    out["site"] = out.pop("site_id")
    out["line"] = out.pop("line_id")
    out["machine"] = out.pop("machine_id")
    return out


def payload(row: Row, t: Transition) -> dict[str, Any]:
    """The JSON body of a transition (webhooks, live stream)."""
    return {"event": t.event, "from_state": t.from_state, "to_state": t.to_state, "actor": t.actor,
            "comment": t.comment, "data_ts": t.data_ts.isoformat() if t.data_ts else None,
            "at": datetime.now(UTC).isoformat(), "alarm": alarm_json(row)}


class Store:
    """Writes of alarm rows, their history and webhook outbox, on one sync connection inside a transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.published: list[tuple[str, dict[str, Any]]] = []  # (site, body) for the live stream after commit

    def lock(self, keys: Sequence[str]) -> dict[str, Row]:
        """The rows of these keys, locked for this transaction."""
        if not keys:
            return {}
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT {ROW} FROM alarms WHERE key = ANY(%s) ORDER BY id FOR UPDATE", [list(keys)])
            return {r["key"]: r for r in cur.fetchall()}

    def create(self, ev: ConditionEvent) -> Row:
        """A new point in state normal."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "INSERT INTO alarms (key, site_id, line_id, machine_id, tag_id, source, rule_id, priority, message,"
                " state, active, acked) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'normal', false, true)"
                f" ON CONFLICT (key) DO UPDATE SET updated_at = alarms.updated_at RETURNING {ROW}",
                [ev.key, ev.site, ev.line, ev.machine, ev.tag_id, ev.source, ev.rule_id, ev.priority, ev.message],
            )
            row = cur.fetchone()
        assert row is not None
        return row

    def save(self, row: Row, t: Transition) -> None:
        """Store the row's new fields, its history row, its webhook deliveries; queue its live event."""
        row["state"] = derive_state(row, datetime.now(UTC))
        self.conn.execute(
            "UPDATE alarms SET priority = %s, message = %s, state = %s, active = %s, acked = %s, shelved_until = %s,"
            " suppressed = %s, out_of_service = %s, chattering = %s, activations = %s, value = %s, limit_value = %s,"
            " raised_ts = %s, cleared_ts = %s, acked_at = %s, acked_by = %s, comment = %s, updated_at = now()"
            " WHERE id = %s",
            [row["priority"], row["message"], row["state"], row["active"], row["acked"], row["shelved_until"],
             row["suppressed"], row["out_of_service"], row["chattering"], row["activations"], row["value"],
             row["limit_value"], row["raised_ts"], row["cleared_ts"], row["acked_at"], row["acked_by"],
             row["comment"], row["id"]],
        )
        t = Transition(t.event, t.from_state, row["state"], t.actor, t.data_ts, t.comment, t.value, t.announce)
        self.conn.execute(
            "INSERT INTO alarm_history (alarm_id, site_id, data_ts, event, from_state, to_state, actor, comment, value)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [row["id"], row["site_id"], t.data_ts, t.event, t.from_state, t.to_state, t.actor, t.comment, t.value],
        )
        if t.actor == "system":
            # People's transitions are audited by the API with their token; the system's here, in the same way.
            sql, params = audit_params(None, "system", f"alarm.{t.event}", row["site_id"], str(row["id"]),
                                       {"key": row["key"], "from": t.from_state, "to": t.to_state,
                                        "data_ts": t.data_ts.isoformat() if t.data_ts else None})
            self.conn.execute(sql, params)
        body = payload(row, t)
        if t.announce:
            self.conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, alarm_id, event, payload)"
                " SELECT id, %s, %s, %s FROM webhooks WHERE enabled AND (site_id IS NULL OR site_id = %s)"
                " AND (events IS NULL OR %s = ANY(events))",
                [row["id"], t.event, json.dumps(body), row["site_id"], t.event],
            )
        self.published.append((row["site_id"], body))

    def count_activations(self, *, alarm_id: int | None = None, site: str | None = None, since: datetime,
                          until: datetime) -> int:
        """Activations of one point, or of a site's points (the flood alarm itself excluded), in (since, until]."""
        if alarm_id is not None:
            row = self.conn.execute(
                "SELECT count(*) FROM alarm_history WHERE alarm_id = %s AND event = 'activate'"
                " AND data_ts > %s AND data_ts <= %s", [alarm_id, since, until]).fetchone()
        else:
            row = self.conn.execute(
                "SELECT count(*) FROM alarm_history h JOIN alarms a ON a.id = h.alarm_id WHERE h.site_id = %s"
                " AND h.event = 'activate' AND a.source <> 'flood' AND h.data_ts > %s AND h.data_ts <= %s",
                [site, since, until]).fetchone()
        return int(row[0]) if row else 0


# -- transitions by people (the API) ------------------------------------------------------------------------

class TransitionRefused(ValueError):
    """The action does not apply to the alarm's current state (the message names both)."""


def acknowledge(row: Row, actor: str, comment: str) -> Transition:
    """unack -> ack, rtn_unack -> normal (also while shelved or suppressed)."""
    before = derive_state(row, datetime.now(UTC))
    if row["acked"]:
        raise TransitionRefused(f"alarm {row['id']} is already acknowledged (state {before})")
    row.update(acked=True, acked_at=datetime.now(UTC), acked_by=actor, comment=comment)
    if not row["active"]:
        row["suppressed"] = False
    return Transition("acknowledge", before, "", actor, None, comment)


def shelve(row: Row, actor: str, comment: str, until: datetime) -> Transition:
    """Shelve until `until` (not while out of service)."""
    before = derive_state(row, datetime.now(UTC))
    if row["out_of_service"]:
        raise TransitionRefused(f"alarm {row['id']} is out of service; return it to service first")
    row.update(shelved_until=until, comment=comment)
    return Transition("shelve", before, "", actor, None, comment)


def unshelve(row: Row, actor: str, comment: str, event: str = "unshelve") -> Transition:
    """End shelving (by a person, or `expire` by the service)."""
    before = derive_state(row, datetime.now(UTC)) if event == "unshelve" else "shelved"
    if row["shelved_until"] is None:
        raise TransitionRefused(f"alarm {row['id']} is not shelved (state {before})")
    row.update(shelved_until=None, comment=comment)
    return Transition(event, before, "", actor, None, comment)


def out_of_service(row: Row, actor: str, comment: str, enabled: bool) -> Transition:
    """Take out of service (enabled=True) or return to service."""
    before = derive_state(row, datetime.now(UTC))
    if row["out_of_service"] == enabled:
        raise TransitionRefused(f"alarm {row['id']} is already {'out of' if enabled else 'in'} service")
    row.update(out_of_service=enabled, comment=comment)
    if enabled:
        row["shelved_until"] = None
    return Transition("out_of_service" if enabled else "return_to_service", before, "", actor, None, comment)


# -- transitions by conditions (the service) ------------------------------------------------------------------

class AlarmEngine:
    """Applies raised/cleared conditions to alarm points: de-duplication, chattering, flood suppression."""

    def __init__(self) -> None:
        self.horizon: dict[str, int] = {}  # newest data time seen per site (ms)
        self.raised = 0
        self.cleared = 0

    def apply(self, store: Store, events: list[ConditionEvent]) -> None:
        """Apply events (any order; each key's in time order) inside the caller's transaction."""
        if not events:
            return
        events = sorted(events, key=lambda e: e.ts_ms)
        rows = store.lock(sorted({e.key for e in events} | {f"flood:{e.site}" for e in events}))
        for ev in events:
            self.horizon[ev.site] = max(self.horizon.get(ev.site, ev.ts_ms), ev.ts_ms)
            row = rows.get(ev.key)
            if row is None:
                row = rows[ev.key] = store.create(ev)
            if ev.active:
                self._activate(store, rows, row, ev)
            else:
                self._clear(store, row, ev)
            if ev.source != "flood":
                self._flood_check(store, rows, ev.site, ev.ts_ms)

    def _activate(self, store: Store, rows: dict[str, Row], row: Row, ev: ConditionEvent) -> None:
        if row["active"]:
            return  # de-duplication: already active
        before = derive_state(row, datetime.now(UTC))
        ts = _dt(ev.ts_ms)
        recent = store.count_activations(alarm_id=row["id"], since=ts - CHATTER_WINDOW, until=ts)
        chattering = recent + 1 >= CHATTER_COUNT
        was_chattering = bool(row["chattering"])
        flood = rows.get(f"flood:{ev.site}")
        in_flood = (ev.source != "flood" and flood is not None and flood["active"]
                    and ev.priority != "critical")
        row.update(active=True, acked=False, raised_ts=ts, value=ev.value, limit_value=ev.limit, message=ev.message,
                   priority=ev.priority, activations=row["activations"] + 1, chattering=chattering,
                   suppressed=bool(in_flood))
        shelved = row["shelved_until"] is not None and row["shelved_until"] > datetime.now(UTC)
        announce = not (row["out_of_service"] or shelved or in_flood or (chattering and was_chattering))
        store.save(row, Transition("activate", before, "", "system", ts, None, ev.value, announce))
        self.raised += 1

    def _clear(self, store: Store, row: Row, ev: ConditionEvent) -> None:
        if not row["active"]:
            return
        before = derive_state(row, datetime.now(UTC))
        ts = _dt(ev.ts_ms)
        row.update(active=False, cleared_ts=ts, value=ev.value if ev.value is not None else row["value"])
        if row["suppressed"]:
            row.update(suppressed=False, acked=True)  # never announced: nothing to acknowledge
        if row["chattering"]:
            recent = store.count_activations(alarm_id=row["id"], since=ts - CHATTER_WINDOW, until=ts)
            row["chattering"] = recent >= CHATTER_COUNT
        store.save(row, Transition("clear", before, "", "system", ts, None, row["value"],
                                   before not in ("out_of_service", "suppressed", "shelved")))
        self.cleared += 1

    def _flood_check(self, store: Store, rows: dict[str, Row], site: str, ts_ms: int) -> None:
        ts = _dt(ts_ms)
        n = store.count_activations(site=site, since=ts - FLOOD_WINDOW, until=ts)
        key = f"flood:{site}"
        flood = rows.get(key)
        active = flood is not None and flood["active"]
        if not active and n >= FLOOD_COUNT:
            ev = ConditionEvent(key, site, None, None, None, "flood", None, "high",
                                f"alarm flood: {n} alarms in 10 minutes at {site}; further alarms suppressed",
                                ts_ms, True, float(n), float(FLOOD_COUNT))
            flood = rows[key] = rows.get(key) or store.create(ev)
            self._activate(store, rows, flood, ev)
        elif active and n < FLOOD_COUNT and flood is not None:
            self._clear(store, flood, ConditionEvent(key, site, None, None, None, "flood", None, "high",
                                                     flood["message"], ts_ms, False, float(n)))

    def advance(self, store: Store, horizons: dict[str, int]) -> None:
        """The sites' data time moved on (a batch without alarm events): a flood may be over."""
        floods = []
        for site, ts in horizons.items():
            if ts > self.horizon.get(site, -(2**62)):
                self.horizon[site] = ts
                floods.append(site)
        if floods:
            rows = store.lock([f"flood:{s}" for s in floods])
            for site in floods:
                flood = rows.get(f"flood:{site}")
                if flood is not None and flood["active"]:
                    self._flood_check(store, rows, site, self.horizon[site])

    def tick(self, store: Store) -> None:
        """Time-driven transitions: expired shelving, and floods that ended by the site's newest data time."""
        now = datetime.now(UTC)
        with store.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT {ROW} FROM alarms WHERE shelved_until IS NOT NULL AND shelved_until <= %s"
                        " ORDER BY id FOR UPDATE SKIP LOCKED", [now])
            expired = cur.fetchall()
        for row in expired:
            store.save(row, unshelve(row, "system", "shelving expired", "expire"))
        floods = list(self.horizon)
        if floods:
            rows = store.lock([f"flood:{s}" for s in floods])
            for site in floods:
                if f"flood:{site}" in rows and rows[f"flood:{site}"]["active"]:
                    self._flood_check(store, rows, site, self.horizon[site])
