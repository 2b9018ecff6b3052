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
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


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

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events in this loop (the API server's)."""
        self._loop = loop

    def publish(self, kind: str, site: str, data: dict[str, Any]) -> None:
        """Send an event to matching subscribers; safe from any thread, never blocks."""
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
