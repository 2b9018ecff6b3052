"""`MonitoringService`: anomaly scores and alarms from committed samples, in its own worker thread.

The ingest calls `on_committed(tag_ids, ts_ms, value)` after each commit (it only queues the arrays). The worker
scores every process signal in one detector call per detector spec (`detection.DetectorBank`), runs the alarm
conditions (anomaly level, threshold, rate of change, failure duration, microstops per hour) with their on/off
delays (`conditions.Conditions`), and applies what they raise or clear to the alarm points (`alarms.AlarmEngine`).
Scores, detector states, condition states, alarm rows, their history and the webhook outbox of one batch are
written in one transaction; live events go out after it committed. A restart therefore resumes exactly: the
detector states continue where the last committed batch left them, and samples committed by the ingest but
not yet processed are read back from `samples` (every tag from its newest scored time on).

Every `check_every_s` (wall time) it also checks edge nodes and machines for being offline and process values
for being stale, and expires shelving.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numba
import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg.types.json import Jsonb

from zhizao.broker.contract.states import Category, category_of
from zhizao.cloud.live import LiveHub
from zhizao.cloud.monitoring import alarms as al
from zhizao.cloud.monitoring.conditions import Conditions
from zhizao.cloud.monitoring.copy import HEADER as COPY_HEADER
from zhizao.cloud.monitoring.copy import SCORE_STAGE_DDL, STATE_STAGE_DDL, scores_copy, states_copy
from zhizao.cloud.monitoring.copy import TRAILER as COPY_TRAILER
from zhizao.cloud.monitoring.detection import NEVER, DetectorBank, Scores, sort_unique
from zhizao.cloud.monitoring.rules import (
    RULE_COLUMNS,
    Rule,
    RuleSet,
    TagRef,
    is_process_signal,
    rule_from_row,
    seed_rules,
)
from zhizao.cloud.storage.db import StorageError, make_pool, translate_errors

log = logging.getLogger(__name__)

__all__ = ["MonitoringService"]

_Batch = tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64]]
HOUR_MS = 3_600_000
_CATCH_UP_LIMIT = 200_000  # samples read back per query while catching up


@dataclass(frozen=True)
class StateTag:
    """A machine's State tag."""

    tag_id: int
    site: str
    line: str
    machine: str
    kind: str | None


UNKNOWN, OTHER, PROCESS, STATE = -1, 0, 1, 2  # tag kinds


class TagArrays:
    """What the service knows of each tag, in dense arrays indexed by tag id: a batch looks its samples up by
    indexing with its tag array, with no Python step per tag or sample."""

    def __init__(self) -> None:
        self.kind = np.full(0, UNKNOWN, np.int8)  # UNKNOWN (not looked up yet), OTHER, PROCESS, STATE
        self.on = np.zeros(0)  # anomaly alarm level of a process signal's score
        self.off = np.zeros(0)  # and its clear level
        self.on_delay = np.zeros(0, np.int64)  # ms
        self.off_delay = np.zeros(0, np.int64)
        self.condition = np.full(0, -1, np.int64)  # index of its `anomaly:TAG` condition (-1: none yet)
        self.only_running = np.zeros(0, np.bool_)
        self.settle = np.zeros(0, np.int64)  # ms
        self.machine = np.full(0, -1, np.int64)  # index into `machines` (-1: no machine)
        self.site = np.full(0, -1, np.int64)  # index into `sites`
        self.machines: list[tuple[str, str]] = []
        self.sites: list[str] = []
        self._machine_ix: dict[tuple[str, str], int] = {}
        self._site_ix: dict[str, int] = {}

    def fit(self, tag_ids: NDArray[Any]) -> None:
        """Grow the arrays to hold every tag id of `tag_ids`."""
        top = int(tag_ids.max()) + 1 if tag_ids.size else 0
        n = self.kind.size
        if top <= n:
            return
        size = max(top, 2 * n, 1024)
        for name, fill in (("kind", UNKNOWN), ("on", np.inf), ("off", np.inf), ("on_delay", 0), ("off_delay", 0),
                           ("condition", -1), ("only_running", False), ("settle", 0), ("machine", -1), ("site", -1)):
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.full(size - n, fill, a.dtype)]))

    def kinds(self, tag_ids: NDArray[Any]) -> NDArray[np.int8]:
        """Kind of each tag id (UNKNOWN beyond the arrays)."""
        self.fit(tag_ids)
        out: NDArray[np.int8] = self.kind[tag_ids]
        return out

    def place(self, tag_id: int, site: str, machine: str) -> None:
        """Record a tag's site and machine (the arrays hold `tag_id` already)."""
        m = self._machine_ix.setdefault((site, machine), len(self.machines))
        if m == len(self.machines):
            self.machines.append((site, machine))
        si = self._site_ix.setdefault(site, len(self.sites))
        if si == len(self.sites):
            self.sites.append(site)
        self.machine[tag_id], self.site[tag_id] = m, si


class Done(threading.Event):
    """Set when a request was handled; `ok` says whether it succeeded."""

    ok = False


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _runs(code: int) -> bool:
    """The state code means producing (running, or running slower)."""
    return category_of(code) in (Category.RUNNING, Category.REDUCED_SPEED)


class MonitoringService:
    """Detector states, alarm conditions and alarm points, kept up to date from committed samples."""

    def __init__(self, conninfo: str, live: LiveHub | None = None, *, check_every_s: float = 5.0,
                 max_queued_batches: int = 10_000, webhooks: bool = True, first_catch_up_s: float = 86_400.0,
                 owns: Callable[[str], bool] | None = None) -> None:
        self.conninfo = conninfo
        # Several ingest workers: the sites whose wall-time checks and catch-up run here (one owner per site,
        # cloud/ingest/owners.py); None: every site.
        self.owns = owns if owns is not None else (lambda site: True)
        self._resync = threading.Event()
        self._resync_marker: _Batch = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0))
        # A tag never scored before (a first start on a database with history) is caught up from this far back
        # only, not over its whole history.
        self.first_catch_up_ms = int(first_catch_up_s * 1000)
        self.live = live
        self.check_every_s = check_every_s
        self._queue: queue.Queue[_Batch] = queue.Queue(max_queued_batches)
        self._requests: queue.Queue[tuple[str, Done]] = queue.Queue()
        self._held: list[tuple[str, Done]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self.bank = DetectorBank()
        self.conditions = Conditions()
        self.engine = al.AlarmEngine()
        self.rules = RuleSet([])
        self._tags: dict[int, TagRef | StateTag | None] = {}
        self._arrays = TagArrays()
        self._state_tags: dict[int, StateTag] = {}
        self._resolved: dict[int | None, tuple[str, float, float]] = {}  # detector rule id -> spec key, on, off
        self._levels: dict[int, tuple[float, float, int, int, str, int | None]] = {}  # tag -> on, off, delays, prio, rule
        self._machine_state: dict[tuple[str, str], tuple[int, int]] = {}  # (site, machine) -> (code, since ms)
        self._microstops: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        self._staged: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[str]] = weakref.WeakKeyDictionary()
        self._lost = False
        self._db_down = False
        self.webhooks = None
        if webhooks:
            from zhizao.cloud.monitoring.webhooks import WebhookSender

            self.webhooks = WebhookSender(conninfo)
        self.batches = 0
        self.samples = 0
        self.scored = 0
        self.dropped_batches = 0
        self.busy_s = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, load rules, tags and states, catch up on what was committed meanwhile, start the worker."""
        if self._thread is not None:
            return
        self._pool = make_pool(self.conninfo, min_size=1, max_size=2, name="zhizao-monitoring")
        self._thread = threading.Thread(target=self._run, name="zhizao-monitoring", daemon=True)
        self._thread.start()
        if self.webhooks is not None:
            self.webhooks.start()
        log.info("monitoring service started")

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued work (within `timeout`) and close; idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        if self.webhooks is not None:
            self.webhooks.stop()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        log.info("monitoring service stopped")

    # -- inputs ------------------------------------------------------------------------------------------

    def on_committed(self, tag_ids: NDArray[np.int32], ts_ms: NDArray[np.int64], value: NDArray[np.float64]) -> None:
        """Committed numeric samples; called from the ingest's writer thread, never blocks."""
        if not len(tag_ids):
            return
        try:
            self._queue.put_nowait((np.asarray(tag_ids, np.int32), np.asarray(ts_ms, np.int64),
                                    np.asarray(value, np.float64)))
        except queue.Full:
            self.dropped_batches += 1
            self._lost = True  # caught up from the database (every tag from its newest scored time)

    def resync(self, site: str = "") -> None:
        """Reload states from the database before the samples committed after this call (this worker took a site
        over: another one computed meanwhile); any thread, never blocks."""
        try:
            self._queue.put_nowait(self._resync_marker)  # in line with the batches: those before it, then reload
        except queue.Full:
            self._resync.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is processed and committed (tests, benchmarks)."""
        return self._request("flush", timeout)

    def reload_rules(self, timeout: float = 30.0) -> bool:
        """Re-read the rules (after an edit through the API) and wait until they apply."""
        return self._request("rules", timeout)

    def check_now(self, timeout: float = 30.0) -> bool:
        """Run the offline/stale/shelving checks now and wait for them."""
        return self._request("check", timeout)

    def _request(self, kind: str, timeout: float) -> bool:
        if self._thread is None:
            return False
        done = Done()
        self._requests.put((kind, done))
        return done.wait(timeout) and done.ok

    # -- worker ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        # Kernels run on this thread alone: the fleet is already one call per spec, and a parallel region's
        # workers (OpenMP) spin after it, costing the ingest host several times the kernel's own CPU
        # (`zhizao bench monitor`'s ingest comparison). numba's thread count is per calling thread.
        numba.set_num_threads(1)
        loaded = False
        last_check = 0.0
        while True:
            stopping = self._stop.is_set()
            requests: list[tuple[str, Done]] = []
            ok = False
            try:
                if self._resync.is_set():
                    self._resync.clear()
                    loaded = False
                if not loaded:
                    self._load()
                    loaded = True
                batches = self._drain()
                requests = self._drain_requests()
                if not self._queue.empty() or self._resync.is_set():
                    # a flush waits for every batch queued before it (the site feed deletes on it), also beyond
                    # one drain or a resync marker: held until the queue is empty
                    self._held += [r for r in requests if r[0] == "flush"]
                    requests = [r for r in requests if r[0] != "flush"]
                else:
                    requests, self._held = self._held + requests, []
                if self._lost:
                    self._lost = False
                    self._catch_up()
                if batches:
                    started = time.thread_time()
                    tag = np.concatenate([b[0] for b in batches])
                    ts = np.concatenate([b[1] for b in batches])
                    val = np.concatenate([b[2] for b in batches])
                    self._process(tag, ts, val)
                    self.busy_s += time.thread_time() - started
                kinds = {k for k, _ in requests}
                if "rules" in kinds:
                    self._reload_rules()
                if "check" in kinds or time.monotonic() - last_check >= self.check_every_s:
                    last_check = time.monotonic()
                    self._check()
                ok = True
                if self._db_down:
                    log.warning("monitoring: database back")
                    self._db_down = False
            except StorageError as exc:
                if not self._db_down:
                    log.warning("monitoring: database unavailable, will retry: %s", exc)
                    self._db_down = True
                loaded = False  # reload states and catch up from what was committed
                self._lost = True
                self._stop.wait(1.0)
            except Exception:  # one bad batch must not end monitoring for the fleet
                log.exception("monitoring: batch failed; states reloaded from the database")
                loaded = False
                self._lost = True
                self._stop.wait(1.0)
            finally:
                for _, done in requests:
                    done.ok = ok
                    done.set()
            if stopping and self._queue.empty() and self._requests.empty():
                return

    def _drain(self, max_batches: int = 200) -> list[_Batch]:
        out: list[_Batch] = []
        try:
            item = self._queue.get(timeout=0.05)
            while True:
                if item is self._resync_marker:
                    self._resync.set()  # the batches before it first, then the reload (top of the loop)
                    break
                out.append(item)
                if len(out) >= max_batches:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return out

    def _drain_requests(self) -> list[tuple[str, Done]]:
        out = []
        while True:
            try:
                out.append(self._requests.get_nowait())
            except queue.Empty:
                return out

    # -- loading -----------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Rules (seeded into an empty table), tags, detector and condition states from the database."""
        self.bank = DetectorBank()
        self.conditions = Conditions()
        self._tags.clear()
        self._arrays = TagArrays()
        self._state_tags.clear()
        self._resolved.clear()
        self._levels.clear()
        self._machine_state.clear()
        self._microstops.clear()
        self._staged.clear()  # after a failed transaction a staging table may be gone with it
        with translate_errors(), self._pool.connection() as conn:
            if conn.execute("SELECT count(*) FROM monitoring_rules").fetchone()[0] == 0:
                for r in seed_rules():
                    conn.execute(
                        "INSERT INTO monitoring_rules (rule_type, site_id, machine_kind, machine_id, tag_name, params,"
                        " priority, enabled, source, updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'seeds', 'seeds')",
                        [r.rule_type, r.site, r.machine_kind, r.machine, r.tag, Jsonb(r.params),
                         r.priority, r.enabled])
            self.rules = RuleSet(self._read_rules(conn))
            self._lookup(conn, None)
            stored = conn.execute("SELECT tag_id, spec_key, state, last_ts_ms, samples FROM detector_state").fetchall()
            for tag_id, spec_key, state, last_ts, samples in stored:
                ref = self._tags.get(int(tag_id))
                if isinstance(ref, TagRef):
                    params, *_ = self.rules.detector_for(ref)
                    arr = np.frombuffer(bytes(state), np.float64).copy() if params.spec_key() == spec_key else None
                    self.bank.unassign(int(tag_id))
                    # a changed spec keeps the resume point (no re-scoring of history) but starts a fresh state
                    self.bank.assign(int(tag_id), params, arr, int(last_ts), int(samples) if arr is not None else 0)
            for key, active, on_s, off_s, last_ts, last_value in conn.execute(
                    "SELECT key, active, on_since, off_since, last_ts_ms, last_value FROM condition_state").fetchall():
                self.conditions.restore(str(key), bool(active), on_s, off_s, last_ts, last_value)
                if str(key).startswith("state:"):
                    site, machine = str(key)[6:].split("/", 1)
                    if last_ts is not None and last_value is not None:
                        self._machine_state[(site, machine)] = (int(last_value), int(last_ts))
            self._load_microstops(conn)
            for site, horizon in conn.execute(
                    "SELECT site_id, extract(epoch FROM max(greatest(raised_ts, cleared_ts))) * 1000 FROM alarms"
                    " GROUP BY site_id").fetchall():
                if horizon is not None:
                    self.engine.horizon[str(site)] = int(horizon)
        self.conditions.touched.clear()
        self._catch_up()

    def _read_rules(self, conn: psycopg.Connection[Any]) -> list[Rule]:
        rows = conn.execute(f"SELECT {RULE_COLUMNS} FROM monitoring_rules ORDER BY id").fetchall()
        return [r for r in (rule_from_row(tuple(x)) for x in rows) if r is not None]

    def _lookup(self, conn: psycopg.Connection[Any], tag_ids: list[int] | None) -> None:
        """Learn tags (all when None): process signals get their detector, State tags their machine."""
        sql = ("SELECT t.tag_id, t.site_id, coalesce(m.line_id, t.edge_node_id), t.machine_id, m.kind, t.name,"
               " t.datatype, t.unit FROM tags t LEFT JOIN machines m ON m.site_id = t.site_id"
               " AND m.machine_id = t.machine_id")
        rows = (conn.execute(sql + " WHERE t.tag_id = ANY(%s)", [tag_ids]) if tag_ids is not None
                else conn.execute(sql)).fetchall()
        arrays = self._arrays
        arrays.fit(np.array([int(r[0]) for r in rows] + (tag_ids or []), np.int64))
        if tag_ids is not None:
            for t in tag_ids:
                if t not in self._tags:
                    self._tags[t] = None
                    arrays.kind[t] = OTHER
        for tag_id, site, line, machine, kind, name, datatype, unit in rows:
            tid = int(tag_id)
            arrays.kind[tid] = OTHER
            if machine is None:
                self._tags[tid] = None
            elif name == "State":
                self._tags[tid] = self._state_tags[tid] = StateTag(tid, site, line, machine, kind)
                arrays.kind[tid] = STATE
                arrays.place(tid, site, machine)
            elif is_process_signal(str(name), int(datatype)):
                ref = TagRef(tid, site, line, machine, kind, str(name), unit)
                self._tags[tid] = ref
                arrays.kind[tid] = PROCESS
                arrays.place(tid, site, machine)
                self._assign(ref)
            else:
                self._tags[tid] = None

    def _assign(self, ref: TagRef) -> None:
        params, priority, rule_id = self.rules.detector_for(ref)
        if rule_id not in self._resolved:  # once per rule, not per tag
            on, off = params.levels(params.build()) if params.detector != "none" else (float("inf"), float("inf"))
            self._resolved[rule_id] = (params.spec_key(), on, off)
        key, on, off = self._resolved[rule_id]
        self.bank.assign(ref.tag_id, params, key=key)
        t = ref.tag_id
        self._levels[t] = (on, off, int(params.on_delay_s * 1000), int(params.off_delay_s * 1000), priority, rule_id)
        a = self._arrays
        a.on[t], a.off[t], a.on_delay[t], a.off_delay[t] = self._levels[t][:4]
        a.only_running[t], a.settle[t] = params.only_running, int(params.settle_s * 1000)

    def _load_microstops(self, conn: psycopg.Connection[Any]) -> None:
        """Microstop starts of the trailing hour of each machine with a microstop rule, from its State samples."""
        state_tags = [t for t in self._state_tags.values() if self.rules.machine_rules(t.site, t.kind, t.machine, "microstops")]
        for t in state_tags:
            since = self._machine_state.get((t.site, t.machine), (0, NEVER))[1]
            horizon = int(self.conditions.last_ts[self.conditions.index[f"horizon:{t.site}/{t.machine}"]]) \
                if f"horizon:{t.site}/{t.machine}" in self.conditions.index else since
            if horizon <= NEVER:
                continue  # nothing processed yet for this machine
            rows = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, value FROM samples WHERE tag_id = %s AND ts > %s"
                " AND ts <= %s ORDER BY ts", [t.tag_id, _dt(horizon - HOUR_MS), _dt(horizon)]).fetchall()
            prev = None
            starts = self._microstops[(t.site, t.machine)]
            for ts, v in rows:
                code = int(v)
                if code != prev and category_of(code) == Category.MICROSTOP:
                    starts.append(int(ts))
                prev = code

    def _catch_up(self) -> None:
        """Process samples committed but not yet scored (after a restart or a full queue), per tag in time order."""
        tags = [t for t, ref in self._tags.items() if isinstance(ref, TagRef | StateTag) and self.owns(ref.site)]
        if not tags:
            return
        since = self._resume_points(tags)
        with translate_errors(), self._pool.connection() as conn:
            while True:
                rows = conn.execute(
                    "SELECT s.tag_id, (extract(epoch FROM s.ts) * 1000)::bigint, s.value FROM samples s"
                    " JOIN unnest(%s::integer[], %s::bigint[]) AS w(tag_id, after) ON w.tag_id = s.tag_id"
                    " WHERE s.ts > 'epoch'::timestamptz + greatest(w.after, -62135596800000) * interval '1 millisecond'"
                    " AND s.value IS NOT NULL ORDER BY s.ts LIMIT %s",
                    [tags, since, _CATCH_UP_LIMIT]).fetchall()
                if not rows:
                    return
                arr = np.array(rows, dtype=np.float64)
                log.info("monitoring: catching up %d samples", len(rows))
                self._process(arr[:, 0].astype(np.int32), arr[:, 1].astype(np.int64), arr[:, 2])
                if len(rows) < _CATCH_UP_LIMIT:
                    return
                since = self._resume_points(tags)

    def _resume_points(self, tags: list[int]) -> list[int]:
        """Per tag the newest time already processed: scored (process signals) or the machine's time (State)."""
        out = []
        for t in tags:
            ref = self._tags[t]
            if isinstance(ref, TagRef):
                last = int(self.bank.column(t)[2])
                out.append(last if last > NEVER else int(time.time() * 1000) - self.first_catch_up_ms)
            else:
                assert isinstance(ref, StateTag)
                i = self.conditions.index.get(f"horizon:{ref.site}/{ref.machine}")
                last = int(self.conditions.last_ts[i]) if i is not None else NEVER
                out.append(last if last > NEVER else int(time.time() * 1000) - self.first_catch_up_ms)
        return out

    def _reload_rules(self) -> None:
        """Apply edited rules: detectors re-resolved (a changed spec starts afresh), edited rules' conditions reset."""
        with translate_errors(), self._pool.connection() as conn:
            old = {r.id: r for r in self.rules.rules}
            self.rules = RuleSet(self._read_rules(conn))
            self._resolved.clear()
            new = {r.id: r for r in self.rules.rules}
            for ref in [t for t in self._tags.values() if isinstance(t, TagRef)]:
                self._assign(ref)
            changed = [rid for rid, r in old.items() if new.get(rid) != r]
            events: list[al.ConditionEvent] = []
            for rid in changed:
                r = old[rid]
                prefix = f"{r.rule_type}:{rid}:"
                for key, i in list(self.conditions.index.items()):
                    if key.startswith(prefix) and self.conditions.active[i]:
                        site = self._site_of_key(key)
                        ts = self.engine.horizon.get(site, int(time.time() * 1000))
                        events.append(al.ConditionEvent(key, site, None, None, None, r.rule_type, rid, r.priority,
                                                        "rule changed or removed", ts, False))
                self.conditions.forget(prefix)
            store = al.Store(conn)
            with conn.transaction():
                self.engine.apply(store, events)
                self._save_conditions(conn)
        self._publish_alarms(store)

    def _site_of_key(self, key: str) -> str:
        """The site of a condition key `type:rule:tag` or `type:rule:site/machine`."""
        tail = key.split(":", 2)[2]
        if "/" in tail:
            return tail.split("/", 1)[0]
        ref = self._tags.get(int(tail))
        return ref.site if ref is not None else ""

    # -- processing --------------------------------------------------------------------------------------

    def _process(self, tag: NDArray[np.int32], ts: NDArray[np.int64], val: NDArray[np.float64]) -> None:
        tag, ts, val = sort_unique(tag, ts, val)
        kinds = self._arrays.kinds(tag)
        if (kinds == UNKNOWN).any():
            unknown = np.unique(tag[kinds == UNKNOWN]).tolist()
            with translate_errors(), self._pool.connection() as conn:
                self._lookup(conn, unknown)
            kinds = self._arrays.kinds(tag)
        proc = kinds == PROCESS
        self.batches += 1
        self.samples += int(tag.size)
        st = kinds == STATE
        p_tag, p_ts, p_val = (tag, ts, val) if proc.all() else (tag[proc], ts[proc], val[proc])
        # Detectors learn and score the machine's behaviour while it produces: other samples reach them as NaN
        # (skipped, state untouched, no score). Threshold and rate rules see every value.
        producing = self._producing(p_tag, p_ts, tag[st], ts[st], val[st])
        scores = self.bank.score(p_tag, p_ts, np.where(producing, p_val, np.nan))
        scores = Scores(scores.tag, scores.ts, p_val, scores.score, scores.late)
        events: list[al.ConditionEvent] = []
        events += self._anomaly_events(scores)
        events += self._rule_events(scores)
        events += self._machine_events(tag[st], ts[st], val[st], tag, ts)
        with translate_errors(), self._pool.connection() as conn:
            store = al.Store(conn)
            with conn.transaction():
                self._save_scores(conn, scores)
                self.engine.apply(store, events)
                self.engine.advance(store, self._site_horizons(tag, ts))
                fresh = scores.tag if not scores.late.any() else scores.tag[~scores.late]
                self._save_states(conn, fresh[np.r_[True, fresh[1:] != fresh[:-1]]] if fresh.size else fresh)
                self._save_conditions(conn)
        self.scored += int(np.isfinite(scores.score).sum())
        self._publish_scores(scores)
        self._publish_alarms(store)

    def _producing(self, tag: NDArray[np.int32], ts: NDArray[np.int64], st_tag: NDArray[np.int32],
                   st_ts: NDArray[np.int64], st_val: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Per process sample (sorted by tag, ts): True where its machine runs (and has settled), or where the
        machine's state is not known (no State tag yet) or its detector rule scores regardless."""
        out = np.ones(tag.size, np.bool_)
        if not tag.size:
            return out
        changes: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for t, x, v in zip(st_tag.tolist(), st_ts.tolist(), st_val.tolist(), strict=True):
            ref = self._tags[int(t)]
            assert isinstance(ref, StateTag)
            changes[(ref.site, ref.machine)].append((int(x), int(v)))
        timelines: dict[tuple[str, str], tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.int64]]] = {}
        a = self._arrays
        # Only tags gated on a machine whose state is known (or changes in this batch) need a look.
        known = np.zeros(len(a.machines), np.bool_)
        for key in list(self._machine_state) + list(changes):
            m = a._machine_ix.get(key)
            if m is not None:
                known[m] = True
        bounds = np.flatnonzero(np.r_[True, tag[1:] != tag[:-1], True])
        lows, highs = bounds[:-1], bounds[1:]
        run_tag = tag[lows]
        look = a.only_running[run_tag] & (a.kind[run_tag] == PROCESS) & (a.machine[run_tag] >= 0)
        look[look] = known[a.machine[run_tag[look]]]
        for lo, hi in zip(lows[look].tolist(), highs[look].tolist(), strict=True):
            t = int(tag[lo])
            settle = int(a.settle[t])
            ref = self._tags[t]
            assert isinstance(ref, TagRef)
            key = (ref.site, ref.machine)
            if key not in timelines:
                code, since = self._machine_state.get(key, (-1, NEVER))
                hz = self.conditions.index.get(f"horizon:{key[0]}/{key[1]}")
                last = int(self.conditions.last_ts[hz]) if hz is not None else NEVER
                pts_t, pts_run, pts_since = [NEVER], [code < 0 or _runs(code)], [since]
                for x, c in changes.get(key, []):
                    if x > last and c != code:
                        code, since = c, x
                        pts_t.append(x)
                        pts_run.append(_runs(c))
                        pts_since.append(x)
                timelines[key] = (np.array(pts_t, np.int64), np.array(pts_run, np.bool_), np.array(pts_since, np.int64))
            p_t, p_run, p_since = timelines[key]
            if p_t.size == 1 and p_run[0] and p_since[0] <= NEVER:
                continue  # state never seen: scored as it comes
            i = np.searchsorted(p_t, ts[lo:hi], side="right") - 1
            out[lo:hi] = p_run[i] & (ts[lo:hi] - p_since[i] >= settle)
        return out

    def _site_horizons(self, tag: NDArray[np.int32], ts: NDArray[np.int64]) -> dict[str, int]:
        """Newest sample time per site in a batch sorted by (tag, ts)."""
        out: dict[str, int] = {}
        if not tag.size:
            return out
        last = np.flatnonzero(np.r_[tag[1:] != tag[:-1], True])
        site = self._arrays.site[tag[last]]
        ok = site >= 0
        newest = np.full(len(self._arrays.sites), NEVER, np.int64)
        np.maximum.at(newest, site[ok], ts[last][ok])
        for i in np.flatnonzero(newest > NEVER).tolist():
            out[self._arrays.sites[i]] = int(newest[i])
        return out

    def _anomaly_events(self, scores: Scores) -> list[al.ConditionEvent]:
        """Where detector output becomes alarm input: each in-order score against its rule's level (on) and
        `level - deadband` (off), with the rule's delays, in one pass (`Conditions.run_levels`). This is the
        one place to connect a detector's calibrated likelihood or event output instead."""
        if not scores.tag.size:
            return []
        a = self._arrays
        args = (scores.tag, scores.ts, scores.score, scores.late, a.on, a.off, a.on_delay, a.off_delay)
        ev = self.conditions.run_levels(*args, a.condition)
        if ev is None:  # tags scored for the first time: their `anomaly:TAG` keys first
            scored = scores.tag[~scores.late & np.isfinite(scores.score)]
            new = np.unique(scored[a.condition[scored] < 0])
            a.condition[new] = self.conditions.ids([f"anomaly:{t}" for t in new.tolist()])
            ev = self.conditions.run_levels(*args, a.condition)
            assert ev is not None
        out = []
        for i in np.flatnonzero(ev).tolist():
            t = int(scores.tag[i])
            ref = self._tags[t]
            assert isinstance(ref, TagRef)
            on, _, _, _, priority, rule_id = self._levels[t]
            sc = float(scores.score[i])
            active = bool(ev[i] > 0)
            det = self.bank.groups[self.bank.spec_of[t]].params.detector
            msg = (f"{ref.name}: anomaly score {sc:.2f} above {on:g} ({det})" if active
                   else f"{ref.name}: anomaly score back below the clear level")
            out.append(al.ConditionEvent(f"anomaly:{t}", ref.site, ref.line, ref.machine, t, "anomaly", rule_id,
                                         priority, msg, int(scores.ts[i]), active, sc, on))
        return out

    def _rule_events(self, scores: Scores) -> list[al.ConditionEvent]:
        """Threshold and rate-of-change rules over the in-order samples of the tags they match."""
        if not (self.rules.of_type("threshold") or self.rules.of_type("rate")):
            return []
        fresh = np.flatnonzero(~scores.late)
        if not fresh.size:
            return []
        out: list[al.ConditionEvent] = []
        tag, ts, val = scores.tag[fresh], scores.ts[fresh], scores.value[fresh]
        bounds = np.flatnonzero(np.r_[True, tag[1:] != tag[:-1], True])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            ref = self._tags[int(tag[lo])]
            assert isinstance(ref, TagRef)
            t_ts, t_v = ts[lo:hi], val[lo:hi]
            for rule in self.rules.tag_rules(ref, "threshold"):
                p = rule.params
                hi_on = t_v > p.high if p.high is not None else np.zeros(t_v.size, np.bool_)
                lo_on = t_v < p.low if p.low is not None else np.zeros(t_v.size, np.bool_)
                hi_off = t_v < p.high - p.deadband if p.high is not None else np.ones(t_v.size, np.bool_)
                lo_off = t_v > p.low + p.deadband if p.low is not None else np.ones(t_v.size, np.bool_)
                out += self._run_rule(rule, ref, t_ts, t_v, hi_on | lo_on, hi_off & lo_off, p.on_delay_s, p.off_delay_s,
                                      "above high" if p.high is not None else "", p.high if p.high is not None else p.low)
            for rule in self.rules.tag_rules(ref, "rate"):
                p = rule.params
                key = f"rate:{rule.id}:{ref.tag_id}"
                k = int(self.conditions.ids([key])[0])
                prev_t, prev_v = int(self.conditions.last_ts[k]), float(self.conditions.last_value[k])
                all_t = np.r_[prev_t, t_ts] if prev_v == prev_v else t_ts
                all_v = np.r_[prev_v, t_v] if prev_v == prev_v else t_v
                dt_min = np.diff(all_t) / 60_000.0
                rate = np.abs(np.diff(all_v)) / np.maximum(dt_min, 1e-9)
                self.conditions.last_ts[k], self.conditions.last_value[k] = int(t_ts[-1]), float(t_v[-1])
                self.conditions.touched.add(k)
                r_ts = all_t[1:]
                out += self._run_rule(rule, ref, r_ts, rate, rate > p.per_min, rate < p.per_min - p.deadband,
                                      p.on_delay_s, p.off_delay_s, "", p.per_min)
        return out

    def _run_rule(self, rule: Rule, ref: TagRef, ts: NDArray[np.int64], values: NDArray[np.float64],
                  on: NDArray[np.bool_], off: NDArray[np.bool_], on_delay_s: float, off_delay_s: float,
                  _: str, limit: float | None) -> list[al.ConditionEvent]:
        if not ts.size:
            return []
        key = f"{rule.rule_type}:{rule.id}:{ref.tag_id}"
        k = self.conditions.ids([key])
        ev = self.conditions.run(np.repeat(k, ts.size), ts, on, off, np.full(ts.size, int(on_delay_s * 1000)),
                                 np.full(ts.size, int(off_delay_s * 1000)))
        out = []
        what = "rate of change" if rule.rule_type == "rate" else "value"
        for i in np.flatnonzero(ev).tolist():
            active = bool(ev[i] > 0)
            v = float(values[i])
            unit = (ref.unit or "") + ("/min" if rule.rule_type == "rate" else "")
            msg = (f"{ref.name}: {what} {v:.4g} {unit} beyond the limit {limit:g}" if active
                   else f"{ref.name}: {what} back within the limit")
            out.append(al.ConditionEvent(key, ref.site, ref.line, ref.machine, ref.tag_id, rule.rule_type, rule.id,
                                         rule.priority, msg, int(ts[i]), active, v, limit))
        return out

    def _machine_events(self, st_tag: NDArray[np.int32], st_ts: NDArray[np.int64], st_val: NDArray[np.float64],
                        all_tag: NDArray[np.int32], all_ts: NDArray[np.int64]) -> list[al.ConditionEvent]:
        """Failure-duration and microstops-per-hour rules at each State sample and at each machine's newest time."""
        if not all_tag.size:
            return []
        horizon: dict[tuple[str, str], int] = {}
        machines: dict[tuple[str, str], StateTag] = {}
        newest = np.flatnonzero(np.r_[all_tag[1:] != all_tag[:-1], True])  # sorted by (tag, ts): each tag's newest
        a = self._arrays
        mach = a.machine[all_tag[newest]]
        ok = mach >= 0
        latest = np.full(len(a.machines), NEVER, np.int64)
        np.maximum.at(latest, mach[ok], all_ts[newest][ok])
        for m in np.flatnonzero(latest > NEVER).tolist():
            horizon[a.machines[m]] = int(latest[m])
        by_machine: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for t, x, v in zip(st_tag.tolist(), st_ts.tolist(), st_val.tolist(), strict=True):
            ref = self._tags[int(t)]
            assert isinstance(ref, StateTag)
            machines[(ref.site, ref.machine)] = ref
            by_machine[(ref.site, ref.machine)].append((int(x), int(v)))
        for ref in self._state_tags.values():
            if (ref.site, ref.machine) in horizon:
                machines[(ref.site, ref.machine)] = ref
        out: list[al.ConditionEvent] = []
        for key, ref in machines.items():
            fail_rules = self.rules.machine_rules(ref.site, ref.kind, ref.machine, "failure")
            micro_rules = self.rules.machine_rules(ref.site, ref.kind, ref.machine, "microstops")
            code, since = self._machine_state.get(key, (-1, NEVER))
            hz_key = self.conditions.ids([f"horizon:{key[0]}/{key[1]}"])[0]
            last = int(self.conditions.last_ts[hz_key])
            before = (last, code, since) if code >= 0 and last > NEVER else None  # where the last batch ended
            points: list[tuple[int, int, int]] = []  # (ts, code, since)
            starts = self._microstops[key]
            for x, c in by_machine.get(key, []):
                if x <= last:
                    continue  # replayed State: the machine's time only moves forward
                if c != code:
                    code, since = c, x
                    if category_of(c) == Category.MICROSTOP:
                        starts.append(x)
                points.append((x, code, since))
            h = horizon.get(key, last)
            if h > last:
                points.append((h, code, since))
                self.conditions.last_ts[hz_key] = h
                self.conditions.touched.add(int(hz_key))
            self._machine_state[key] = (code, since)
            sk = self.conditions.ids([f"state:{key[0]}/{key[1]}"])[0]
            self.conditions.last_ts[sk], self.conditions.last_value[sk] = since, float(code)
            self.conditions.touched.add(int(sk))
            if not points or not (fail_rules or micro_rules):
                continue  # the state is tracked (it gates scoring); no rule to evaluate
            for rule in fail_rules:
                n_ms = int(rule.params.minutes * 60_000)
                # Evaluate at every point and where a failure reaches N minutes between two points, so the alarm
                # rises at since + N whatever the batches were.
                pts = list(points)
                seq = ([before] if before is not None else []) + points
                for i, (x, c, since_i) in enumerate(seq):
                    nxt = seq[i + 1][0] if i + 1 < len(seq) else None
                    due = since_i + n_ms
                    if category_of(c) == Category.FAILURE and x < due and (nxt is None or due < nxt) \
                            and due <= points[-1][0]:
                        pts.append((due, c, since_i))
                pts.sort()
                p_ts = np.array([p[0] for p in pts], np.int64)
                failing = np.array([category_of(p[1]) == Category.FAILURE for p in pts], np.bool_)
                dur = np.array([p[0] - p[2] for p in pts], np.int64)
                on = failing & (dur >= n_ms)
                ck = f"failure:{rule.id}:{key[0]}/{key[1]}"
                ev = self.conditions.run(np.repeat(self.conditions.ids([ck]), p_ts.size), p_ts, on, ~failing,
                                         np.zeros(p_ts.size, np.int64), np.zeros(p_ts.size, np.int64))
                for i in np.flatnonzero(ev).tolist():
                    active = bool(ev[i] > 0)
                    msg = (f"{ref.machine}: failure state {pts[i][1]} for {dur[i] / 60000:.0f} min"
                           f" (limit {rule.params.minutes:g} min)" if active else f"{ref.machine}: failure over")
                    out.append(al.ConditionEvent(ck, ref.site, ref.line, ref.machine, None, "failure", rule.id,
                                                 rule.priority, msg, int(p_ts[i]), active, dur[i] / 60000,
                                                 rule.params.minutes))
            # Microstops: the count rises at a start and falls an hour later; evaluate at both.
            lower = last if last > NEVER else points[0][0]
            decays = [x + HOUR_MS for x in starts if lower < x + HOUR_MS <= points[-1][0]]
            p_ts = np.array(sorted({p[0] for p in points} | set(decays)), np.int64)
            counts = np.array([sum(1 for s in starts if p - HOUR_MS < s <= p) for p in p_ts.tolist()], np.float64)
            for rule in micro_rules:
                lim = rule.params.per_hour
                ck = f"microstops:{rule.id}:{key[0]}/{key[1]}"
                ev = self.conditions.run(np.repeat(self.conditions.ids([ck]), p_ts.size), p_ts, counts > lim,
                                         counts <= lim, np.zeros(p_ts.size, np.int64), np.zeros(p_ts.size, np.int64))
                for i in np.flatnonzero(ev).tolist():
                    active = bool(ev[i] > 0)
                    msg = (f"{ref.machine}: {counts[i]:.0f} microstops in the last hour (limit {lim:g})" if active
                           else f"{ref.machine}: microstops back within {lim:g} per hour")
                    out.append(al.ConditionEvent(ck, ref.site, ref.line, ref.machine, None, "microstops", rule.id,
                                                 rule.priority, msg, int(p_ts[i]), active, float(counts[i]), lim))
            while starts and starts[0] <= int(p_ts[-1]) - HOUR_MS:
                starts.popleft()
        return out

    # -- wall-clock checks -------------------------------------------------------------------------------

    def _check(self) -> None:
        """Offline edge nodes and machines, stale process values, expired shelving (wall time)."""
        now_ms = int(time.time() * 1000)
        now = _dt(now_ms)
        events: list[al.ConditionEvent] = []
        with translate_errors(), self._pool.connection() as conn:
            offline = self.rules.of_type("offline")
            stale = self.rules.of_type("stale")
            if offline:
                for site, edge, online, death in conn.execute(
                        "SELECT site_id, edge_node_id, online, last_death FROM edge_nodes").fetchall():
                    if not self.owns(site):
                        continue
                    for rule in offline:
                        if rule.machine is None and rule.machine_kind is None and rule.tag is None \
                                and (rule.site is None or rule.site == site):
                            down = (not online and death is not None
                                    and (now - death).total_seconds() >= rule.params.after_s)
                            events += self._wall(f"offline:{rule.id}:{site}/{edge}", site, edge, None, rule, now_ms,
                                                 down, bool(online), f"edge node {site}/{edge} offline")
            if offline or stale:
                rows = conn.execute(
                    "SELECT m.site_id, m.line_id, m.machine_id, m.kind, m.online, m.last_death, m.last_birth,"
                    " (SELECT max(lv.ts) FROM tags t JOIN latest_values lv ON lv.tag_id = t.tag_id"
                    "  WHERE t.site_id = m.site_id AND t.machine_id = m.machine_id AND t.name <> 'State'"
                    "  AND t.name NOT LIKE 'Counts/%%' AND t.name NOT LIKE 'Rate/%%')"
                    " FROM machines m").fetchall()
                for site, line, machine, kind, online, death, birth, newest in rows:
                    if not self.owns(site):
                        continue
                    for rule in [r for r in offline if r.matches(site, kind, machine, None)
                                 and (r.machine is not None or r.machine_kind is not None)]:
                        down = not online and death is not None and (now - death).total_seconds() >= rule.params.after_s
                        events += self._wall(f"offline:{rule.id}:{site}/{machine}", site, line, machine, rule, now_ms,
                                             down, bool(online), f"machine {machine} offline")
                    for rule in self.rules.machine_rules(site, kind, machine, "stale"):
                        ref_ts = newest or birth
                        is_stale = bool(online) and ref_ts is not None and (now - ref_ts).total_seconds() >= rule.params.after_s
                        events += self._wall(f"stale:{rule.id}:{site}/{machine}", site, line, machine, rule, now_ms,
                                             is_stale, not is_stale,
                                             f"machine {machine}: no new process values for {rule.params.after_s:g} s")
            store = al.Store(conn)
            with conn.transaction():
                self.engine.apply(store, events)
                self.engine.tick(store)
                self._save_conditions(conn)
        self._publish_alarms(store)

    def _wall(self, key: str, site: str, line: str | None, machine: str | None, rule: Rule, now_ms: int,
              on: bool, off: bool, message: str) -> list[al.ConditionEvent]:
        k = self.conditions.ids([key])
        ev = self.conditions.run(k, np.array([now_ms], np.int64), np.array([on]), np.array([off]),
                                 np.zeros(1, np.int64), np.zeros(1, np.int64))
        if not ev[0]:
            return []
        active = bool(ev[0] > 0)
        return [al.ConditionEvent(key, site, line, machine, None, rule.rule_type, rule.id, rule.priority,
                                  message if active else message + ": back", now_ms, active)]

    # -- persistence -------------------------------------------------------------------------------------

    def _stage(self, conn: psycopg.Connection[Any], ddl: str) -> None:
        """Create a staging temp table once per connection (a session's temp tables live as long as it does),
        not by a round trip (and a notice) per batch."""
        made = self._staged.get(conn)
        if made is None:
            made = self._staged[conn] = set()
        if ddl not in made:
            conn.execute(ddl)
            made.add(ddl)

    def _save_scores(self, conn: psycopg.Connection[Any], scores: Scores) -> None:
        """Every processed sample (NULL where there is no score): a replayed duplicate then conflicts, unscored.
        Binary COPY into a staging table, then one INSERT .. ON CONFLICT DO NOTHING (as the ingest writes)."""
        if not scores.tag.size:
            return
        on = self._arrays.on[scores.tag]
        self._stage(conn, SCORE_STAGE_DDL)
        with conn.cursor() as cur:
            with cur.copy("COPY zhizao_score_stage (ts, tag_id, score, alarm) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(scores_copy(scores.ts, scores.tag, scores.score, scores.score > on))
            cur.execute("INSERT INTO anomaly_scores (ts, tag_id, score, alarm) SELECT ts, tag_id, score, alarm"
                        " FROM zhizao_score_stage ON CONFLICT DO NOTHING")

    def _save_states(self, conn: psycopg.Connection[Any], tags: NDArray[np.int32]) -> None:
        """Detector state columns of the tags that advanced: binary COPY per spec, one upsert."""
        if not tags.size:
            return
        self._stage(conn, STATE_STAGE_DDL)
        with conn.cursor() as cur:
            with cur.copy("COPY zhizao_state_stage (tag_id, spec_key, state, last_ts_ms, samples)"
                          " FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(COPY_HEADER)
                gid, col = self.bank.gid_of[tags], self.bank.col_of[tags]
                for key, g in self.bank.groups.items():
                    sel = np.flatnonzero(gid == g.index)
                    if sel.size:
                        cols = col[sel]
                        cp.write(states_copy(tags[sel], key, g.state[:, cols].T, g.last_ts[cols], g.samples[cols]))
                cp.write(COPY_TRAILER)
            cur.execute(
                "INSERT INTO detector_state (tag_id, spec_key, state, last_ts_ms, samples, updated_at)"
                " SELECT tag_id, spec_key, state, last_ts_ms, samples, now() FROM zhizao_state_stage"
                " ON CONFLICT (tag_id) DO UPDATE SET spec_key = excluded.spec_key, state = excluded.state,"
                " last_ts_ms = excluded.last_ts_ms, samples = excluded.samples, updated_at = now()")

    def _save_conditions(self, conn: psycopg.Connection[Any]) -> None:
        if not self.conditions.touched:
            return
        rows = [self.conditions.row(i) for i in sorted(self.conditions.touched)]
        conn.execute(
            "INSERT INTO condition_state (key, active, on_since, off_since, last_ts_ms, last_value)"
            " SELECT * FROM unnest(%s::text[], %s::boolean[], %s::bigint[], %s::bigint[], %s::bigint[], %s::float8[])"
            " ON CONFLICT (key) DO UPDATE SET active = excluded.active, on_since = excluded.on_since,"
            " off_since = excluded.off_since, last_ts_ms = excluded.last_ts_ms, last_value = excluded.last_value",
            [[r[i] for r in rows] for i in range(6)])
        self.conditions.touched.clear()

    # -- live events -------------------------------------------------------------------------------------

    def _publish_scores(self, scores: Scores) -> None:
        """One `anomaly` event per machine per batch: the newest score of each of its signals."""
        if self.live is None or not scores.tag.size:
            return
        ok = np.flatnonzero(np.isfinite(scores.score) & ~scores.late)
        if not ok.size:
            return
        last = ok[np.r_[scores.tag[ok][1:] != scores.tag[ok][:-1], True]]
        per_machine: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for i in last.tolist():
            ref = self._tags[int(scores.tag[i])]
            assert isinstance(ref, TagRef)
            on = self._levels[ref.tag_id][0]
            per_machine[(ref.site, ref.machine)].append(
                {"tag_id": ref.tag_id, "signal": ref.name, "ts": int(scores.ts[i]), "score": float(scores.score[i]),
                 "level": on if np.isfinite(on) else None})
        for (site, machine), signals in per_machine.items():
            self.live.publish("anomaly", site, {"site": site, "machine": machine, "signals": signals})

    def _publish_alarms(self, store: al.Store) -> None:
        if self.live is not None:
            for site, body in store.published:
                self.live.publish("alarm", site, body)
        store.published.clear()
        if self.webhooks is not None:
            self.webhooks.wake()

    def stats(self) -> dict[str, float]:
        """Counters for benchmarks and /healthz."""
        return {"batches": float(self.batches), "samples": float(self.samples), "scored": float(self.scored),
                "kernel_calls": float(self.bank.calls), "alarms_raised": float(self.engine.raised),
                "alarms_cleared": float(self.engine.cleared), "dropped_batches": float(self.dropped_batches),
                "busy_cpu_s": self.busy_s}

