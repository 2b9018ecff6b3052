"""A method with arguments through the command path: `RunOrder` (a production order) from the API, signed,
checked by the edge agent against the arguments it declares, called on the real simulator."""

from __future__ import annotations

import time
from typing import Any

from zhizao.bench.command import CommandStack
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.sim.model import IDLE


def post(stack: CommandStack, machine: str, **body: Any) -> tuple[int, Any]:
    return stack.api("POST", f"/api/v1/machines/{machine}/commands", "operator", {"reason": "test", **body})


def test_run_order_takes_its_arguments_as_declared_and_runs_the_machine(stack: CommandStack) -> None:
    machine = stack.machines[0]
    status, targets = stack.api("GET", f"/api/v1/machines/{machine}/command-targets", "viewer")
    run_order = next(t for t in targets if t["name"] == "Method/RunOrder")
    assert (run_order["kind"], run_order["datatype"], run_order["role"]) == ("call", int(DataType.String), "operator")

    # The cloud: a method with arguments needs them, one without takes none.
    status, doc = post(stack, machine, method="RunOrder")
    assert status == 400 and doc["error"]["field"] == "args", doc
    status, doc = post(stack, machine, method="Stop", args={"product": "x"})
    assert status == 400 and doc["error"]["field"] == "args", doc

    # The edge: names, types and limits of the declared arguments.
    for args, why in (({"product": "p1", "quantity": -5, "rate_per_min": 600, "changeover_min": 0}, "quantity=-5"),
                      ({"product": "p1", "quantity": 5, "rate_per_min": 600, "changeover_min": 0, "colour": "red"},
                       "'colour'"),
                      ({"product": 7, "quantity": 5, "rate_per_min": 600, "changeover_min": 0}, "product=7")):
        status, doc = post(stack, machine, method="RunOrder", args=args)
        assert status == 201, doc
        done = stack.wait_status(doc["command_id"], {"refused", "failed", "confirmed"})
        assert done["status"] == "refused" and why in done["message"], done

    # A good order: confirmed once the machine changes over (Held) or runs; it makes exactly the quantity.
    model = stack.sim.model
    before = int(model.processed[0] - model.defective[0])
    status, doc = post(stack, machine, method="RunOrder",
                       args={"product": "p1", "quantity": 30, "rate_per_min": 600, "changeover_min": 0.02})
    assert status == 201, doc
    done = stack.wait_status(doc["command_id"], {"refused", "failed", "confirmed"})
    assert done["status"] == "confirmed" and done["readback"] in (6, 11), done
    deadline = time.monotonic() + 15
    while not (model.order_done[0] and int(model.state[0]) == IDLE):
        assert time.monotonic() < deadline, "the order was not made in time"
        time.sleep(0.05)
    assert int(model.processed[0] - model.defective[0]) - before == 30
    assert float(model.ideal[0]) == 600.0
