"""Host connection errors are ours (HostError), said clearly, and leave nothing running."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support.spnode import wait_for
from zhizao.cloud.host.client import HostError
from zhizao.cloud.ingest.service import IngestService


def test_unreachable_broker_raises_host_error_and_stops_the_pipeline(fresh_database: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    before = threading.active_count()
    svc = IngestService(fresh_database, f"mqtt://127.0.0.1:{port}", "host-unreachable")
    started = time.monotonic()
    with pytest.raises(HostError, match=f"127.0.0.1:{port}"):
        svc.start()
    assert time.monotonic() - started < 15
    # writers, processor, rollups and pool workers are gone
    wait_for(lambda: threading.active_count() <= before + 1, timeout=5, what="the pipeline's threads to end")


def test_bad_mqtt_url_is_a_host_error_naming_the_url(fresh_database: str) -> None:
    with pytest.raises(HostError, match="ftp://x"):
        IngestService(fresh_database, "ftp://x", "host-bad-url").start()
