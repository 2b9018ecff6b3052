"""Assets from Sparkplug births and deaths: sites, edge nodes, machines, tags (small, transactional)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[object, ...]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricDef:
    """A metric declared in a birth."""

    name: str
    datatype: int
    unit: str | None = None


def ts(ms: int) -> datetime:
    """Epoch milliseconds -> tz-aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def _upsert_tags(
    conn: Conn, site: str, edge: str, machine: str | None, metrics: list[MetricDef], seen: datetime
) -> dict[str, int]:
    if not metrics:
        return {}
    rows = conn.execute(
        "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype, unit, first_seen, last_seen)"
        " SELECT %s, %s, %s, n, d, u, %s, %s FROM unnest(%s::text[], %s::smallint[], %s::text[]) AS x(n, d, u)"
        " ON CONFLICT (site_id, edge_node_id, (coalesce(machine_id, '')), name) DO UPDATE"
        " SET datatype = excluded.datatype, unit = coalesce(excluded.unit, tags.unit), last_seen = excluded.last_seen"
        " RETURNING name, tag_id",
        [site, edge, machine, seen, seen,
         [m.name for m in metrics], [m.datatype for m in metrics], [m.unit for m in metrics]],
    ).fetchall()
    return {str(name): int(tag_id) for name, tag_id in rows}  # type: ignore[call-overload]


def register_node_birth(
    conn: Conn, site: str, edge: str, bd_seq: int | None, birth_ms: int, metrics: list[MetricDef]
) -> dict[str, int]:
    """Record an NBIRTH: site and edge node online with its bdSeq; node tags upserted. Returns name -> tag id."""
    when = ts(birth_ms)
    with conn.transaction():
        conn.execute(
            "INSERT INTO sites (site_id, name, first_seen, last_seen) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (site_id) DO UPDATE SET last_seen = excluded.last_seen",
            [site, site, when, when],
        )
        conn.execute(
            "INSERT INTO edge_nodes (site_id, edge_node_id, online, bd_seq, last_birth, last_seen)"
            " VALUES (%s, %s, true, %s, %s, %s) ON CONFLICT (site_id, edge_node_id) DO UPDATE"
            " SET online = true, bd_seq = excluded.bd_seq, last_birth = excluded.last_birth,"
            " last_seen = excluded.last_seen",
            [site, edge, bd_seq, when, when],
        )
        return _upsert_tags(conn, site, edge, None, metrics, when)


def machine_for_device(conn: Any, site: str, edge: str, device: str) -> str | None:
    """The machine id of Sparkplug device `device` of edge node `edge`, None when it has no row yet."""
    row = conn.execute(
        "SELECT machine_id FROM machines WHERE site_id = %s AND edge_node_id = %s"
        " AND coalesce(device_id, machine_id) = %s",
        [site, edge, device],
    ).fetchone()
    return None if row is None else str(row[0])


def qualified_machine_id(device: str, edge: str) -> str:
    """The machine id of a device whose own id another edge node of the site already holds: `{device}--{edge}`,
    shortened with a digest of both when that passes the id rule's 64 characters."""
    name = f"{device}--{edge}"
    if len(name) <= 64:
        return name
    digest = hashlib.sha1(f"{edge}/{device}".encode()).hexdigest()[:10]
    return f"{device[:50].rstrip('-')}--{digest}"


def machine_id_of(conn: Any, site: str, edge: str, device: str) -> str:
    """The site-unique machine id of Sparkplug device `device` of edge node `edge` (it need not exist yet).

    Its row's id once it has one; else the device's own id when the site has no machine by that id, or only one
    that never had a birth (seeded: the first edge node to birth it owns it); else, that id being another edge
    node's device, `{device}--{edge}`, so the two keep apart (Sparkplug: a device is unique within its edge node).
    """
    known = machine_for_device(conn, site, edge, device)
    return known if known is not None else _new_machine_id(conn, site, edge, device)


def _new_machine_id(conn: Any, site: str, edge: str, device: str) -> str:
    row = conn.execute(
        "SELECT last_birth FROM machines WHERE site_id = %s AND machine_id = %s", [site, device]
    ).fetchone()
    return device if row is None or row[0] is None else qualified_machine_id(device, edge)


def register_device_birth(
    conn: Conn, site: str, edge: str, device: str, line_id: str, birth_ms: int, metrics: list[MetricDef]
) -> tuple[str, dict[str, int]]:
    """Record a DBIRTH: the machine online under this edge node; its tags upserted.

    Returns the device's machine id (its own id unless another edge node of the site holds that; see
    `machine_id_of`) and name -> tag id."""
    when = ts(birth_ms)
    with conn.transaction():
        # Workers sharing the stream may register the same device at once: one at a time per device id, so the
        # second sees the first's row (two inserts would collide on the unique index `machines_device`).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"zhizao.machine:{site}/{device}"])
        machine = machine_for_device(conn, site, edge, device)
        if machine is None:
            machine = _new_machine_id(conn, site, edge, device)
            if machine == device:
                # A seeded machine of that id with no birth yet becomes this edge node's device.
                conn.execute("UPDATE machines SET edge_node_id = %s WHERE site_id = %s AND machine_id = %s"
                             " AND edge_node_id <> %s AND last_birth IS NULL", [edge, site, device, edge])  # fmt: skip
            else:
                log.warning("%s/%s/%s: machine id %r is another edge node's device; this one is stored as %r",
                            site, edge, device, device, machine)  # fmt: skip
        conn.execute(
            "INSERT INTO machines (site_id, machine_id, device_id, edge_node_id, line_id, online, last_birth)"
            " VALUES (%s, %s, %s, %s, %s, true, %s) ON CONFLICT (site_id, machine_id) DO UPDATE"
            " SET device_id = excluded.device_id, line_id = excluded.line_id, online = true,"
            " last_birth = excluded.last_birth",
            [site, machine, device, edge, line_id, when],
        )
        return machine, _upsert_tags(conn, site, edge, machine, metrics, when)


def mark_node_dead(conn: Conn, site: str, edge: str, death_ms: int) -> None:
    """NDEATH of the current session: the edge node and all its machines go offline."""
    when = ts(death_ms)
    with conn.transaction():
        conn.execute(
            "UPDATE edge_nodes SET online = false, last_death = %s WHERE site_id = %s AND edge_node_id = %s",
            [when, site, edge],
        )
        conn.execute(
            "UPDATE machines SET online = false, last_death = %s"
            " WHERE site_id = %s AND edge_node_id = %s AND online",
            [when, site, edge],
        )


def mark_device_dead(conn: Conn, site: str, edge: str, device: str, death_ms: int) -> None:
    """DDEATH: one machine goes offline (at the payload timestamp)."""
    with conn.transaction():
        conn.execute(
            "UPDATE machines SET online = false, last_death = %s"
            " WHERE site_id = %s AND coalesce(device_id, machine_id) = %s AND edge_node_id = %s",
            [ts(death_ms), site, device, edge],
        )
