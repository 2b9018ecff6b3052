"""One conformance suite for every registered adapter: lifecycle, errors, arrays, timestamps, config strictness.

Each adapter type provides a harness here: a real device to talk to, a config for it, a config for an
unreachable device, and a source table. An installed adapter without a harness fails the suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from tests.support.simserver import M1, M2, ServerThread, adapter_config, free_port, source_table
from zhizao.edge.adapters.base import Adapter, AdapterError, AdapterTemporaryError, registered_adapters
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE, SampleBlock, SignalTable


@dataclass
class Harness:
    """What the suite needs to exercise one adapter type."""

    config: Any  # reaches the live device
    unreachable: Any  # a device that is not there
    sources: SignalTable
    poke: Any  # async callable: make the device change a value


@pytest.fixture(scope="module")
def harnesses() -> Iterator[dict[str, Harness]]:
    srv = ServerThread(port=free_port())
    try:
        nodes = [M1 + "State", M1 + "Temperature/Spindle", M2 + "ProdProcessedCount"]
        yield {
            "opcua": Harness(
                config=adapter_config(srv.url),
                unreachable=adapter_config(f"opc.tcp://127.0.0.1:{free_port()}/none"),
                sources=source_table(nodes),
                poke=lambda: srv.write(nodes[1], 50.0 + time.time() % 1),
            ),
        }
    finally:
        srv.close()


ADAPTERS = sorted(registered_adapters())


def test_every_adapter_has_a_harness(harnesses: dict[str, Harness]) -> None:
    assert set(ADAPTERS) <= set(harnesses), f"adapters without a conformance harness: {set(ADAPTERS) - set(harnesses)}"


@pytest.mark.parametrize("name", ADAPTERS)
def test_config_model_is_strict_and_frozen(name: str, harnesses: dict[str, Harness]) -> None:
    cls = registered_adapters()[name]
    assert issubclass(cls.config_model, BaseModel) and cls.name == name
    data = harnesses[name].config.model_dump(mode="json")
    with pytest.raises(ValidationError, match="Extra inputs"):
        cls.config_model.model_validate({**data, "no_such_key": 1})
    with pytest.raises(ValidationError, match="frozen"):
        harnesses[name].config.name = "other"


@pytest.mark.parametrize("name", ADAPTERS)
def test_lifecycle_errors_and_sample_arrays(name: str, harnesses: dict[str, Harness]) -> None:
    cls: type[Adapter] = registered_adapters()[name]
    h = harnesses[name]
    blocks: list[SampleBlock] = []
    states: list[tuple[str, bool]] = []

    async def scenario() -> None:
        dead = cls(h.unreachable, h.sources, blocks.append, lambda m, o: states.append((m, o)))
        await dead.close()  # close before connect, twice
        await dead.close()
        with pytest.raises(AdapterError):
            await dead.run()  # run before connect
        with pytest.raises(AdapterTemporaryError):
            await dead.connect()  # only our errors leave, and an unreachable device is temporary
        await dead.close()
        assert not blocks and not states

        live = cls(h.config, h.sources, blocks.append, lambda m, o: states.append((m, o)))
        await live.connect()
        task = asyncio.create_task(live.run())
        try:
            await h.poke()
            for _ in range(200):  # up to 10 s for the initial values and the poked change
                if sum(len(b) for b in blocks) >= len(h.sources) + 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await live.close()
            await live.close()

    before = int(time.time() * 1000) - 3_600_000
    asyncio.run(scenario())
    after = int(time.time() * 1000) + 1000
    b = SampleBlock.concat(blocks)
    assert len(b) >= len(h.sources) + 1
    assert b.signal.dtype == np.int32 and b.ts_ms.dtype == np.int64
    assert b.value.dtype == np.float64 and b.quality.dtype == np.int16
    assert set(b.signal.tolist()) == set(range(len(h.sources)))
    assert np.all((b.ts_ms >= before) & (b.ts_ms <= after)), "timestamps are UTC epoch milliseconds of now"
    assert set(b.quality.tolist()) <= {QUALITY_GOOD, QUALITY_STALE, QUALITY_BAD}
    machines = {s.machine for s in h.sources.signals}
    assert {m for m, online in states if online} == machines
    assert {m for m, online in states if not online} == machines  # reported offline on close
