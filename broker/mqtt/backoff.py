"""The reconnect delay policy of every MQTT client of edge and cloud: capped exponential backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """Reconnect delays: `min_s` doubling per failed attempt up to `max_s`, each drawn from [d*(1-jitter), d].

    The jitter spreads a fleet that lost its broker at the same moment; `reset()` after a successful CONNACK.
    """

    def __init__(self, min_s: float, max_s: float, jitter: float = 0.5, rng: random.Random | None = None) -> None:
        if not min_s > 0:
            raise ValueError(f"reconnect_min_s={min_s!r}: must be > 0")
        if not max_s >= min_s:
            raise ValueError(f"reconnect_max_s={max_s!r}: must be >= reconnect_min_s ({min_s!r})")
        if not 0 <= jitter < 1:
            raise ValueError(f"reconnect_jitter={jitter!r}: must be in [0, 1)")
        self.min_s, self.max_s, self.jitter = float(min_s), float(max_s), float(jitter)
        self._rng = rng or random.Random()
        self._failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failed attempt."""
        cap = min(self.max_s, self.min_s * 2.0 ** min(self._failures, 60))
        self._failures += 1
        return cap * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Back to `min_s` (call after a successful connect)."""
        self._failures = 0
