"""The SSE live stream on a real service: token by header or query, site scope, keep-alives, frames."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings


@pytest.fixture
def api(fresh_database: str, mqtt_url: str, unique_id: str) -> Iterator[tuple[CloudService, str]]:
    """The service without ingest: the hub is fed directly, as the OEE service feeds it."""
    service = CloudService(CloudSettings(database_url=fresh_database, mqtt_url=mqtt_url, host_id=unique_id,
                                         api_port=0), ingest=False, warm_up=False)
    url = service.start_in_thread()
    try:
        yield service, url
    finally:
        service.stop()


class Reader:
    """Reads an SSE stream in a thread; frames (dicts of field -> value) and comments land in queues."""

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None) -> None:
        self.frames: queue.Queue[dict[str, str]] = queue.Queue()
        self.comments: queue.Queue[str] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        parts = urlsplit(url)
        # http.client rather than httpx: its socket can be shut down from another thread, like a closed tab.
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self._conn.request("GET", path, headers=headers or {})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            r = self._conn.getresponse()
            self.status.put(r.status)
            frame: dict[str, str] = {}
            while line_bytes := r.readline():
                line = line_bytes.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments.put(line[1:].strip())
                elif line == "":
                    if "data" in frame:
                        self.frames.put(frame)
                    frame = {}
                else:
                    key, _, value = line.partition(":")
                    frame[key] = value.lstrip(" ")
        except (OSError, http.client.HTTPException):
            pass

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._conn.close()


def _wait_subscribers(service: CloudService, n: int) -> None:
    deadline = time.monotonic() + 5
    while service.live.subscribers() < n:
        assert time.monotonic() < deadline, f"{n} stream(s) did not subscribe"
        time.sleep(0.02)


def test_stream_delivers_events_of_the_token_sites_only(api: tuple[CloudService, str], fresh_database: str) -> None:
    service, url = api
    scoped = create_token(fresh_database, "viewer", ["site-a"], "scoped")
    everything = create_token(fresh_database, "viewer", "*", "all")
    by_query = Reader(url, f"/api/v1/live?token={scoped}")
    by_header = Reader(url, "/api/v1/live", {"Authorization": f"Bearer {everything}"})
    try:
        assert by_query.status.get(timeout=10) == 200
        assert by_header.status.get(timeout=10) == 200
        assert by_query.comments.get(timeout=5) == "connected"
        _wait_subscribers(service, 2)
        body = {"line": "l1", "machine": "m1", "ts": 1_767_225_600_000, "code": 180000, "category": "failure"}
        service.live.publish("state", "site-b", {**body, "machine": "m9"})
        service.live.publish("state", "site-a", body)
        frame = by_query.frames.get(timeout=5)
        assert frame["event"] == "state"
        assert json.loads(frame["data"]) == {"site": "site-a", **body}
        assert int(frame["id"]) > 0
        # The all-sites token sees both, in order; the scoped one never sees site-b.
        assert json.loads(by_header.frames.get(timeout=5)["data"])["machine"] == "m9"
        assert json.loads(by_header.frames.get(timeout=5)["data"])["machine"] == "m1"
        service.live.publish("oee", "site-a", {"scope": "machine", "id": "m1", "oee": 0.7479})
        oee = by_query.frames.get(timeout=5)
        assert oee["event"] == "oee" and json.loads(oee["data"])["oee"] == 0.7479
        assert by_query.frames.empty()
    finally:
        by_query.close()
        by_header.close()
    deadline = time.monotonic() + 10  # a closed client is noticed and unsubscribed
    while service.live.subscribers():
        assert time.monotonic() < deadline, "closed streams stay subscribed"
        time.sleep(0.1)


def test_stream_refuses_missing_and_bad_tokens(api: tuple[CloudService, str]) -> None:
    _, url = api
    r = httpx.get(f"{url}/api/v1/live", timeout=5)
    assert r.status_code == 401
    assert "token" in r.json()["error"]["message"]
    r = httpx.get(f"{url}/api/v1/live", params={"token": "zz_not-a-token"}, timeout=5)
    assert r.status_code == 401


def test_stream_sends_keepalive_comments(api: tuple[CloudService, str], fresh_database: str) -> None:
    service, url = api
    token = create_token(fresh_database, "viewer", "*", "k")
    assert service._server is not None
    service._server.config.app.state.live_keepalive_s = 0.3  # read per request; the default is 15 s
    reader = Reader(url, f"/api/v1/live?token={token}")
    try:
        assert reader.comments.get(timeout=5) == "connected"
        assert reader.comments.get(timeout=5) == "keep-alive"
    finally:
        reader.close()

