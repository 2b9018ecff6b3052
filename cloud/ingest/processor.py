"""The processor thread: Sparkplug host logic (births, deaths, seq, rebirths) and building DB batches.

paho's network thread only enqueues (topic, payload, time); this thread owns every session and never
touches the network loop. Births and deaths are written at once (they are rare and later DATA needs the
tag ids); samples go to the current batch, handed to the DB writer when it is big or old enough.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from psycopg_pool import ConnectionPool

from zhizao.broker.extensions import BATCH_METRIC, Ack
from zhizao.broker.sparkplug.codec import Decoded, PayloadError, bdseq_of, birth_units, decode
from zhizao.broker.sparkplug.topics import MessageType, Topic, TopicError
from zhizao.cloud.host import shared
from zhizao.cloud.host.session import NodeKey, NodeSession, SessionStore
from zhizao.cloud.ingest import metrics, registry
from zhizao.cloud.ingest.batch import Batch, DeadLetter, NodeHealth
from zhizao.cloud.ingest.decode import QUARANTINE_REASONS, health_field, is_control_metric, sort_samples
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.ingest.writer import DbWriter
from zhizao.cloud.storage.db import StorageUnavailable, translate_errors

log = logging.getLogger(__name__)

T = TypeVar("T")
RebirthSender = Callable[[NodeKey], None]

_DATA = frozenset({"NDATA", "DDATA"})
_DEAD_LETTER_PAYLOAD_MAX = 64 * 1024  # keep a readable prefix of huge payloads, not all of it
LINE_PROPERTY = "Properties/Line"


@dataclass(frozen=True)
class Inbound:
    """A message as received on the network thread."""

    topic: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True)
class Dropped:
    """Marker: DATA of this node was dropped here (receive budget exceeded) or refused by the database; acks
    must stop at this point until the next birth, and the node is asked to rebirth (it then replays)."""

    key: NodeKey
    reason: str = "dropped"
    why: str = "messages dropped under overload"


def _role(device: str | None, name: str) -> str | None:
    """Protocol role of a born metric: the zhizao batch id, a control metric (bdSeq, Node Control/...: never
    stored), or, for node metrics, a health figure."""
    if name == BATCH_METRIC:
        return "batch"
    if is_control_metric(name):
        return "control"
    return health_field(name) if device is None else None


class Stopping(Exception):
    """Raised inside the processor when the service stops while it waits on the database."""


class Processor:
    """Owns the receive queue, the Sparkplug sessions and the batch being built."""

    def __init__(
        self,
        pool: ConnectionPool,
        writer: DbWriter,
        sessions: SessionStore,
        settings: IngestSettings,
        send_rebirth: RebirthSender,
        *,
        check_seq: bool = True,
        shared_sessions: bool = False,
    ) -> None:
        self._pool = pool
        self._writer = writer
        self._sessions = sessions
        self._s = settings
        self._send_rebirth = send_rebirth
        self._check_seq = check_seq
        # Workers of a shared subscription: births and committed batch ids also go to PostgreSQL (host/shared.py).
        self._shared = shared_sessions
        self._adopt_tried: dict[NodeKey, float] = {}
        self._next_gap_check = 0.0
        self._queue: queue.SimpleQueue[Inbound | Dropped | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._drop_marked: set[NodeKey] = set()
        self._stop = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="zhizao-ingest-processor", daemon=True)
        self._batch = Batch()
        self._held_logged: dict[tuple[NodeKey, str], float] = {}
        self._rebirth_wanted: dict[NodeKey, str] = {}
        self._next_timer_check = 0.0
        self._host_away = threading.Event()  # set by `host_reconnected` (network thread)
        self._dl_tokens = float(settings.dead_letter_rows_per_s)
        self._dl_refill = time.monotonic()
        self.received_messages = 0
        self.received_samples = 0
        self.dead_letters = 0

    # --- network thread side ---

    def offer(self, topic: str, payload: bytes, received_ms: int) -> None:
        """Enqueue a message (never blocks); DATA beyond the byte budget is dropped and marked."""
        size = len(payload)
        with self._lock:
            if self._queued_bytes + size > self._s.queue_max_bytes:
                parts = topic.split("/")
                if len(parts) >= 4 and parts[2] in _DATA:
                    metrics.DROPPED.labels("overload").inc()
                    key = NodeKey(parts[1], parts[3])
                    if key not in self._drop_marked:
                        self._drop_marked.add(key)
                        self._queue.put(Dropped(key, "db_refused", "a batch with its data was refused by the database"))
                    return
            self._queued_bytes += size
            metrics.QUEUE_BYTES.set(self._queued_bytes)
        self._queue.put(Inbound(topic, payload, received_ms))

    def queued_bytes(self) -> int:
        """Payload bytes waiting."""
        return self._queued_bytes

    # --- lifecycle ---

    def start(self) -> None:
        """Start the processor thread."""
        self._thread.start()

    def refused(self, keys: list[NodeKey]) -> None:
        """The database refused a batch with data of these nodes (any thread): hold their acks, ask a rebirth."""
        for key in keys:
            self._queue.put(Dropped(key, "db_refused", "a batch with its data was refused by the database"))

    def alive(self) -> bool:
        """True while the processor thread runs (or has not been started, or is stopping)."""
        return self._thread.ident is None or self._thread.is_alive() or self._stopping

    def restart_if_dead(self) -> int:
        """Start a new processor thread if it ended unexpectedly (sessions and queue are kept); 1 if it did."""
        if self._stopping or self._thread.ident is None or self._thread.is_alive():
            return 0
        log.error("ingest processor thread had ended; starting a new one")
        self._thread = threading.Thread(target=self._run, name="zhizao-ingest-processor", daemon=True)
        self._thread.start()
        return 1

    def stop(self, timeout: float) -> None:
        """Process what is queued, hand the last batch to the writer, end the thread."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Stopping:
                    raise
                except Exception:  # a bug met here must not end the ingest for every site
                    # What the current batch holds may be lost: hold the acks of its nodes until they rebirth
                    # and replay, so nothing is acknowledged that was not stored.
                    log.exception("ingest processor error; holding acks of %d nodes", len(self._batch.touched))
                    for key in list(self._batch.touched):
                        self._freeze(key, "processor_error", "a processing error")
                    self._batch = Batch()
                    self._stop.wait(0.1)
            self._cut(final=True)
        except Stopping:
            log.info("processor stopped while waiting for the database")

    def host_reconnected(self) -> None:
        """The host's MQTT connection was lost and is back (network thread, before its first message).

        While it was away, births, deaths and data went by unseen: an edge that reconnected first has a new
        session (bdSeq, seq from 0) the host never saw born, and a seq restart looks like a late duplicate to
        the gap check. So every online session holds its acks and is asked to rebirth until its next birth."""
        self._host_away.set()

    def _host_back(self) -> None:
        self._host_away.clear()
        for session in self._sessions.all():
            if session.online:
                self._freeze(session.key, "host_reconnect", "the host reconnected and may have missed its birth")

    def _step(self) -> None:
        item = self._next_item()
        if item is None and self._stop.is_set():
            return
        if self._host_away.is_set():
            self._host_back()
        if isinstance(item, Inbound):
            with self._lock:
                self._queued_bytes -= len(item.payload)
                metrics.QUEUE_BYTES.set(self._queued_bytes)
            self._handle_guarded(item)
        elif isinstance(item, Dropped):
            with self._lock:
                self._drop_marked.discard(item.key)
            self._freeze(item.key, item.reason, item.why)
        self._timers()

    def _next_item(self) -> Inbound | Dropped | None:
        wait = self._s.batch_max_ms / 1000.0
        if self._batch.samples or not self._batch.empty():
            wait = max(0.0, self._batch.started + self._s.batch_max_ms / 1000.0 - time.monotonic())
        try:
            item = self._queue.get(timeout=min(wait, 0.1))
        except queue.Empty:
            return None
        if item is None:
            self._stop.set()
        return item

    def _timers(self) -> None:
        now = time.monotonic()
        batch_age = now - self._batch.started
        if self._batch.samples >= self._s.batch_max_samples or (
            not self._batch.empty() and batch_age * 1000 >= self._s.batch_max_ms
        ):
            self._cut()
        if self._batch.empty():
            self._batch.started = now
        if now < self._next_timer_check:
            return
        self._next_timer_check = now + 0.05
        if self._shared and now >= self._next_gap_check:
            self._next_gap_check = now + max(0.1, self._s.reorder_timeout_ms / 4000.0)
            self._ask_stalled()
        timeout = self._s.reorder_timeout_ms / 1000.0
        for session in self._sessions.all():
            if session.missing and now - min(session.missing.values()) >= timeout:
                log.warning(
                    "%s/%s: seq gap (missing %s) not filled within %d ms; requesting rebirth",
                    *session.key, sorted(session.missing)[:5], self._s.reorder_timeout_ms,
                )
                session.missing.clear()
                self._rebirth_wanted.setdefault(session.key, "seq_gap")
            elif session.frozen is not None and session.online and not session.missing:
                # Keep asking (rate-limited) until the NBIRTH comes: NCMD is QoS 0 and may be lost.
                self._rebirth_wanted.setdefault(session.key, session.frozen)
        for key, reason in list(self._rebirth_wanted.items()):
            session = self._sessions.get_or_create(key)
            if (now - session.last_rebirth_request) * 1000 >= self._s.rebirth_min_interval_ms:
                session.last_rebirth_request = now
                del self._rebirth_wanted[key]
                metrics.REBIRTHS.labels(reason).inc()
                log.info("requesting rebirth of %s/%s (%s)", key.site, key.edge, reason)
                self._send_rebirth(key)

    def _ask_stalled(self) -> None:
        """Shared subscription: ask nodes whose ack watermark stands at a gap (a batch some worker received and
        did not commit: killed, dropped, refused) to rebirth; the edge then replays what is not acknowledged."""
        try:
            with translate_errors(), self._pool.connection() as conn:
                keys = shared.claim_stalled(conn, self._s.reorder_timeout_ms, self._s.rebirth_min_interval_ms,
                                            self._s.sites)  # fmt: skip
        except StorageUnavailable:
            return  # the next check tries again; nothing is acknowledged meanwhile
        for key in keys:
            metrics.REBIRTHS.labels("ack_gap").inc()
            log.info("requesting rebirth of %s/%s (a batch before the ack watermark was not committed by any"
                     " worker within %d ms)", key.site, key.edge, self._s.reorder_timeout_ms)  # fmt: skip
            self._send_rebirth(key)

    def _adopt(self, key: NodeKey) -> NodeSession | None:
        """Shared subscription: take over the node's session from PostgreSQL (its births were seen by another
        worker, e.g. before this one started); at most once a second per node."""
        now = time.monotonic()
        if now - self._adopt_tried.get(key, float("-inf")) < 1.0:
            return None
        self._adopt_tried[key] = now
        birth = self._db(shared.load_birth, key)
        if birth is None:
            return None
        session = self._sessions.get_or_create(key)
        session.reset_for_birth(birth.bd_seq)
        session.generation = birth.generation
        session.node_tags = birth.node_tags
        session.learn_birth(None, decode(birth.nbirth), birth.node_tags, role_of=_role)
        for device, payload, tags in birth.devices:
            session.learn_birth(device, decode(payload), tags, role_of=_role)
            session.devices.add(device)
        log.info("%s/%s: adopted session %d (bdSeq %s, %d devices) from the shared session store", key.site,
                 key.edge, birth.generation, birth.bd_seq, len(birth.devices))  # fmt: skip
        return session

    def _cut(self, final: bool = False) -> None:
        batch = self._batch
        # Shared subscription: acks come from the ledger, in the batch's own transaction (writer.write_batch).
        for key in () if self._shared else batch.touched:
            session = self._sessions.get(key)
            if session is None:
                continue
            closed, promised = session.closed_through, session.ack_promised
            # Acks are cumulative at the edge: only a higher value tells it something new.
            if closed is not None and (promised is None or closed > promised):
                batch.acks[key] = Ack(closed, session.bd_seq)
                session.ack_promised = closed
        self._batch = Batch()
        if batch.empty():
            return
        deadline = time.monotonic() + 5.0
        while not self._writer.submit(batch, timeout=0.5):
            if final and time.monotonic() > deadline:
                # Shutting down with the writers stuck: unacked data stays at the edge, which replays it.
                log.warning("stopping with %d samples not handed to the database (not acked)", batch.samples)
                return
            if self._stop.is_set() and not final:
                raise Stopping

    # --- helpers ---

    def _db(self, func: Callable[..., T], *args: object) -> T:
        """Run a registry function, retrying through database outages (later DATA needs its result)."""
        delay = self._s.db_retry_initial_s
        while True:
            try:
                with translate_errors(), self._pool.connection() as conn:
                    return func(conn, *args)
            except StorageUnavailable as exc:
                metrics.DB_ERRORS.labels("unavailable").inc()
                log.debug("registry write waiting for the database: %s", exc)
                if self._stop.wait(delay):
                    raise Stopping from exc
                delay = min(delay * 2, self._s.db_retry_max_s)

    def _dead_letter(self, item: Inbound, reason: str, detail: str) -> None:
        metrics.DEAD_LETTERS.labels(reason).inc()
        self.dead_letters += 1
        # Token bucket: a flood of garbage is counted in full but stored only up to a rate, so writing
        # dead letters never takes the database away from good data.
        now = time.monotonic()
        rate = self._s.dead_letter_rows_per_s
        self._dl_tokens = min(rate, self._dl_tokens + (now - self._dl_refill) * rate)
        self._dl_refill = now
        if self._dl_tokens < 1:
            metrics.DROPPED.labels("dead_letter_rate").inc()
            return
        self._dl_tokens -= 1
        self._batch.dead_letters.append(
            DeadLetter(item.received_ms, item.topic, reason, detail, item.payload[:_DEAD_LETTER_PAYLOAD_MAX])
        )

    def _note_held(self, key: NodeKey, reason: str, detail: str) -> None:
        """Log samples going to quarantine, at most once a minute per node and reason."""
        now = time.monotonic()
        if now - self._held_logged.get((key, reason), float("-inf")) >= 60.0:
            self._held_logged[(key, reason)] = now
            log.warning("%s/%s: %s; kept in quarantine (GET /api/v1/quarantine)", key.site, key.edge, detail)

    def _want_rebirth(self, key: NodeKey, reason: str) -> None:
        self._rebirth_wanted.setdefault(key, reason)

    def _freeze(self, key: NodeKey, reason: str, why: str) -> None:
        session = self._sessions.get_or_create(key)
        if session.frozen is None:
            log.warning("%s/%s: acks held until the next birth (%s)", key.site, key.edge, why)
        session.frozen = session.frozen or reason
        self._want_rebirth(key, reason)

    def _seq(self, session: NodeSession, seq: int | None) -> None:
        if seq is not None and self._check_seq:
            session.track_seq(seq, time.monotonic())

    # --- message handling ---

    def _handle_guarded(self, item: Inbound) -> None:
        """One message; whatever goes wrong with it is its own dead letter, never the end of the stream."""
        try:
            self._handle(item)
        except Stopping:
            raise
        except Exception as exc:  # a bug on one odd payload must not stop the ingest (log.exception)
            log.exception("could not process a message on %s", item.topic)
            self._dead_letter(item, "processing_error", f"{type(exc).__name__}: {exc}")
            self._hold_acks_of(item, "processing_error")

    def _hold_acks_of(self, item: Inbound, reason: str) -> None:
        """DATA of a node that was not stored: its acks stop here (until a rebirth), so the edge keeps it."""
        try:
            topic = Topic.parse(item.topic)
        except TopicError:
            return
        if topic.type.value in _DATA and self._sessions.get(NodeKey(topic.group, topic.edge)) is not None:
            self._freeze(NodeKey(topic.group, topic.edge), reason, f"a {topic.type.value} was not stored ({reason})")

    def _handle(self, item: Inbound) -> None:
        self.received_messages += 1
        parts = item.topic.split("/")
        if len(parts) >= 3 and parts[1] == "STATE":
            return  # another host's STATE
        if len(parts) >= 3 and parts[2] in ("NCMD", "DCMD"):
            return  # commands (ours included) are not data
        if len(item.payload) > self._s.max_payload_bytes:
            metrics.MESSAGES.labels("oversize").inc()
            self._dead_letter(
                item, "oversize", f"payload of {len(item.payload)} bytes exceeds {self._s.max_payload_bytes}"
            )
            self._hold_acks_of(item, "oversize")
            return
        try:
            topic = Topic.parse(item.topic)
        except TopicError as exc:
            metrics.MESSAGES.labels("bad_topic").inc()
            self._dead_letter(item, "bad_topic", str(exc))
            return
        metrics.MESSAGES.labels(topic.type.value).inc()
        if self._s.allowed_sites is not None and topic.group not in self._s.allowed_sites:
            self._dead_letter(item, "unknown_group", f"group {topic.group!r} is not in the site allow-list")
            return
        key = NodeKey(topic.group, topic.edge)
        session = self._sessions.get(key)
        if (self._shared and (session is None or not session.born)
                and topic.type not in (MessageType.NBIRTH, MessageType.NDEATH)):  # fmt: skip
            session = self._adopt(key) or session
        dtypes = session.aliases.type_of if session is not None else None
        try:
            decoded = decode(item.payload, dtypes)
        except PayloadError as exc:
            self._dead_letter(item, "not_protobuf", str(exc))
            return
        mtype = topic.type
        if mtype is MessageType.NBIRTH:
            self._on_nbirth(item, key, decoded)
        elif mtype is MessageType.NDEATH:
            self._on_ndeath(item, key, decoded)
        elif session is None or not session.born:
            metrics.DROPPED.labels("no_birth").inc()
            self._dead_letter(item, "data_before_birth",
                              f"{mtype.value} from {key.site}/{key.edge}, which has no NBIRTH in this host's session")
            self._want_rebirth(key, "data_before_birth")
        elif mtype is MessageType.DBIRTH:
            assert topic.device is not None
            self._on_dbirth(item, session, topic.device, decoded)
        elif mtype is MessageType.DDEATH:
            assert topic.device is not None
            self._seq(session, decoded.seq)
            session.devices.discard(topic.device)
            when = decoded.timestamp_ms or item.received_ms
            self._db(registry.mark_device_dead, key.site, key.edge, topic.device, when)
            if session.generation is not None:
                self._db(shared.record_device_death, key, session.generation, topic.device)
            log.info("%s/%s/%s offline (DDEATH)", key.site, key.edge, topic.device)
        elif mtype is MessageType.DDATA and topic.device not in session.devices:
            # Not stored, so not acknowledged: acks of this node stop here until its rebirth (asked for now),
            # after which the edge replays this message with its device born.
            metrics.DROPPED.labels("no_birth").inc()
            detail = f"DDATA of device {topic.device!r} before its DBIRTH in this session"
            self._dead_letter(item, "data_before_birth", detail)
            self._freeze(key, "data_before_birth", detail)
        else:
            self._on_data(item, session, topic.device, decoded)

    def _birth_metrics(self, decoded: Decoded, payload: bytes) -> list[registry.MetricDef]:
        units = birth_units(payload)  # the `engUnit` property of each metric, where the birth gives one
        seen: dict[str, registry.MetricDef] = {}
        for i, name in enumerate(decoded.names):
            if name and not is_control_metric(name):
                seen[name] = registry.MetricDef(name, int(decoded.datatype[i]), units.get(name))
        return list(seen.values())

    def _on_nbirth(self, item: Inbound, key: NodeKey, decoded: Decoded) -> None:
        session = self._sessions.get_or_create(key)
        bd_seq = bdseq_of(decoded)
        defs = self._birth_metrics(decoded, item.payload)
        when = decoded.timestamp_ms or item.received_ms
        tags = self._db(registry.register_node_birth, key.site, key.edge, bd_seq, when, defs)
        session.reset_for_birth(bd_seq)
        session.node_tags = tags
        self._rebirth_wanted.pop(key, None)
        session.learn_birth(None, decoded, tags, role_of=_role)
        if self._shared:
            i = decoded.index_of(BATCH_METRIC)
            birth_batch = int(decoded.value[i]) if i is not None and not decoded.is_null[i] else None
            session.generation = self._db(shared.record_birth, key, bd_seq, when, birth_batch, item.payload, tags)
        if decoded.seq is not None:
            session.next_seq = (decoded.seq + 1) % 256
        log.info("%s/%s online (NBIRTH, bdSeq %s, %d metrics)", key.site, key.edge, bd_seq, len(defs))
        self._store(item, session, None, decoded, birth=True)

    def _on_dbirth(self, item: Inbound, session: NodeSession, device: str, decoded: Decoded) -> None:
        key = session.key
        self._seq(session, decoded.seq)
        defs = self._birth_metrics(decoded, item.payload)
        line = decoded.index_of(LINE_PROPERTY)
        line_id = decoded.text.get(line, key.edge) if line is not None else key.edge
        when = decoded.timestamp_ms or item.received_ms
        machine, tags = self._db(registry.register_device_birth, key.site, key.edge, device, line_id, when, defs)
        session.learn_birth(device, decoded, tags, role_of=_role)
        session.devices.add(device)
        if session.generation is not None:
            self._db(shared.record_device, key, session.generation, device, item.payload, tags)
        log.info("%s/%s/%s online (DBIRTH, %d metrics)%s", key.site, key.edge, device, len(defs),
                 "" if machine == device else f" as machine {machine}")
        self._store(item, session, device, decoded, birth=True)

    def _on_ndeath(self, item: Inbound, key: NodeKey, decoded: Decoded) -> None:
        session = self._sessions.get(key)
        bd_seq = bdseq_of(decoded)
        if session is None or not session.online or session.bd_seq != bd_seq:
            log.info("%s/%s: stale NDEATH (bdSeq %s, session %s) ignored", key.site, key.edge, bd_seq,
                     session.bd_seq if session else None)
            return
        session.online = False
        session.born = False
        session.devices.clear()
        session.missing.clear()
        # The host's receive time, as the spec asks for NDEATH.
        self._db(registry.mark_node_dead, key.site, key.edge, item.received_ms)
        if session.generation is not None:
            self._db(shared.record_death, key, session.generation)
        log.info("%s/%s offline (NDEATH, bdSeq %s)", key.site, key.edge, bd_seq)

    def _on_data(self, item: Inbound, session: NodeSession, device: str | None, decoded: Decoded) -> None:
        self._seq(session, decoded.seq)
        self._store(item, session, device, decoded)

    def _store(
        self, item: Inbound, session: NodeSession, device: str | None, decoded: Decoded, *, birth: bool = False
    ) -> None:
        verdict = sort_samples(
            decoded,
            session,
            device,
            now_ms=item.received_ms,
            max_future_ms=int(self._s.max_future_s * 1000),
            allow_nan=self._s.allow_nan,
        )
        batch = self._batch
        for reason, detail in verdict.rejected.items():
            if reason == "unknown_alias":
                # Not stored and not acknowledged: the edge keeps these samples and replays them after the
                # rebirth this asks for, when their aliases are known.
                self._dead_letter(item, reason, detail)
                self._freeze(session.key, "unknown_alias", detail)
            else:
                self._note_held(session.key, reason, detail)
        if verdict.held is not None:
            # Refused samples of known tags are kept whole in quarantine, in the same transaction as the rest
            # of the batch, so the ack after its commit never releases anything the cloud does not keep.
            batch.held.append((item.received_ms, verdict.held))
            for code, count in zip(*np.unique(verdict.held.reason, return_counts=True), strict=True):
                metrics.QUARANTINED.labels(QUARANTINE_REASONS[int(code)]).inc(int(count))
        if birth:
            batch.add_birth_values(verdict.tag, verdict.ts_ms, verdict.value, verdict.null, verdict.quality)
        else:
            batch.add(verdict.tag, verdict.ts_ms, verdict.value, verdict.null, verdict.quality, verdict.live)
            batch.text_rows.extend(verdict.text_rows)
            batch.exact_rows.extend(verdict.exact_rows)
        self.received_samples += verdict.total
        metrics.SAMPLES_RECEIVED.inc(verdict.total)
        key = session.key
        batch.touched.add(key)
        batch.sessions[key] = session.bd_seq
        if verdict.batch_id is not None and not birth and not session.see_batch(verdict.batch_id):
            # A birth reports the node's current batch counter, not a new batch: it closes nothing.
            self._freeze(key, "batch_order", f"batch id {verdict.batch_id} after {session.last_batch_seen}")
        if (self._shared and not birth and verdict.batch_id is not None and session.generation is not None
                and session.frozen is None):  # fmt: skip
            # This message is kept whole (stored or quarantined) by this batch: its id goes into the ack ledger
            # in the same transaction. A message not kept whole (unknown alias) froze the session above.
            batch.ledger.setdefault((key, session.generation), []).append(verdict.batch_id)
        health = batch.health.get(key)
        if health is None:
            health = batch.health[key] = NodeHealth(item.received_ms)
        health.last_seen_ms = max(health.last_seen_ms, item.received_ms)
        if verdict.batch_id is not None:
            health.last_batch = verdict.batch_id
        for name, value in verdict.health.items():
            setattr(health, name, value)
