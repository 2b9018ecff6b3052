"""The production Mosquitto configs parse, and a real mosquitto enforces the ACL: a site's edge node publishes
only its own Sparkplug topics (MQTT 5 PUBACK 0x87 otherwise), reads its own commands; the cloud reads all."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.spnode import subscribe, wait_for
from zhizao.broker.acl import acl_text
from zhizao.broker.embedded import free_port

CONF_DIR = Path(__file__).resolve().parents[2] / "broker" / "mosquitto"
EDGE = "sh-lingang.cnc-1"  # the identity of edge node cnc-1 of site sh-lingang (its block is in the shipped ACL)
# Options of mosquitto.conf(5) these files may use: a typo fails here rather than at a site at night.
KNOWN = {
    "per_listener_settings", "listener", "protocol", "allow_anonymous", "password_file", "acl_file", "persistence",
    "persistence_location", "autosave_interval", "max_queued_messages", "max_queued_bytes", "max_inflight_messages",
    "max_packet_size", "persistent_client_expiration", "log_dest", "log_type", "connection_messages", "include_dir",
    "cafile", "certfile", "keyfile", "crlfile", "tls_version", "require_certificate", "use_identity_as_username",
    "use_username_as_clientid",
    "connection", "address", "bridge_protocol_version", "remote_clientid", "cleansession", "local_cleansession",
    "restart_timeout", "notifications", "try_private", "bridge_cafile", "bridge_certfile", "bridge_keyfile",
    "bridge_insecure", "topic",
}


def _directives(path: Path) -> list[tuple[str, str]]:
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((key, value.strip()))
    return out


@pytest.mark.parametrize("name", ["mosquitto.conf", "tls-listener.conf", "bridge-site-to-cloud.conf"])
def test_config_files_use_known_options(name: str) -> None:
    directives = _directives(CONF_DIR / name)
    assert directives
    unknown = [k for k, _ in directives if k not in KNOWN]
    assert unknown == [], f"{name}: unknown options {unknown}"
    assert all(v for _, v in directives), f"{name}: an option without a value"


def test_production_settings() -> None:
    conf = dict(_directives(CONF_DIR / "mosquitto.conf"))
    assert conf["persistence"] == "true" and int(conf["autosave_interval"]) <= 60
    assert int(conf["max_queued_messages"]) >= 100_000 and conf["allow_anonymous"] == "false"
    bridge = _directives(CONF_DIR / "bridge-site-to-cloud.conf")
    assert ("bridge_protocol_version", "mqttv50") in bridge and ("cleansession", "false") in bridge
    assert ("bridge_insecure", "false") in bridge
    outs = [v for k, v in bridge if k == "topic" and " out " in v]
    assert outs and all(v.startswith(("spBv1.0/sh-lingang/", "zhizao/v1/cmd/sh-lingang/", "zhizao/v1/edge/sh-lingang/"))
                        for v in outs)
    tls = dict(_directives(CONF_DIR / "tls-listener.conf"))
    assert tls["require_certificate"] == "true" and tls["use_identity_as_username"] == "true"
    assert tls["use_username_as_clientid"] == "true"  # the CN is the client id: no takeover of another's session


def test_acl_lines_are_well_formed() -> None:
    for key, value in _directives(CONF_DIR / "acl"):
        assert key in ("topic", "pattern", "user"), key
        if key != "user":
            access, _, topic = value.partition(" ")
            assert access in ("read", "write", "readwrite", "deny") and topic, value
    # No rule trusts the client id (%c), which the client chooses.
    assert "%c" not in "".join(v for _, v in _directives(CONF_DIR / "acl"))
    # The shipped agent block is what the generator writes (the demo's broker adds one per agent).
    from zhizao.broker.acl import edge_block

    assert "\n" + edge_block("sh-lingang", "cnc-1") in (CONF_DIR / "acl").read_text()


@contextlib.contextmanager
def shipped_broker(users: tuple[str, ...], extra: tuple[str, ...] = ()) -> Iterator[int]:
    """A mosquitto running the production mosquitto.conf and acl (paths and port made local; `extra` lines
    appended, e.g. a bridge; agent identities the acl lacks get their generated block); every user's password
    is `{user}-pw`. Yields the port."""
    work = Path(tempfile.mkdtemp(prefix="zhizao-mosq-acl-"))
    work.chmod(0o755)
    port = free_port()
    passwd = work / "passwd"
    passwd.touch()
    for user in users:
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, f"{user}-pw"], check=True, capture_output=True)
    # The shipped ACL, and a block for each agent identity it does not list (as the demo's broker writes it).
    (work / "acl").write_text(acl_text(users))
    assert acl_text(()) == (CONF_DIR / "acl").read_text()
    lines = []
    for key, value in _directives(CONF_DIR / "mosquitto.conf"):
        if key == "include_dir":
            continue
        value = {"listener": f"{port} 127.0.0.1", "password_file": str(passwd), "acl_file": str(work / "acl"),
                 "persistence_location": f"{work}/", "log_dest": f"file {work}/log"}.get(key, value)
        lines.append(f"{key} {value}")
    lines.append("user root")  # the temp files belong to root; a production install runs as `mosquitto`
    (work / "mosquitto.conf").write_text("\n".join([*lines, *extra]) + "\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, (work / "log").read_text() if (work / "log").exists() else "exited"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def broker() -> Iterator[int]:
    """A mosquitto running the production mosquitto.conf and acl, with two agents of sh-lingang and the cloud."""
    with shipped_broker((EDGE, "sh-lingang.cnc-2", "zhizao-cloud")) as port:
        yield port


class _Client:
    def __init__(self, port: int, user: str | None, client_id: str) -> None:
        self.got: list[str] = []
        self.reasons: dict[int, int] = {}
        self.connect_reason: list[object] = []
        done = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, f"{user}-pw")
        self.c.on_connect = lambda c, u, f, rc, p=None: (self.connect_reason.append(rc), done.set())
        self.c.on_message = lambda c, u, m: self.got.append(m.topic)
        self.c.on_publish = lambda c, u, mid, rc, p: self.reasons.__setitem__(mid, rc.value)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert done.wait(5)

    def publish(self, topic: str) -> int:
        info = self.c.publish(topic, b"x", qos=1)
        info.wait_for_publish(5)
        for _ in range(100):
            if info.mid in self.reasons:
                break
            time.sleep(0.02)
        return self.reasons[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_acl_confines_an_edge_node_to_its_own_topics(broker: int) -> None:
    cloud = _Client(broker, "zhizao-cloud", "zhizao-cloud-1")
    subscribe(cloud.c, ["spBv1.0/#"])
    edge = _Client(broker, EDGE, "cnc-1")
    subscribe(edge.c, ["spBv1.0/sh-lingang/NCMD/cnc-1", "spBv1.0/sh-lingang/NCMD/cnc-2"])
    try:
        assert edge.publish("spBv1.0/sh-lingang/NDATA/cnc-1") == 0
        assert edge.publish("spBv1.0/sh-lingang/DDATA/cnc-1/cnc-1-m01") == 0
        assert edge.publish("spBv1.0/other-site/NDATA/cnc-1") == 0x87  # another site: not authorized
        assert edge.publish("spBv1.0/sh-lingang/NDATA/cnc-2") == 0x87  # another edge node of its own site
        assert edge.publish("spBv1.0/STATE/zhizao-cloud") == 0x87  # only the host writes STATE
        assert cloud.publish("spBv1.0/sh-lingang/NCMD/cnc-2") in (0, 0x10)
        assert cloud.publish("spBv1.0/sh-lingang/NCMD/cnc-1") in (0, 0x10)
        # cnc-1's command is the last message published: once both clients have it, everything before it
        # (cnc-2's command included) has been delivered, or was never going to be.
        wait_for(lambda: "spBv1.0/sh-lingang/NCMD/cnc-1" in edge.got and "spBv1.0/sh-lingang/NCMD/cnc-1" in cloud.got,
                 what="cnc-1's command at both clients")
        assert sorted(cloud.got) == ["spBv1.0/sh-lingang/DDATA/cnc-1/cnc-1-m01", "spBv1.0/sh-lingang/NCMD/cnc-1",
                                     "spBv1.0/sh-lingang/NCMD/cnc-2", "spBv1.0/sh-lingang/NDATA/cnc-1"]
        assert edge.got == ["spBv1.0/sh-lingang/NCMD/cnc-1"]  # cnc-2's commands are not readable by cnc-1
    finally:
        edge.close()
        cloud.close()


def test_anonymous_clients_are_refused(broker: int) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    reasons: list[object] = []
    done = threading.Event()
    c.on_connect = lambda c_, u, f, rc, p=None: (reasons.append(rc), done.set())
    c.connect("127.0.0.1", broker)
    c.loop_start()
    try:
        assert done.wait(5)
        assert getattr(reasons[0], "is_failure", False)
    finally:
        c.loop_stop()


def test_an_edge_node_with_default_settings_goes_online_under_the_shipped_acl(broker: int, tmp_path: Path) -> None:
    """Username = its identity, default client id: the node reads the host's STATE, is born, publishes, dies once."""
    import asyncio

    from tests.support.node import block, signal_table
    from zhizao.broker.extensions import encode_state
    from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig
    from zhizao.edge.node.session import EdgeNode
    from zhizao.edge.outbox import Outbox

    cloud = _Client(broker, "zhizao-cloud", "zhizao-cloud-1")
    subscribe(cloud.c, ["spBv1.0/sh-lingang/#"])
    cloud.c.publish("spBv1.0/STATE/zhizao-cloud", encode_state(True, 1), qos=1, retain=True).wait_for_publish(5)

    async def main() -> None:
        outbox = Outbox(tmp_path / "outbox", OutboxConfig(fsync_interval_s=0, acks=False))
        node = EdgeNode(
            "sh-lingang", "cnc-1", MqttConfig(url=f"mqtt://{EDGE}:{EDGE}-pw@127.0.0.1:{broker}"),
            SparkplugConfig(primary_host="zhizao-cloud", publish_interval_ms=50), outbox, signal_table(), acks=False,
        )  # fmt: skip
        try:
            await node.start()
            outbox.append(block([0, 1], [1.0, 2.0]))
            await asyncio.to_thread(wait_for, lambda: "spBv1.0/sh-lingang/DDATA/cnc-1/m1" in cloud.got, 15.0,
                                    "the node's DDATA at the cloud")  # fmt: skip
        finally:
            await node.stop()
            outbox.close()

    try:
        asyncio.run(main())
        assert cloud.got[0] == "spBv1.0/sh-lingang/NBIRTH/cnc-1", cloud.got
        cloud.publish("spBv1.0/sh-lingang/NCMD/cnc-1")  # a marker after the node is gone
        wait_for(lambda: cloud.got[-1] == "spBv1.0/sh-lingang/NCMD/cnc-1", what="the marker")
        assert cloud.got.count("spBv1.0/sh-lingang/NDEATH/cnc-1") == 1
    finally:
        cloud.c.publish("spBv1.0/STATE/zhizao-cloud", b"", qos=1, retain=True).wait_for_publish(5)
        cloud.close()
