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

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics.anomaly import Detector
from zhizao.cloud.monitoring.rules import DetectorParams

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
I32 = NDArray[np.int32]
NEVER = -(2**62)


@dataclass
class Group:
    """The tags of one detector spec: their state columns, newest scored time and sample count."""

    params: DetectorParams
    detector: Detector | None  # None: `detector: none`, samples are only tracked (time order), never scored
    state: F64  # (per-tag state size, tags): one column per tag, whatever the detector's own layout
    tags_first: bool = False  # the detector's state is (tags, size) rather than (size, tags)
    tags: list[int] = field(default_factory=list)
    col: dict[int, int] = field(default_factory=dict)
    last_ts: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    samples: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, tag: int, state: F64 | None = None, last_ts: int = NEVER, samples: int = 0) -> int:
        """A new column (fresh state unless a persisted column is given)."""
        fresh = self.detector.init_state(1).reshape(-1, 1) if self.detector is not None else np.zeros((0, 1))
        column = fresh if state is None else state.reshape(-1, 1)
        self.state = np.ascontiguousarray(np.hstack([self.state, column]))
        self.col[tag] = len(self.tags)
        self.tags.append(tag)
        self.last_ts = np.append(self.last_ts, last_ts)
        self.samples = np.append(self.samples, samples)
        return self.col[tag]

    def remove(self, tag: int) -> None:
        """Drop a tag's column (it moved to another spec)."""
        c = self.col.pop(tag)
        keep = np.ones(len(self.tags), np.bool_)
        keep[c] = False
        self.state = np.ascontiguousarray(self.state[:, keep])
        self.last_ts, self.samples = self.last_ts[keep], self.samples[keep]
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
    """Detector states of every scored tag, grouped by spec."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.spec_of: dict[int, str] = {}
        self.calls = 0

    def group(self, params: DetectorParams) -> Group:
        """The group of a spec (created empty)."""
        key = params.spec_key()
        g = self.groups.get(key)
        if g is None:
            det = params.build() if params.detector != "none" else None
            rows = det.init_state(1).size if det is not None else 0
            tags_first = det is not None and det.state_shape(2)[0] != det.state_shape(1)[0]
            g = self.groups[key] = Group(params, det, np.zeros((rows, 0)), tags_first)
        return g

    def assign(self, tag: int, params: DetectorParams, state: F64 | None = None, last_ts: int = NEVER,
               samples: int = 0) -> None:
        """Score `tag` with `params` (moving it, with a fresh state, when its spec changed)."""
        key = params.spec_key()
        old = self.spec_of.get(tag)
        if old == key:
            return
        if old is not None:
            prev = self.groups[old]
            # A new detector starts afresh from the tag's newest scored sample: history is never re-scored.
            last_ts = max(last_ts, int(prev.last_ts[prev.col[tag]]))
            prev.remove(tag)
        g = self.group(params)
        if state is not None and state.size != g.state.shape[0]:
            state = None  # a stored state of another layout: start afresh
        g.add(tag, state, last_ts, samples)
        self.spec_of[tag] = key

    def unassign(self, tag: int) -> None:
        """Stop scoring `tag`."""
        old = self.spec_of.pop(tag, None)
        if old is not None:
            self.groups[old].remove(tag)

    def column(self, tag: int) -> tuple[str, F64, int, int]:
        """(spec key, state column, newest scored ms, samples) of a tag, for persisting."""
        key = self.spec_of[tag]
        g = self.groups[key]
        c = g.col[tag]
        return key, g.state[:, c].copy(), int(g.last_ts[c]), int(g.samples[c])

    def score(self, tag: I32, ts: I64, value: F64) -> Scores:
        """Score samples sorted by (tag, ts), unique, all of tags in the bank; state advances for in-order ones."""
        n = tag.size
        score = np.full(n, np.nan)
        late = np.zeros(n, np.bool_)
        if not n:
            return Scores(tag, ts, value, score, late)
        # Per distinct tag, not per sample: its group and column, then spread over the samples.
        uniq, inv = np.unique(tag, return_inverse=True)
        keys = list(self.groups)
        gid_u = np.array([keys.index(self.spec_of[int(t)]) for t in uniq.tolist()], np.int64)
        col_u = np.array([self.groups[keys[g]].col[int(t)] for g, t in zip(gid_u.tolist(), uniq.tolist(), strict=True)],
                         np.int64)
        gid, col_all = gid_u[inv], col_u[inv]
        for gi, key in enumerate(keys):
            g = self.groups[key]
            sel = np.flatnonzero(gid == gi)
            if not sel.size:
                continue
            cols = col_all[sel]
            is_late = ts[sel] <= g.last_ts[cols]
            late[sel] = is_late
            for lat in (False, True):
                part = sel[is_late == lat]
                if part.size:
                    score[part] = self._run(g, cols[is_late == lat], value[part], copy=lat)
            fresh = sel[~is_late]
            if fresh.size:
                fc = cols[~is_late]
                # sorted by (tag, ts): the last sample of each tag is its newest
                np.maximum.at(g.last_ts, fc, ts[fresh])
                np.add.at(g.samples, fc, 1)
        return Scores(tag, ts, value, score, late)

    def _run(self, g: Group, cols: I64, values: F64, *, copy: bool) -> F64:
        """One kernel call over the (rank, tag) matrix of these samples (cols in (tag, ts) order)."""
        if g.detector is None:
            return np.full(cols.size, np.nan)
        uniq, first, counts = np.unique(cols, return_index=True, return_counts=True)
        pos = np.searchsorted(uniq, cols)
        rank = np.arange(cols.size) - first[pos]
        x = np.full((int(counts.max()), uniq.size), np.nan)
        x[rank, pos] = values
        st = np.ascontiguousarray(g.state[:, uniq].T if g.tags_first else g.state[:, uniq])
        scored = g.detector.update(st, x)
        self.calls += 1
        if not copy:
            g.state[:, uniq] = st.T if g.tags_first else st
        out: F64 = scored.scores[rank, pos]
        return out
