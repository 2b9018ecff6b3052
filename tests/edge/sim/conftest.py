"""Fixtures for the simulator tests: small scenarios, free ports, and a running simulator in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from zhizao.edge.sim.server import SimServer
    from zhizao.seeds.model import Scenario



def _machine(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"m{i:02d}",
        "kind": "cnc-machining-center",
        "ideal_rate_per_min": 60.0,
        "nominal_speed": 1.0,
        "reject_rate": 0.05,
        # No random stops: tests that need them set behaviour themselves.
        "behaviour": {"mtbf_h": 1e9, "repair": {"median_min": 1}},
        "signals": [
            {
                "name": "Temperature/Spindle",
                "unit": "degC",
                "typical": 40.0,
                "idle": 25.0,
                "noise": 0.2,
                "resolution": 0.1,
            },
            {
                "name": "Vibration/RMS",
                "unit": "mm/s",
                "typical": 2.0,
                "idle": 0.2,
                "noise": 0.05,
                "resolution": 0.01,
            },
        ],
        **extra,
    }


@pytest.fixture
def make_scenario() -> Callable[..., Scenario]:
    """Build a one-site scenario that is always in shift, with `n` simple machines on line `l1`."""

    def make(n: int = 2, **machine_extra: Any) -> Scenario:
        from zhizao.seeds.model import Scenario

        return Scenario.model_validate({
            "name": "test",
            "sites": [{
                "id": "s1",
                "calendar": {"shifts": [{"name": "all", "start": "00:00", "hours": 24, "days": [1, 2, 3, 4, 5, 6, 7]}]},
                "state_classes": {"planned": [150000, 160000], "availability_loss": [180000], "performance_loss": [50000]},
                "lines": [{"id": "l1", "machines": [_machine(i + 1, **machine_extra) for i in range(n)]}],
            }],
        })  # fmt: skip

    return make


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running(sim: SimServer) -> AsyncIterator[tuple[SimServer, asyncio.Event, asyncio.Task[None]]]:
    """Start a simulator and its stepping loop; stop both on exit."""
    stop = asyncio.Event()
    await sim.start()
    task = asyncio.create_task(sim.run(stop))
    try:
        yield sim, stop, task
    finally:
        stop.set()
        await task
        await sim.stop()


@pytest.fixture
def run_sim() -> Callable[[SimServer], contextlib.AbstractAsyncContextManager[Any]]:
    """`async with run_sim(SimServer(...)) as (sim, stop, task):` runs a simulator for the block."""
    return running
