"""A planning worker's thread: one `check_once()` round every `interval_s` until stopped.

A database outage is logged once (and its end once); any other failure of a round is logged and the next round
runs as usual, so one bad round never ends the worker.
"""

from __future__ import annotations

import logging
import threading

from zhizao.cloud.storage.db import StorageError

log = logging.getLogger(__name__)


class Rounds:
    """Base of the periodic planning workers: subclasses set `label` and implement `check_once()`."""

    label = "planning worker"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db_down = False

    def check_once(self) -> object:
        """One round (tests call it directly)."""
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"zhizao-{self.label.replace(' ', '-')}", daemon=True)
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
                if self._db_down:
                    log.warning("%s: database back", self.label)
                    self._db_down = False
            except StorageError as exc:  # the database is away: said once, tried again next round
                if not self._db_down:
                    log.warning("%s: database unavailable, will retry: %s", self.label, exc)
                    self._db_down = True
            except Exception:  # one bad round must not stop the worker
                log.exception("%s: round failed", self.label)
