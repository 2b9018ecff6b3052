"""Closing the loop: a started production order reaches its line as a signed RunOrder command.

`ProductionOrderSender(conninfo, kick)(po_id, actor, token_id)` queues one command per output machine of the
order's line (the line's `output_machine`, or each of its machines for `all`, the order split evenly) on the
remote-command path (cloud/commands: signed DCMD -> edge agent -> OPC UA method call -> read-back):
`Method/RunOrder` with the arguments as a JSON object, as the machine's agent declares them
(`{"product", "quantity", "rate_per_min", "changeover_min"}`), in the output machine's counts: quantity =
units x counts_per_unit, rate = the product's ideal line rate x counts_per_unit, and the changeover the plan
gave the lot. The commands are audited (`command.create`, by the operator who started the order) and go
through the dispatcher like any other; a line whose agent declares no RunOrder gets none (the answer says so).

`LineDispatcher(planner, sender).check_once()` (a worker every few seconds in the cloud service) keeps the
accepted plan running: a started production order whose line has counted its quantity (`Planner.progress_units`)
is done; then a line with no started order whose last production order is done gets its next planned lot of the
accepted plan (lowest `seq`) started and sent as above, once its material is there by the end of its
changeover (its order's release time minus the lot's changeover has passed) and either the done order was of
the same plan (the lot the plan has next) or the lot's planned start has come. A line that has never run a
production order gets its first from its operator (`start`). The
state change and the queued commands are one transaction under a per-line lock, so a lot is sent once, also
across restarts and with more than one cloud host.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.auth import audit_params
from zhizao.cloud.planning.rounds import Rounds
from zhizao.cloud.storage.db import translate_errors

if TYPE_CHECKING:
    from zhizao.cloud.planning.service import Planner

__all__ = ["DISPATCHER", "RUN_ORDER", "LineDispatcher", "ProductionOrderSender", "Sent"]

log = logging.getLogger(__name__)
RUN_ORDER = "Method/RunOrder"
TTL_S = 300.0
DISPATCHER = "line-dispatcher"  # the actor of what the dispatcher does (audit, commands)


def line_lock(site: str, line: str) -> str:
    """The key of a line's transaction lock (`pg_advisory_xact_lock(hashtext(key))`): whoever starts a
    production order on the line (the dispatcher, an operator through the API) holds it meanwhile."""
    return f"zhizao.line-dispatch:{site}/{line}"


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
            sent = self.queue(conn, po_id, actor, token_id)
        self.sent(po_id, sent)
        return sent

    def sent(self, po_id: int, sent: Sent) -> None:
        """After the transaction of `queue` committed: dispatch now; say why nothing went."""
        if sent.commands and self.kick is not None:
            self.kick()
        if sent.problem:
            log.warning("production order %s not sent to its line: %s", po_id, sent.problem)

    def queue(self, conn: psycopg.Connection[Any], po_id: int, actor: str, token_id: int | None) -> Sent:
        """Queue the commands in the caller's transaction."""
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


class LineDispatcher(Rounds):
    """Completes production orders from the counters and starts each line's next lot (see the module
    docstring); `check_once` does one round (tests call it directly), `start` runs rounds in a thread."""

    label = "line dispatcher"

    def __init__(self, planner: Planner, sender: ProductionOrderSender, interval_s: float = 2.0) -> None:
        super().__init__(interval_s)
        self.planner = planner
        self.sender = sender

    def check_once(self, now: datetime | None = None) -> dict[str, list[Any]]:
        """One round: {"completed": [po_id], "started": [{"po_id", "line", "commands", "problem"}]}."""
        now = now or datetime.now(UTC)
        completed: list[int] = []
        started: list[dict[str, Any]] = []
        with translate_errors(), psycopg.connect(self.planner.conninfo, autocommit=True) as conn:
            for po_id, site, line, product, quantity, since, order_id in conn.execute(
                    "SELECT po_id, site_id, line_id, product_id, quantity, started_at, order_id FROM production_orders"
                    " WHERE status = 'started' ORDER BY po_id").fetchall():
                made = self.planner.progress_units(conn, site, line, product, since)
                if made + 1e-6 >= float(quantity) and self._complete(conn, int(po_id), str(site), str(order_id),
                                                                      made, now):
                    completed.append(int(po_id))
            lines = conn.execute(
                "SELECT DISTINCT p.site_id, p.line_id FROM production_orders p JOIN plan_versions v USING (plan_id)"
                " WHERE p.status = 'planned' AND v.status = 'accepted' ORDER BY 1, 2").fetchall()
            for site, line in lines:
                with conn.transaction():
                    got = self._start_next(conn, str(site), str(line), now)
                if got is not None:
                    po_id, sent = got
                    self.sender.sent(po_id, sent)
                    started.append({"po_id": po_id, "line": f"{site}/{line}", "commands": sent.commands,
                                    "problem": sent.problem})
        for item in started:
            log.info("line %s: next production order %s started (%d commands)", item["line"], item["po_id"],
                     len(item["commands"]))
        return {"completed": completed, "started": started}

    @staticmethod
    def _complete(conn: psycopg.Connection[Any], po_id: int, site: str, order_id: str, made: float,
                  now: datetime) -> bool:
        with conn.transaction():
            cur = conn.execute("UPDATE production_orders SET status = 'done', finished_at = %s"
                               " WHERE po_id = %s AND status = 'started'", [now, po_id])
            if cur.rowcount != 1:
                return False  # finished meanwhile (the operator, another host)
            conn.execute("UPDATE plan_orders SET status = 'done', updated_at = now() WHERE order_id = %s AND NOT EXISTS"
                         " (SELECT 1 FROM production_orders WHERE order_id = %s AND status IN ('planned', 'started'))",
                         [order_id, order_id])
            sql, params = audit_params(None, DISPATCHER, "planning.po.complete", site, str(po_id),
                                       {"made": made, "counted": True})
            conn.execute(sql, params)
        return True

    def _start_next(self, conn: psycopg.Connection[Any], site: str, line: str,
                    now: datetime) -> tuple[int, Sent] | None:
        """In the caller's transaction: start the line's next lot when it is due; (po_id, what was queued)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [line_lock(site, line)])
        last = conn.execute(
            "SELECT po_id, status, plan_id FROM production_orders WHERE site_id = %s AND line_id = %s"
            " AND status IN ('started', 'done') ORDER BY (status = 'started') DESC, finished_at DESC NULLS LAST,"
            " po_id DESC LIMIT 1", [site, line]).fetchone()
        if last is None or last[1] != "done":
            return None  # the line runs an order, or its operator has not started the plan there yet
        row = conn.execute(
            "SELECT p.po_id, p.planned_start, o.release_ts, p.product_id, p.quantity, p.plan_id, coalesce(t.setup_s, 0)"
            " FROM production_orders p JOIN plan_versions v ON v.plan_id = p.plan_id AND v.status = 'accepted'"
            " LEFT JOIN plan_orders o ON o.order_id = p.order_id"
            " LEFT JOIN plan_lots t ON t.plan_id = p.plan_id AND t.lot_id = p.lot_id"
            " WHERE p.site_id = %s AND p.line_id = %s AND p.status = 'planned' ORDER BY p.seq, p.po_id LIMIT 1"
            " FOR UPDATE OF p", [site, line]).fetchone()
        if row is None:
            return None
        po_id, planned_start, release, product, quantity, plan_id, setup_s = row
        # Its material is there by the end of its changeover (which may run before the release) ...
        released = release is None or release <= now + timedelta(seconds=float(setup_s))
        # ... and it is the lot the accepted plan has after the one just done, or its planned start has come.
        follows = int(last[2]) == int(plan_id)
        if not (released and (follows or planned_start <= now)):
            return None
        conn.execute("UPDATE production_orders SET status = 'started', started_at = %s WHERE po_id = %s",
                     [now, po_id])
        sql, params = audit_params(None, DISPATCHER, "planning.po.start", site, str(po_id),
                                   {"line": line, "product": product, "quantity": quantity, "after": int(last[0])})
        conn.execute(sql, params)
        return int(po_id), self.sender.queue(conn, int(po_id), DISPATCHER, None)
