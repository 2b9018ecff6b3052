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
                alarm: NDArray[np.bool_]) -> bytes:
    """Rows for zhizao_score_stage; a NaN score becomes NULL."""
    parts = [HEADER]
    ts_us = (ts_ms - PG_EPOCH_MS) * 1000
    null = np.isnan(score)
    for dtype, mask in ((_SCORE, ~null), (_SCORE_NULL, null)):
        n = int(mask.sum())
        if not n:
            continue
        rows = np.empty(n, dtype)
        rows["nf"], rows["l_ts"], rows["ts"], rows["l_tag"], rows["tag"] = 4, 8, ts_us[mask], 4, tag[mask]
        if dtype is _SCORE:
            rows["l_s"], rows["s"] = 8, score[mask]
        else:
            rows["l_s"] = -1
        rows["l_a"], rows["a"] = 1, alarm[mask]
        parts.append(rows.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)


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
