"""Re-planning when capacity drops: a worker that looks every few seconds at what the accepted plan rests on
(lines in a failure or a long unplanned stop, from `oee_state_changes`; planned stops; shift calendars) and,
when something new takes capacity from a site or line that has production orders, proposes a repaired plan
(the solver's `repair` when present, a greedy re-solve until then) for an engineer to accept or reject.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import psycopg

from zhizao.cloud.planning.basis import Fingerprint
from zhizao.cloud.planning.rounds import Rounds
from zhizao.cloud.planning.service import Planner
from zhizao.cloud.storage.db import translate_errors

__all__ = ["ReplanWatcher"]

log = logging.getLogger(__name__)


class ReplanWatcher(Rounds):
    """Proposes a re-plan after a capacity drop; `check_once` does one look (tests call it directly)."""

    label = "re-plan watcher"

    def __init__(self, planner: Planner, interval_s: float = 2.0) -> None:
        super().__init__(interval_s)
        self.planner = planner
        self._base: tuple[int, Fingerprint] | None = None  # (accepted plan, what it rested on, as stored with it)
        self._seen: Fingerprint | None = None  # the last state looked at since the accepted plan

    def check_once(self, now: datetime | None = None) -> dict[str, Any] | None:
        """Propose a re-plan if capacity dropped where production orders are planned; the proposal or None."""
        now = now or datetime.now(UTC)
        with translate_errors(), psycopg.connect(self.planner.conninfo) as conn:
            row = conn.execute("SELECT plan_id, basis FROM plan_versions WHERE status = 'accepted'"
                               " ORDER BY plan_id DESC LIMIT 1").fetchone()
            if row is None:
                return None
            current = self.planner.fingerprint(conn, now)
            if self._base is None or self._base[0] != int(row[0]):
                # What the accepted plan was built on: a drop between its proposal and now is news.
                self._base, self._seen = (int(row[0]), Fingerprint.of_json(row[1]) if row[1] else current), None
            base = self._base[1]
            if not current.news(base):  # capacity came back, or nothing changed: that is the new normal
                self._base, self._seen = (int(row[0]), current), None
                return None
            news = current.news(self._seen or base)  # only what was not looked at already
            self._seen = current
            if not news:
                return None
            busy_lines = {(str(s), str(ln)) for s, ln in conn.execute(
                "SELECT DISTINCT site_id, line_id FROM production_orders WHERE status IN ('planned', 'started')").fetchall()}
        busy_sites = {s for s, _ in busy_lines}
        affected = [text for site, line, text in news
                    if (site, line) in busy_lines or (line is None and site in busy_sites)]
        if not affected:
            return None
        result = self.planner.propose("replan-watcher", None, reason="replan: " + "; ".join(affected), now=now)
        log.info("capacity dropped (%s): proposed plan %s in %.2f s", "; ".join(affected), result["plan_id"],
                 result["solve_s"])
        return result
