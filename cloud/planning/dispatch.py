"""Closing the loop: a started production order reaches its line as a signed RunOrder command.

`ProductionOrderSender(conninfo, kick)(po_id, actor, token_id)` queues one command per output machine of the
order's line (the line's `output_machine`, or each of its machines for `all`, the order split evenly) on the
remote-command path (cloud/commands: signed DCMD -> edge agent -> OPC UA method call -> read-back):
`Method/RunOrder` with the arguments as a JSON object, as the machine's agent declares them
(`{"product", "quantity", "rate_per_min", "changeover_min"}`), in the output machine's counts: quantity =
units x counts_per_unit, rate = the product's ideal line rate x counts_per_unit, and the changeover the plan
gave the lot. The commands are audited (`command.create`, by the operator who started the order) and go
through the dispatcher like any other; a line whose agent declares no RunOrder gets none (the answer says so).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.auth import audit_params
from zhizao.cloud.storage.db import translate_errors

__all__ = ["RUN_ORDER", "ProductionOrderSender", "Sent"]

log = logging.getLogger(__name__)
RUN_ORDER = "Method/RunOrder"
TTL_S = 300.0


@dataclass(frozen=True)
class Sent:
    """What starting a production order sent: the command per machine, or why nothing went."""

    commands: list[dict[str, Any]]
    problem: str | None = None


class ProductionOrderSender:
    """Queues the RunOrder commands of a started production order (see the module docstring)."""

    def __init__(self, conninfo: str, kick: Callable[[], None] | None = None) -> None:
        self.conninfo = conninfo
        self.kick = kick

    def __call__(self, po_id: int, actor: str, token_id: int | None) -> Sent:
        with translate_errors(), psycopg.connect(self.conninfo) as conn, conn.transaction():
            sent = self._queue(conn, po_id, actor, token_id)
        if sent.commands and self.kick is not None:
            self.kick()
        if sent.problem:
            log.warning("production order %s not sent to its line: %s", po_id, sent.problem)
        return sent

    def _queue(self, conn: psycopg.Connection[Any], po_id: int, actor: str, token_id: int | None) -> Sent:
        row = conn.execute(
            "SELECT p.site_id, p.line_id, p.product_id, p.quantity, l.output_machine, c.rate_per_min,"
            " c.counts_per_unit, coalesce(t.setup_s, 0) FROM production_orders p"
            " JOIN plan_lines l ON l.site_id = p.site_id AND l.line_id = p.line_id"
            " LEFT JOIN plan_capabilities c ON c.kind_id = l.kind_id AND c.product_id = p.product_id"
            " LEFT JOIN plan_lots t ON t.plan_id = p.plan_id AND t.lot_id = p.lot_id WHERE p.po_id = %s",
            [po_id]).fetchone()
        if row is None:
            return Sent([], f"production order {po_id} or its line is unknown")
        site, line, product, quantity, output, rate, per_unit, setup_s = row
        if rate is None:
            return Sent([], f"line {site}/{line} has no rate for {product}")
        machines = [(str(m), str(e)) for m, e in conn.execute(
            "SELECT machine_id, edge_node_id FROM machines WHERE site_id = %s AND line_id = %s"
            " AND (%s = 'all' OR machine_id = %s) ORDER BY machine_id", [site, line, output, output]).fetchall()]
        if not machines:
            return Sent([], f"line {site}/{line} has no output machine {output!r}")
        targets = {str(m) for (m,) in conn.execute(
            "SELECT machine_id FROM command_targets WHERE site_id = %s AND name = %s AND machine_id = ANY(%s)",
            [site, RUN_ORDER, [m for m, _ in machines]]).fetchall()}
        missing = [m for m, _ in machines if m not in targets]
        if missing:
            return Sent([], f"the edge agent of {site}/{missing[0]} declares no {RUN_ORDER} command target")
        share = float(per_unit or 1.0) / len(machines)
        args = {"product": str(product), "quantity": round(float(quantity) * share, 6),
                "rate_per_min": round(float(rate) * share, 6), "changeover_min": round(float(setup_s) / 60, 6)}
        value = json.dumps(args)
        reason = f"production order {po_id}: {quantity:g} {product} on {site}/{line}"
        expires = datetime.now(UTC) + timedelta(seconds=TTL_S)
        out = []
        for machine, edge in machines:
            cid = uuid.uuid4()
            conn.execute(
                "INSERT INTO commands (command_id, site_id, edge_node_id, machine_id, kind, name, datatype, value,"
                " reason, status, requested_by, token_id, expires_at) VALUES (%s, %s, %s, %s, 'call', %s, %s, %s,"
                " %s, 'queued', %s, %s, %s)",
                [cid, site, edge, machine, RUN_ORDER, int(DataType.String), json.dumps(value), reason, actor,
                 token_id, expires])
            conn.execute("INSERT INTO command_events (command_id, status, detail) VALUES (%s, 'queued', %s)",
                         [cid, json.dumps({"by": actor, "production_order": po_id})])
            sql, params = audit_params(token_id, actor, "command.create", str(site), f"{machine}:{cid}",
                                       {"name": RUN_ORDER, "value": args, "reason": reason, "status": "queued"})
            conn.execute(sql, params)
            out.append({"command_id": str(cid), "machine_id": machine, **args})
        return Sent(out)
