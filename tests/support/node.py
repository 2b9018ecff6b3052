"""A small signal table and sample blocks for edge-node tests."""

from __future__ import annotations

import time

import numpy as np

from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.samples import QUALITY_GOOD, SampleBlock, Signal, SignalTable

SIGNALS = [
    ("m1", "State", DataType.Int32),
    ("m1", "Counts/Total", DataType.Int64),
    ("m1", "Temperature/Spindle", DataType.Double),
    ("m2", "State", DataType.Int32),
    ("m2", "Note", DataType.String),
]
NAME = {i: (m, n) for i, (m, n, _) in enumerate(SIGNALS)}


def signal_table() -> SignalTable:
    t = SignalTable()
    for machine, metric, dt in SIGNALS:
        t.add(Signal(machine, metric, int(dt)))
    return t


def block(
    signals: list[int],
    values: list[float],
    t0: int | None = None,
    text: tuple[tuple[int, str], ...] = (),
    quality: list[int] | None = None,
) -> SampleBlock:
    t0 = t0 if t0 is not None else time.time_ns() // 1_000_000
    n = len(signals)
    return SampleBlock(
        np.array(signals, np.int32),
        t0 + np.arange(n, dtype=np.int64),
        np.array(values, np.float64),
        np.array(quality or [QUALITY_GOOD] * n, np.int16),
        text,
    )
