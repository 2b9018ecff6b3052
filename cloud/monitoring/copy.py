"""Binary COPY streams built by numpy (no Python object per row) for the monitoring service's hot writes."""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

PG_EPOCH_MS = 946_684_800_000
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

# (ts timestamptz, tag_id integer, score double precision, alarm boolean), fixed-width big-endian fields.
_SCORE = np.dtype([("nf", ">i2"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_tag", ">i4"), ("tag", ">i4"),
                   ("l_s", ">i4"), ("s", ">f8"), ("l_a", ">i4"), ("a", "u1")])
_SCORE_NULL = np.dtype([("nf", ">i2"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_tag", ">i4"), ("tag", ">i4"),
                        ("l_s", ">i4"), ("l_a", ">i4"), ("a", "u1")])

SCORE_STAGE_DDL = ("CREATE TEMP TABLE IF NOT EXISTS zhizao_score_stage (ts timestamptz NOT NULL, tag_id integer NOT NULL,"
                   " score double precision, alarm boolean NOT NULL) ON COMMIT DELETE ROWS")
STATE_STAGE_DDL = ("CREATE TEMP TABLE IF NOT EXISTS zhizao_state_stage (tag_id integer NOT NULL, spec_key text NOT NULL,"
                   " state bytea NOT NULL, last_ts_ms bigint NOT NULL, samples bigint NOT NULL) ON COMMIT DELETE ROWS")


def scores_copy(ts_ms: NDArray[np.int64], tag: NDArray[np.int32], score: NDArray[np.float64],
                alarm: NDArray[np.bool_]) -> memoryview:
    """A binary COPY stream (header to trailer, one buffer: `cp.write` takes it as it is) for zhizao_score_stage;
    a NaN score becomes NULL."""
    ts_us = (ts_ms - PG_EPOCH_MS) * 1000
    null = np.isnan(score)
    n_null = int(null.sum())
    n_val = score.size - n_null
    h = len(HEADER)
    buf = np.empty(h + n_val * _SCORE.itemsize + n_null * _SCORE_NULL.itemsize + len(TRAILER), np.uint8)
    buf[:h] = np.frombuffer(HEADER, np.uint8)
    at = h
    for dtype, n, mask in ((_SCORE, n_val, ~null), (_SCORE_NULL, n_null, null)):
        if not n:
            continue
        rows = buf[at:at + n * dtype.itemsize].view(dtype)
        at += n * dtype.itemsize
        whole = n == score.size  # nothing to pick: no copies
        rows["nf"], rows["l_ts"], rows["l_tag"], rows["l_a"] = 4, 8, 4, 1
        rows["ts"] = ts_us if whole else ts_us[mask]
        rows["tag"] = tag if whole else tag[mask]
        rows["a"] = alarm if whole else alarm[mask]
        if dtype is _SCORE:
            rows["l_s"] = 8
            rows["s"] = score if whole else score[mask]
        else:
            rows["l_s"] = -1
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
