"""A production order on the simulator: a changeover (Held, the changeover code), then Execute at the product's
ideal rate until the quantity is made, then Idle (no order); in the model and as the RunOrder method over OPC UA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asyncua import Client, ua

from zhizao.edge.sim.model import EXECUTE, IDLE, FactoryModel, OrderRefused
from zhizao.edge.sim.server import SimServer
from zhizao.seeds import load_scenario

START = 1_780_000_000_000  # Friday 2026-05-29 04:26 in Shanghai: inside the Hefei night shift


def test_run_order_changes_over_then_runs_at_the_product_rate() -> None:
    path = "ah-hefei/mod-1/mod-1-m04"
    scenario = load_scenario().subset([path])
    m = FactoryModel(scenario, seed=1, start_ms=START, dt_ms=1000)
    m.mtbf_s[:] = 1e12  # no random stops: the test reads the order's own effect
    m.fail_p[:] = 0.0
    m.micro_p[:] = 0.0
    m.initial()
    m.run_order(0, rate_per_min=6.0, changeover_min=2.0)
    before = int(m.processed[0])
    states, reasons = [], []
    for _ in range(120 + 300):
        m.step()
        states.append(int(m.state[0]))
        reasons.append(int(m.reason[0]))
    assert states[:119] == [11] * 119 and set(reasons[:119]) == {100000}  # Held, changeover
    assert set(states[121:]) == {EXECUTE}
    assert m.ideal[0] == 6.0 and m.speed[0] == 6.0
    assert int(m.processed[0]) - before == pytest.approx(30, abs=1)  # 300 s at 6/min
    with pytest.raises(ValueError, match="rate_per_min"):
        m.run_order(0, rate_per_min=0.0, changeover_min=1.0)


def test_run_order_stops_at_its_quantity_then_idles_without_an_order() -> None:
    scenario = load_scenario().subset(["ah-hefei/mod-1/mod-1-m04"])
    m = FactoryModel(scenario, seed=2, start_ms=START, dt_ms=1000)
    m.fail_p[:] = 0.0
    m.micro_p[:] = 0.0
    m.reject[:] = 0.0
    m.initial()
    m.run_order(0, rate_per_min=60.0, changeover_min=0.0, quantity=25)
    good0 = int(m.processed[0] - m.defective[0])
    for _ in range(60):
        m.step()
    assert int(m.processed[0] - m.defective[0]) - good0 == 25  # exactly the order, not a unit more
    assert (int(m.state[0]), int(m.reason[0]), float(m.speed[0])) == (IDLE, 170000, 0.0)  # Idle: no order
    m.command(0, "Start")  # an operator runs the machine on
    m.step()
    assert int(m.state[0]) == EXECUTE
    m.fail(0, minutes=1.0)
    m.step()
    assert int(m.state[0]) == 9  # Aborted
    with pytest.raises(OrderRefused, match="failure"):
        m.run_order(0, rate_per_min=60.0, changeover_min=0.0, quantity=5)
    with pytest.raises(ValueError, match="quantity"):
        m.run_order(0, rate_per_min=60.0, changeover_min=0.0, quantity=-1)


def test_run_order_method_over_opc_ua(free_port: int, run_sim: Any, make_scenario: Any) -> None:
    scenario = make_scenario(1, ideal_rate_per_min=60.0, reject_rate=0.0)

    async def main() -> None:
        sim = SimServer(scenario, free_port, seed=3, dt_ms=100, users={"planner": "planner-pass"})
        client = Client(sim.endpoint)
        client.set_user("planner")  # anonymous clients may not call methods (test_sim_access.py)
        client.set_password("planner-pass")
        async with run_sim(sim), client:
            machine = client.get_node("ns=2;s=s1/l1/m01")
            method = client.get_node("ns=2;s=s1/l1/m01/RunOrder")
            state = client.get_node("ns=2;s=s1/l1/m01/State")
            count = client.get_node("ns=2;s=s1/l1/m01/ProdProcessedCount")
            design = client.get_node("ns=2;s=s1/l1/m01/MachDesignSpeed")
            names = [a.Name for a in await (await method.get_child("0:InputArguments")).read_value()]
            assert names == ["product", "quantity", "rate_per_min", "changeover_min"]
            # Refused arguments: the machine carries on as before.
            for bad in (["", 10.0, 600.0, 0.0], ["p", 10.0, -5.0, 0.0], ["p", 10.0, 600.0]):
                with pytest.raises(ua.UaStatusCodeError) as info:
                    await machine.call_method(method.nodeid, *bad)
                assert info.value.code in (ua.StatusCodes.BadInvalidArgument, ua.StatusCodes.BadArgumentsMissing)
            before = await count.read_value()
            await machine.call_method(method.nodeid, "board-a", 40.0, 600.0, 0.05)  # 3 s changeover, 10/s
            await _until(lambda: _is(state.read_value(), 11))  # Held: the changeover
            await _until(lambda: _is(state.read_value(), 6))  # Execute at the product's rate
            assert await design.read_value() == 600.0
            await _until(lambda: _is(state.read_value(), 4), within_s=10)  # Idle once 40 are made
            assert await count.read_value() - before == 40
            assert await client.get_node("ns=2;s=s1/l1/m01/StopReason").read_value() == 170000

    asyncio.run(main())


async def _is(value: Awaitable[Any], wanted: Any) -> bool:
    return bool(await value == wanted)


async def _until(check: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
