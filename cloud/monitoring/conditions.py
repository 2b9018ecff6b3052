"""Alarm conditions with on/off delays over irregular samples: one numba pass over many keys at once.

A condition is on when `on_cond` has held for `on_delay` ms (measured in sample time), and goes off when
`off_cond` has held for `off_delay` ms; `on_cond` and `off_cond` carry the level and the deadband, so between
them nothing changes (hysteresis). The state of every key (active, on since, off since) lives in three arrays
that the service persists with the detector state, so a restart continues every pending delay exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

I64 = NDArray[np.int64]
NONE = np.int64(-(2**62))  # "not pending"


@njit(cache=True, inline="always")
def _step(active: bool, on_since: Any, off_since: Any, t: int, on_c: bool, off_c: bool, on_d: int,
          off_d: int) -> tuple[bool, Any, Any, int]:  # pragma: no cover - numba
    """One sample of a key in (active, on since, off since) -> (active, on since, off since, event): +1 raised,
    -1 cleared, 0. On plain values: the callers write a key's state back only where it changed."""
    event = 0
    if active:
        if off_c:
            if off_since == NONE:
                off_since = t
            if t - off_since >= off_d:
                active, off_since, on_since, event = False, NONE, NONE, -1
        else:
            off_since = NONE
    else:
        if on_c:
            if on_since == NONE:
                on_since = t
            if t - on_since >= on_d:
                active, on_since, off_since, event = True, NONE, NONE, 1
        else:
            on_since = NONE
    return active, on_since, off_since, event


@njit(cache=True, nogil=True)
def condition_kernel(key: np.ndarray, ts: np.ndarray, on_cond: np.ndarray, off_cond: np.ndarray,
                     on_delay: np.ndarray, off_delay: np.ndarray, active: np.ndarray, on_since: np.ndarray,
                     off_since: np.ndarray, events: np.ndarray, moved: np.ndarray) -> None:  # pragma: no cover
    """Advance each sample's key (samples in time order per key); events[i] = +1 raised, -1 cleared, 0;
    moved[i] where the sample changed its key's state (active, on since, off since)."""
    for i in range(key.size):
        k = key[i]
        a0, on0, off0 = active[k], on_since[k], off_since[k]
        a, on, off, events[i] = _step(a0, on0, off0, ts[i], on_cond[i], off_cond[i], on_delay[i], off_delay[i])
        moved[i] = a != a0 or on != on0 or off != off0
        if moved[i]:
            active[k], on_since[k], off_since[k] = a, on, off


@njit(cache=True, nogil=True)
def level_kernel(tag: np.ndarray, ts: np.ndarray, score: np.ndarray, late: np.ndarray, on: np.ndarray,
                 off: np.ndarray, on_delay: np.ndarray, off_delay: np.ndarray, key_of: np.ndarray,
                 active: np.ndarray, on_since: np.ndarray, off_since: np.ndarray, events: np.ndarray,
                 mark: np.ndarray, moved: np.ndarray) -> int:  # pragma: no cover - numba
    """`condition_kernel` over scores against per-tag levels, in one pass: each in-order scored sample (not
    late, score not NaN) is on above `on[tag]` and off below `off[tag]`, with the tag's delays, on the key
    `key_of[tag]`. The keys that moved go to `moved` (once each, `mark` is the scratch); their count, or -1
    (nothing advanced) when a scored tag has no key yet."""
    for i in range(tag.size):
        if not late[i] and score[i] == score[i] and key_of[tag[i]] < 0:
            return -1
    n_moved = 0
    for i in range(tag.size):
        events[i] = 0
        s = score[i]
        if late[i] or s != s:
            continue
        g = tag[i]
        k = key_of[g]
        a0, on0, off0 = active[k], on_since[k], off_since[k]
        a, on_s, off_s, events[i] = _step(a0, on0, off0, ts[i], s > on[g], s < off[g], on_delay[g], off_delay[g])
        if a != a0 or on_s != on0 or off_s != off0:
            active[k], on_since[k], off_since[k] = a, on_s, off_s
            if not mark[k]:
                mark[k] = True
                moved[n_moved] = k
                n_moved += 1
    for j in range(n_moved):
        mark[moved[j]] = False
    return n_moved


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
    _mark: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))

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

    def run_levels(self, tag: NDArray[np.int32], ts: I64, score: NDArray[np.float64], late: NDArray[np.bool_],
                   on: NDArray[np.float64], off: NDArray[np.float64], on_delay_ms: I64, off_delay_ms: I64,
                   key_of: I64) -> NDArray[np.int8] | None:
        """Scores against per-tag levels (`level_kernel`); +1/-1 per sample where its condition was raised or
        cleared; None (nothing advanced) when a scored tag has no key in `key_of` yet."""
        events = np.zeros(tag.size, np.int8)
        if not tag.size:
            return events
        if self._mark.size < len(self.keys):
            self._mark = np.zeros(max(len(self.keys), 2 * self._mark.size), np.bool_)
        moved = np.empty(min(tag.size, len(self.keys)), np.int64)
        n = level_kernel(tag, ts, score, late, on, off, on_delay_ms, off_delay_ms, key_of, self.active,
                         self.on_since, self.off_since, events, self._mark, moved)
        if n < 0:
            return None
        if n:
            self.touched.update(moved[:n].tolist())
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
