"""The cloud service: API + ingest in one process, started in a thread and as `zhizao cloud serve`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from zhizao.broker.embedded import free_port, start_broker
from zhizao.broker.mqtt import parse_mqtt_url
from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings


def _retained_state(mqtt_url: str, host_id: str) -> dict[str, object]:
    """The retained Sparkplug STATE message of `host_id`."""
    ep = parse_mqtt_url(mqtt_url)
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: (got.append(m.payload), done.set())
    client.connect(ep.host, ep.port)
    client.subscribe(f"spBv1.0/STATE/{host_id}", qos=1)
    client.loop_start()
    try:
        assert done.wait(5), "no retained STATE message"
    finally:
        client.loop_stop()
        client.disconnect()
    state: dict[str, object] = json.loads(got[0])
    return state


@pytest.fixture(params=["shared-mosquitto", "iotcore"])
def any_broker(request: pytest.FixtureRequest, mqtt_url: str) -> Iterator[str]:
    """The test Mosquitto, then the demo's embedded MQTT 5 broker: the service must work with both."""
    if request.param == "shared-mosquitto":
        yield mqtt_url
        return
    work = Path(tempfile.mkdtemp(prefix="zhizao-svc-broker-"))
    url, stop = start_broker(work, kind="iotcore")
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


def test_service_in_a_thread(fresh_database: str, any_broker: str, unique_id: str) -> None:
    mqtt_url = any_broker
    settings = CloudSettings(database_url=fresh_database, mqtt_url=mqtt_url, host_id=unique_id, api_port=0)
    service = CloudService(settings, warm_up=False)
    url = service.start_in_thread()
    try:
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        assert health["status"] == "ok"
        assert "samples_stored" in health["ingest"]  # the ingest is wired into /healthz
        token = create_token(fresh_database, "viewer", "*", "t")  # migrations were applied at start
        r = httpx.get(f"{url}/api/v1/sites", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert r.status_code == 200 and r.json() == []
        assert _retained_state(mqtt_url, unique_id)["online"] is True
    finally:
        service.stop()
    assert service._thread is not None and not service._thread.is_alive()
    assert _retained_state(mqtt_url, unique_id)["online"] is False
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_serve_stops_cleanly_on_sigterm(fresh_database: str, mqtt_url: str, unique_id: str) -> None:
    port = free_port()
    env = {**os.environ, "ZHIZAO_DATABASE_URL": fresh_database, "ZHIZAO_MQTT_URL": mqtt_url,
           "ZHIZAO_HOST_ID": unique_id, "ZHIZAO_API_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-c", "from zhizao.cli import main; main()", "cloud", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "cloud serve did not answer /healthz within 60 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "ingest stopped" in out
    assert _retained_state(mqtt_url, unique_id)["online"] is False
