"""Clients steer machines: MachSpeed writes are honoured (and clamped), Start/Stop/Reset follow PackML."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Client, ua

from zhizao.edge.sim.server import SimServer

M = "ns=2;s=s1/l1/m01"


async def _until(check: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_machspeed_start_stop_reset(free_port: int, run_sim: Any, make_scenario: Any) -> None:
    scenario = make_scenario(2, ideal_rate_per_min=600.0)

    async def main() -> None:
        sim = SimServer(scenario, free_port, seed=5, dt_ms=100, users={"op": "op-pass"})
        client = Client(sim.endpoint)
        client.set_user("op")  # anonymous clients may not write or call (test_sim_access.py)
        client.set_password("op-pass")
        async with run_sim(sim), client:
            node = {tag: client.get_node(f"{M}/{tag}") for tag in (
                "State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount", "MachSpeed", "CurMachSpeed")}  # fmt: skip

            async def value(tag: str) -> Any:
                return await node[tag].read_value()

            assert await value("State") == 6 and await value("StopReason") == 0
            assert await value("MachSpeed") == 600.0

            # MachSpeed is honoured: the actual speed follows and the counter advances at that rate.
            await node["MachSpeed"].write_value(ua.Variant(300.0, ua.VariantType.Double))
            await _until(lambda: _eq(value("CurMachSpeed"), 300.0))
            a = await node["ProdProcessedCount"].read_data_value()
            await asyncio.sleep(1.0)  # the scenario: a second of production at that speed
            b = await node["ProdProcessedCount"].read_data_value()
            minutes = (b.SourceTimestamp - a.SourceTimestamp).total_seconds() / 60
            assert abs((b.Value.Value - a.Value.Value) - 300.0 * minutes) <= 1.0
            # The other machine kept its own setpoint.
            assert await client.get_node("ns=2;s=s1/l1/m02/CurMachSpeed").read_value() == 600.0

            # Setpoints outside [0, 1.5 x ideal] are refused with BadOutOfRange; the last good one stays.
            for bad in (1e6, -1.0, float("nan")):
                try:
                    await node["MachSpeed"].write_value(ua.Variant(bad, ua.VariantType.Double))
                except ua.UaStatusCodeError as exc:
                    assert exc.code == ua.StatusCodes.BadOutOfRange
                else:
                    raise AssertionError(f"MachSpeed accepted {bad}")
            assert await value("MachSpeed") == 300.0
            await node["MachSpeed"].write_value(ua.Variant(900.0, ua.VariantType.Double))  # the upper bound
            await _until(lambda: _eq(value("CurMachSpeed"), 900.0))

            # Stop: Stopped (2) with the unspecified-stop code, nothing produced.
            machine = client.get_node(M)
            await machine.call_method("2:Stop")
            await _until(lambda: _eq(value("State"), 2))
            assert await value("StopReason") == 40000 and await value("CurMachSpeed") == 0.0
            frozen = await value("ProdProcessedCount")
            steps = sim.stats.steps + 5  # five more steps written (0.5 s of production, had it run)
            await _until(lambda: _true(sim.stats.steps >= steps))
            assert await value("ProdProcessedCount") == frozen > 0

            # Reset: counters to zero, a stopped machine goes Idle (4).
            await machine.call_method("2:Reset")
            await _until(lambda: _eq(value("State"), 4))
            assert await value("ProdProcessedCount") == 0 and await value("ProdDefectiveCount") == 0

            # Start: Execute again at the last setpoint.
            await machine.call_method("2:Start")
            await _until(lambda: _eq(value("State"), 6))
            await _until(lambda: _gt(value("ProdProcessedCount"), 0))
            assert await value("StopReason") == 0 and await value("CurMachSpeed") == 900.0

            # Process nodes are read-only.
            try:
                await node["State"].write_value(ua.Variant(9, ua.VariantType.Int32))
            except ua.UaStatusCodeError as exc:
                assert exc.code == ua.StatusCodes.BadUserAccessDenied
            else:
                raise AssertionError("State accepted a client write")

    asyncio.run(main())


async def _eq(got: Awaitable[Any], want: Any) -> bool:
    return bool(await got == want)


async def _gt(got: Awaitable[Any], floor: Any) -> bool:
    return bool(await got > floor)


async def _true(cond: bool) -> bool:
    return cond
