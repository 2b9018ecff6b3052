"""The arrays that carry samples through the edge: adapter -> outbox -> Sparkplug publisher.

A `SampleBlock` is columnar: one entry per value change, never one Python object per sample. Every
component of the edge hot path (adapter callback, outbox append, DDATA encoding) works on whole blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zhizao.broker.contract.quality import QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE

__all__ = ["QUALITY_BAD", "QUALITY_GOOD", "QUALITY_STALE", "SampleBlock", "Signal", "SignalTable"]


@dataclass(frozen=True)
class Signal:
    """One machine signal the agent publishes: `machine` is the Sparkplug device id, `metric` the metric name."""

    machine: str
    metric: str
    datatype: int  # broker.sparkplug DataType value (Int32, Int64, Double, Boolean, String, ...)
    unit: str = ""


@dataclass
class SignalTable:
    """All signals of one edge agent; a signal's index in `signals` is its id on the hot path."""

    signals: list[Signal] = field(default_factory=list)

    def add(self, signal: Signal) -> int:
        """Append a signal and return its index."""
        self.signals.append(signal)
        return len(self.signals) - 1

    def __len__(self) -> int:
        return len(self.signals)


@dataclass(frozen=True)
class SampleBlock:
    """Value changes as parallel arrays of equal length, in arrival order.

    signal:  int32 index into the agent's `SignalTable`
    ts_ms:   int64 source timestamp, milliseconds since the Unix epoch, UTC
    value:   float64 value (counters, states and booleans are exact in float64 below 2**53; DateTime as epoch ms)
    quality: int16 quality code (QUALITY_GOOD, QUALITY_BAD, QUALITY_STALE)
    The rare values float64 cannot carry travel in `text`, a tuple of (index into this block, canonical text)
    pairs, and their `value` is NaN: strings, arrays (JSON) and 64-bit integers beyond 2**53 (decimal digits);
    the signal's datatype says which (`broker.sparkplug.typed`).
    """

    signal: npt.NDArray[np.int32]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int16]
    text: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.signal)
        if not (len(self.ts_ms) == len(self.value) == len(self.quality) == n):
            raise ValueError(
                f"SampleBlock arrays differ in length: signal={n}, ts_ms={len(self.ts_ms)}, "
                f"value={len(self.value)}, quality={len(self.quality)}"
            )

    def __len__(self) -> int:
        return len(self.signal)

    @staticmethod
    def empty() -> SampleBlock:
        """A block with no samples."""
        return SampleBlock(
            np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int16)
        )

    @staticmethod
    def concat(blocks: list[SampleBlock]) -> SampleBlock:
        """Join blocks in order into one."""
        if not blocks:
            return SampleBlock.empty()
        if len(blocks) == 1:
            return blocks[0]
        text: list[tuple[int, str]] = []
        offset = 0
        for b in blocks:
            text.extend((i + offset, s) for i, s in b.text)
            offset += len(b)
        return SampleBlock(
            np.concatenate([b.signal for b in blocks]),
            np.concatenate([b.ts_ms for b in blocks]),
            np.concatenate([b.value for b in blocks]),
            np.concatenate([b.quality for b in blocks]),
            tuple(text),
        )
