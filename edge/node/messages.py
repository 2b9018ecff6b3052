"""Sparkplug message contents built from arrays: birth metric lists and DDATA chunks of a sample block.

Aliases (unique across the edge node, as Sparkplug requires once aliases are used): node health metrics use
`HEALTH_ALIASES` (1..4, 8..10), `bdSeq`, `Node Control/Rebirth` and the node's `zhizao/Batch` use 5, 6 and 7; machine
signal `i` of the agent's `SignalTable` uses `SIGNAL_ALIAS_BASE + i`, and device `d`'s own `zhizao/Batch`
metric `SIGNAL_ALIAS_BASE + len(signals) + d`. Every metric a DATA message carries is born in the NBIRTH (node
metrics) or in that device's DBIRTH, with name, alias and datatype, so a strict host or an independent decoder
reads each DATA message from its birth alone, and a host that knows nothing of zhizao sees `zhizao/Batch` as
one more Int64 metric.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.sparkplug.codec import ENG_UNIT, BirthMetric
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.typed import ARRAY_TYPES, bytes_of_text, pack_array
from zhizao.edge.samples import QUALITY_GOOD, SampleBlock, SignalTable

SIGNAL_ALIAS_BASE = 100
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
BDSEQ_ALIAS, REBIRTH_ALIAS, NODE_BATCH_ALIAS = 5, 6, 7
# Node health metrics (NBIRTH and the periodic health NDATA): name -> (alias, datatype).
OUTBOX_DEPTH_METRIC = "Health/OutboxDepth"
OUTBOX_BYTES_METRIC = "Health/OutboxBytes"
SAMPLES_PER_S_METRIC = "Health/SamplesPerSecond"
RECONNECTS_METRIC = "Health/Reconnects"
OUTBOX_FILL_METRIC = "Health/OutboxFill"  # outbox bytes / its disk budget, 0..1
OUTBOX_REFUSED_METRIC = "Health/OutboxRefusedSamples"  # samples refused because the outbox was full (since start)
COMMANDS_REFUSED_METRIC = "Health/CommandsRefused"  # NCMD/DCMD refused (unknown metric, not writable, bad value)
HEALTH_ALIASES: dict[str, tuple[int, DataType]] = {
    OUTBOX_DEPTH_METRIC: (1, DataType.Int64),
    OUTBOX_BYTES_METRIC: (2, DataType.Int64),
    SAMPLES_PER_S_METRIC: (3, DataType.Double),
    RECONNECTS_METRIC: (4, DataType.Int64),
    OUTBOX_FILL_METRIC: (8, DataType.Double),
    OUTBOX_REFUSED_METRIC: (9, DataType.Int64),
    COMMANDS_REFUSED_METRIC: (10, DataType.Int64),
}
INTEGER_TYPES = {int(t) for t in (1, 2, 3, 4, 5, 6, 7, 8, 13)}
_TEXT = {int(DataType.String), int(DataType.Text), int(DataType.UUID)}


@dataclass(frozen=True)
class DataChunk:
    """The samples of one DDATA message: one device, chronological, at most `max_samples_per_message`."""

    device: int
    alias: npt.NDArray[np.uint64]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    datatype: npt.NDArray[np.uint32]
    quality: npt.NDArray[np.int16]
    text: tuple[tuple[int, str], ...]


class SignalIndex:
    """Lookups from signal index to device, datatype and alias, as arrays for the hot path."""

    def __init__(self, signals: SignalTable) -> None:
        self.signals = signals
        self.devices: list[str] = list(dict.fromkeys(s.machine for s in signals.signals))
        dev = {d: i for i, d in enumerate(self.devices)}
        self.device_of = np.array([dev[s.machine] for s in signals.signals], np.int32)
        self.datatype_of = np.array([s.datatype for s in signals.signals], np.uint32)
        self.alias_of = (np.arange(len(signals), dtype=np.uint64) + SIGNAL_ALIAS_BASE).astype(np.uint64)
        self.by_device: list[list[int]] = [[] for _ in self.devices]
        for i, s in enumerate(signals.signals):
            self.by_device[dev[s.machine]].append(i)
        self.datatype_by_alias = {
            int(a): int(d) for a, d in zip(self.alias_of, self.datatype_of, strict=True)
        }
        self.by_name = {(s.machine, s.metric): i for i, s in enumerate(signals.signals)}

    def batch_alias(self, device: int) -> int:
        """The alias of device `device`'s `zhizao/Batch` metric (after every signal alias)."""
        return SIGNAL_ALIAS_BASE + len(self.signals) + device

    def signal_of_alias(self, alias: int) -> int | None:
        """The signal index behind a DATA/CMD alias, or None."""
        i = alias - SIGNAL_ALIAS_BASE
        return i if 0 <= i < len(self.signals) else None


def split_block(block: SampleBlock, index: SignalIndex, max_per_message: int) -> list[DataChunk]:
    """Group a block by device, order each device's samples by time (stable), cut into messages."""
    n = len(block)
    if n == 0:
        return []
    dev = index.device_of[block.signal]
    order = np.lexsort((block.ts_ms, dev))  # stable: primary device, then timestamp, then arrival
    dev_sorted = dev[order]
    bounds = [0, *(np.flatnonzero(np.diff(dev_sorted)) + 1).tolist(), n]
    rank: npt.NDArray[np.int64] | None = None
    if block.text:
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
    sig_sorted = block.signal[order]
    ts_sorted = block.ts_ms[order]
    val_sorted = block.value[order]
    q_sorted = block.quality[order]
    chunks: list[DataChunk] = []
    for a, b in itertools.pairwise(bounds):
        for start in range(a, b, max_per_message):
            stop = min(start + max_per_message, b)
            sig = sig_sorted[start:stop]
            text: tuple[tuple[int, str], ...] = ()
            if rank is not None:
                text = tuple((int(rank[i]) - start, s) for i, s in block.text if start <= int(rank[i]) < stop)
            chunks.append(
                DataChunk(
                    int(dev_sorted[start]),
                    index.alias_of[sig],
                    ts_sorted[start:stop],
                    val_sorted[start:stop],
                    index.datatype_of[sig],
                    q_sorted[start:stop],
                    text,
                )
            )
    return chunks


class LastValues:
    """The latest value of every signal (for births), updated from live blocks with array operations."""

    def __init__(self, n: int) -> None:
        self.value = np.full(n, np.nan)
        self.ts_ms = np.zeros(n, np.int64)
        self.quality = np.full(n, QUALITY_GOOD, np.int16)
        self.seen = np.zeros(n, np.bool_)
        self.text: dict[int, str] = {}

    def update(self, block: SampleBlock) -> None:
        """Take the last sample per signal of `block` (arrival order)."""
        n = len(block)
        if n == 0:
            return
        rev = block.signal[::-1]
        sig, first_rev = np.unique(rev, return_index=True)
        last = n - 1 - first_rev
        self.value[sig] = block.value[last]
        self.ts_ms[sig] = block.ts_ms[last]
        self.quality[sig] = block.quality[last]
        self.seen[sig] = True
        if block.text or self.text:
            last_of = dict(zip(sig.tolist(), last.tolist(), strict=True))
            for s in last_of:
                self.text.pop(s, None)
            for i, s in block.text:
                k = int(block.signal[i])
                if last_of.get(k) == i:
                    self.text[k] = s


def _birth_value(datatype: int, value: float, text: str | None) -> float | int | bool | str | None:
    if datatype in _TEXT:
        return text
    if datatype in ARRAY_TYPES or datatype == DataType.Bytes:
        # an array's canonical text or Bytes' base64, which the codec packs; one that does not fit the datatype
        # (the device changed type: its DATA went as null with bad quality) is no value, not a failed birth
        try:
            if text is not None:
                pack_array(datatype, text) if datatype in ARRAY_TYPES else bytes_of_text(text)
        except ValueError:
            return None
        return text
    if text is not None:  # a 64-bit integer beyond 2**53 (exact as text); any other type: not a value of it
        return int(text) if datatype in (DataType.Int64, DataType.UInt64) and text.lstrip("-").isdigit() else None
    if math.isnan(value):
        return None if datatype not in (9, 10) else value
    if datatype in INTEGER_TYPES:
        return int(value)
    if datatype == DataType.Boolean:
        return value != 0.0
    return float(value)


def device_birth_metrics(
    device: int, index: SignalIndex, last: LastValues, now_ms: int, batch: int
) -> list[BirthMetric]:
    """Every metric of one device with name, alias, datatype and its latest value (null if none yet), and the
    device's `zhizao/Batch` metric (the last batch id handed out, which its DDATA messages then carry)."""
    out: list[BirthMetric] = [BirthMetric(BATCH_METRIC, DataType.Int64, batch, index.batch_alias(device), now_ms)]
    for i in index.by_device[device]:
        s = index.signals.signals[i]
        seen = bool(last.seen[i])
        value = _birth_value(s.datatype, float(last.value[i]), last.text.get(i)) if seen else None
        q = int(last.quality[i])
        props: dict[str, tuple[DataType, float | int | bool | str | None]] = {}
        if seen and q != QUALITY_GOOD:
            props["Quality"] = (DataType.Int32, q)
        if s.unit:
            props[ENG_UNIT] = (DataType.String, s.unit)  # the Sparkplug engineering-unit property
        out.append(
            BirthMetric(
                s.metric,
                DataType(s.datatype),
                value,
                alias=int(index.alias_of[i]),
                timestamp_ms=int(last.ts_ms[i]) if seen else now_ms,
                properties=props or None,
            )
        )
    return out


def node_birth_metrics(bd_seq: int, batch: int, health: dict[str, float], now_ms: int) -> list[BirthMetric]:
    """NBIRTH metrics, each with an alias: bdSeq, Node Control/Rebirth (false), zhizao/Batch, the health metrics."""
    out = [
        BirthMetric(BDSEQ_METRIC, DataType.Int64, bd_seq, BDSEQ_ALIAS, now_ms),
        BirthMetric(REBIRTH_METRIC, DataType.Boolean, False, REBIRTH_ALIAS, now_ms),
        BirthMetric(BATCH_METRIC, DataType.Int64, batch, NODE_BATCH_ALIAS, now_ms),
    ]
    for name, (alias, dt) in HEALTH_ALIASES.items():
        v = health.get(name, 0)
        out.append(BirthMetric(name, dt, float(v) if dt == DataType.Double else int(v), alias, now_ms))
    return out


def now_ms() -> int:
    """Wall-clock UTC time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def health_arrays(
    health: dict[str, float], now_ms: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint32]]:
    """(alias, ts, value, datatype) arrays of the health metrics, for an NDATA."""
    names = list(HEALTH_ALIASES)
    alias = np.array([HEALTH_ALIASES[k][0] for k in names], np.uint64)
    dts = np.array([int(HEALTH_ALIASES[k][1]) for k in names], np.uint32)
    values = np.array([float(health.get(k, 0.0)) for k in names], np.float64)
    return alias, np.full(len(names), now_ms, np.int64), values, dts
