"""The shipped conformance suite (`check_adapter`) over every installed adapter, and over adapters that break it.

Each installed adapter type needs a harness in HARNESSES: an installed adapter without one fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from zhizao.edge.adapters.base import AdapterTemporaryError, installed_adapters, load_adapter
from zhizao.edge.adapters.opcua import OpcUaAdapter
from zhizao.edge.adapters.opcua.testing import OpcUaHarness
from zhizao.edge.adapters.testing import CHECKS, ConformanceError, Harness, check_adapter
from zhizao.edge.samples import SampleBlock

HARNESSES: dict[str, Callable[[], Harness]] = {"opcua": OpcUaHarness}
ADAPTERS = sorted(installed_adapters())


def test_every_installed_adapter_has_a_harness() -> None:
    assert "opcua" in ADAPTERS
    assert set(ADAPTERS) <= set(HARNESSES), f"adapters without a conformance harness: {set(ADAPTERS) - set(HARNESSES)}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_installed_adapter_passes_every_check(name: str) -> None:
    report = check_adapter(load_adapter(name), HARNESSES[name]())
    assert report.adapter == name and report.passed == CHECKS


class SecondsAdapter(OpcUaAdapter):
    """Delivers timestamps in epoch seconds instead of milliseconds."""

    def __init__(self, config: Any, signals: Any, sink: Any, on_device_state: Any = None) -> None:
        def seconds(block: SampleBlock) -> None:
            sink(SampleBlock(block.signal, block.ts_ms // 1000, block.value, block.quality, block.text))

        super().__init__(config, signals, seconds, on_device_state)


class LeakyAdapter(OpcUaAdapter):
    """Lets a library exception out of connect() instead of mapping it onto an AdapterError."""

    async def connect(self) -> None:
        try:
            await super().connect()
        except AdapterTemporaryError as exc:
            raise ConnectionRefusedError(str(exc)) from None


class FloatSignalAdapter(OpcUaAdapter):
    """Delivers the signal column as float64 and a quality code of its own."""

    def __init__(self, config: Any, signals: Any, sink: Any, on_device_state: Any = None) -> None:
        def wrong(block: SampleBlock) -> None:
            sink(SampleBlock(block.signal.astype(np.float64), block.ts_ms, block.value,
                             np.full(len(block), 7, np.int16)))

        super().__init__(config, signals, wrong, on_device_state)


@pytest.mark.parametrize(
    ("cls", "failing", "reason"),
    [
        (SecondsAdapter, {"timestamps"}, "expected UTC epoch milliseconds of now"),
        (LeakyAdapter, {"unreachable device"}, "ConnectionRefusedError left the adapter"),
        (FloatSignalAdapter, {"sample arrays", "quality codes"}, "signal is float64, expected int32"),
    ],
    ids=["seconds", "leaky", "dtypes"],
)
def test_broken_adapter_fails_the_named_checks(cls: type[OpcUaAdapter], failing: set[str], reason: str) -> None:
    with pytest.raises(ConformanceError) as info:
        check_adapter(cls, OpcUaHarness())
    err = info.value
    assert {name for name, _ in err.failures} == failing
    assert reason in str(err) and all(f"- {name}: " in str(err) for name in failing)
    assert isinstance(err, AssertionError)
    # The independent checks still ran and passed.
    assert {"config refuses extra keys", "close before connect"} <= set(err.passed)


def test_a_config_model_that_accepts_typos_fails() -> None:
    from pydantic import ConfigDict

    from zhizao.edge.adapters.opcua import OpcUaConfig

    class LaxConfig(OpcUaConfig):
        model_config = ConfigDict(extra="ignore", frozen=True)

    class LaxAdapter(OpcUaAdapter):
        config_model = LaxConfig

    class LaxHarness(OpcUaHarness):
        def _config(self, endpoint: str) -> OpcUaConfig:
            return LaxConfig.model_validate(super()._config(endpoint).model_dump())

    with pytest.raises(ConformanceError) as info:
        check_adapter(LaxAdapter, LaxHarness())
    assert [name for name, _ in info.value.failures] == ["config refuses extra keys"]
    assert "LaxConfig accepted the unknown key 'no_such_key' (use extra='forbid')" in str(info.value)


def test_a_class_that_is_not_an_adapter_fails_before_the_harness_starts() -> None:
    class NotAdapter:
        name = "nothing"

    class Untouchable(OpcUaHarness):
        def start(self) -> None:
            raise AssertionError("the harness must not start for a class that is not an adapter")

    with pytest.raises(ConformanceError, match=r"- class: .* is not an Adapter subclass"):
        check_adapter(NotAdapter, Untouchable())  # type: ignore[arg-type]


def test_an_incomplete_harness_fails_before_it_starts() -> None:
    class NoPoke:
        started = False

        def start(self) -> None:
            self.started = True

        def stop(self) -> None:
            pass

    harness = NoPoke()
    with pytest.raises(ConformanceError, match=r"- harness: NoPoke lacks config, unreachable, sources, poke"):
        check_adapter(OpcUaAdapter, harness)  # type: ignore[arg-type]
    assert not harness.started
