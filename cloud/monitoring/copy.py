"""Binary COPY streams built by numpy (no Python object per row) for the monitoring service's hot writes."""

from __future__ import annotations

import struct

import numpy as np
from numba import njit
from numpy.typing import NDArray

PG_EPOCH_MS = 946_684_800_000
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

# (ts timestamptz, tag_id integer, score double precision, alarm boolean), fixed-width big-endian fields: a row
# is 39 bytes (field count 2, then length 4 + value per field), 31 with a NULL score.
_ROW = 2 + (4 + 8) + (4 + 4) + (4 + 8) + (4 + 1)

SCORE_STAGE_DDL = ("CREATE TEMP TABLE IF NOT EXISTS zhizao_score_stage (ts timestamptz NOT NULL, tag_id integer NOT NULL,"
                   " score double precision, alarm boolean NOT NULL) ON COMMIT DELETE ROWS")
STATE_STAGE_DDL = ("CREATE TEMP TABLE IF NOT EXISTS zhizao_state_stage (tag_id integer NOT NULL, spec_key text NOT NULL,"
                   " state bytea NOT NULL, last_ts_ms bigint NOT NULL, samples bigint NOT NULL) ON COMMIT DELETE ROWS")


_U = np.uint64


@njit(cache=True, inline="always")
def _be(buf: np.ndarray, at: np.uint64, v: int, nbytes: int) -> None:  # pragma: no cover - numba
    # Unsigned byte offsets: no negative-index wraparound per store (twice as fast).
    for b in range(nbytes):
        buf[at + _U(b)] = (v >> (8 * (nbytes - 1 - b))) & 0xFF


@njit(cache=True, nogil=True)
def _score_rows(buf: np.ndarray, start: int, ts_ms: np.ndarray, tag: np.ndarray, score: np.ndarray, bits: np.ndarray,
                alarm: np.ndarray, epoch_ms: int) -> int:  # pragma: no cover - numba
    """The rows of `scores_copy` from byte `start` on, in the samples' order; the end."""
    at = _U(start)
    for i in range(tag.size):
        _be(buf, at, 4, 2)
        _be(buf, at + _U(2), 8, 4)
        _be(buf, at + _U(6), (ts_ms[i] - epoch_ms) * 1000, 8)
        _be(buf, at + _U(14), 4, 4)
        _be(buf, at + _U(18), tag[i], 4)
        at += _U(22)
        s = score[i]
        if s != s:
            _be(buf, at, -1, 4)
            at += _U(4)
        else:
            _be(buf, at, 8, 4)
            _be(buf, at + _U(4), bits[i], 8)
            at += _U(12)
        _be(buf, at, 1, 4)
        buf[at + _U(4)] = 1 if alarm[i] else 0
        at += _U(5)
    return int(at)


def scores_copy(ts_ms: NDArray[np.int64], tag: NDArray[np.int32], score: NDArray[np.float64],
                alarm: NDArray[np.bool_]) -> memoryview:
    """A binary COPY stream (header to trailer, one buffer: `cp.write` takes it as it is) for zhizao_score_stage;
    a NaN score becomes NULL. One numba pass writes the rows (the field-by-field numpy version with its masked
    copies cost 3-4x as much where a batch mixes scores and NULLs)."""
    score = np.ascontiguousarray(score, np.float64)
    n_null = int(np.isnan(score).sum())
    h = len(HEADER)
    buf = np.empty(h + score.size * _ROW - n_null * 8 + len(TRAILER), np.uint8)
    buf[:h] = np.frombuffer(HEADER, np.uint8)
    at = _score_rows(buf, h, np.ascontiguousarray(ts_ms, np.int64), np.ascontiguousarray(tag, np.int32), score,
                     score.view(np.int64), np.ascontiguousarray(alarm, np.bool_), PG_EPOCH_MS)
    buf[at:] = np.frombuffer(TRAILER, np.uint8)
    return memoryview(buf.data)


def states_copy(tag: NDArray[np.int32], spec_key: str, states: NDArray[np.float64], last_ts: NDArray[np.int64],
                samples: NDArray[np.int64]) -> bytes:
    """Rows (no header, no trailer: one COPY carries every spec) for zhizao_state_stage of one detector spec:
    `states` is (tags, state size) float64, native order (what `np.frombuffer(..., np.float64)` reads back)."""
    key = spec_key.encode()
    size = states.shape[1] * 8
    dtype = np.dtype([("nf", ">i2"), ("l_tag", ">i4"), ("tag", ">i4"), ("l_key", ">i4"), ("key", f"S{len(key)}"),
                      ("l_state", ">i4"), ("state", f"V{size}") if size else ("state", "V0"),
                      ("l_ts", ">i4"), ("ts", ">i8"), ("l_n", ">i4"), ("n", ">i8")])
    rows = np.empty(tag.size, dtype)
    rows["nf"], rows["l_tag"], rows["tag"], rows["l_key"], rows["key"] = 5, 4, tag, len(key), key
    rows["l_state"] = size
    if size:
        rows["state"] = np.ascontiguousarray(states, np.float64).view(f"V{size}").reshape(-1)
    rows["l_ts"], rows["ts"], rows["l_n"], rows["n"] = 8, last_ts, 8, samples
    return rows.tobytes()
