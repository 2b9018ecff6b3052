"""Re-planning when capacity drops: a worker that looks every few seconds at what the accepted plan rests on
(lines in a failure or a long unplanned stop, from `oee_state_changes`; planned stops; shift calendars) and,
when something new takes capacity from a site or line that has production orders, proposes a repaired plan
(the solver's `repair` when present, a greedy re-solve until then) for an engineer to accept or reject.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from zhizao.cloud.planning.service import Planner
from zhizao.cloud.storage.db import StorageError, translate_errors

__all__ = ["Fingerprint", "ReplanWatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fingerprint:
    """What capacity rests on: lines down, planned stops per site, calendar versions per site."""

    down: frozenset[tuple[str, str]]
    stops: frozenset[tuple[str, str, str]]  # (site, start, end)
    calendars: frozenset[tuple[str, str]]  # (site, updated_at)

    def news(self, base: Fingerprint) -> list[tuple[str, str | None, str]]:
        """What this fingerprint has that `base` had not: (site, line or None for the whole site, in words)."""
        out: list[tuple[str, str | None, str]] = [(s, ln, f"{s}/{ln} down") for s, ln in sorted(self.down - base.down)]
        out += [(s, None, f"planned stop at {s} {a}..{b}") for s, a, b in sorted(self.stops - base.stops)]
        out += [(s, None, f"calendar of {s} changed") for s in sorted({s for s, _ in self.calendars - base.calendars})]
        return out


class ReplanWatcher:
    """Proposes a re-plan after a capacity drop; `check_once` does one look (tests call it directly)."""

    def __init__(self, planner: Planner, interval_s: float = 2.0) -> None:
        self.planner = planner
        self.interval_s = interval_s
        self._base: tuple[int, Fingerprint] | None = None  # (accepted plan, what it rested on)
        self._proposed: Fingerprint | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fingerprint(self, conn: psycopg.Connection[Any], now: datetime) -> Fingerprint:
        down = frozenset((d.site, d.line) for d in self.planner.disruptions(conn, now))
        stops = frozenset((str(s), a.isoformat(), b.isoformat()) for s, a, b in conn.execute(
            "SELECT site_id, start_ts, end_ts FROM oee_planned_stops WHERE end_ts > %s", [now]).fetchall())
        cals = frozenset((str(s), u.isoformat()) for s, u in conn.execute(
            "SELECT site_id, updated_at FROM oee_site_config").fetchall())
        return Fingerprint(down, stops, cals)

    def check_once(self, now: datetime | None = None) -> dict[str, Any] | None:
        """Propose a re-plan if capacity dropped where production orders are planned; the proposal or None."""
        now = now or datetime.now(UTC)
        with translate_errors(), psycopg.connect(self.planner.conninfo) as conn:
            row = conn.execute("SELECT plan_id FROM plan_versions WHERE status = 'accepted'"
                               " ORDER BY plan_id DESC LIMIT 1").fetchone()
            if row is None:
                return None
            current = self.fingerprint(conn, now)
            if self._base is None or self._base[0] != int(row[0]):
                self._base, self._proposed = (int(row[0]), current), None
                return None
            base = self._base[1]
            news = current.news(base)
            if not news or current == self._proposed:
                if not news:  # capacity came back, or nothing changed: that is the new normal
                    self._base = (int(row[0]), current)
                return None
            busy_lines = {(str(s), str(ln)) for s, ln in conn.execute(
                "SELECT DISTINCT site_id, line_id FROM production_orders WHERE status IN ('planned', 'started')").fetchall()}
        busy_sites = {s for s, _ in busy_lines}
        affected = [text for site, line, text in news
                    if (site, line) in busy_lines or (line is None and site in busy_sites)]
        self._proposed = current
        if not affected:
            return None
        result = self.planner.propose("replan-watcher", None, reason="replan: " + "; ".join(affected), now=now)
        log.info("capacity dropped (%s): proposed plan %s in %.2f s", "; ".join(affected), result["plan_id"],
                 result["solve_s"])
        return result

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="zhizao-replan", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except StorageError as exc:  # the database is away: try again next round
                log.warning("re-plan check failed: %s", exc)
            except Exception:  # one bad round must not end re-planning
                log.exception("re-plan check failed")
