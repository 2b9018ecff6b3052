"""Sparkplug session state in PostgreSQL, shared by every ingest worker of a shared subscription.

With `$share/...` the broker hands each DATA message of a node to one worker of the group (Mosquitto: round
robin), so no worker sees a node's whole stream. What the workers share here (migration 0012):

- **the session** (`ingest_sessions`, `ingest_session_devices`): the current NBIRTH and DBIRTHs of each node
  with the tag ids they resolved to. Every worker still receives every birth (ordinary subscriptions); a worker
  that did not (started or restarted after it) adopts the session from here, so it can resolve the aliases of
  any DATA. A new session (another bdSeq, birth timestamp or batch counter) bumps `generation`.
- **the ack ledger** (`ingest_committed_batches`): the batch id of every DATA message a worker committed whole,
  in the transaction that stored it. The session's ack watermark is the highest id B such that every id from
  the NBIRTH's batch counter + 1 up to B is in the ledger (the edge gives each DATA message the next id), so an
  ack never covers a batch that another worker received and has not committed (or never will: killed). It is
  computed under the session row's lock in the same transaction, so two workers committing side by side see
  each other's rows. A batch committed beyond a missing one starts `gap_since`; a gap older than the reorder
  timeout makes one worker (the one whose update claims it) ask the node to rebirth, after which the edge
  replays everything after the last ack in a new generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg

from zhizao.cloud.host.session import NodeKey

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class SharedBirth:
    """A node's current session as recorded in PostgreSQL."""

    generation: int
    bd_seq: int | None
    birth_batch: int | None
    nbirth: bytes
    node_tags: dict[str, int]
    devices: list[tuple[str, bytes, dict[str, int]]]  # (device, DBIRTH payload, name -> tag id)


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _bytes(value: object) -> bytes:
    assert isinstance(value, bytes | memoryview)
    return bytes(value)


def _tags(doc: object) -> dict[str, int]:
    raw = json.loads(doc) if isinstance(doc, str | bytes) else doc
    assert isinstance(raw, dict)
    return {str(k): int(v) for k, v in raw.items()}


def record_birth(
    conn: Conn,
    key: NodeKey,
    bd_seq: int | None,
    birth_ms: int,
    birth_batch: int | None,
    payload: bytes,
    tags: dict[str, int],
) -> int | None:
    """Record an NBIRTH (every worker does, the first one starts the session); returns the session's generation,
    or None when a newer session is already recorded (this worker is behind: its DATA of this one counts for
    nothing)."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO ingest_sessions AS s (site_id, edge_node_id, generation, bd_seq, birth_ms, birth_batch,"
            " born, nbirth, node_tags, acked_batch) VALUES (%s, %s, 1, %s, %s, %s, true, %s, %s, %s)"
            " ON CONFLICT (site_id, edge_node_id) DO UPDATE SET generation = s.generation + 1,"
            " bd_seq = excluded.bd_seq, birth_ms = excluded.birth_ms, birth_batch = excluded.birth_batch,"
            " born = true, nbirth = excluded.nbirth, node_tags = excluded.node_tags,"
            " acked_batch = excluded.acked_batch, gap_since = NULL, rebirth_requested_at = NULL"
            " WHERE (s.bd_seq, s.birth_ms, s.birth_batch) IS DISTINCT FROM"
            " (excluded.bd_seq, excluded.birth_ms, excluded.birth_batch) AND excluded.birth_ms >= s.birth_ms"
            " RETURNING generation",
            [key.site, key.edge, bd_seq, birth_ms, birth_batch, payload, json.dumps(tags), birth_batch],
        ).fetchone()
        if row is not None:
            generation: int = int(row[0])  # type: ignore[call-overload]
            conn.execute(
                "DELETE FROM ingest_committed_batches WHERE site_id = %s AND edge_node_id = %s AND generation < %s",
                [key.site, key.edge, generation],
            )
            conn.execute(
                "DELETE FROM ingest_session_devices WHERE site_id = %s AND edge_node_id = %s AND generation < %s",
                [key.site, key.edge, generation],
            )
            return generation
        row = conn.execute(
            "SELECT generation FROM ingest_sessions WHERE site_id = %s AND edge_node_id = %s"
            " AND bd_seq IS NOT DISTINCT FROM %s AND birth_ms = %s AND birth_batch IS NOT DISTINCT FROM %s",
            [key.site, key.edge, bd_seq, birth_ms, birth_batch],
        ).fetchone()
    return _int(row[0]) if row is not None else None


def record_device(conn: Conn, key: NodeKey, generation: int, device: str, payload: bytes, tags: dict[str, int]) -> None:
    """Record a DBIRTH of the session `generation` (ignored if the node has moved on to a later one)."""
    conn.execute(
        "INSERT INTO ingest_session_devices (site_id, edge_node_id, device_id, generation, dbirth, tags)"
        " SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM ingest_sessions"
        "  WHERE site_id = %s AND edge_node_id = %s AND generation = %s)"
        " ON CONFLICT (site_id, edge_node_id, device_id) DO UPDATE SET generation = excluded.generation,"
        " dbirth = excluded.dbirth, tags = excluded.tags",
        [key.site, key.edge, device, generation, payload, json.dumps(tags), key.site, key.edge, generation],
    )


def record_device_death(conn: Conn, key: NodeKey, generation: int, device: str) -> None:
    """A DDEATH: the device is no longer born in session `generation`."""
    conn.execute(
        "DELETE FROM ingest_session_devices WHERE site_id = %s AND edge_node_id = %s AND device_id = %s"
        " AND generation <= %s",
        [key.site, key.edge, device, generation],
    )


def record_death(conn: Conn, key: NodeKey, generation: int) -> None:
    """The NDEATH of session `generation`: no worker adopts it any more."""
    conn.execute(
        "UPDATE ingest_sessions SET born = false WHERE site_id = %s AND edge_node_id = %s AND generation = %s",
        [key.site, key.edge, generation],
    )


def load_birth(conn: Conn, key: NodeKey) -> SharedBirth | None:
    """The node's current session, if it is born (for a worker that did not see its births)."""
    row = conn.execute(
        "SELECT generation, bd_seq, birth_batch, nbirth, node_tags FROM ingest_sessions"
        " WHERE site_id = %s AND edge_node_id = %s AND born",
        [key.site, key.edge],
    ).fetchone()
    if row is None:
        return None
    generation, bd_seq, birth_batch, nbirth, node_tags = row
    devices = conn.execute(
        "SELECT device_id, dbirth, tags FROM ingest_session_devices"
        " WHERE site_id = %s AND edge_node_id = %s AND generation = %s ORDER BY device_id",
        [key.site, key.edge, generation],
    ).fetchall()
    return SharedBirth(
        int(generation), _int(bd_seq), _int(birth_batch),  # type: ignore[call-overload]
        _bytes(nbirth), _tags(node_tags), [(str(d), _bytes(p), _tags(t)) for d, p, t in devices],
    )


def commit_batches(conn: Conn, key: NodeKey, generation: int, batch_ids: list[int]) -> tuple[int, int | None] | None:
    """Inside the transaction storing the messages: add their batch ids to the ledger and advance the session's
    watermark. Returns (watermark, bdSeq) for the ack, or None when the session has moved on or has no batch
    counter (then nothing is acknowledged). Call it for a batch's nodes in sorted order (row locks)."""
    conn.execute(
        "INSERT INTO ingest_committed_batches (site_id, edge_node_id, generation, batch_id)"
        " SELECT %s, %s, %s, b FROM unnest(%s::bigint[]) AS b ON CONFLICT DO NOTHING",
        [key.site, key.edge, generation, batch_ids],
    )
    row = conn.execute(
        "SELECT acked_batch, bd_seq FROM ingest_sessions WHERE site_id = %s AND edge_node_id = %s"
        " AND generation = %s FOR UPDATE",
        [key.site, key.edge, generation],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    acked, bd_seq = int(row[0]), _int(row[1])  # type: ignore[call-overload]
    # This statement runs after the lock was granted, so it sees every row another worker committed before.
    # Ids strictly increase by one per message: the run starting at acked + 1 has batch_id - row_number = acked.
    row = conn.execute(
        "SELECT (SELECT max(batch_id) FROM (SELECT batch_id, batch_id - row_number() OVER (ORDER BY batch_id) AS g"
        "   FROM ingest_committed_batches WHERE site_id = %s AND edge_node_id = %s AND generation = %s"
        "   AND batch_id > %s) run WHERE g = %s),"
        " (SELECT max(batch_id) FROM ingest_committed_batches WHERE site_id = %s AND edge_node_id = %s"
        "   AND generation = %s)",
        [key.site, key.edge, generation, acked, acked, key.site, key.edge, generation],
    ).fetchone()
    assert row is not None
    advanced, highest = _int(row[0]), _int(row[1])
    watermark = advanced if advanced is not None else acked
    gap = highest is not None and highest > watermark
    conn.execute(
        "UPDATE ingest_sessions SET acked_batch = %s,"
        " gap_since = CASE WHEN NOT %s THEN NULL WHEN %s THEN now() ELSE coalesce(gap_since, now()) END"
        " WHERE site_id = %s AND edge_node_id = %s",
        [watermark, gap, advanced is not None, key.site, key.edge],
    )
    if advanced is not None:
        conn.execute(
            "DELETE FROM ingest_committed_batches WHERE site_id = %s AND edge_node_id = %s AND generation = %s"
            " AND batch_id <= %s",
            [key.site, key.edge, generation, watermark],
        )
    return watermark, bd_seq


def claim_stalled(conn: Conn, gap_ms: int, min_interval_ms: int, sites: tuple[str, ...]) -> list[NodeKey]:
    """Born sessions whose watermark has stood at a gap for `gap_ms`: the caller asks them to rebirth. The
    update claims each one, so of several workers only one asks, at most once per `min_interval_ms`."""
    rows = conn.execute(
        "UPDATE ingest_sessions SET rebirth_requested_at = now()"
        " WHERE born AND gap_since < now() - make_interval(secs => %s)"
        " AND (rebirth_requested_at IS NULL OR rebirth_requested_at < now() - make_interval(secs => %s))"
        " AND (cardinality(%s::text[]) = 0 OR site_id = ANY(%s::text[]))"
        " RETURNING site_id, edge_node_id",
        [gap_ms / 1000.0, min_interval_ms / 1000.0, list(sites), list(sites)],
    ).fetchall()
    return [NodeKey(str(s), str(e)) for s, e in rows]
