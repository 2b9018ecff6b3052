"""The DB writers: COPY a batch into staging, one INSERT .. ON CONFLICT DO NOTHING, commit, then ack.

They run apart from paho's network thread and the processor, so neither ever waits on the database.
A database outage makes it retry the same batch with backoff; nothing is acknowledged meanwhile, and
the bounded queue in front of it pushes back on the processor.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool

from zhizao.broker.extensions import Ack
from zhizao.cloud.host import shared
from zhizao.cloud.host.session import NodeKey
from zhizao.cloud.ingest import metrics
from zhizao.cloud.ingest.batch import Batch
from zhizao.cloud.ingest.decode import QUARANTINE_REASONS
from zhizao.cloud.ingest.owners import write_feed
from zhizao.cloud.storage import plain
from zhizao.cloud.storage.db import StorageError, StorageUnavailable, translate_errors

log = logging.getLogger(__name__)

_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS zhizao_stage"
    " (ts timestamptz NOT NULL, tag_id integer NOT NULL, value double precision, quality smallint NOT NULL,"
    " live boolean NOT NULL) ON COMMIT DELETE ROWS"
)
_STAGE_TEXT_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS zhizao_stage_text"
    " (ts timestamptz NOT NULL, tag_id integer NOT NULL, value text, quality smallint NOT NULL,"
    " live boolean NOT NULL) ON COMMIT DELETE ROWS"
)

_STAGE_INT_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS zhizao_stage_int"
    " (ts timestamptz NOT NULL, tag_id integer NOT NULL, value numeric(20, 0) NOT NULL, quality smallint NOT NULL,"
    " live boolean NOT NULL) ON COMMIT DELETE ROWS"
)

_PLAIN_INSERT = (
    "INSERT INTO samples (ts, tag_id, value, quality) SELECT ts, tag_id, value, quality FROM zhizao_stage"
)
_NUMERIC_INSERT = (
    "INSERT INTO samples (ts, tag_id, value, quality) SELECT ts, tag_id, value, quality FROM zhizao_stage"
    " ON CONFLICT (tag_id, ts) DO NOTHING"
)

_ROLLUP_INSERT = (
    "WITH ins AS (INSERT INTO samples (ts, tag_id, value, quality) SELECT ts, tag_id, value, quality"
    " FROM zhizao_stage ON CONFLICT (tag_id, ts) DO NOTHING RETURNING ts, tag_id, value)"
    + plain.merge_returning_ctes("ins")
    + " SELECT count(*) FROM ins"
)

# Newest live value per tag, computed in numpy (one row per tag, not per sample).
_LATEST_UPSERT = """INSERT INTO latest_values AS l (tag_id, ts, value, text_value, quality)
SELECT t, 'epoch'::timestamptz + ms * interval '1 millisecond', v, NULL, q
FROM unnest(%s::integer[], %s::bigint[], %s::double precision[], %s::smallint[]) AS x(t, ms, v, q)
ON CONFLICT (tag_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, text_value = NULL, int_value = NULL,
    quality = excluded.quality
WHERE excluded.ts > l.ts"""

# Exact 64-bit integers: their own table at the same (tag, ts) as their float64 row in samples, and the exact
# value on "latest" when the latest sample (just upserted from the numeric rows) is one of them.
_INT_INSERT = """WITH ins AS (INSERT INTO samples_int (ts, tag_id, value, quality)
    SELECT ts, tag_id, value, quality FROM zhizao_stage_int ON CONFLICT (tag_id, ts) DO NOTHING RETURNING 1)
, latest AS (
    UPDATE latest_values AS l SET int_value = x.value
    FROM (SELECT DISTINCT ON (tag_id) tag_id, ts, value FROM zhizao_stage_int WHERE live ORDER BY tag_id, ts DESC) AS x
    WHERE l.tag_id = x.tag_id AND l.ts = x.ts
)
SELECT count(*) FROM ins"""

_TEXT_INSERT = """WITH ins AS (INSERT INTO samples_text (ts, tag_id, value, quality)
    SELECT ts, tag_id, value, quality FROM zhizao_stage_text ON CONFLICT (tag_id, ts) DO NOTHING RETURNING 1)
, latest AS (
    INSERT INTO latest_values AS l (tag_id, ts, value, text_value, quality)
    SELECT DISTINCT ON (tag_id) tag_id, ts, NULL, value, quality FROM zhizao_stage_text WHERE live
    ORDER BY tag_id, ts DESC
    ON CONFLICT (tag_id) DO UPDATE SET ts = excluded.ts, value = NULL, text_value = excluded.text_value,
        int_value = NULL, quality = excluded.quality
    WHERE excluded.ts > l.ts
)
SELECT count(*) FROM ins"""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _write_held(conn: psycopg.Connection[tuple[object, ...]], batch: Batch) -> None:
    """Refused samples of known tags into `quarantine`, whole, in the batch's transaction (so the ack that
    follows the commit covers them: the edge may delete them because the cloud keeps them)."""
    with conn.cursor() as cur, cur.copy(
        "COPY quarantine (received_at, tag_id, ts_ms, value, text_value, quality, live, reason) FROM STDIN"
    ) as cp:
        for received_ms, h in batch.held:
            received, c = _dt(received_ms), h.samples
            for i in range(len(c.tag)):
                value = None if c.null[i] or h.text[i] is not None else float(c.value[i])
                cp.write_row((received, int(c.tag[i]), int(c.ts_ms[i]), value, h.text[i], int(c.quality[i]),
                              bool(c.live[i]), QUARANTINE_REASONS[int(h.reason[i])]))  # fmt: skip


def _insert_numeric(
    conn: psycopg.Connection[tuple[object, ...]],
    cur: psycopg.Cursor[tuple[object, ...]],
    batch: Batch,
    *,
    optimistic: bool,
    rollups: bool,
) -> int:
    """Staged rows -> samples (and, on plain PostgreSQL, their rollups); returns the rows inserted.

    Live data almost never conflicts, and a plain INSERT costs about 60 % of INSERT .. ON CONFLICT (no
    speculative insertion per row). So a live-only batch first tries the plain INSERT under a savepoint:
    if it succeeds every staged row was inserted, and the rollups merge aggregates computed in numpy.
    Any unique violation (a replay, another writer) rolls it back; then INSERT .. ON CONFLICT DO NOTHING
    RETURNING feeds the rollup merge with exactly the rows it inserted. Either way the unique (tag_id, ts)
    constraint is what guarantees exactly-once storage.
    """
    if optimistic and bool(batch.columns().live.all()):
        try:
            with conn.transaction():
                cur.execute(_PLAIN_INSERT)
                inserted = max(0, cur.rowcount)
                if rollups:
                    c = batch.columns()
                    plain.merge_aggregates(
                        cur,
                        {table: plain.aggregate(c.tag, c.ts_ms, c.value, c.null, width)
                         for table, (_, width) in plain.ROLLUPS.items()},
                    )
            return inserted
        except psycopg.errors.UniqueViolation:
            pass
    if rollups:
        row = cur.execute(_ROLLUP_INSERT).fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]
    cur.execute(_NUMERIC_INSERT)
    return max(0, cur.rowcount)


def write_batch(
    conn: psycopg.Connection[tuple[object, ...]], batch: Batch, *, rollups: bool, optimistic: bool = True,
    site_feed: bool = False,
) -> int:
    """Write one batch in one transaction on `conn`; returns the number of samples newly stored.

    With a shared subscription the batch's message ids go into the ack ledger in the same transaction, and
    `batch.acks` is set (after the commit) to the watermarks the ledger gives."""
    stored = 0
    acks = dict(batch.acks)
    with conn.transaction():
        if batch.samples:
            conn.execute(_STAGE_DDL)
            with conn.cursor() as cur:
                with cur.copy("COPY zhizao_stage (ts, tag_id, value, quality, live) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(batch.numeric_copy_data())
                stored += _insert_numeric(conn, cur, batch, optimistic=optimistic, rollups=rollups)
            if site_feed:  # several workers: the site's owner computes OEE and detection from every worker's commits
                c = batch.columns()
                write_feed(conn, c.tag[~c.null], c.ts_ms[~c.null], c.value[~c.null])
        if batch.samples or batch.births:
            latest = batch.latest()
            if len(latest.tag):
                values = [None if n else v for v, n in zip(latest.value.tolist(), latest.null.tolist(), strict=True)]
                conn.execute(
                    _LATEST_UPSERT, [latest.tag.tolist(), latest.ts_ms.tolist(), values, latest.quality.tolist()]
                )
        if batch.exact_rows:  # their samples rows (nearest float64) are counted as stored above
            conn.execute(_STAGE_INT_DDL)
            with conn.cursor() as cur:
                with cur.copy("COPY zhizao_stage_int (ts, tag_id, value, quality, live) FROM STDIN") as cp:
                    for ts_ms, tag, exact, quality, live in batch.exact_rows:
                        cp.write_row((_dt(ts_ms), tag, exact, quality, live))
                cur.execute(_INT_INSERT)
        if batch.held:
            _write_held(conn, batch)
        if batch.text_rows:
            conn.execute(_STAGE_TEXT_DDL)
            with conn.cursor() as cur:
                with cur.copy("COPY zhizao_stage_text (ts, tag_id, value, quality, live) FROM STDIN") as cp:
                    for ts_ms, tag, text, quality, live in batch.text_rows:
                        cp.write_row((_dt(ts_ms), tag, text, quality, live))
                row = cur.execute(_TEXT_INSERT).fetchone()
                stored += int(row[0]) if row else 0  # type: ignore[call-overload]
        if batch.dead_letters:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dead_letters (received_at, topic, reason, detail, payload)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [(_dt(d.received_ms), d.topic, d.reason, d.detail, d.payload) for d in batch.dead_letters],
                )
        for (key, generation), batch_ids in sorted(batch.ledger.items()):
            watermark = shared.commit_batches(conn, key, generation, batch_ids)
            if watermark is not None:
                acks[key] = Ack(*watermark)
        if batch.health or acks:
            keys = sorted(set(batch.health) | set(acks))
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE edge_nodes SET last_seen = greatest(last_seen, coalesce(%s, last_seen)),"
                    " outbox_depth = coalesce(%s, outbox_depth), samples_per_s = coalesce(%s, samples_per_s),"
                    " reconnects = coalesce(%s, reconnects), last_batch = coalesce(%s, last_batch),"
                    " acked_batch = coalesce(%s, acked_batch) WHERE site_id = %s AND edge_node_id = %s",
                    [_health_row(batch, acks, k) for k in keys],
                )
    batch.acks = acks
    return stored


def _health_row(batch: Batch, acks: dict[NodeKey, Ack], key: NodeKey) -> tuple[object, ...]:
    h = batch.health.get(key)
    return (
        _dt(h.last_seen_ms) if h else None,
        int(h.outbox_depth) if h and h.outbox_depth is not None else None,
        h.samples_per_s if h else None,
        int(h.reconnects) if h and h.reconnects is not None else None,
        h.last_batch if h else None,
        acks[key].batch if key in acks else None,
        key.site,
        key.edge,
    )


AckSink = Callable[[NodeKey, Ack], None]
# fn(tag_ids: i32[n], ts_ms: i64[n], value: f64[n]) after a batch's commit (see IngestService.add_commit_listener).
CommitListener = Callable[[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]], None]


class DbWriter:
    """Writer threads committing batches (several at once), acknowledging strictly in submission order.

    Batch k's acks and rollup notice are released only when batches 1..k are all committed, so an ack
    never covers data still in flight on another connection.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        on_committed: AckSink,
        rollups: bool,
        on_refused: Callable[[list[NodeKey]], None] | None = None,
        commit_listeners: list[CommitListener] | None = None,
        depth: int = 2,
        writers: int = 2,
        optimistic: bool = True,
        site_feed: bool = False,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._rollups = rollups
        self._optimistic = optimistic
        self._site_feed = site_feed
        self._on_committed = on_committed
        self._on_refused = on_refused
        # Edge sessions (node, bdSeq) with data in a batch the database refused: their acks are never sent,
        # since a later ack would cover the lost data; the node's next session (after a rebirth) acks again.
        self._poisoned: set[tuple[NodeKey, int | None]] = set()
        self._stopping = False
        self._listeners = commit_listeners if commit_listeners is not None else []
        self._queue: queue.Queue[tuple[int, Batch] | None] = queue.Queue(maxsize=depth)
        self._retry = (retry_initial_s, retry_max_s)
        self._abort = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"zhizao-db-writer-{i}", daemon=True) for i in range(writers)
        ]
        self._submitted = 0
        self._release_lock = threading.Lock()
        self._finished: dict[int, Batch] = {}
        self._next_release = 0
        self.committed_batches = 0
        self.stored_samples = 0
        self.db_down_since: float | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the writer threads."""
        for t in self._threads:
            t.start()

    def submit(self, batch: Batch, timeout: float | None = None) -> bool:
        """Queue a batch (blocks while the writers are behind: that is the back-pressure); False on timeout.

        Called from one thread only (the processor): submission order is ack order.
        """
        try:
            self._queue.put((self._submitted, batch), timeout=timeout)
        except queue.Full:
            return False
        self._submitted += 1
        return True

    def backlog(self) -> int:
        """Batches waiting for a writer."""
        return self._queue.qsize()

    def stop(self, timeout: float) -> bool:
        """Finish queued batches within `timeout` (then give up: unacked data is replayed by the edge)."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                self._abort.set()
                break
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self._abort.set()
            for t in self._threads:
                t.join(5)
            return False
        return True

    def alive(self) -> bool:
        """True while every writer thread runs (or they have not been started, or are stopping)."""
        return self._stopping or all(t.ident is None or t.is_alive() for t in self._threads)

    def restart_dead(self) -> int:
        """Start a new thread for every writer thread that ended unexpectedly; returns how many."""
        if self._stopping:
            return 0
        restarted = 0
        for i, t in enumerate(self._threads):
            if t.ident is not None and not t.is_alive():
                log.error("database writer thread %s had ended; starting a new one", t.name)
                self._threads[i] = threading.Thread(target=self._run, name=t.name, daemon=True)
                self._threads[i].start()
                restarted += 1
        return restarted

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            number, batch = item
            try:
                if not self._write_with_retry(batch):
                    return
            except Exception as exc:  # a bug met on one batch: refuse it (acks held), keep writing the rest
                log.exception("database writer failed on a batch of %d samples", batch.samples)
                self._refuse(batch, f"{type(exc).__name__}: {exc}")
            self._release(number, batch)

    def _refuse(self, batch: Batch, why: str) -> None:
        """Nothing of `batch` is stored: its sessions are poisoned and its nodes asked to rebirth and replay."""
        self.last_error = why
        with self._release_lock:
            self._poisoned.update(batch.sessions.items())
        batch.acks.clear()
        batch.samples = 0  # nothing of it was stored: commit listeners must not see it
        if self._on_refused is not None and batch.sessions:
            try:
                self._on_refused(list(batch.sessions))
            except Exception:
                log.exception("could not report a refused batch")

    def _release(self, number: int, batch: Batch) -> None:
        with self._release_lock:
            self._finished[number] = batch
            while self._next_release in self._finished:
                done = self._finished.pop(self._next_release)
                self._next_release += 1
                for key, ack in done.acks.items():
                    # Ledger acks (shared subscription) never pass a batch that was not committed: no poisoning.
                    if not done.ledger and (key, ack.bd_seq) in self._poisoned:
                        continue
                    try:
                        self._on_committed(key, ack)
                    except Exception:  # one node's bad ack must not stop the acks of every other node
                        log.exception("could not acknowledge batch %d of %s/%s", ack.batch, key.site, key.edge)
                if self._listeners and done.samples:
                    self._notify(done)

    def _notify(self, batch: Batch) -> None:
        """Hand the committed numeric samples to the commit listeners (in commit-release order)."""
        c = batch.columns()
        keep = ~c.null
        tag, ts, value = c.tag[keep], c.ts_ms[keep], c.value[keep]
        for fn in list(self._listeners):
            try:
                fn(tag, ts, value)
            except Exception:  # a listener's bug must never stop storage or acks
                log.exception("commit listener %r failed", fn)

    def _write_with_retry(self, batch: Batch) -> bool:
        delay = self._retry[0]
        while not self._abort.is_set():
            started = time.monotonic()
            try:
                with translate_errors(), self._pool.connection() as conn:
                    stored = write_batch(conn, batch, rollups=self._rollups, optimistic=self._optimistic,
                                         site_feed=self._site_feed)
            except StorageUnavailable as exc:
                metrics.DB_ERRORS.labels("unavailable").inc()
                if self.db_down_since is None:
                    self.db_down_since = time.monotonic()
                    log.warning("database unavailable, holding acks and retrying: %s", exc)
                self.last_error = str(exc)
                self._abort.wait(delay)
                delay = min(delay * 2, self._retry[1])
                continue
            except StorageError as exc:
                # Not a connectivity problem; retrying the same batch would loop. Keep the stream going
                # without acking it or anything after it in the same edge sessions: the edge still holds these
                # samples and replays them after the rebirth this asks for.
                metrics.DB_ERRORS.labels("permanent").inc()
                log.error("batch of %d samples refused by the database, not acked: %s", batch.samples, exc)
                self._refuse(batch, str(exc))
                return True
            if self.db_down_since is not None:
                log.warning("database back after %.1f s", time.monotonic() - self.db_down_since)
                self.db_down_since = None
            metrics.BATCH_SECONDS.observe(time.monotonic() - started)
            metrics.BATCHES.inc()
            metrics.SAMPLES_STORED.inc(stored)
            with self._release_lock:
                self.committed_batches += 1
                self.stored_samples += stored
            return True
        return False
