"""Alarms through the API: ISA-18.2 transitions by role with comments, audit log, history, live push, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import numpy as np
import psycopg

from tests.support.monitorfixtures import Monitored
from tests.support.oeefixtures import T0
from tests.support.spnode import wait_for

SEC = 1000


def _temps(m: Monitored, machine: str, start_s: int, values: list[float], site: str = "site-a") -> None:
    tag = m.tags[(site, machine, "Temperature/Spindle")]
    ts = np.array([T0 + (start_s + i * 10) * SEC for i in range(len(values))], np.int64)
    m.feed(np.full(ts.size, tag, np.int32), ts, np.array(values, np.float64))


def _alarm(m: Monitored, client: httpx.Client | None = None, **params: Any) -> dict[str, Any]:
    resp = (client or m.admin).get("/api/v1/alarms", params={"all": True, **params})
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()
    assert len(rows) == 1, rows
    return rows[0]


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(503 if type(self).fail else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_alarm_lifecycle_by_role_with_audit_history_live_and_webhooks(monitored: Monitored) -> None:
    m = monitored
    # A real local HTTP server receives the webhooks.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    events: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        with m.viewer.stream("GET", "/api/v1/live", timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:") and '"alarm"' in line and '"event"' in line:
                    events.append(line)
                if stop.is_set():
                    return

    server_app = m.service._server.config.app if m.service._server is not None else None
    assert server_app is not None
    server_app.state.live_keepalive_s = 0.3  # the stream notices the test's end within a keep-alive
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_for(lambda: m.service.live.subscribers() == 1, what="the live stream to connect")
    try:
        hook = m.admin.post("/api/v1/webhooks", json={"url": f"http://127.0.0.1:{server.server_port}/hook",
                                                       "site": "site-a", "secret": "s" * 32})
        assert hook.status_code == 201, hook.text
        assert m.operator.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:1/x"}).status_code == 403

        _temps(m, "m1", 0, [40, 41, 75, 76, 69, 67, 40])  # above 70, within the deadband at 69, clear at 67
        a = _alarm(m, source="threshold")
        assert (a["state"], a["machine"], a["priority"], a["activations"]) == ("rtn_unack", "m1", "high", 1)
        assert a["raised_ts"].startswith("2026-11-02T00:00:20") and a["cleared_ts"].startswith("2026-11-02T00:00:50")
        # Scope and roles: another site's engineer sees nothing; a viewer may not acknowledge; a comment is required.
        assert m.engineer_b.get(f"/api/v1/alarms/{a['id']}").status_code == 404
        assert m.engineer_b.get("/api/v1/alarms", params={"all": True}).json() == []
        assert m.viewer.post(f"/api/v1/alarms/{a['id']}/acknowledge", json={"comment": "seen"}).status_code == 403
        bad = m.operator.post(f"/api/v1/alarms/{a['id']}/acknowledge", json={"comment": "  "})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "comment"
        ack = m.operator.post(f"/api/v1/alarms/{a['id']}/acknowledge", json={"comment": "coolant refilled"})
        assert ack.status_code == 200 and ack.json()["state"] == "normal" and ack.json()["acked_by"] == "operator a"
        assert m.operator.post(f"/api/v1/alarms/{a['id']}/acknowledge", json={"comment": "again"}).status_code == 409
        summary = m.viewer.get("/api/v1/alarms/summary").json()
        assert summary["open"] == 0 and summary["by_state"]["normal"] == 1

        # Raised again: the same alarm point (de-duplicated), unacknowledged; acknowledged while active -> ack.
        _temps(m, "m1", 100, [80, 81])
        a2 = _alarm(m, source="threshold")
        assert (a2["id"], a2["state"], a2["activations"]) == (a["id"], "unack", 2)
        assert m.viewer.get("/api/v1/alarms/summary").json()["unacknowledged"] == 1
        # Shelving expires by itself.
        sh = m.operator.post(f"/api/v1/alarms/{a['id']}/shelve", json={"comment": "sensor swap", "minutes": 0.01})
        assert sh.status_code == 200 and sh.json()["state"] == "shelved"

        def unshelved() -> bool:
            assert m.service.monitoring is not None
            m.service.monitoring.check_now()
            return bool(_alarm(m, source="threshold")["state"] == "unack")

        wait_for(unshelved, what="the shelving to expire")
        # Out of service needs an engineer.
        oos = {"comment": "sensor broken", "out_of_service": True}
        assert m.operator.post(f"/api/v1/alarms/{a['id']}/out-of-service", json=oos).status_code == 403
        assert m.admin.post(f"/api/v1/alarms/{a['id']}/out-of-service", json=oos).json()["state"] == "out_of_service"

        detail = m.viewer.get(f"/api/v1/alarms/{a['id']}").json()
        assert [h["event"] for h in detail["history"]][::-1] == [
            "activate", "clear", "acknowledge", "activate", "shelve", "expire", "out_of_service"]
        assert detail["history"][-3]["comment"] == "coolant refilled"
        with psycopg.connect(m.db) as conn:
            audited = conn.execute("SELECT actor, action FROM audit_log WHERE action LIKE 'alarm.%%' ORDER BY id").fetchall()
        assert [a for a in audited if a[0] != "system"] == [
            ("operator a", "alarm.acknowledge"), ("operator a", "alarm.shelve"), ("admin", "alarm.out_of_service")]
        assert [x[1] for x in audited if x[0] == "system"] == [
            "alarm.activate", "alarm.clear", "alarm.activate", "alarm.expire"]

        # Live: every transition reached the viewer's stream.
        wait_for(lambda: len(events) >= 7, what="7 live alarm events")
        assert [json.loads(e[5:])["event"] for e in events[:7]] == [h["event"] for h in detail["history"]][::-1]

        # Webhooks: every announced transition, signed with HMAC-SHA256 over "timestamp.body".
        wait_for(lambda: len(_Receiver.got) >= 7, what="7 webhook deliveries")
        for headers, body in _Receiver.got:
            want = hmac.new(b"s" * 32, headers["x-zhizao-timestamp"].encode() + b"." + body, hashlib.sha256)
            assert headers["x-zhizao-signature"] == "sha256=" + want.hexdigest()
        assert [json.loads(b)["event"] for _, b in _Receiver.got[:7]] == [h["event"] for h in detail["history"]][::-1]
        # A receiver that fails: retried with backoff, then kept as failed and visible.
        _Receiver.fail = True
        back = m.admin.post(f"/api/v1/alarms/{a['id']}/out-of-service", json={"comment": "fixed", "out_of_service": False})
        assert back.status_code == 200
        hook_id = hook.json()["id"]

        def failed() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = m.admin.get(f"/api/v1/webhooks/{hook_id}/deliveries",
                                                     params={"status": "failed"}).json()
            return rows

        wait_for(failed, what="the delivery to fail for good")
        f = failed()[0]
        assert (f["event"], f["attempts"], f["last_status"], f["last_error"]) == ("return_to_service", 3, 503, "HTTP 503")
        assert m.admin.get("/api/v1/webhooks").json()[0]["failed"] == 1
    finally:
        stop.set()
        listener.join(10)
        server.shutdown()
        server.server_close()
