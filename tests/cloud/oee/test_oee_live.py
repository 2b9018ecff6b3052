"""Live events of the OEE service on the SSE stream: a state change within a second, then an OEE update."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.oeefixtures import MIN, T0, Running, batches, feed, random_machine, store_batch
from tests.support.spnode import wait_for
from zhizao.cloud.auth import create_token


def listen(url: str, token: str, out: queue.Queue[tuple[float, str, dict[str, Any]]], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=60)) as c, \
            c.stream("GET", "/api/v1/live", headers={"Authorization": f"Bearer {token}"}) as resp:
        out.put((time.monotonic(), "open", {"status": resp.status_code}))
        kind = ""
        try:
            for line in resp.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    out.put((time.monotonic(), kind, json.loads(line.split(":", 1)[1])))
        except httpx.RemoteProtocolError:
            if not stop.is_set():  # the service closing the stream at the test's end is expected
                raise


def test_state_change_published_within_a_second_and_oee_update_follows(running: Running) -> None:
    history = [random_machine("site-a", "l1", "m1", seed=5), random_machine("site-b", "l9", "m9", seed=6)]
    feed(running, history)  # the machines are known and their windows computed
    token = create_token(running.db, "viewer", "site-a", "live-a")
    events: queue.Queue[tuple[float, str, dict[str, Any]]] = queue.Queue()
    stop = threading.Event()
    listening = running.service.live.subscribers()
    reader = threading.Thread(target=listen, args=(running.url, token, events, stop), daemon=True)
    reader.start()
    assert events.get(timeout=10)[2] == {"status": 200}
    wait_for(lambda: running.service.live.subscribers() > listening, timeout=5, what="the stream subscribed")
    oee = running.service.oee
    assert oee is not None
    end = max(ts for d in history for s in d.series.values() for ts, _ in s)
    t_new = end + MIN
    data = {}
    for d in history:
        for name in d.series:
            d.series[name] = []
        d.series["State"] = [(t_new, 180000.0)]
        d.series["Temperature/Spindle"] = [(t_new + 30_000, 41.0)]
        data[d.machine] = d
    try:
        with psycopg.connect(running.db) as conn:
            for tag, ts, value in batches(list(data.values()), running.tags, 10 * MIN):
                store_batch(conn, tag, ts, value)
                sent = time.monotonic()
                oee.on_committed(tag, ts, value)
        got: dict[str, tuple[float, dict[str, Any]]] = {}
        rollups: dict[tuple[str, str], dict[str, Any]] = {}  # (scope, window kind) -> latest line/site event
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ("state" in got and "oee" in got and len(rollups) >= 6):
            try:
                at, kind, body = events.get(timeout=0.5)
            except queue.Empty:
                continue
            assert body.get("site") != "site-b", f"an event of another site reached a site-a token: {body}"
            if kind == "oee" and body["scope"] != "machine":
                rollups[(body["scope"], body["window_kind"])] = body
                continue
            got.setdefault(kind, (at, body))
    finally:
        stop.set()
    assert "state" in got, f"no state event; got {list(got)}"
    at, body = got["state"]
    assert {k: body[k] for k in ("site", "line", "machine", "ts", "code", "category")} == {
        "site": "site-a", "line": "l1", "machine": "m1", "ts": t_new, "code": 180000, "category": "failure"}
    assert at - sent < 1.0, f"state event {at - sent:.3f} s after the commit"
    assert "oee" in got, f"no oee event; got {list(got)}"
    body = got["oee"][1]
    assert body["scope"] == "machine" and body["id"] == "m1" and body["site"] == "site-a"
    assert body["window_kind"] in ("hour", "shift", "day") and 0 <= body["oee"] <= 1
    assert t_new >= T0
    # Line and site figures are pushed too, equal to what /api/v1/oee sums for the same window.
    assert {scope for scope, _ in rollups} == {"line", "site"}, f"roll-up events: {sorted(rollups)}"
    for (scope, window), event in rollups.items():
        assert event["id"] == ("l1" if scope == "line" else "site-a") and event["site"] == "site-a"
        params = {"scope": scope, "site": "site-a", "window": window, "from": event["start"], "to": event["end"]}
        if scope == "line":
            params["id"] = "l1"
        rows = running.client.get("/api/v1/oee", params=params).json()
        row = next(x for x in rows if x["start"] == event["start"])
        for key in ("availability", "performance", "quality", "oee"):
            assert event[key] == pytest.approx(row[key], rel=1e-9), (scope, window, key)
