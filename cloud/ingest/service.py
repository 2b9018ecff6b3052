"""`IngestService`: the Sparkplug primary host and the zero-loss ingest pipeline in one object.

Threads: paho's network loop (only enqueues), the processor (sessions, batches), the DB writer (COPY,
commit, then ack). `start()` returns once the host is online; `stop()` flushes and says goodbye.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from psycopg_pool import ConnectionPool

from zhizao.broker.extensions import Ack, ack_topic, encode_ack
from zhizao.broker.sparkplug.codec import BirthMetric, encode_metrics
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, node_topic
from zhizao.cloud.host.client import HostClient, HostError, now_ms, subscriptions
from zhizao.cloud.host.session import InMemorySessionStore, NodeKey, SessionStore
from zhizao.cloud.ingest import metrics
from zhizao.cloud.ingest.owners import SiteOwners
from zhizao.cloud.ingest.processor import Processor
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.ingest.writer import CommitListener, DbWriter
from zhizao.cloud.storage.cagg_refresh import AggregateRefresher
from zhizao.cloud.storage.db import make_pool
from zhizao.cloud.storage.migrate import StorageInfo, apply_migrations

log = logging.getLogger(__name__)

REBIRTH_METRIC = "Node Control/Rebirth"


class IngestService:
    """Sparkplug host + ingest: births/deaths -> assets, DATA -> samples (exactly once), acks after commit."""

    def __init__(
        self,
        conninfo: str,
        mqtt_url: str,
        host_id: str = "zhizao-cloud",
        settings: IngestSettings | None = None,
        *,
        sessions: SessionStore | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.mqtt_url = mqtt_url
        self.host_id = host_id
        self.settings = settings or IngestSettings()
        self.sessions: SessionStore = sessions or InMemorySessionStore()
        self.storage: StorageInfo | None = None
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._host: HostClient | None = None
        self._writer: DbWriter | None = None
        self._processor: Processor | None = None
        self._pool: ConnectionPool | None = None
        self._refresher: AggregateRefresher | None = None
        self.acks_sent = 0
        self._last_ack: dict[NodeKey, Ack] = {}
        self._ack_lock = threading.Lock()
        self._t0 = time.monotonic()
        self._commit_listeners: list[CommitListener] = []
        self._owners: SiteOwners | None = None
        self._claim_listeners: list[Callable[[str], None]] = []
        self._confirm: list[Callable[[], bool]] = []
        self._watch_stop = threading.Event()
        self.worker_restarts = 0

    def start(self) -> None:
        """Apply migrations, start the writers and processor, connect the host (returns once online)."""
        if not self._claim_start():
            return
        self._start_pipeline()
        s = self.settings
        assert self._processor is not None
        try:
            self._host = HostClient(
                self.mqtt_url,
                self.host_id,
                self._processor.offer,
                subscriptions=subscriptions(self.host_id, shared=s.shared_subscription, sites=s.sites),
                protocol=s.mqtt_protocol,
                on_reconnected=self._processor.host_reconnected,
            )
            self._host.start()
        except HostError:
            self._host = None  # it already closed itself
            self.stop()
            raise

    def add_commit_listener(self, fn: CommitListener, done: Callable[[], bool] | None = None) -> None:
        """Call `fn(tag_ids, ts_ms, value)` with every committed batch's numeric samples, after its commit.

        `tag_ids` is int32, `ts_ms` int64 epoch ms, `value` float64 (null values left out), one entry per
        sample, sorted by (tag, ts); replays may repeat samples already stored. It runs in a writer thread in
        commit-release order (batch k after batches 1..k-1), so it must be cheap: queue the arrays and work
        elsewhere (the OEE service does). Exceptions are logged and never stop the ingest. Add listeners
        before `start()`.

        With a shared subscription `fn` gets the samples of the sites this worker owns (`owners.SiteOwners`:
        one worker per site, through an advisory lock), committed by any worker, from its owner thread, at
        least once: `done()` (blocking) returns True once everything `fn` got so far is processed; the feed keeps
        the samples until then, and a worker that takes the site over after a crash hands them on again.
        """
        self._commit_listeners.append(fn)
        if done is not None:
            self._confirm.append(done)

    def add_claim_listener(self, fn: Callable[[str], None]) -> None:
        """Shared subscription: call `fn(site)` when this worker takes a site over (before its first samples),
        so per-site state kept from an earlier ownership is reloaded. Add before `start()`."""
        self._claim_listeners.append(fn)

    def owns(self, site: str) -> bool:
        """Whether OEE and monitoring of `site` run here: always without a shared subscription, else while this
        worker holds the site's advisory lock."""
        return self._owners is None or self._owners.owns(site)

    def start_pipeline_only(self) -> None:
        """Start storage, writers and processor without MQTT (benchmarks and replay tools use `submit`)."""
        if self._claim_start():
            self._start_pipeline()

    def submit(self, topic: str, payload: bytes, received_ms: int | None = None) -> None:
        """Feed one message as if it came from the broker."""
        assert self._processor is not None, "start() first"
        self._processor.offer(topic, payload, received_ms if received_ms is not None else now_ms())

    def _claim_start(self) -> bool:
        with self._lock:
            if self._started:
                return False
            self._started = True
            return True

    def _start_pipeline(self) -> None:
        s = self.settings
        self.storage = apply_migrations(self.conninfo, horizons=s.horizons)
        log.info("ingest storage: %s", self.storage.kind)
        if not s.acks:
            log.info("delivery acks off: edge agents release samples once published (plain Sparkplug)")
        elif s.shared_subscription:
            log.info("shared subscription: sessions and the ack ledger in PostgreSQL; an ack covers only batches "
                     "some worker committed")  # fmt: skip
        writer_listeners = self._commit_listeners
        if s.shared_subscription:
            # OEE and detection keep per-machine state: one worker per site computes them, from every commit.
            self._owners = SiteOwners(self.conninfo, self._commit_listeners, sites=s.sites,
                                      name=f"{self.host_id}-site-owners", on_claim=self._claim_listeners,
                                      confirm=self._confirm)  # fmt: skip
            writer_listeners = []
        if self.storage.timescale:
            # Old rows (outbox replays) reach the continuous aggregates through a refresh after commit.
            self._refresher = AggregateRefresher(self.conninfo, s.horizons)
            self._refresher.start()
            writer_listeners.append(self._refresher.note)
        self._pool = make_pool(self.conninfo, min_size=2, max_size=s.pool_max_size, name="zhizao-ingest")
        self._writer = DbWriter(
            self._pool,
            on_committed=self._ack,
            on_refused=lambda keys: self._processor.refused(keys) if self._processor is not None else None,
            commit_listeners=writer_listeners,
            rollups=not self.storage.timescale,
            depth=s.pipeline_depth,
            writers=s.writers,
            optimistic=s.optimistic_insert,
            site_feed=s.shared_subscription,
            retry_initial_s=s.db_retry_initial_s,
            retry_max_s=s.db_retry_max_s,
        )
        self._processor = Processor(
            self._pool,
            self._writer,
            self.sessions,
            s,
            self._request_rebirth,
            # With shared subscriptions a worker sees only part of each node's seq stream; a lost message is
            # found by the ack ledger instead (a batch id no worker committed), which asks for the rebirth.
            check_seq=not s.shared_subscription,
            shared_sessions=s.shared_subscription,
        )
        self._writer.start()
        self._processor.start()
        if self._owners is not None:
            self._owners.start()
        self._t0 = time.monotonic()
        self._watchdog = threading.Thread(target=self._watch, name="zhizao-ingest-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """Restart any worker thread that ended unexpectedly (it is logged, counted and shown in /healthz)."""
        while not self._watch_stop.wait(1.0):
            restarted = 0
            if self._writer is not None:
                restarted += self._writer.restart_dead()
            if self._processor is not None:
                restarted += self._processor.restart_if_dead()
            self.worker_restarts += restarted

    def workers_alive(self) -> bool:
        """True while the processor and every writer thread run."""
        return (self._processor is None or self._processor.alive()) and (self._writer is None or self._writer.alive())

    def stop(self, timeout: float = 10.0) -> None:
        """Flush queued data, publish STATE offline, disconnect; idempotent."""
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
        deadline = time.monotonic() + timeout
        self._watch_stop.set()
        if self._processor is not None:
            self._processor.stop(max(0.5, deadline - time.monotonic()))
        if self._writer is not None and not self._writer.stop(max(0.5, deadline - time.monotonic())):
            log.warning("stopped with batches not committed; the edge nodes keep them and replay")
        if self._owners is not None:
            self._owners.stop(max(0.5, deadline - time.monotonic()))
        if self._refresher is not None:
            self._refresher.stop(max(0.5, deadline - time.monotonic()))
        if self._host is not None:
            self._host.stop()
        if self._pool is not None:
            self._pool.close()

    def _ack(self, key: NodeKey, ack: Ack) -> None:
        if not self.settings.acks or self._host is None:
            return
        with self._ack_lock:  # writer threads; ledger acks repeat the watermark while it stands
            if self._last_ack.get(key) == ack:
                return
            self._last_ack[key] = ack
        if self._host.publish(ack_topic(key.site, key.edge), encode_ack(ack.batch, now_ms(), ack.bd_seq), qos=1):
            self.acks_sent += 1
            metrics.ACKS.inc()

    def _request_rebirth(self, key: NodeKey) -> None:
        if self._host is None:
            return
        payload = encode_metrics(now_ms(), [BirthMetric(REBIRTH_METRIC, DataType.Boolean, True)])
        self._host.publish(node_topic(key.site, MessageType.NCMD, key.edge), payload, qos=0)

    def stats(self) -> dict[str, float]:
        """Counters for /metrics, /healthz and the demo's progress line."""
        p, w = self._processor, self._writer
        elapsed = max(1e-9, time.monotonic() - self._t0)
        stored = float(w.stored_samples) if w else 0.0
        return {
            "messages_received": float(p.received_messages) if p else 0.0,
            "samples_received": float(p.received_samples) if p else 0.0,
            "samples_stored": stored,
            "samples_per_s": stored / elapsed,
            "batches_committed": float(w.committed_batches) if w else 0.0,
            "dead_letters": float(p.dead_letters) if p else 0.0,
            "acks_sent": float(self.acks_sent),
            "queue_bytes": float(p.queued_bytes()) if p else 0.0,
            "writer_backlog": float(w.backlog()) if w else 0.0,
            "db_down": 1.0 if w and w.db_down_since is not None else 0.0,
            "mqtt_connected": 1.0 if self._host and self._host.connected else 0.0,
            "nodes_online": float(sum(1 for s in self.sessions.all() if s.online)),
            "workers_alive": 1.0 if self.workers_alive() else 0.0,
            "worker_restarts": float(self.worker_restarts),
        }
