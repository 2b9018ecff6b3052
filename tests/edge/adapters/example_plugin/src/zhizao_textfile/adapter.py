"""The text-file adapter: reads `key value` lines every `interval_ms` and emits the values that changed."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from zhizao.edge.adapters.base import Adapter, AdapterTemporaryError
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD, SampleBlock
from zhizao_textfile.config import TextFileConfig


def read_device(path: Path) -> tuple[dict[str, str], int]:
    """The file's `key value` pairs and its modification time in UTC epoch ms; AdapterTemporaryError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        ts_ms = path.stat().st_mtime_ns // 1_000_000
    except OSError as exc:  # the one place where the device's errors become ours
        raise AdapterTemporaryError(f"textfile: cannot read {path}: {exc.strerror or exc}") from exc
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key and not key.startswith("#"):
            pairs[key] = value.strip()
    return pairs, ts_ms


class TextFileAdapter(Adapter):
    """Each source's `Signal.metric` is a key of the file; a missing key or a non-number is QUALITY_BAD."""

    name: ClassVar[str] = "textfile"
    config_model: ClassVar[type[BaseModel]] = TextFileConfig

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.config: TextFileConfig = config
        self._last: dict[int, tuple[float, int]] = {}
        self._connected = False
        self._machines = sorted({s.machine for s in self.signals.signals})

    async def connect(self) -> None:
        """Read the file once: its values are the initial samples; a missing file is a temporary error."""
        pairs, ts_ms = read_device(self.config.path)
        self._connected = True
        for machine in self._machines:
            self.on_device_state(machine, True)
        self._emit(pairs, ts_ms)

    async def run(self) -> None:
        """Re-read the file every `interval_ms` and emit what changed, until cancelled or the file goes."""
        if not self._connected:
            raise AdapterTemporaryError(f"textfile {self.config.name}: not connected")
        while True:
            await asyncio.sleep(self.config.interval_ms / 1000)
            self._emit(*read_device(self.config.path))

    async def close(self) -> None:
        """Forget the values seen; report the machines offline if they were online."""
        if self._connected:
            self._connected = False
            for machine in self._machines:
                self.on_device_state(machine, False)
        self._last.clear()

    def _emit(self, pairs: dict[str, str], ts_ms: int) -> None:
        index: list[int] = []
        values: list[float] = []
        qualities: list[int] = []
        for i, signal in enumerate(self.signals.signals):
            try:
                value, quality = float(pairs[signal.metric]), QUALITY_GOOD
            except (KeyError, ValueError):
                value, quality = math.nan, QUALITY_BAD
            key = (value, quality)
            old = self._last.get(i)
            if old is not None and (old == key or (math.isnan(value) and math.isnan(old[0]) and old[1] == quality)):
                continue
            self._last[i] = key
            index.append(i)
            values.append(value)
            qualities.append(quality)
        if index:
            n = len(index)
            self.sink(SampleBlock(np.array(index, np.int32), np.full(n, ts_ms, np.int64),
                                  np.array(values, np.float64), np.array(qualities, np.int16)))
