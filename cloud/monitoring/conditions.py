"""Alarm conditions with on/off delays over irregular samples: one numba pass over many keys at once.

A condition is on when `on_cond` has held for `on_delay` ms (measured in sample time), and goes off when
`off_cond` has held for `off_delay` ms; `on_cond` and `off_cond` carry the level and the deadband, so between
them nothing changes (hysteresis). The state of every key (active, on since, off since) lives in three arrays
that the service persists with the detector state, so a restart continues every pending delay exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit
from numpy.typing import NDArray

I64 = NDArray[np.int64]
NONE = np.int64(-(2**62))  # "not pending"


@njit(cache=True)
def condition_kernel(key: np.ndarray, ts: np.ndarray, on_cond: np.ndarray, off_cond: np.ndarray,
                     on_delay: np.ndarray, off_delay: np.ndarray, active: np.ndarray, on_since: np.ndarray,
                     off_since: np.ndarray, events: np.ndarray, moved: np.ndarray) -> None:  # pragma: no cover
    """Advance each sample's key (samples in time order per key); events[i] = +1 raised, -1 cleared, 0;
    moved[i] where the sample changed its key's state (active, on since, off since)."""
    for i in range(key.size):
        k = key[i]
        t = ts[i]
        events[i] = 0
        was_a, was_on, was_off = active[k], on_since[k], off_since[k]
        if active[k]:
            if off_cond[i]:
                if off_since[k] == NONE:
                    off_since[k] = t
                if t - off_since[k] >= off_delay[i]:
                    active[k] = False
                    off_since[k] = NONE
                    on_since[k] = NONE
                    events[i] = -1
            else:
                off_since[k] = NONE
        else:
            if on_cond[i]:
                if on_since[k] == NONE:
                    on_since[k] = t
                if t - on_since[k] >= on_delay[i]:
                    active[k] = True
                    on_since[k] = NONE
                    off_since[k] = NONE
                    events[i] = 1
            else:
                on_since[k] = NONE
        moved[i] = was_a != active[k] or was_on != on_since[k] or was_off != off_since[k]


@dataclass
class Conditions:
    """Condition states by key (text), grown as keys appear; `touched` lists keys whose state changed since the
    service last persisted them (a key that did not move needs no new row: its stored row, or the fresh state
    when it has none, is still what it holds)."""

    keys: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    active: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    on_since: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    off_since: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    last_ts: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    last_value: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, np.float64))
    touched: set[int] = field(default_factory=set)

    def ids(self, keys: list[str]) -> I64:
        """Indices of `keys`, adding fresh (inactive) states for new ones."""
        new = [k for k in dict.fromkeys(keys) if k not in self.index]
        if new:
            for k in new:
                self.index[k] = len(self.keys)
                self.keys.append(k)
            n = len(new)
            self.active = np.concatenate([self.active, np.zeros(n, np.bool_)])
            self.on_since = np.concatenate([self.on_since, np.full(n, NONE, np.int64)])
            self.off_since = np.concatenate([self.off_since, np.full(n, NONE, np.int64)])
            self.last_ts = np.concatenate([self.last_ts, np.full(n, NONE, np.int64)])
            self.last_value = np.concatenate([self.last_value, np.full(n, np.nan)])
        return np.array([self.index[k] for k in keys], np.int64)

    def restore(self, key: str, active: bool, on_since: int | None, off_since: int | None,
                last_ts: int | None = None, last_value: float | None = None) -> None:
        """Set a key's state as persisted."""
        i = int(self.ids([key])[0])
        self.active[i] = active
        self.on_since[i] = NONE if on_since is None else on_since
        self.off_since[i] = NONE if off_since is None else off_since
        self.last_ts[i] = NONE if last_ts is None else last_ts
        self.last_value[i] = np.nan if last_value is None else last_value

    def run(self, key: I64, ts: I64, on_cond: NDArray[np.bool_], off_cond: NDArray[np.bool_],
            on_delay_ms: I64, off_delay_ms: I64) -> NDArray[np.int8]:
        """Advance the conditions over samples sorted by (key, ts); +1/-1 where a condition was raised/cleared."""
        events = np.zeros(key.size, np.int8)
        if key.size:
            moved = np.zeros(key.size, np.bool_)
            condition_kernel(key, ts, on_cond, off_cond, on_delay_ms, off_delay_ms, self.active, self.on_since,
                             self.off_since, events, moved)
            if moved.any():
                self.touched.update(np.unique(key[moved]).tolist())
        return events

    def row(self, i: int) -> tuple[str, bool, int | None, int | None, int | None, float | None]:
        """(key, active, on since, off since, last ts, last value) for persisting."""
        on, off, lt, lv = int(self.on_since[i]), int(self.off_since[i]), int(self.last_ts[i]), float(self.last_value[i])
        return (self.keys[i], bool(self.active[i]), None if on == NONE else on, None if off == NONE else off,
                None if lt == NONE else lt, None if lv != lv else lv)

    def forget(self, prefix: str) -> None:
        """Reset (inactive, nothing pending) every key starting with `prefix` (a rule was edited or removed)."""
        for k, i in self.index.items():
            if k.startswith(prefix):
                self.active[i] = False
                self.on_since[i] = NONE
                self.off_since[i] = NONE
                self.touched.add(i)
