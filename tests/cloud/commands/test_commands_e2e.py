"""Remote commands end to end against the real OPC UA simulator: API -> signed DCMD -> edge agent -> OPC UA
write or method call -> read-back -> status, with every refusal in the audit log or the edge's counters."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY

from tests.cloud.commands.conftest import RATE
from tests.support.spnode import subscribe, wait_for
from zhizao.bench.command import CommandStack
from zhizao.broker.commands import encode_command, load_or_create_key
from zhizao.broker.mqtt import parse_mqtt_url
from zhizao.broker.sparkplug.codec import BirthMetric, encode_metrics
from zhizao.broker.sparkplug.datatypes import DataType


class Tap:
    """A plain MQTT client on the stack's broker: captures DCMDs, publishes what an intruder would."""

    def __init__(self, stack: CommandStack) -> None:
        ep = parse_mqtt_url(stack.mqtt_url)
        self.got: list[tuple[str, bytes]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload))
        self.c.connect(ep.host, ep.port)
        self.c.loop_start()
        subscribe(self.c, [f"spBv1.0/{stack.site}/DCMD/#"])

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def post(stack: CommandStack, role: str, machine: str, **body: Any) -> tuple[int, Any]:
    return stack.api("POST", f"/api/v1/machines/{machine}/commands", role, {"reason": "test", **body})


def audit(stack: CommandStack, action: str) -> list[tuple[str, str | None, Any]]:
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("SELECT actor, target, detail FROM audit_log WHERE action = %s ORDER BY id",
                            [action]).fetchall()  # fmt: skip
    return [(str(r[0]), r[1], r[2]) for r in rows]


def edge_counter(stack: CommandStack, result: str) -> float:
    value = REGISTRY.get_sample_value("zhizao_edge_commands_total",
                                      {"site": stack.site, "edge_node": stack.edge, "result": result})  # fmt: skip
    return value or 0.0


def setpoint(stack: CommandStack, machine: int = 0) -> float:
    return float(stack.sim.model.setpoint[machine])


def test_setpoint_change_is_confirmed_by_read_back(stack: CommandStack) -> None:
    m = stack.machines[0]
    status, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=42.5)
    assert status == 201 and doc["status"] == "queued", doc
    done = stack.wait_status(doc["command_id"], {"confirmed", "failed", "refused", "timed_out"})
    assert done["status"] == "confirmed", done
    assert done["readback"] == 42.5 and setpoint(stack) == 42.5
    assert [h["status"] for h in done["history"]] == ["queued", "sent", "delivered", "confirmed"]
    assert any(t == f"{m}:{doc['command_id']}" for _, t, _ in audit(stack, "command.create"))
    confirmed = [a for a in audit(stack, "command.confirmed") if a[1] == f"{m}:{doc['command_id']}"]
    assert confirmed and confirmed[0][0] == f"edge:{stack.site}/{stack.edge}"
    status, listed = stack.api("GET", f"/api/v1/machines/{m}/commands", "viewer")
    assert status == 200 and listed[0]["command_id"] == doc["command_id"]


def test_stop_and_start_are_confirmed_by_the_machine_state(stack: CommandStack) -> None:
    m = stack.machines[0]
    status, doc = post(stack, "operator", m, method="Stop")
    assert status == 201, doc
    done = stack.wait_status(doc["command_id"], {"confirmed", "failed", "refused", "timed_out"})
    assert done["status"] == "confirmed" and done["readback"] in (2, 4), done  # PackML Stopped / Idle
    assert not stack.sim.model.run_cmd[0]
    status, doc = post(stack, "operator", m, method="Start")
    done = stack.wait_status(doc["command_id"], {"confirmed", "failed", "refused", "timed_out"})
    assert done["status"] == "confirmed" and done["readback"] == 6, done  # Execute


def test_api_refuses_out_of_limit_wrong_role_and_unknown_targets_and_audits_them(stack: CommandStack) -> None:
    m = stack.machines[0]
    before = len(audit(stack, "command.refused"))
    status, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=1000)
    assert status == 400 and "max=90" in doc["error"]["message"], doc  # 1.5 x the ideal rate of 60/min
    status, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=42.55)
    assert status == 400 and "step=0.1" in doc["error"]["message"], doc
    status, doc = post(stack, "viewer", m, method="Stop")
    assert status == 403 and "'viewer'" in doc["error"]["message"], doc
    status, doc = post(stack, "operator", m, metric="Rate/Setpoint", value=40)
    assert status == 403 and "needs 'engineer'" in doc["error"]["message"], doc
    status, doc = post(stack, "admin", m, metric="Temperature/Spindle", value=1)
    assert status == 409 and "not a command target" in doc["error"]["message"], doc
    status, doc = post(stack, "admin", "no-such-machine", method="Stop")
    assert status == 404
    refused = audit(stack, "command.refused")[before:]
    assert [r[2]["status"] for r in refused] == [400, 400, 403, 403, 409]
    assert setpoint(stack) != 1000


def test_unsigned_tampered_and_replayed_dcmds_are_refused_and_counted(stack: CommandStack) -> None:
    m = stack.machines[0]
    topic = f"spBv1.0/{stack.site}/DCMD/{stack.edge}/{m}"
    tap = Tap(stack)
    try:
        _, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=30)
        assert stack.wait_status(doc["command_id"], {"confirmed"})["readback"] == 30
        wait_for(lambda: any(t == topic for t, _ in tap.got), what="the signed DCMD on the broker")
        signed = next(p for t, p in tap.got if t == topic)
        _, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=40)
        assert stack.wait_status(doc["command_id"], {"confirmed"})["readback"] == 40
        counts = {r: edge_counter(stack, r) for r in ("refused_unsigned", "refused_replayed", "refused_bad_signature")}
        # A plain Sparkplug DCMD, as any client the broker lets publish could send it.
        tap.publish(topic, encode_metrics(1, [BirthMetric("Rate/Setpoint", DataType.Double, 77.0)]))
        tap.publish(topic, signed)  # the captured command again
        tap.publish(topic, signed.replace(b"Rate/Setpoint", b"Rate/Setpoinx"))  # tampered: signature breaks
        for reason, n in counts.items():
            wait_for(lambda r=reason, n=n: edge_counter(stack, r) == n + 1, what=f"edge counter {reason}")
    finally:
        tap.close()
    assert setpoint(stack) == 40  # nothing of it reached the machine
    reasons = [d["reason"] for _, _, d in audit(stack, "command.refused") if d and d.get("reason")]
    assert {"unsigned", "replayed", "bad-signature"} <= set(reasons)


def test_the_edge_enforces_limits_even_for_signed_commands(stack: CommandStack, tmp_path: Path) -> None:
    """A command signed by the cloud's key but beyond the agent's own limit (a cloud that skipped its check)."""
    m = stack.machines[0]
    key = load_or_create_key(Path(stack.service.settings.command_key_path()))
    tap = Tap(stack)
    before = edge_counter(stack, "refused_limit")
    expired_before = edge_counter(stack, "refused_expired")
    now = int(time.time() * 1000)
    try:
        payload = encode_command(key, stack.site, stack.edge, m, str(uuid.uuid4()), now + 60_000,
                                 [BirthMetric("Rate/Setpoint", DataType.Double, 500.0)], 1)  # fmt: skip
        tap.publish(f"spBv1.0/{stack.site}/DCMD/{stack.edge}/{m}", payload)
        wait_for(lambda: edge_counter(stack, "refused_limit") == before + 1, what="the edge's limit refusal")
        # Signed, within the limits, but its expiry lies beyond the tolerated clock skew (30 s) in the past.
        payload = encode_command(key, stack.site, stack.edge, m, str(uuid.uuid4()), now - 60_000,
                                 [BirthMetric("Rate/Setpoint", DataType.Double, 50.0)], 1)  # fmt: skip
        tap.publish(f"spBv1.0/{stack.site}/DCMD/{stack.edge}/{m}", payload)
        wait_for(lambda: edge_counter(stack, "refused_expired") == expired_before + 1, what="the expiry refusal")
    finally:
        tap.close()
    assert setpoint(stack) not in (500, 50)


def test_idempotency_key_second_person_approval_and_cancel(stack: CommandStack) -> None:
    m = stack.machines[1]
    s1, first = post(stack, "engineer", m, metric="Rate/Setpoint", value=33.3, idempotency_key="k-1")
    s2, again = post(stack, "engineer", m, metric="Rate/Setpoint", value=33.3, idempotency_key="k-1")
    assert (s1, s2) == (201, 200) and again["command_id"] == first["command_id"]
    assert stack.wait_status(first["command_id"], {"confirmed"})["readback"] == 33.3
    status, doc = post(stack, "engineer", m, method="Reset")  # critical in the agent's targets
    assert status == 201 and doc["status"] == "awaiting_approval", doc
    status, err = stack.api("POST", f"/api/v1/commands/{doc['command_id']}/approve", "engineer")
    assert status == 403 and "cannot approve their own" in err["error"]["message"]
    status, ok = stack.api("POST", f"/api/v1/commands/{doc['command_id']}/approve", "engineer2")
    assert status == 200 and ok["approved_by"] == "engineer-second", ok
    assert stack.wait_status(doc["command_id"], {"confirmed", "failed"})["status"] == "confirmed"
    status, doc = post(stack, "engineer", m, method="Reset")
    status, cancelled = stack.api("POST", f"/api/v1/commands/{doc['command_id']}/cancel", "operator")
    assert status == 200 and cancelled["status"] == "cancelled"
    assert [h["status"] for h in cancelled["history"]] == ["awaiting_approval", "cancelled"]
    assert audit(stack, "command.approve") and audit(stack, "command.cancel")


def test_rate_limit_per_machine(stack: CommandStack) -> None:
    m = stack.machines[1]
    with psycopg.connect(stack.database_url) as conn:
        (recent,) = conn.execute("SELECT count(*) FROM commands WHERE machine_id = %s"
                                 " AND created_at > now() - interval '1 minute'", [m]).fetchone()  # type: ignore[misc]
    for i in range(RATE - int(recent)):
        status, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=20 + i * 0.1)
        assert status == 201, doc
    status, doc = post(stack, "engineer", m, metric="Rate/Setpoint", value=50)
    assert status == 429 and f"{RATE} commands in the last minute" in doc["error"]["message"], doc
    assert audit(stack, "command.refused")[-1][2]["status"] == 429


def test_offline_edge_gets_its_command_after_reconnect_or_it_expires(stack: CommandStack) -> None:
    m = stack.machines[0]
    stack.stop_agent()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        wait_for(lambda: not conn.execute("SELECT online FROM edge_nodes WHERE site_id = %s",
                                          [stack.site]).fetchone()[0], what="the edge offline")  # type: ignore[index]
    (row,) = stack.api("GET", f"/api/v1/fleet?site={stack.site}", "viewer")[1]
    assert row["status"] == "offline" and row["samples_per_s"] == 0.0  # not the last rate it had
    _, late = post(stack, "engineer", m, metric="Rate/Setpoint", value=44.4, ttl_s=60)
    _, short = post(stack, "engineer", m, metric="Rate/Setpoint", value=55.5, ttl_s=1)
    expired = stack.wait_status(short["command_id"], {"expired", "confirmed"}, timeout=10)
    assert expired["status"] == "expired"
    assert stack.wait_status(late["command_id"], {"queued"})["status"] == "queued"  # still waiting
    assert any(t == f"{m}:{short['command_id']}" for _, t, _ in audit(stack, "command.expired"))
    stack.start_agent()
    done = stack.wait_status(late["command_id"], {"confirmed", "failed"}, timeout=30)
    assert done["status"] == "confirmed" and setpoint(stack) == 44.4
    assert not stack.errors


def test_key_file_is_private(stack: CommandStack) -> None:
    path = Path(stack.service.settings.command_key_path())
    assert path.stat().st_mode & 0o077 == 0  # the signing key: readable by the service's user only


def test_fleet_console_shows_the_agent_and_its_devices(stack: CommandStack) -> None:
    def node() -> Any:
        status, rows = stack.api("GET", f"/api/v1/fleet?site={stack.site}", "viewer")
        assert status == 200 and len(rows) == 1, rows
        return rows[0]

    wait_for(lambda: node()["status"] == "online" and node()["samples_per_s"] > 0, what="the node online with data")
    row = node()
    assert row["agent_version"] and len(row["config_version"]) == 12
    assert abs(row["clock_skew_ms"]) < 5000 and row["outbox_depth"] is not None
    assert row["outbox_oldest_age_s"] is not None and row["outbox_oldest_age_s"] >= 0
    assert [d["machine_id"] for d in row["devices"]] == stack.machines and all(d["online"] for d in row["devices"])
    assert row["commands"]["enabled"] is True
    # The info is republished every health interval; the command after the reconnect shows in a later one.
    wait_for(lambda: node()["commands"]["counters"].get("confirmed", 0) >= 1, what="the edge's command counters")
    status, one = stack.api("GET", f"/api/v1/fleet/{stack.site}/{stack.edge}", "viewer")
    assert status == 200 and one["edge_node_id"] == stack.edge
    assert stack.api("GET", f"/api/v1/fleet/{stack.site}/nope", "viewer")[0] == 404
