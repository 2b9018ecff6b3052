"""A private Mosquitto on a free port, for tests that stop and restart the broker."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from zhizao.broker.embedded import free_port, wait_listening

__all__ = ["free_port", "private_mosquitto"]


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
        pytest.fail(f"private mosquitto on port {port} did not start: {exc}", pytrace=False)
    return proc
