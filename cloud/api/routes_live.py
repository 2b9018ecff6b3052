"""The live stream: state changes and OEE updates for the token's sites, pushed as they happen (SSE).

`GET /api/v1/live` answers `text/event-stream`. Each event is `id: N`, `event: <kind>` ("state", "oee", ...)
and `data: <json body>`; a comment line (`: keep-alive`) goes out every `keepalive_s` so proxies keep the
connection open. The token comes in the `Authorization: Bearer` header or, because the browser's
EventSource cannot set headers, in the `?token=` query parameter (keep such URLs out of access logs).
`Last-Event-ID` is not honoured: a client that reconnects reloads its view through the REST routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from zhizao.cloud.api.deps import get_principal
from zhizao.cloud.api.errors import ApiError
from zhizao.cloud.auth import Principal
from zhizao.cloud.live import LiveEvent, LiveHub

router = APIRouter(prefix="/api/v1", tags=["live"])

KEEPALIVE_S = 15.0
# How long the stream waits between disconnect checks when no event comes (a closed tab is noticed this fast).
_POLL_S = 1.0


async def _principal(request: Request, token: str | None) -> Principal:
    """The caller, from the header or `?token=`; the pooled connection is held only for the check."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    if not token:
        raise ApiError(401, "missing token: send 'Authorization: Bearer <token>' or ?token=<token>",
                       "Authorization", None)
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    # Not the per-request `Conn` dependency: a stream lives for hours and must not keep a pool connection.
    async with request.app.state.pool.connection() as conn:
        return await get_principal(request, conn, credentials)


def format_event(event: LiveEvent) -> bytes:
    """One SSE frame: id, event kind, JSON data (with the site folded in)."""
    body = {"site": event.site, **event.data}
    data = json.dumps(body, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def _stream(request: Request, hub: LiveHub, sites: frozenset[str] | None,
                  keepalive_s: float) -> AsyncIterator[bytes]:
    async with hub.subscribe(sites) as events:
        # `retry` tells EventSource how soon to reconnect; the comment flushes headers so `onopen` fires now.
        yield b"retry: 2000\n: connected\n\n"
        idle = 0.0
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=min(_POLL_S, keepalive_s))
            except TimeoutError:
                if await request.is_disconnected():
                    return
                idle += min(_POLL_S, keepalive_s)
                if idle >= keepalive_s:
                    idle = 0.0
                    yield b": keep-alive\n\n"
                continue
            idle = 0.0
            yield format_event(event)


@router.get(
    "/live",
    summary="Live events (Server-Sent Events): state changes and OEE updates of the token's sites",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"}},
)
async def live(
    request: Request,
    token: Annotated[str | None, Query(max_length=256, description="the token, for EventSource clients "
                                       "that cannot send the Authorization header")] = None,
) -> StreamingResponse:
    """Events `state` {site, line, machine, ts, code, category} and `oee` {scope, id, site, window_kind, ...}."""
    principal = await _principal(request, token)
    listed = principal.site_list()
    sites = None if listed is None else frozenset(listed)
    keepalive = float(getattr(request.app.state, "live_keepalive_s", KEEPALIVE_S))
    return StreamingResponse(
        _stream(request, request.app.state.live, sites, keepalive),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
