"""Assets from Sparkplug births and deaths: sites, edge nodes, machines, tags (small, transactional)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

Conn = psycopg.Connection[tuple[object, ...]]


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


def register_device_birth(
    conn: Conn, site: str, edge: str, device: str, line_id: str, birth_ms: int, metrics: list[MetricDef]
) -> dict[str, int]:
    """Record a DBIRTH: the machine online under this edge node; its tags upserted. Returns name -> tag id."""
    when = ts(birth_ms)
    with conn.transaction():
        conn.execute(
            "INSERT INTO machines (site_id, machine_id, edge_node_id, line_id, online, last_birth)"
            " VALUES (%s, %s, %s, %s, true, %s) ON CONFLICT (site_id, machine_id) DO UPDATE"
            " SET edge_node_id = excluded.edge_node_id, line_id = excluded.line_id, online = true,"
            " last_birth = excluded.last_birth",
            [site, device, edge, line_id, when],
        )
        return _upsert_tags(conn, site, edge, device, metrics, when)


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
            " WHERE site_id = %s AND machine_id = %s AND edge_node_id = %s",
            [ts(death_ms), site, device, edge],
        )
