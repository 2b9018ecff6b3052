"""One owner per site among several ingest workers: OEE, condition monitoring and their live events.

With a shared subscription every worker commits part of each site's samples, but OEE and anomaly detection
keep per-machine state and must see all of a site's samples, once. So each batch transaction also writes its
numeric samples, grouped by site, to `ingest_site_feed` (`write_feed`), and each worker runs a `SiteOwners`
thread: it holds, on its own connection, a session-level advisory lock per site it owns
(`pg_try_advisory_lock`, key `hashtext('zhizao.site-owner:' || site)`), reads that site's feed rows in order,
hands them to its commit listeners and deletes them only once every `confirm` callback (the OEE and
monitoring services' `flush`: all handed on so far is processed and committed) said so: the feed is
at-least-once. A site nobody owns is claimed at the next poll; a worker that dies loses its connection and with
it its locks, so another worker takes the site over within `poll_s` and reads every row the dead one had not
confirmed. The consumers take such a replay: the claim hooks reload their state from the database first (OEE
machines recompute the windows the samples touch from stored samples; monitoring resumes each detector and
machine after its stored last time, so samples already folded into the state are not scored again). `sites`
limits which sites this worker may own (the worker's `sites` setting).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import psycopg

from zhizao.cloud.storage.db import StorageError, map_error

log = logging.getLogger(__name__)

Listener = Callable[[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]], None]
LOCK_PREFIX = "zhizao.site-owner:"

_FEED_INSERT = (
    "INSERT INTO ingest_site_feed (site_id, tag_ids, ts_ms, value)"
    " SELECT t.site_id, array_agg(x.tag ORDER BY x.i), array_agg(x.ts ORDER BY x.i), array_agg(x.v ORDER BY x.i)"
    " FROM unnest(%s::integer[], %s::bigint[], %s::double precision[]) WITH ORDINALITY AS x(tag, ts, v, i)"
    " JOIN tags t ON t.tag_id = x.tag GROUP BY t.site_id"
)


def write_feed(
    conn: psycopg.Connection[tuple[object, ...]],
    tag: npt.NDArray[np.int32],
    ts_ms: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
) -> None:
    """In a batch's transaction: its committed numeric samples, one feed row per site."""
    if len(tag):
        conn.execute(_FEED_INSERT, [tag.tolist(), ts_ms.tolist(), value.tolist()])


class SiteOwners:
    """Claims sites through advisory locks and feeds the owned sites' committed samples to `listeners`."""

    def __init__(self, conninfo: str, listeners: list[Listener], *, sites: tuple[str, ...] = (),
                 poll_s: float = 0.2, name: str = "", on_claim: list[Callable[[str], None]] | None = None,
                 confirm: list[Callable[[], bool]] | None = None) -> None:  # fmt: skip
        self.conninfo = conninfo
        self.listeners = listeners
        # Called after the listeners got a poll's rows: True once the listeners' consumers processed all of it;
        # the rows are deleted from the feed only when every one says so (else they are handed on again).
        self.confirm = confirm if confirm is not None else []
        # Called with a site this worker has just taken over, before its feed: state kept from an earlier
        # ownership is stale (another worker computed meanwhile) and must be reloaded from the database.
        self.on_claim = on_claim if on_claim is not None else []
        self.sites = sites
        self.poll_s = poll_s
        self.name = name or "zhizao-site-owners"
        self.owned: set[str] = set()
        self.fed_samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def start(self) -> None:
        """Start the owner thread."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Feed what is left of the owned sites, release the locks (closing the connection), end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self.poll()
            except StorageError as exc:
                log.warning("site owners: %s; retrying", exc)
                self._close()
            except Exception:  # a bug must not end ownership silently: logged, the locks are given up
                log.exception("site owners failed; releasing sites")
                self._close()
            if stopping:
                break
            self._stop.wait(self.poll_s)
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            if self.owned:
                log.info("releasing sites %s", sorted(self.owned))
            self._conn.close()
            self._conn = None
        self.owned = set()

    def owns(self, site: str) -> bool:
        """Whether this worker owns `site` now (any thread)."""
        return site in self.owned

    def poll(self) -> None:
        """Claim free sites, then take and hand on the feed of every owned site."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                self.owned = set()
            conn = self._conn
            sites = [str(r[0]) for r in conn.execute(
                "SELECT site_id FROM sites WHERE cardinality(%s::text[]) = 0 OR site_id = ANY(%s::text[])",
                [list(self.sites), list(self.sites)])]  # fmt: skip
            claimed = []
            for site in sorted(set(sites) - self.owned):
                row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [LOCK_PREFIX + site]).fetchone()
                if row is not None and row[0]:
                    claimed.append(site)
                    log.info("%s owns site %s (OEE, monitoring, live events)", self.name, site)
            for site in claimed:
                for hook in list(self.on_claim):
                    try:
                        hook(site)
                    except Exception:  # a hook's bug never stops the ownership
                        log.exception("site claim hook %r failed", hook)
            self.owned.update(claimed)
            if not self.owned:
                return
            rows = conn.execute(
                "SELECT feed_id, tag_ids, ts_ms, value FROM ingest_site_feed WHERE site_id = ANY(%s::text[])"
                " ORDER BY feed_id LIMIT 1000",
                [sorted(self.owned)],
            ).fetchall()
        except psycopg.Error as exc:
            raise map_error(exc) from None
        if not rows:
            return
        self._hand_on(rows)
        if not all(self._confirmed(fn) for fn in list(self.confirm)):
            log.warning("site owners: feed not confirmed by its consumers; handed on again at the next poll")
            return
        try:
            conn.execute("DELETE FROM ingest_site_feed WHERE feed_id = ANY(%s::bigint[])", [[r[0] for r in rows]])
        except psycopg.Error as exc:
            raise map_error(exc) from None

    @staticmethod
    def _confirmed(fn: Callable[[], bool]) -> bool:
        try:
            return fn()
        except Exception:  # a consumer's bug: not confirmed, the rows stay
            log.exception("site feed confirm %r failed", fn)
            return False

    def _hand_on(self, rows: list[tuple[object, ...]]) -> None:
        for _, tags, ts, values in rows:
            tag = np.asarray(tags, np.int32)
            self.fed_samples += len(tag)
            for fn in list(self.listeners):
                try:
                    fn(tag, np.asarray(ts, np.int64), np.asarray(values, np.float64))
                except Exception:  # a listener's bug never stops the feed
                    log.exception("site listener %r failed", fn)
