"""The FastAPI app factory: routes, JSON errors, body-size limit, request metrics, pool lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhizao.cloud.api import (
    routes_alarms,
    routes_assets,
    routes_commands,
    routes_fleet,
    routes_live,
    routes_maintenance,
    routes_oee,
    routes_planning,
    routes_quarantine,
    routes_reports,
    routes_series,
    routes_status,
    routes_tokens,
)
from zhizao.cloud.api.errors import document_errors, install_error_handlers
from zhizao.cloud.api.inputs import QueryHygiene, check_path_params
from zhizao.cloud.dashboard import router as dashboard_router
from zhizao.cloud.live import LiveHub
from zhizao.cloud.settings import CloudSettings
from zhizao.cloud.storage.db import make_async_pool

log = logging.getLogger(__name__)

__all__ = ["create_app"]

_REQUESTS = Counter("zhizao_api_requests_total", "API requests by route and status", ["route", "status"])
_LATENCY = Histogram(
    "zhizao_api_request_seconds", "API request latency by route", ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, by Content-Length or by counting chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(send, int(value), self.max_bytes)
                return
        seen = 0
        over = False

        async def limited() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _BodyTooLarge(seen)
            return message

        async def guarded(message: Message) -> None:
            # Once the body is over the limit, whatever the app answers (its parser sees a broken body) is dropped.
            if not over:
                await send(message)

        with suppress(_BodyTooLarge):
            await self.app(scope, limited, guarded)
        if over:
            await _too_large(send, seen, self.max_bytes)


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


async def _too_large(send: Send, size: int, limit: int) -> None:
    import json

    body = json.dumps({"error": {"status": 413, "field": "content-length", "value": size,
                                 "message": f"content-length={size}: request body over the limit of {limit} bytes"}})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


async def _detect(pool: AsyncConnectionPool) -> tuple[str, set[str]]:
    """Storage kind for /healthz and which rollup tables/views exist for /series."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        ts = await cur.fetchone()
        cur = await conn.execute("SHOW server_version")
        version = await cur.fetchone()
        cur = await conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relname IN ('samples_1m', 'samples_1h')"
        )
        rollups = {str(r[0]) for r in await cur.fetchall()}
    server = str(version[0]).split()[0] if version else "?"
    kind = f"timescaledb {ts[0]} on postgresql {server}" if ts else f"postgresql {server}"
    return kind, rollups


def create_app(
    settings: CloudSettings,
    pool: AsyncConnectionPool | None = None,
    *,
    ingest_stats: Callable[[], dict[str, float]] | None = None,
    lifespan_hook: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    live: LiveHub | None = None,
) -> FastAPI:
    """The API app; with no `pool` it opens its own from `settings.database_url` during its lifespan.

    `lifespan_hook(app)` is entered after the pool is open and left before it closes (the service starts
    and stops the ingest there); `ingest_stats()` feeds /healthz; `live` is the event hub behind the live
    stream (a private one when not given).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = pool is None
        used = make_async_pool(settings.require_database_url(), max_size=settings.db_pool_size) if own else pool
        assert used is not None
        if own:
            await used.open(wait=True, timeout=30.0)
        app.state.pool = used
        app.state.live.bind(asyncio.get_running_loop())
        try:
            app.state.storage_kind, app.state.rollups = await _detect(used)
            log.info("api ready on %s (rollups: %s)", app.state.storage_kind, sorted(app.state.rollups) or "none")
            async with AsyncExitStack() as stack:
                if lifespan_hook is not None:
                    await stack.enter_async_context(lifespan_hook(app))
                yield
        finally:
            if own:
                await used.close()

    about: dict[str, Any] = {
        "title": "zhizao cloud API",
        "version": "1",
        "summary": "Asset tree, time series, latest values and edge health of the zhizao cluster.",
        "description": "Every route but /healthz needs `Authorization: Bearer <token>` "
        "(create one with `zhizao cloud token create`). Objects outside a token's sites answer 404.",
        "lifespan": lifespan,
        "root_path": settings.api_root_path,
        # App-wide: runs before every route's own dependencies, for routers included later too.
        "dependencies": [Depends(check_path_params)],
    }
    if settings.api_docs:
        # Swagger UI and ReDoc from the fastapi-offline wheel: /docs works on a shop floor without internet.
        app = FastAPIOffline(docs_url="/docs", redoc_url="/redoc", openapi_url="/openapi.json", **about)
    else:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **about)
    app.state.settings = settings
    app.state.ingest_stats = ingest_stats
    app.state.live = live if live is not None else LiveHub()
    app.state.token_last_used = {}
    app.state.storage_kind = None
    app.state.rollups = set()
    install_error_handlers(app)
    app.include_router(routes_status.router)
    app.include_router(routes_assets.router)
    app.include_router(routes_series.router)
    app.include_router(routes_oee.router)
    app.include_router(routes_live.router)
    app.include_router(routes_quarantine.router)
    app.include_router(routes_reports.router)
    app.include_router(routes_planning.router)
    app.include_router(routes_alarms.router)
    app.include_router(routes_maintenance.router)
    app.include_router(routes_commands.router)
    app.include_router(routes_fleet.router)
    app.include_router(routes_tokens.router)
    app.include_router(dashboard_router)

    @app.middleware("http")
    async def count_requests(request: Any, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route template, never the raw path: ids in paths would explode the label set.
        label = getattr(route, "path", "unmatched")
        _LATENCY.labels(label).observe(time.perf_counter() - started)
        _REQUESTS.labels(label, str(response.status_code)).inc()
        return response

    app.add_middleware(QueryHygiene)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    document_errors(app)
    return app
