"""Private brokers on free ports: a Mosquitto tests can stop and restart, and a broker that speaks only 3.1.1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from zhizao.broker.embedded import free_port, wait_listening

__all__ = ["free_port", "private_mosquitto", "v311_only_broker"]


def private_mosquitto(port: int, config: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `mosquitto -p PORT` (or with CONFIG) and wait until it listens; fails the test loudly without it."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.fail("mosquitto binary not found: install mosquitto (the CI image has it)", pytrace=False)
    args = [exe, "-c", str(config)] if config else [exe, "-p", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, lambda: proc.poll() is None, "private mosquitto", timeout=10)
    except Exception as exc:
        proc.kill()
        proc.wait(10)  # reaped: a killed child left unwaited stays a zombie
        pytest.fail(f"private mosquitto on port {port} did not start: {exc}", pytrace=False)
    return proc


def v311_only_broker(work_dir: Path, port: int) -> Any:
    """rumqttd (the iotcore wheel) with only a 3.1.1 ("v4") listener: a broker that speaks nothing newer,
    as amqtt; started, call `.stop()`."""
    from iotcore import Broker

    conf = work_dir / "v4.toml"
    conf.write_text(
        "id = 0\n[router]\nid = 0\nmax_connections = 100\nmax_outgoing_packet_count = 200\n"
        "max_segment_size = 1048576\nmax_segment_count = 10\n"
        f'[v4.1]\nname = "v4"\nlisten = "127.0.0.1:{port}"\nnext_connection_delay_ms = 1\n'
        "[v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 20480\n"
        "max_inflight_count = 100\ndynamic_filters = true\n"
    )
    broker = Broker(config_path=str(conf))
    broker.start()
    return broker
