"""Fleet-wide scoring: every process-signal tag in one detector state array per detector spec.

Tags with the same detector and settings share one state array (a column per tag), so a committed batch costs
one `Detector.update` call per spec, whatever the number of tags. A batch's samples become a (rank, tag)
matrix: row r holds each tag's r-th new sample, NaN where a tag has fewer; detectors skip NaN without
touching their state, so every tag's column sees exactly its own samples in time order and the result does not
depend on how the ingest cut its batches (the detectors' batch-split rule).

Samples at or before a tag's newest scored time (an edge replaying its outbox while live data flows, or a
duplicate) are scored in time order against a copy of the tag's state: they get scores, the live model never
goes back in time, and the state stays what a restart resumes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

from zhizao.analytics.anomaly import Detector
from zhizao.cloud.monitoring.rules import DetectorParams

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
NEVER = -(2**62)


@njit(cache=True, nogil=True)
def _by_tag(tag: np.ndarray, ts: np.ndarray, val: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """A stable counting sort on the tag, then the first of equal (tag, ts) kept; False where a tag's times are
    not in order (or the tag ids too sparse for a count array): the caller sorts."""
    n = tag.size
    ordered = True  # one ingest batch: sorted and unique already
    for i in range(1, n):
        if tag[i] < tag[i - 1] or (tag[i] == tag[i - 1] and ts[i] <= ts[i - 1]):
            ordered = False
            break
    if ordered:
        return True, tag, ts, val
    lo, hi = tag.min(), tag.max()
    span = np.int64(hi) - np.int64(lo) + 1
    if span > 4 * n + 65536:
        return False, tag, ts, val
    start = np.zeros(span + 1, np.int64)
    for i in range(n):
        start[tag[i] - lo + 1] += 1
    for k in range(span):
        start[k + 1] += start[k]
    o_tag = np.empty(n, tag.dtype)
    o_ts = np.empty(n, np.int64)
    o_val = np.empty(n, np.float64)
    for i in range(n):
        j = start[tag[i] - lo]
        start[tag[i] - lo] = j + 1
        o_tag[j], o_ts[j], o_val[j] = tag[i], ts[i], val[i]
    dups = False
    for i in range(1, n):
        if o_tag[i] == o_tag[i - 1]:
            if o_ts[i] < o_ts[i - 1]:
                return False, tag, ts, val
            dups |= o_ts[i] == o_ts[i - 1]
    if not dups:
        return True, o_tag, o_ts, o_val
    m = 1
    for i in range(1, n):
        if o_tag[i] == o_tag[m - 1] and o_ts[i] == o_ts[m - 1]:
            continue  # a duplicate: the first one stays
        o_tag[m], o_ts[m], o_val[m] = o_tag[i], o_ts[i], o_val[i]
        m += 1
    return True, o_tag[:m], o_ts[:m], o_val[:m]


def sort_unique(tag: I32, ts: I64, val: F64) -> tuple[I32, I64, F64]:
    """Samples sorted by (tag, ts), the first of equal (tag, ts) kept (as a stable lexsort would): the usual
    batch (each tag's times in order) by one counting sort, without a lexsort's two passes and gathers."""
    if tag.size:
        ok, o_tag, o_ts, o_val = _by_tag(tag, ts, val)
        if ok:
            return o_tag, o_ts, o_val
    order = np.lexsort((ts, tag))
    tag, ts, val = tag[order], ts[order], val[order]
    keep = np.ones(tag.size, np.bool_)
    keep[1:] = (tag[1:] != tag[:-1]) | (ts[1:] != ts[:-1])
    if not keep.all():
        tag, ts, val = tag[keep], ts[keep], val[keep]
    return tag, ts, val


_BLOCK = 64  # runs per block of the (rank, run) transposition: a block's source lines stay in L1


@njit(cache=True, nogil=True)
def _to_matrix(cols: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The (rank, run) matrix of samples whose columns come in runs (one run per tag), NaN where a run is
    shorter, each run's column and the runs' bounds (for `_from_matrix`). Filled by blocks of runs, row by
    row: a sample-order fill writes a cache line per sample."""
    runs = 0
    for i in range(cols.size):
        if i == 0 or cols[i] != cols[i - 1]:
            runs += 1
    bounds = np.empty(runs + 1, np.int64)
    run_cols = np.empty(runs, np.int64)
    r = 0
    for i in range(cols.size):
        if i == 0 or cols[i] != cols[i - 1]:
            bounds[r] = i
            run_cols[r] = cols[i]
            r += 1
    bounds[runs] = cols.size
    longest = 0
    for r in range(runs):
        longest = max(longest, bounds[r + 1] - bounds[r])
    x = np.empty((longest, runs))
    for b0 in range(0, runs, _BLOCK):
        b1 = min(runs, b0 + _BLOCK)
        for k in range(longest):
            for r in range(b0, b1):
                i = bounds[r] + k
                x[k, r] = values[i] if i < bounds[r + 1] else np.nan
    return x, run_cols, bounds


@njit(cache=True, nogil=True)
def _from_matrix(bounds: np.ndarray, scores: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Each sample's score back from the (rank, run) matrix `_to_matrix` built."""
    runs = bounds.size - 1
    out = np.empty(bounds[runs])
    for b0 in range(0, runs, _BLOCK):
        b1 = min(runs, b0 + _BLOCK)
        for k in range(scores.shape[0]):
            for r in range(b0, b1):
                i = bounds[r] + k
                if i < bounds[r + 1]:
                    out[i] = scores[k, r]
    return out


@njit(cache=True, nogil=True)
def _any_late(cols: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> bool:  # pragma: no cover - numba
    """Some sample at or before its column's newest scored time."""
    for i in range(cols.size):  # noqa: SIM110 - numba: no generator expressions
        if ts[i] <= last_ts[cols[i]]:
            return True
    return False


@njit(cache=True, nogil=True)
def _advance(cols: np.ndarray, ts: np.ndarray, last_ts: np.ndarray, samples: np.ndarray) -> None:  # pragma: no cover
    """Newest scored time and sample count of each column, over in-order samples sorted by (tag, ts)."""
    for i in range(cols.size):
        c = cols[i]
        if ts[i] > last_ts[c]:
            last_ts[c] = ts[i]
        samples[c] += 1


class Group:
    """The tags of one detector spec: their state columns, newest scored time and sample count.

    The columns live in buffers that grow by doubling, so registering a fleet's tags one by one costs O(tags),
    not O(tags^2); `state`, `last_ts` and `samples` are views of the used part."""

    def __init__(self, params: DetectorParams, detector: Detector | None, rows: int, tags_first: bool = False,
                 index: int = 0) -> None:
        self.params = params
        self.detector = detector  # None: `detector: none`, samples are only tracked (time order), never scored
        self.tags_first = tags_first  # the detector's state is (tags, size) rather than (size, tags)
        self.index = index  # position of the group in its bank
        self.tags: list[int] = []
        self.col: dict[int, int] = {}
        self._fresh = detector.init_state(1).reshape(-1) if detector is not None else np.zeros(0)
        self._state: F64 = np.zeros((rows, 0))
        self._last: I64 = np.zeros(0, np.int64)
        self._samples: I64 = np.zeros(0, np.int64)

    @property
    def state(self) -> F64:
        """(per-tag state size, tags): one column per tag, whatever the detector's own layout."""
        return self._state[:, :len(self.tags)]

    @property
    def last_ts(self) -> I64:
        return self._last[:len(self.tags)]

    @property
    def samples(self) -> I64:
        return self._samples[:len(self.tags)]

    def add(self, tag: int, state: F64 | None = None, last_ts: int = NEVER, samples: int = 0) -> int:
        """A new column (fresh state unless a persisted column is given)."""
        n = len(self.tags)
        if n == self._last.size:
            cap = max(16, 2 * n)
            grown = np.zeros((self._state.shape[0], cap))
            grown[:, :n] = self._state[:, :n]
            self._state = grown
            self._last = np.concatenate([self._last, np.zeros(cap - n, np.int64)])
            self._samples = np.concatenate([self._samples, np.zeros(cap - n, np.int64)])
        self._state[:, n] = self._fresh if state is None else state.reshape(-1)
        self._last[n], self._samples[n] = last_ts, samples
        self.col[tag] = n
        self.tags.append(tag)
        return n

    def remove(self, tag: int) -> None:
        """Drop a tag's column (it moved to another spec)."""
        c = self.col.pop(tag)
        n = len(self.tags)
        self._state[:, c:n - 1] = self._state[:, c + 1:n].copy()
        self._last[c:n - 1] = self._last[c + 1:n].copy()
        self._samples[c:n - 1] = self._samples[c + 1:n].copy()
        self.tags.pop(c)
        self.col = {t: i for i, t in enumerate(self.tags)}


@dataclass(frozen=True)
class Scores:
    """Scores of a batch's samples, in the batch's (tag, ts) order; `late` marks samples scored on a copy."""

    tag: I32
    ts: I64
    value: F64
    score: F64
    late: NDArray[np.bool_]


class DetectorBank:
    """Detector states of every scored tag, grouped by spec.

    Per tag id, dense arrays give its group and column, so a batch finds its samples' columns by indexing,
    without a Python step per tag."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.order: list[Group] = []
        self.spec_of: dict[int, str] = {}
        self.calls = 0
        self.gid_of: I64 = np.full(0, -1, np.int64)  # tag id -> group index (-1: not scored)
        self.col_of: I64 = np.zeros(0, np.int64)  # tag id -> column in its group

    def group(self, params: DetectorParams, key: str | None = None) -> Group:
        """The group of a spec (created empty)."""
        key = params.spec_key() if key is None else key
        g = self.groups.get(key)
        if g is None:
            det = params.build() if params.detector != "none" else None
            rows = det.init_state(1).size if det is not None else 0
            tags_first = det is not None and det.state_shape(2)[0] != det.state_shape(1)[0]
            g = self.groups[key] = Group(params, det, rows, tags_first, len(self.order))
            self.order.append(g)
        return g

    def _index(self, g: Group) -> None:
        """Refresh the dense column index of a group's tags (after a column moved)."""
        if g.tags:
            self.col_of[np.array(g.tags, np.int64)] = np.arange(len(g.tags))

    def assign(self, tag: int, params: DetectorParams, state: F64 | None = None, last_ts: int = NEVER,
               samples: int = 0, key: str | None = None) -> None:
        """Score `tag` with `params` (moving it, with a fresh state, when its spec changed); `key` is
        `params.spec_key()` when the caller has it already."""
        key = params.spec_key() if key is None else key
        old = self.spec_of.get(tag)
        if old == key:
            return
        if old is not None:
            prev = self.groups[old]
            # A new detector starts afresh from the tag's newest scored sample: history is never re-scored.
            last_ts = max(last_ts, int(prev.last_ts[prev.col[tag]]))
            prev.remove(tag)
            self._index(prev)
        g = self.group(params, key)
        if state is not None and state.size != g.state.shape[0]:
            state = None  # a stored state of another layout: start afresh
        c = g.add(tag, state, last_ts, samples)
        self.spec_of[tag] = key
        if tag >= self.gid_of.size:
            size = max(2 * self.gid_of.size, tag + 1, 1024)
            self.gid_of = np.concatenate([self.gid_of, np.full(size - self.gid_of.size, -1, np.int64)])
            self.col_of = np.concatenate([self.col_of, np.zeros(size - self.col_of.size, np.int64)])
        self.gid_of[tag], self.col_of[tag] = g.index, c

    def unassign(self, tag: int) -> None:
        """Stop scoring `tag`."""
        old = self.spec_of.pop(tag, None)
        if old is not None:
            g = self.groups[old]
            g.remove(tag)
            self.gid_of[tag] = -1
            self._index(g)

    def column(self, tag: int) -> tuple[str, F64, int, int]:
        """(spec key, state column, newest scored ms, samples) of a tag, for persisting."""
        key = self.spec_of[tag]
        g = self.groups[key]
        c = g.col[tag]
        return key, g.state[:, c].copy(), int(g.last_ts[c]), int(g.samples[c])

    def score(self, tag: I32, ts: I64, value: F64) -> Scores:
        """Score samples sorted by (tag, ts), unique, all of tags in the bank; state advances for in-order ones."""
        n = tag.size
        late = np.zeros(n, np.bool_)
        if not n:
            return Scores(tag, ts, value, np.full(n, np.nan), late)
        whole = len(self.order) == 1
        score = np.empty(0) if whole else np.full(n, np.nan)  # one group: its kernel's output is the array
        col_all = self.col_of[tag]
        gid = col_all if whole else self.gid_of[tag]
        for g in self.order:
            if whole:
                cols, g_ts = col_all, ts
            else:
                sel = np.flatnonzero(gid == g.index)
                if not sel.size:
                    continue
                cols, g_ts = col_all[sel], ts[sel]
            if not _any_late(cols, g_ts, g.last_ts):  # the usual case: everything new, no selections
                out = self._run(g, cols, value if whole else value[sel], copy=False)
                if whole:
                    score = out
                else:
                    score[sel] = out
                _advance(cols, g_ts, g.last_ts, g.samples)
                continue
            if whole:
                sel, score = np.arange(n), np.full(n, np.nan)
            is_late = g_ts <= g.last_ts[cols]
            late[sel] = is_late
            for lat in (False, True):
                part = sel[is_late == lat]
                if part.size:
                    score[part] = self._run(g, cols[is_late == lat], value[part], copy=lat)
            _advance(cols[~is_late], g_ts[~is_late], g.last_ts, g.samples)
        return Scores(tag, ts, value, score, late)

    def _run(self, g: Group, cols: I64, values: F64, *, copy: bool) -> F64:
        """One kernel call over the (rank, tag) matrix of these samples (cols in (tag, ts) order: each tag's
        samples are one run)."""
        if g.detector is None:
            return np.full(cols.size, np.nan)
        x, run_cols, bounds = _to_matrix(cols, values)
        st = np.ascontiguousarray(g.state[:, run_cols].T if g.tags_first else g.state[:, run_cols])
        scored = g.detector.update(st, x)
        self.calls += 1
        if not copy:
            g.state[:, run_cols] = st.T if g.tags_first else st
        out: F64 = _from_matrix(bounds, scored.scores)
        return out
