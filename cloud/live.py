"""In-process live event hub: producers (ingest, OEE service) publish, SSE/WebSocket clients subscribe.

Producers run in threads (the ingest writer, the OEE worker) or in the event loop; subscribers are asyncio
consumers in the API's loop. `publish()` is thread-safe and never blocks: a subscriber that falls behind
loses its oldest events (counted in `dropped`) instead of slowing ingest. Events carry the site they belong
to, so the API can filter by the token's site scope.

Example::

    hub = LiveHub()
    hub.bind(asyncio.get_running_loop())          # once, from the API's lifespan
    async with hub.subscribe(sites={"sh-lingang"}) as events:
        hub.publish("state", "sh-lingang", {"machine": "cnc-1-m01", "ts": 1764139200000, "code": 180000})
        event = await events.get()                # LiveEvent(kind="state", site="sh-lingang", ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveEvent:
    """One event: its kind ("state", "oee", ...), the site it belongs to, a JSON-ready body, an id."""

    kind: str
    site: str
    data: dict[str, Any]
    id: int
    published_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class _Subscriber:
    def __init__(self, sites: frozenset[str] | None, maxsize: int) -> None:
        self.sites = sites
        self.queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: LiveEvent) -> None:
        if self.sites is not None and event.site not in self.sites:
            return
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)


def _deliver(subs: list[_Subscriber], event: LiveEvent) -> None:
    for s in subs:
        s.offer(event)


class LiveHub:
    """Fan-out of live events to every subscriber whose site scope includes the event's site."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[_Subscriber] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        self.published = 0
        self._relay: PgLiveRelay | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events in this loop (the API server's)."""
        self._loop = loop

    def publish(self, kind: str, site: str, data: dict[str, Any]) -> None:
        """Send an event to matching subscribers; safe from any thread, never blocks. With a relay (several
        workers) it goes through PostgreSQL to the subscribers of every worker, this one included."""
        relay = self._relay
        if relay is not None and relay.send(kind, site, data):
            return
        self.deliver(kind, site, data)

    def attach(self, relay: PgLiveRelay | None) -> None:
        """Send later events through `relay` (None: this process's subscribers only)."""
        self._relay = relay

    def deliver(self, kind: str, site: str, data: dict[str, Any]) -> None:
        """Send an event to this process's matching subscribers (thread-safe, never blocks)."""
        event = LiveEvent(kind, site, data, next(self._ids))
        self.published += 1
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _deliver(subs, event)
        else:
            with contextlib.suppress(RuntimeError):  # loop closing
                loop.call_soon_threadsafe(_deliver, subs, event)

    @contextlib.asynccontextmanager
    async def subscribe(self, sites: set[str] | frozenset[str] | None = None) -> AsyncIterator[asyncio.Queue[LiveEvent]]:
        """A queue of events for the given sites (None: all) while the context is open."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        sub = _Subscriber(frozenset(sites) if sites is not None else None, self._queue_size)
        with self._lock:
            self._subs.add(sub)
        try:
            yield sub.queue
        finally:
            with self._lock:
                self._subs.discard(sub)

    def subscribers(self) -> int:
        """How many clients listen now."""
        with self._lock:
            return len(self._subs)


class PgLiveRelay:
    """Live events of several workers: each `publish` becomes a `NOTIFY zhizao_live`, and every worker LISTENs and
    delivers what arrives to its own subscribers. With one owner per site (`ingest.owners`) the OEE and
    monitoring events of a site come from one worker, and a dashboard connected to any worker sees them.

    `send` never blocks: events queue for a sender thread (bounded: the oldest are dropped, counted). An event
    whose JSON exceeds what NOTIFY carries (about 8000 bytes) is delivered only to this worker's subscribers
    (`oversize`). A lost database connection is re-opened; events sent meanwhile are dropped, counted.
    """

    CHANNEL = "zhizao_live"
    MAX_PAYLOAD = 7900

    def __init__(self, hub: LiveHub, conninfo: str, *, queue_size: int = 10_000) -> None:
        self.hub = hub
        self.conninfo = conninfo
        self._out: queue.Queue[str] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._threads = [threading.Thread(target=self._send_loop, name="zhizao-live-send", daemon=True),
                         threading.Thread(target=self._listen_loop, name="zhizao-live-listen", daemon=True)]
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.oversize = 0

    def start(self, timeout: float = 10.0) -> None:
        """Start relaying (returns once this worker LISTENs, or after `timeout`)."""
        self.hub.attach(self)
        for t in self._threads:
            t.start()
        self._listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop relaying; later events stay local."""
        self.hub.attach(None)
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:
                t.join(timeout)

    def send(self, kind: str, site: str, data: dict[str, Any]) -> bool:
        """Queue an event for every worker; False (deliver it locally) when it is too big for NOTIFY."""
        payload = json.dumps({"kind": kind, "site": site, "data": data}, separators=(",", ":"))
        if len(payload.encode()) > self.MAX_PAYLOAD:
            self.oversize += 1
            return False
        try:
            self._out.put_nowait(payload)
        except queue.Full:
            self.dropped += 1
        return True

    def _send_loop(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                payload = self._out.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                conn.execute("SELECT pg_notify(%s, %s)", [self.CHANNEL, payload])
                self.sent += 1
            except psycopg.Error as exc:
                self.dropped += 1
                log.warning("live relay: could not send an event: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    self._listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=100):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                log.warning("live relay: listening failed (%s); again in 1 s", exc)
                self._stop.wait(1.0)

    def _deliver(self, payload: str) -> None:
        try:
            doc = json.loads(payload)
            self.hub.deliver(str(doc["kind"]), str(doc["site"]), dict(doc["data"]))
            self.received += 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("live relay: ignored a malformed event: %s", exc)
