"""The cloud service in one process: migrations, the API under uvicorn, and the ingest, with a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from zhizao.cloud.api import create_app
from zhizao.cloud.commands import CommandService, load_signing_key
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.live import LiveHub, PgLiveRelay
from zhizao.cloud.monitoring import MonitoringService
from zhizao.cloud.oee import OeeService
from zhizao.cloud.planning.dispatch import LineDispatcher, ProductionOrderSender
from zhizao.cloud.planning.service import Planner
from zhizao.cloud.planning.watcher import ReplanWatcher
from zhizao.cloud.settings import CloudSettings
from zhizao.cloud.storage.migrate import StorageInfo, apply_migrations

log = logging.getLogger(__name__)

__all__ = ["CloudService"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: it re-raises SIGTERM after shutdown, which kills the process
    with 143 instead of letting `serve()` return. `CloudService` installs its own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CloudService:
    """API + ingest. `run()` blocks until SIGINT/SIGTERM; `start_in_thread()`/`stop()` suit the demo and tests."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        ingest: bool = True,
        ingest_settings: IngestSettings | None = None,
        warm_up: bool = True,
        oee: bool = True,
        monitoring: bool = True,
    ) -> None:
        self.settings = settings
        self.conninfo = settings.require_database_url()
        self.ingest: IngestService | None = None
        ingest_settings = ingest_settings or settings.ingest_settings()
        if ingest:
            self.ingest = IngestService(self.conninfo, settings.mqtt_url, settings.host_id, ingest_settings)
        self.storage: StorageInfo | None = None
        self.live = LiveHub()
        # Several workers (shared subscription): each site's OEE and monitoring run in the worker that owns it
        # (ingest.owners), and live events reach the dashboards of every worker through PostgreSQL.
        shared = ingest_settings.shared_subscription  # an API-only process (no ingest) relays too
        self.live_relay: PgLiveRelay | None = PgLiveRelay(self.live, self.conninfo) if shared else None
        # OEE from committed samples: the ingest hands every committed batch to it (after commit).
        self.oee: OeeService | None = OeeService(self.conninfo, self.live) if oee else None
        if self.oee is not None and self.ingest is not None:
            self.ingest.add_commit_listener(self.oee.on_committed, done=self.oee.flush)
            self.ingest.add_claim_listener(self.oee.forget)
        # Planning (issue 14): the planner the API uses and the worker that proposes re-plans when capacity drops.
        self.planner = Planner(self.conninfo)
        self.replanner = ReplanWatcher(self.planner)
        # Condition monitoring (anomaly scores, alarms, webhooks) from the same committed batches.
        # With shared workers, wall-time checks run only for the sites this worker owns (none without ingest).
        owns = (self.ingest.owns if self.ingest is not None else (lambda site: False)) if shared else None
        self.monitoring: MonitoringService | None = (
            MonitoringService(self.conninfo, self.live, owns=owns) if monitoring else None
        )
        if self.monitoring is not None and self.ingest is not None:
            self.ingest.add_commit_listener(self.monitoring.on_committed, done=self.monitoring.flush)
            self.ingest.add_claim_listener(self.monitoring.resync)
        self.commands: CommandService | None = None
        if settings.commands:
            self.commands = CommandService(
                self.conninfo, settings.mqtt_url, load_signing_key(settings), host_id=settings.host_id,
                protocol=settings.mqtt_protocol, result_timeout_s=settings.command_result_timeout_s,
            )
        self._warm_up = warm_up
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_requested = False
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the API once it listens."""
        host = self.settings.api_host if self.settings.api_host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        ingest = self.ingest
        app.state.oee = self.oee
        app.state.planner = self.planner
        self.replanner.start()
        app.state.monitoring = self.monitoring
        if self.live_relay is not None:
            await asyncio.to_thread(self.live_relay.start)
        if self.oee is not None:
            await asyncio.to_thread(self.oee.start)
        if self.monitoring is not None:
            await asyncio.to_thread(self.monitoring.start)
        app.state.commands = self.commands
        dispatcher = None
        if self.commands is not None:  # a started production order reaches its line as a RunOrder command
            app.state.production_order_sender = sender = ProductionOrderSender(self.conninfo, self.commands.kick)
            # ... and when it is done (counted), the line gets the accepted plan's next lot the same way
            dispatcher = LineDispatcher(self.planner, sender)
        if self.commands is not None:
            await asyncio.to_thread(self.commands.start)
        if dispatcher is not None:
            dispatcher.start()
        if ingest is not None:
            await asyncio.to_thread(ingest.start)
            log.info("ingest started: host %s on %s", self.settings.host_id, self.settings.mqtt_url)
        if self._warm_up:
            # Compiling the kernels cold takes tens of seconds of CPU: it waits until the first samples are
            # stored, so a fresh start shows data first (the OEE worker compiles on demand if it gets there first).
            first_data = (lambda: ingest.stats()["samples_stored"] > 0) if ingest is not None else (lambda: True)
            threading.Thread(target=_warm_up_analytics, args=(first_data,), name="zhizao-warm-up", daemon=True).start()
        try:
            yield
        finally:
            if dispatcher is not None:
                await asyncio.to_thread(dispatcher.stop)
            if self.commands is not None:
                await asyncio.to_thread(self.commands.stop)
            if ingest is not None:
                await asyncio.to_thread(ingest.stop)
                log.info("ingest stopped")
            if self.oee is not None:
                await asyncio.to_thread(self.oee.stop)
            await asyncio.to_thread(self.replanner.stop)
            if self.monitoring is not None:
                await asyncio.to_thread(self.monitoring.stop)
            if self.live_relay is not None:
                await asyncio.to_thread(self.live_relay.stop)

    def build_app(self) -> FastAPI:
        """The API app wired to this service's ingest."""
        stats = self.ingest.stats if self.ingest is not None else None
        return create_app(self.settings, ingest_stats=stats, lifespan_hook=self._lifespan, live=self.live)

    async def serve(self) -> None:
        """Apply migrations, then serve API + ingest until `stop()` (or a signal, via `run()`)."""
        self.storage = await asyncio.to_thread(apply_migrations, self.conninfo, horizons=self.settings.horizons())
        log.info("storage: %s", self.storage.kind)
        config = uvicorn.Config(
            self.build_app(), host=self.settings.api_host, port=self.settings.api_port,
            log_level="warning", access_log=False, lifespan="on",
            # Open live streams (dashboards) would otherwise hold the shutdown until they disconnect.
            timeout_graceful_shutdown=3,
        )
        server = self._server = _Server(config)
        server.should_exit = self._stop_requested  # a signal that came during the migrations
        watcher = asyncio.create_task(self._announce(server))
        try:
            await server.serve()
        finally:
            watcher.cancel()
        if not server.started and not self._stop_requested:
            raise RuntimeError(f"API did not start on {self.settings.api_host}:{self.settings.api_port}; see log")

    async def _announce(self, server: _Server) -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no startup event to await
            await asyncio.sleep(0.02)
        sockets = [s for srv in server.servers for s in srv.sockets]
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.settings.api_port
        log.info("cloud API listening on %s (docs at %s/docs)", self.url, self.url)
        self._ready.set()

    def run(self) -> None:
        """Serve in this thread until SIGINT or SIGTERM, then stop cleanly (ingest flushed, STATE offline)."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
            await self.serve()

        asyncio.run(main())

    def start_in_thread(self, timeout: float = 60.0) -> str:
        """Serve from a background thread; return the API URL once it listens (raises if it fails to start)."""

        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start_in_thread
                self._error = exc
                self._ready.set()

        self._thread = threading.Thread(target=target, name="zhizao-cloud", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"cloud service did not start within {timeout:g} s")
        if self._error is not None:
            raise RuntimeError(f"cloud service failed to start: {self._error}") from self._error
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the server to finish (the lifespan then stops the ingest); waits for the thread if there is one."""
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _warm_up_analytics(first_data: Callable[[], bool], patience_s: float = 60.0) -> None:
    """Compile/load the numba kernels once, off the request path, once `first_data()` holds (or after
    `patience_s`)."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            if first_data():
                break
        except Exception:  # noqa: BLE001 - the ingest is not up yet; keep waiting
            pass
        time.sleep(0.5)
    try:
        from zhizao.analytics import warm_up

        started = time.perf_counter()
        warm_up()
        log.info("analytics kernels warm in %.1f s", time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs latency later; never stop the service
        log.warning("analytics warm-up failed: %s", exc)
