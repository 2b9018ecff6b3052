"""The command dispatcher: signs queued commands, sends them as DCMDs to online edges, follows their outcome.

One MQTT connection (the cloud's broker identity, the only one the shipped ACL lets publish NCMD/DCMD) and one
worker thread that owns a database connection; MQTT callbacks only enqueue. The worker
- sends every `queued` command whose edge node is online (NBIRTH seen, or `edge_nodes.online` at start), signed
  with the cloud's Ed25519 key (broker/commands.py), and marks it `sent` once the broker took it;
- applies the edge's results (`delivered`, then `confirmed` / `failed` / `refused`), each one a
  `command_events` row, final outcomes in the audit log;
- marks `expired` what is still waiting at its TTL, `timed_out` what was sent but has no outcome after
  `result_timeout_s`, and puts `sent` commands of an edge that died back to `queued` (the edge never saw them;
  if it did, it refuses the resend as a replay);
- stores each agent's info (fleet console) and its command targets (limits the API checks before queueing).
Several cloud processes may run it at once: a command is claimed by one conditional UPDATE.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zhizao.broker.commands import (
    CONFIG_DOCUMENT,
    CONFIG_ROLLBACK_S,
    CONFIG_VERSION,
    INFO_PREFIX,
    INFO_TOPIC_FILTER,
    RESULT_PREFIX,
    RESULT_TOPIC_FILTER,
    CommandError,
    decode_result,
    encode_command,
    parse_topic,
)
from zhizao.broker.mqtt import MqttClient, MqttError, MqttOptions, Protocol
from zhizao.broker.sparkplug.codec import BirthMetric
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import NAMESPACE, MessageType, Topic, TopicError, device_topic, node_topic
from zhizao.cloud.auth import audit_params
from zhizao.cloud.ingest.registry import machine_id_of

log = logging.getLogger(__name__)

__all__ = ["CommandService"]

FINAL = ("confirmed", "failed", "refused", "timed_out", "expired", "cancelled")
_EVENT_SQL = "INSERT INTO command_events (command_id, status, detail) VALUES (%s, %s, %s)"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandService:
    """Dispatches commands and follows their outcomes (see the module docstring); `start()`, `kick()`, `stop()`."""

    def __init__(self, conninfo: str, mqtt_url: str, key: Ed25519PrivateKey, *, host_id: str = "zhizao-cloud",
                 protocol: Protocol = "auto", result_timeout_s: float = 15.0, tick_s: float = 0.5) -> None:  # fmt: skip
        self.conninfo = conninfo
        self.key = key
        self.result_timeout_s = result_timeout_s
        self.tick_s = tick_s
        self._events: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._online: dict[tuple[str, str], bool] = {}
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self.stats = {"sent": 0, "results": 0, "bad_results": 0, "infos": 0}
        options = MqttOptions(url=mqtt_url, client_id=f"{host_id}-cmd-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                              protocol=protocol, reconnect_min_s=0.5, reconnect_max_s=10.0)  # fmt: skip
        self._subs = [
            (f"{NAMESPACE}/+/{MessageType.NBIRTH}/+", 1), (f"{NAMESPACE}/+/{MessageType.NDEATH}/+", 1),
            (RESULT_TOPIC_FILTER, 1), (INFO_TOPIC_FILTER, 1),
        ]  # fmt: skip
        self._client = MqttClient(options, on_connected=self._on_connected, on_message=self._on_message,
                                  on_subscribed=lambda mid, refused: self._connected.set())  # fmt: skip

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, wait_s: float = 10.0) -> None:
        """Load which edges are online, connect, start the worker."""
        with psycopg.connect(self.conninfo) as conn:
            for site, edge, online in conn.execute("SELECT site_id, edge_node_id, online FROM edge_nodes"):
                self._online[(site, edge)] = bool(online)
        self._thread = threading.Thread(target=self._work, name="zhizao-commands", daemon=True)
        self._thread.start()
        try:
            self._client.start()
        except MqttError as exc:
            log.error("commands: MQTT %s", exc)
        if not self._connected.wait(wait_s):
            log.warning("commands: no MQTT session within %.0f s; commands stay queued until there is one", wait_s)

    def stop(self) -> None:
        """Stop the worker and disconnect."""
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(10)
        self._client.stop()

    def kick(self) -> None:
        """A command was queued (or approved): dispatch now rather than at the next tick."""
        self._events.put(("dispatch", None))

    # ---- MQTT callbacks (network thread: enqueue only) -------------------------------------------------------
    def _on_connected(self) -> None:
        self._client.subscribe(self._subs)

    def _on_message(self, topic: str, payload: bytes) -> None:
        received = _now_ms()
        if topic.startswith(RESULT_PREFIX + "/"):
            self._events.put(("result", (topic, payload, received)))
        elif topic.startswith(INFO_PREFIX + "/"):
            self._events.put(("info", (topic, payload, received)))
        else:
            try:
                t = Topic.parse(topic)
            except TopicError:
                return
            self._events.put(("birth" if t.type is MessageType.NBIRTH else "death", (t.group, t.edge)))

    # ---- worker -------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        next_sweep = 0.0
        while True:
            try:
                event = self._events.get(timeout=self.tick_s)
            except queue.Empty:
                event = ("tick", None)
            if event is None:
                break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                self._handle(conn, event)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.tick_s
                    self._sweep(conn)
            except psycopg.Error as exc:
                log.warning("commands: database error (%s); retrying", exc)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(min(self.tick_s, 1.0))
            except Exception:
                log.exception("commands: event %s failed", event[0])
        if conn is not None:
            conn.close()

    def _handle(self, conn: psycopg.Connection[Any], event: tuple[str, Any]) -> None:
        kind, data = event
        if kind == "dispatch":
            self._dispatch(conn)
        elif kind == "birth":
            self._online[data] = True
            self._dispatch(conn, data)
        elif kind == "death":
            self._online[data] = False
            # Sent but not delivered: that DCMD died with the session (clean start); send it again on rebirth.
            rows = conn.execute(
                "UPDATE commands SET status = 'queued', sent_at = NULL WHERE site_id = %s AND edge_node_id = %s"
                " AND status = 'sent' RETURNING command_id", list(data)).fetchall()  # fmt: skip
            for (cid,) in rows:
                conn.execute(_EVENT_SQL, [cid, "queued", json.dumps({"why": "edge offline before delivery"})])
            conn.execute("UPDATE config_pushes SET status = 'queued', sent_at = NULL WHERE site_id = %s"
                         " AND edge_node_id = %s AND status = 'sent'", list(data))  # fmt: skip
        elif kind == "result":
            self._result(conn, *data)
        elif kind == "info":
            self._info(conn, *data)

    def _dispatch(self, conn: psycopg.Connection[Any], only: tuple[str, str] | None = None) -> None:
        if not self._connected.is_set():
            return
        online = [k for k, v in self._online.items() if v and (only is None or k == only)]
        if not online:
            return
        with conn.transaction():
            rows = conn.execute(
                # The DCMD names the Sparkplug device of its edge node, which is not always the machine id
                # (migration 0014: a device id another edge node of the site holds is stored as `{device}--{edge}`).
                "SELECT c.command_id, c.site_id, c.edge_node_id,"
                " coalesce((SELECT coalesce(m.device_id, m.machine_id) FROM machines m WHERE m.site_id = c.site_id"
                "           AND m.machine_id = c.machine_id AND m.edge_node_id = c.edge_node_id), c.machine_id),"
                " c.name, c.datatype, c.value, c.expires_at"
                " FROM commands c WHERE c.status = 'queued' AND c.expires_at > now()"
                " AND (c.site_id, c.edge_node_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                " ORDER BY c.created_at FOR UPDATE OF c SKIP LOCKED",
                [[k[0] for k in online], [k[1] for k in online]],
            ).fetchall()
            for cid, site, edge, machine, name, datatype, value, expires in rows:
                metric = BirthMetric(name, DataType(datatype), value)
                payload = encode_command(self.key, site, edge, machine, str(cid),
                                         int(expires.timestamp() * 1000), [metric], _now_ms())  # fmt: skip
                delivery = self._client.publish(device_topic(site, MessageType.DCMD, edge, machine), payload, 1)
                if not delivery.accepted:
                    continue  # stays queued; the next tick tries again
                conn.execute("UPDATE commands SET status = 'sent', sent_at = now() WHERE command_id = %s", [cid])
                conn.execute(_EVENT_SQL, [cid, "sent", None])
                self.stats["sent"] += 1
        self._dispatch_configs(conn, online)

    def _dispatch_configs(self, conn: psycopg.Connection[Any], online: list[tuple[str, str]]) -> None:
        """Queued config pushes to online agents; a rollout's stage waits until the one before it applied."""
        with conn.transaction():
            # An earlier stage that did not apply stops the rest of its rollout.
            conn.execute(
                "UPDATE config_pushes p SET status = 'cancelled', finished_at = now(),"
                " message = format('stage %s of the rollout ended %s', q.stage, q.status)"
                " FROM config_pushes q WHERE p.status = 'queued' AND p.rollout_id = q.rollout_id"
                " AND q.stage < p.stage AND q.status IN ('refused', 'rolled_back', 'timed_out', 'expired', 'cancelled')"
            )  # fmt: skip
            rows = conn.execute(
                "SELECT p.push_id, p.site_id, p.edge_node_id, p.version, p.rollback_after_s, p.expires_at, c.document"
                " FROM config_pushes p JOIN agent_configs c USING (site_id, edge_node_id, version)"
                " WHERE p.status = 'queued' AND p.expires_at > now()"
                " AND (p.site_id, p.edge_node_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                " AND NOT EXISTS (SELECT 1 FROM config_pushes q WHERE q.rollout_id = p.rollout_id"
                "   AND q.stage < p.stage AND q.status <> 'applied')"
                " ORDER BY p.created_at FOR UPDATE OF p SKIP LOCKED",
                [[k[0] for k in online], [k[1] for k in online]],
            ).fetchall()  # fmt: skip
            for pid, site, edge, version, rollback_s, expires, document in rows:
                metrics = [BirthMetric(CONFIG_DOCUMENT, DataType.String, document),
                           BirthMetric(CONFIG_VERSION, DataType.Int64, int(version)),
                           BirthMetric(CONFIG_ROLLBACK_S, DataType.Double, float(rollback_s))]  # fmt: skip
                payload = encode_command(self.key, site, edge, "", str(pid), int(expires.timestamp() * 1000),
                                         metrics, _now_ms())  # fmt: skip
                if not self._client.publish(node_topic(site, MessageType.NCMD, edge), payload, 1).accepted:
                    continue
                conn.execute("UPDATE config_pushes SET status = 'sent', sent_at = now() WHERE push_id = %s", [pid])
                self.stats["sent"] += 1

    def _sweep(self, conn: psycopg.Connection[Any]) -> None:
        self._dispatch(conn)
        expired = conn.execute(
            "UPDATE commands SET status = 'expired', finished_at = now(),"
            " message = 'TTL passed before the edge could take it'"
            " WHERE status IN ('queued', 'awaiting_approval') AND expires_at <= now()"
            " RETURNING command_id, site_id, machine_id"
        ).fetchall()
        timed_out = conn.execute(
            "UPDATE commands SET status = 'timed_out', finished_at = now(),"
            " message = format('no outcome from the edge within %%s s', %s::text)"
            " WHERE status IN ('sent', 'delivered') AND sent_at < now() - make_interval(secs => %s)"
            " RETURNING command_id, site_id, machine_id",
            [f"{self.result_timeout_s:g}", self.result_timeout_s],
        ).fetchall()
        for status, rows in (("expired", expired), ("timed_out", timed_out)):
            for cid, site, machine in rows:
                conn.execute(_EVENT_SQL, [cid, status, None])
                sql, params = audit_params(None, "cloud", f"command.{status}", site, f"{machine}:{cid}", None)
                conn.execute(sql, params)
        pushes = conn.execute(
            "UPDATE config_pushes SET status = 'expired', finished_at = now(), message = 'TTL passed before the"
            " agent could take it' WHERE status = 'queued' AND expires_at <= now()"
            " RETURNING push_id, site_id, edge_node_id, status").fetchall()  # fmt: skip
        # A push restarts the agent: it may take the rollback time plus a reconnect before the outcome arrives.
        pushes += conn.execute(
            "UPDATE config_pushes SET status = 'timed_out', finished_at = now(), message = 'no outcome from the agent'"
            " WHERE status IN ('sent', 'delivered')"
            " AND sent_at < now() - make_interval(secs => rollback_after_s + %s + 30)"
            " RETURNING push_id, site_id, edge_node_id, status", [self.result_timeout_s]).fetchall()  # fmt: skip
        for pid, site, edge, status in pushes:
            sql, params = audit_params(None, "cloud", f"config.{status}", site, f"{edge}:{pid}", None)
            conn.execute(sql, params)

    def _result(self, conn: psycopg.Connection[Any], topic: str, payload: bytes, received: int) -> None:
        try:
            site, edge = parse_topic(topic, RESULT_PREFIX)
            r = decode_result(payload)
        except CommandError as exc:
            self.stats["bad_results"] += 1
            log.warning("commands: ignored result on %s: %s", topic, exc)
            return
        self.stats["results"] += 1
        actor = f"edge:{site}/{edge}"
        if r.command_id is None:
            # A refusal of a DCMD the edge could not trust (unsigned, replayed, bad signature): audit it.
            sql, params = audit_params(None, actor, "command.refused", site, r.machine,
                                       {"reason": r.reason, "message": r.message})  # fmt: skip
            conn.execute(sql, params)
            return
        try:
            cid = uuid.UUID(r.command_id)
        except ValueError:
            self.stats["bad_results"] += 1
            return
        if conn.execute("SELECT 1 FROM config_pushes WHERE push_id = %s", [cid]).fetchone() is not None:
            self._push_result(conn, cid, site, edge, r.status, r.message, actor)
            return
        detail = {k: v for k, v in {"message": r.message, "value": r.value, "code": r.code,
                                    "code_name": r.code_name, "reason": r.reason,
                                    "edge_ms": r.timestamp_ms}.items() if v not in (None, "")}  # fmt: skip
        with conn.transaction():
            if r.status == "delivered":
                row = conn.execute(
                    "UPDATE commands SET status = 'delivered', delivered_at = now() WHERE command_id = %s"
                    " AND site_id = %s AND edge_node_id = %s AND status IN ('queued', 'sent') RETURNING machine_id",
                    [cid, site, edge]).fetchone()  # fmt: skip
            else:
                row = conn.execute(
                    "UPDATE commands SET status = %s, finished_at = now(), readback = %s, status_code = %s,"
                    " status_name = %s, message = %s, delivered_at = coalesce(delivered_at, now())"
                    " WHERE command_id = %s AND site_id = %s AND edge_node_id = %s"
                    " AND status IN ('queued', 'sent', 'delivered', 'timed_out') RETURNING machine_id",
                    [r.status, json.dumps(r.value) if r.value is not None else None, r.code, r.code_name,
                     r.message or None, cid, site, edge]).fetchone()  # fmt: skip
            if row is None:
                return  # unknown, another site's, or already final
            conn.execute(_EVENT_SQL, [cid, r.status, json.dumps(detail) if detail else None])
            if r.status != "delivered":
                sql, params = audit_params(None, actor, f"command.{r.status}", site, f"{row[0]}:{cid}", detail)
                conn.execute(sql, params)

    def _push_result(self, conn: psycopg.Connection[Any], pid: uuid.UUID, site: str, edge: str, status: str,
                     message: str, actor: str) -> None:  # fmt: skip
        if status not in ("delivered", "applied", "refused", "rolled_back"):
            status, message = "refused", f"{status}: {message}"
        final = status != "delivered"
        row = conn.execute(
            "UPDATE config_pushes SET status = %s, message = coalesce(%s, message),"
            " finished_at = CASE WHEN %s THEN now() END WHERE push_id = %s AND site_id = %s AND edge_node_id = %s"
            " AND status IN ('queued', 'sent', 'delivered', 'timed_out') RETURNING version",
            [status, message or None, final, pid, site, edge]).fetchone()  # fmt: skip
        if row is not None and final:
            sql, params = audit_params(None, actor, f"config.{status}", site, f"{edge}:{pid}",
                                       {"version": row[0], "message": message})  # fmt: skip
            conn.execute(sql, params)

    def _info(self, conn: psycopg.Connection[Any], topic: str, payload: bytes, received: int) -> None:
        if not payload:
            return  # an agent that stopped cleared its retained info; its last copy stays in the database
        try:
            site, edge = parse_topic(topic, INFO_PREFIX)
            doc = json.loads(payload)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except (CommandError, ValueError) as exc:
            log.warning("commands: ignored agent info on %s: %s", topic, exc)
            return
        self.stats["infos"] += 1
        ts = doc.get("timestamp")
        skew = int(ts) - received if isinstance(ts, int) else None
        targets = (doc.get("commands") or {}).get("targets") or []
        with conn.transaction():
            conn.execute(
                "INSERT INTO edge_agents (site_id, edge_node_id, agent_version, config_version, info, received_at,"
                " clock_skew_ms) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (site_id, edge_node_id) DO UPDATE"
                " SET agent_version = excluded.agent_version, config_version = excluded.config_version,"
                " info = excluded.info, received_at = excluded.received_at, clock_skew_ms = excluded.clock_skew_ms",
                [site, edge, _s(doc.get("agent_version")), _s(doc.get("config_version")), json.dumps(doc),
                 datetime.fromtimestamp(received / 1000, UTC), skew],
            )  # fmt: skip
            conn.execute("DELETE FROM command_targets WHERE site_id = %s AND edge_node_id = %s", [site, edge])
            for t in targets if isinstance(targets, list) else []:
                if not isinstance(t, dict) or not isinstance(t.get("machine"), str) or not isinstance(t.get("name"), str):
                    continue
                # The agent names its devices; the cloud's machine id of a device can differ (migration 0014).
                t = {**t, "machine": machine_id_of(conn, site, edge, t["machine"])}
                conn.execute(
                    "INSERT INTO command_targets (site_id, edge_node_id, machine_id, name, kind, datatype, min_value,"
                    " max_value, step, allowed_states, role, critical) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s, %s) ON CONFLICT (site_id, machine_id, name) DO NOTHING",
                    [site, edge, t["machine"], t["name"], _s(t.get("kind")) or "write", t.get("datatype"),
                     t.get("min"), t.get("max"), t.get("step"), t.get("allowed_states"),
                     _s(t.get("role")) or "engineer", bool(t.get("critical"))],
                )  # fmt: skip


def _s(v: Any) -> str | None:
    return None if v is None else str(v)[:200]
