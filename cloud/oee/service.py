"""`OeeService`: continuous OEE from committed samples, in its own worker thread.

The ingest calls `on_committed(tag_ids, ts_ms, value)` after each commit (cheap: it only queues the arrays).
The worker turns them into state changes and counter/rate series per machine, publishes `state` events as
soon as they are stored, and every `tick_s` runs the OEE kernel over the atoms new data touched (never over history), upserts
the affected hour/shift/day windows into `oee_windows` and publishes `oee` events (at most one per machine per
`oee_event_every_s`), and the same for the line and site of each such machine, summed from the stored windows as
the API sums them. Events go out, and flush()/recompute() return, only after the transaction holding their
data has committed, so a client reading the API next sees what was announced. Late (replayed) samples, stop reasons and calendar edits make it reload the machine's
signals from the database for the windows involved and recompute them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from datetime import UTC
from typing import Any

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics import Category
from zhizao.analytics.oee.kernel import FLAG_PERFORMANCE_CAPPED
from zhizao.broker.contract.states import MAX_STATE_CODE, UNKNOWN
from zhizao.cloud.live import LiveHub
from zhizao.cloud.oee import store
from zhizao.cloud.oee.calendar import DAY_MS, SiteCalendar
from zhizao.cloud.oee.engine import FLAGS, MachineState, compute_atoms, ratios
from zhizao.cloud.oee.queries import SUMS_SQL, ratios_of
from zhizao.cloud.storage.db import StorageError, make_pool, translate_errors

log = logging.getLogger(__name__)

__all__ = ["OeeService"]

_NEVER = -(2**62)  # MachineState.horizon before any sample
_SIGNALS = ("state", "total", "good", "rate")  # the roles OEE is computed from
_COUNTS = ("total", "good")
_Batch = tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.float64]]


def _state_codes(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """State samples as codes; values outside 0..229999 read as unknown (30000)."""
    return np.where((values >= 0) & (values < MAX_STATE_CODE), values, UNKNOWN).astype(np.int64)


class Done(threading.Event):
    """Set when a request was handled; `ok` says whether its recompute succeeded."""

    ok = False


_Request = tuple[str, str, str | None, int, Done]  # kind, site, machine, since ms, done


class OeeService:
    """Keeps per-machine OEE state from committed samples and the `oee_windows` table up to date."""

    def __init__(
        self,
        conninfo: str,
        live: LiveHub | None = None,
        *,
        tick_s: float = 0.5,
        oee_event_every_s: float = 1.0,
        max_queued_batches: int = 10_000,
    ) -> None:
        self.conninfo = conninfo
        self.live = live
        self.tick_s = tick_s
        self.oee_event_every_s = oee_event_every_s
        self._queue: queue.Queue[_Batch | str] = queue.Queue(max_queued_batches)  # a str: forget that site
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self._tags: dict[int, store.TagInfo | None] = {}
        self._sites: dict[str, SiteCalendar] = {}
        self._machines: dict[tuple[str, str], MachineState] = {}
        self._reload: dict[tuple[str, str], int] = {}
        self._last_event: dict[tuple[str, str], float] = {}
        self._pending_events: set[tuple[str, str]] = set()
        self._events: list[tuple[str, str, dict[str, Any]]] = []  # published after the commit of their data
        self._pending_rollups: dict[str, set[str]] = {}  # site -> lines whose roll-up event is due
        self._last_rollup: dict[str, float] = {}
        self._lost_from: int | None = None
        self._lost_lock = threading.Lock()
        self._db_down = False
        self.batches = 0
        self.computes = 0
        self.dropped_batches = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the worker."""
        if self._thread is not None:
            return
        self._pool = make_pool(self.conninfo, min_size=1, max_size=2, name="zhizao-oee")
        self._thread = threading.Thread(target=self._run, name="zhizao-oee", daemon=True)
        self._thread.start()
        log.info("oee service started (tick %.2f s)", self.tick_s)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued work (within `timeout`) and close the connections; idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Still computing (or waiting for a database that went away): closing the pool ends its wait, and
            # a worker that fails while stopping returns at once.
            log.warning("oee: worker still busy after %.0f s at stop; %d batches not computed", timeout,
                        self._queue.qsize())  # fmt: skip
        if self._pool is not None:
            self._pool.close()
        self._thread.join(5.0)
        self._thread = None
        self._pool = None
        log.info("oee service stopped")

    # -- inputs ------------------------------------------------------------------------------------------

    def on_committed(self, tag_ids: NDArray[np.int32], ts_ms: NDArray[np.int64], value: NDArray[np.float64]) -> None:
        """Committed numeric samples (any order); called from the ingest's writer thread, never blocks."""
        if not len(tag_ids):
            return
        try:
            self._queue.put_nowait((np.asarray(tag_ids), np.asarray(ts_ms), np.asarray(value)))
        except queue.Full:
            # Too far behind: remember from when, and rebuild the machines from the database later.
            self.dropped_batches += 1
            with self._lost_lock:
                first = int(np.min(ts_ms))
                self._lost_from = first if self._lost_from is None else min(self._lost_from, first)

    def recompute(self, site: str, machine: str | None, since_ms: int) -> Done:
        """Reload and recompute a machine (or, with None, every machine of the site and its calendar) from
        `since_ms`; the event is set when done, with `ok` False when the recompute failed."""
        done = Done()
        self._requests.put(("reload", site, machine, since_ms, done))
        return done

    def forget(self, site: str) -> None:
        """Drop the in-memory state of the site's machines: each reloads from the database with its next samples
        (this worker took the site over from another one, which computed meanwhile). In line with the batches:
        those queued before are dropped with the state, those queued after reach a reloaded machine."""
        try:
            self._queue.put_nowait(site)
        except queue.Full:  # far behind: the machines are rebuilt from the database anyway (`_lost_from`)
            self._requests.put(("forget", site, None, 0, Done()))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is processed and computed (tests, benchmarks)."""
        done = Done()
        self._requests.put(("flush", "", None, 0, done))
        return done.wait(timeout) and done.ok

    # -- worker ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        last_compute = 0.0
        while True:
            stopping = self._stop.is_set()
            try:
                batch = self._queue.get(timeout=min(self.tick_s, 0.1))
            except queue.Empty:
                batch = None
            requests: list[_Request] = []
            committed = False
            try:
                with translate_errors(), self._pool.connection() as conn:
                    while batch is not None:
                        self._take(conn, batch)
                        try:
                            batch = self._queue.get_nowait()
                        except queue.Empty:
                            batch = None
                    requests = self._drain_requests()
                    # A batch queued before a request just drained (flush() right after on_committed()) may
                    # have arrived after the loop above: take it too, so the request sees it computed.
                    while True:
                        try:
                            self._take(conn, self._queue.get_nowait())
                        except queue.Empty:
                            break
                    if requests or stopping or time.monotonic() - last_compute >= self.tick_s:
                        self._handle_requests(conn, requests)
                        self._compute(conn)
                        last_compute = time.monotonic()
                committed = True  # the connection block committed: readers now see what was computed
                if self.live is not None:
                    for kind, site, body in self._events:
                        self.live.publish(kind, site, body)
                if self._db_down:
                    log.warning("oee: database back")
                    self._db_down = False
            except StorageError as exc:
                if stopping:
                    return self._give_up(exc)
                if not self._db_down:
                    log.warning("oee: database unavailable, will retry: %s", exc)
                    self._db_down = True
                self._stop.wait(1.0)
            except Exception as exc:  # one bad batch must not end live OEE for the fleet
                if stopping:
                    return self._give_up(exc)
                log.exception("oee: batch failed; affected machines are reloaded from the database")
                for key, m in self._machines.items():
                    if m.dirty_from is not None:
                        self._reload[key] = min(self._reload.get(key, m.dirty_from), m.dirty_from)
            finally:
                self._events.clear()  # after a failure: the reloaded machines announce their OEE again
                # Only after the commit: a caller of flush() or recompute() reads the windows next.
                for *_, done in requests:
                    done.ok = committed
                    done.set()
            if stopping and self._queue.empty():
                return

    def _give_up(self, exc: Exception) -> None:
        """Stopping and the database is gone (or the pool closed): end now rather than fail every queued batch.
        Their samples are stored (the ingest commits before it hands a batch here); only their windows are not
        computed now: the next start rebuilds each machine's windows from the samples of its next batch on."""
        log.warning("oee: stopping without the database (%s); %d queued batches not computed", exc,
                    self._queue.qsize())  # fmt: skip
        for *_, done in self._drain_requests():
            done.ok = False
            done.set()

    def _drain_requests(self) -> list[_Request]:
        out = []
        while True:
            try:
                out.append(self._requests.get_nowait())
            except queue.Empty:
                return out

    def _site(self, conn: store.Conn, site: str) -> SiteCalendar:
        cal = self._sites.get(site)
        if cal is None:
            cal = self._sites[site] = store.load_site(conn, site)
        return cal

    def _take(self, conn: store.Conn, item: _Batch | str) -> None:
        if isinstance(item, str):
            self._forget(item)
        else:
            self._ingest(conn, *item)

    def _forget(self, site: str) -> None:
        for key in [k for k in self._machines if k[0] == site]:
            del self._machines[key]
            self._reload.pop(key, None)

    def _ingest(self, conn: store.Conn, tags: NDArray[np.int32], ts: NDArray[np.int64], val: NDArray[np.float64]) -> None:
        self.batches += 1
        order = np.lexsort((ts, tags))
        tags, ts, val = tags[order], ts[order], val[order]
        unknown = [int(t) for t in np.unique(tags) if int(t) not in self._tags]
        if unknown:
            self._tags.update(store.lookup_tags(conn, unknown))
        cuts = np.flatnonzero(np.diff(tags)) + 1
        per_machine: dict[tuple[str, str], dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]]] = defaultdict(dict)
        lines: dict[tuple[str, str], str] = {}
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(tags)], strict=True):
            info = self._tags.get(int(tags[lo]))
            if info is None:
                continue
            key = (info.site, info.machine)
            lines[key] = info.line
            t, v = ts[lo:hi], val[lo:hi]
            ok = np.isfinite(v)
            group = per_machine[key]
            role = info.role
            if role in group:  # two tags with one role (e.g. a re-birth under another edge node): merge
                t0, v0 = group[role]
                t, v = np.concatenate([t0, t[ok]]), np.concatenate([v0, v[ok]])
                srt = np.argsort(t, kind="stable")
                group[role] = (t[srt], v[srt])
            else:
                group[role] = (t[ok], v[ok])
        changes: list[tuple[str, str, int, int]] = []
        for key, group in per_machine.items():
            m = self._machines.get(key)
            if m is None:
                m = self._machines[key] = MachineState(key[0], lines[key], key[1])
            first = min(int(t.min()) for t, _ in group.values() if t.size) if any(t.size for t, _ in group.values()) else None
            if first is None:
                continue
            cal = self._site(conn, m.site)
            if not m.loaded:
                self._load(conn, m, cal, first)
            self._append(m, cal, group, changes, first)
        store.save_state_changes(conn, changes)

    def _append(self, m: MachineState, cal: SiteCalendar, group: dict[str, tuple[NDArray[np.int64], NDArray[np.float64]]],
                changes: list[tuple[str, str, int, int]], first: int) -> None:
        empty_t, empty_v = np.zeros(0, np.int64), np.zeros(0, np.float64)
        lates = []
        # A stop in progress is a microstop or a real stop depending on its whole length: when new data makes it
        # reach the threshold (or adds states to it), every window since its start changes.
        stop_from = m.open_stop_start(cal.config) if m.horizon > _NEVER else None
        new_horizon = max(int(t.max()) for t, _ in group.values() if t.size)
        if stop_from is not None:
            threshold = stop_from + round(cal.config.microstop_s * 1000)
            grows_past = m.horizon < threshold <= new_horizon
            # A stop state joining it can make it a failure (MTBF/MTTR, repair time since its start).
            joins = "state" in group and any(cal.config.category_of(int(c)) == Category.FAILURE
                                             for c in _state_codes(group["state"][1]))
            if not (grows_past or joins):
                stop_from = None
        if "state" in group:
            t, v = group["state"]
            c = _state_codes(v)
            kept_t, kept_c, late = m.append_states(t, c)
            lates.append(late)
            for ts_, code in zip(kept_t.tolist(), kept_c.tolist(), strict=True):
                changes.append((m.site, m.machine, ts_, code))
                self._publish_state(m, cal, ts_, m.reasons.get(ts_, code))
        if "total" in group or "good" in group:
            tt, tv = group.get("total", (empty_t, empty_v))
            gt, gv = group.get("good", (empty_t, empty_v))
            lates.append(m.append_counts(tt, tv.astype(np.int64), gt, gv.astype(np.int64)))
        if "rate" in group:
            lates.append(m.append_rates(*group["rate"]))
        # Only OEE signals change figures before the horizon; other tags (process values) only move the
        # horizon (an open state lasts until the newest sample of the machine), so they dirty from there.
        # A count at t is counted in the window ending at t ((start, end]): it dirties from just before t, so
        # the good count of an atom's last instant arriving in a later commit recomputes the atom it ends.
        signals = [int(t.min()) - (role in _COUNTS) for role, (t, _) in group.items() if role in _SIGNALS and t.size]
        if stop_from is not None:
            signals.append(stop_from)
        # A machine's first data (also one loaded before it had any, by a calendar edit) fills every window
        # that holds it from the window's start: the time before its first sample is "not monitored".
        dirty = min([*signals, m.horizon]) if m.horizon > _NEVER else cal.earliest_start(first)
        if dirty < max(m.buffer_from, m.complete_from) and m.complete_from < 2**62:
            # Older than what the buffers can recompute (they are trimmed to the open atom): reload instead.
            lates.append(dirty)
        late = min((x for x in lates if x is not None), default=None)
        if late is not None:
            key = (m.site, m.machine)
            self._reload[key] = min(self._reload.get(key, late), late)
        else:
            m.mark(dirty)
        m.horizon = max(m.horizon, new_horizon)

    def _load(self, conn: store.Conn, m: MachineState, cal: SiteCalendar, since: int) -> None:
        """(Re)build a machine's buffers from the database for every window containing `since` onwards."""
        x = cal.earliest_start(since)
        if m.dirty_from is not None:  # atoms already due from earlier must be computed from the new buffers too
            x = min(x, int(cal.atom_edges(m.dirty_from, m.dirty_from + 1)[0]))
        hist = store.load_history(conn, m.site, m.machine, x, x - DAY_MS)
        fresh = MachineState(m.site, m.line, m.machine)
        st_t, st_v = hist["state"]
        fresh.append_states(st_t, _state_codes(st_v))
        # The timeline's state changes follow the stored samples: a machine's first batch (already in the
        # samples loaded here) and replayed or late samples reach `oee_state_changes` this way.
        store.replace_state_changes(conn, m.site, m.machine, fresh.st_t.tolist(), fresh.st_c.tolist())
        (tt, tv), (gt, gv) = hist["total"], hist["good"]
        fresh.append_counts(tt, tv.astype(np.int64), gt, gv.astype(np.int64))
        fresh.append_rates(*hist["rate"])
        m.st_t, m.st_c = fresh.st_t, fresh.st_c
        m.ct_t, m.ct_total, m.ct_good = fresh.ct_t, fresh.ct_total, fresh.ct_good
        m.last_total, m.last_good = fresh.last_total, fresh.last_good
        m.rt_t, m.rt_v = fresh.rt_t, fresh.rt_v
        m.reasons = hist["reasons"]
        times = [int(a[-1]) for a in (st_t, tt, gt, hist["rate"][0]) if a.size]
        if hist["horizon"] is not None:
            times.append(hist["horizon"])
        m.horizon = max([m.horizon, *times])
        for start in [s for s in m.atoms if s >= x]:
            del m.atoms[start]
        m.loaded = True
        m.buffer_from = x
        # Everything from x on is in memory now, also when that is nothing: a machine loaded before its
        # first sample (a calendar edit while it is silent) must still write the windows its data will fill.
        m.complete_from = min(m.complete_from, x)
        if m.horizon <= _NEVER:
            return  # no data at all yet: nothing to compute
        m.dirty_from = x if m.dirty_from is None else min(m.dirty_from, x)

    def _handle_requests(self, conn: store.Conn, requests: list[_Request]) -> None:
        with self._lost_lock:
            lost, self._lost_from = self._lost_from, None
        if lost is not None:
            for key in self._machines:
                self._reload[key] = min(self._reload.get(key, lost), lost)
        for kind, site, machine, since, _ in requests:
            if kind == "forget":
                self._forget(site)
                continue
            if kind != "reload":
                continue
            if machine is None:
                self._sites.pop(site, None)
                # Windows of the old calendar (shifts that no longer exist) must not outlive the edit.
                conn.execute("DELETE FROM oee_windows WHERE site_id = %s AND start_ts >= %s", [site, store.dt(since)])
                known = {mid for (s, mid) in self._machines if s == site}
                rows = conn.execute("SELECT machine_id, line_id FROM machines WHERE site_id = %s", [site]).fetchall()
                for mid, line in rows:
                    if (site, mid) not in self._machines:
                        self._machines[(site, mid)] = MachineState(site, line, mid)
                    known.add(mid)
                for mid in known:
                    self._reload[(site, mid)] = min(self._reload.get((site, mid), since), since)
            else:
                if (site, machine) not in self._machines:
                    row = conn.execute("SELECT line_id FROM machines WHERE site_id = %s AND machine_id = %s",
                                       [site, machine]).fetchone()
                    self._machines[(site, machine)] = MachineState(site, str(row[0]) if row else "", machine)
                self._reload[(site, machine)] = min(self._reload.get((site, machine), since), since)
        for key, since in list(self._reload.items()):
            m = self._machines[key]
            self._load(conn, m, self._site(conn, m.site), since)
        self._reload.clear()

    def _compute(self, conn: store.Conn) -> None:
        dirty = [m for m in self._machines.values() if m.dirty_from is not None and m.loaded and m.horizon > _NEVER]
        rows: list[tuple[str, str, str, str, int, int, NDArray[np.float64]]] = []
        by_site: dict[str, list[MachineState]] = defaultdict(list)
        for m in dirty:
            by_site[m.site].append(m)
        for site, machines in by_site.items():
            cal = self._site(conn, site)
            spans = compute_atoms([(m, cal) for m in machines])
            for m, (lo, hi) in zip(machines, spans, strict=True):
                for kind, ws, we, sums in m.window_sums(cal, lo, hi):
                    rows.append((m.site, m.machine, m.line, kind, ws, we, sums))
                m.trim(cal)
                self._pending_events.add((m.site, m.machine))
        if dirty:
            self.computes += 1
            store.save_windows(conn, rows)
        self._publish_oee()
        self._publish_rollups(conn)

    # -- live events -------------------------------------------------------------------------------------

    def _publish_state(self, m: MachineState, cal: SiteCalendar, ts: int, code: int) -> None:
        if self.live is None:
            return
        category = Category(cal.config.category_of(code)).name.lower()
        self._events.append(("state", m.site, {"site": m.site, "line": m.line, "machine": m.machine, "ts": ts,
                                            "code": code, "category": category}))

    def _publish_oee(self) -> None:
        if self.live is None:
            self._pending_events.clear()
            return
        now = time.monotonic()
        for key in list(self._pending_events):
            if now - self._last_event.get(key, -1e9) < self.oee_event_every_s:
                continue
            self._pending_events.discard(key)
            self._last_event[key] = now
            m = self._machines[key]
            cal = self._sites.get(m.site)
            if cal is None or m.horizon <= _NEVER:
                continue
            self._pending_rollups.setdefault(m.site, set()).add(m.line)
            for kind, ws, we, sums in m.window_sums(cal, m.horizon, m.horizon):
                if not ws <= m.horizon < we:
                    continue
                r = ratios(sums)
                self._events.append(("oee", m.site, {
                    "scope": "machine", "id": m.machine, "site": m.site, "window_kind": kind,
                    "start": store.dt(ws).isoformat(), "end": store.dt(we).isoformat(),
                    "availability": r["availability"], "performance": r["performance"],
                    "quality": r["quality"], "oee": r["oee"],
                    "performance_capped": bool(int(sums[FLAGS]) & FLAG_PERFORMANCE_CAPPED),
                }))  # fmt: skip

    def _publish_rollups(self, conn: store.Conn) -> None:
        """`oee` events for the lines and sites whose machines just published, at most one per site per
        `oee_event_every_s`: the current hour, shift and day summed over the stored windows of every machine
        (planned time and ideal output weigh each machine, as in `/api/v1/oee`)."""
        if self.live is None:
            self._pending_rollups.clear()
            return
        now = time.monotonic()
        for site in list(self._pending_rollups):
            if now - self._last_rollup.get(site, -1e9) < self.oee_event_every_s:
                continue
            lines = self._pending_rollups.pop(site)
            self._last_rollup[site] = now
            cal = self._sites.get(site)
            horizon = max((m.horizon for (s, _), m in self._machines.items() if s == site), default=_NEVER)
            if cal is None or horizon <= _NEVER:
                continue
            current = [(kind, ws) for kind in ("hour", "shift", "day")
                       for ws, we in cal.windows(kind, horizon, horizon + 1) if ws <= horizon < we]
            if not current:
                continue
            match = " OR ".join("(kind = %s AND start_ts = %s)" for _ in current)
            cur = conn.execute(
                f"SELECT line_id, kind, start_ts, max(end_ts) AS end_ts, {SUMS_SQL}, bit_or(flags) AS flags"
                f" FROM oee_windows WHERE site_id = %s AND ({match})"
                " GROUP BY GROUPING SETS ((line_id, kind, start_ts), (kind, start_ts))",
                [site, *(x for kind, ws in current for x in (kind, store.dt(ws)))],
            )
            names = [d.name for d in cur.description or []]
            for values in cur.fetchall():
                row = dict(zip(names, values, strict=True))
                line = row["line_id"]
                if line is not None and line not in lines:
                    continue
                r = ratios_of(row, one_machine=False)
                self._events.append(("oee", site, {
                    "scope": "site" if line is None else "line", "id": site if line is None else line, "site": site,
                    "window_kind": row["kind"], "start": row["start_ts"].astimezone(UTC).isoformat(),
                    "end": row["end_ts"].astimezone(UTC).isoformat(),
                    "availability": r["availability"], "performance": r["performance"], "quality": r["quality"],
                    "oee": r["oee"], "performance_capped": r["performance_capped"], "no_output": r["no_output"],
                }))  # fmt: skip
