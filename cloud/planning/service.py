"""The planning service: orders -> lots -> Problem, a solver run, versioned plans, diffs, accepted plans as the
lines' production orders, and their progress from the counters.

The solver is a parameter (`Planner(solver=..., repair=...)`); the default is `cloud/planning/solver` (iterated
greedy with local search, CP-SAT for small exact cases) and its `repair` for re-plans; the greedy baseline
(`cloud/planning/greedy.py`) is what the benchmark compares it with. Synchronous psycopg; the API calls it in a
worker thread.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from zhizao.cloud.auth import audit_params
from zhizao.cloud.oee.calendar import SiteCalendar
from zhizao.cloud.oee.store import load_site
from zhizao.cloud.planning import greedy, solver
from zhizao.cloud.planning.basis import Disruption, Fingerprint
from zhizao.cloud.planning.capacity import Expected, expected_ap, net_intervals
from zhizao.cloud.planning.network import LineInfo, NetworkModel, load_model
from zhizao.cloud.planning.problem import Lot, Plan, Problem
from zhizao.cloud.storage.db import translate_errors

__all__ = ["DEFAULT_REPAIR", "DEFAULT_SOLVER", "Built", "Planner"]

log = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
Solve = Callable[..., Plan]
Repair = Callable[..., Plan]

DEFAULT_SOLVER: Solve = solver.solve
DEFAULT_REPAIR: Repair | None = solver.repair

HORIZON_DAYS = 60  # calendars are expanded this far; beyond it a line is taken as available
MAX_LOT_H = 24.0  # an order longer than this on its fastest line is split into equal lots
MAX_LOTS = 8
FAILURE_MIN_S = 600.0  # an unplanned stop this long (or a failure) makes a line unavailable ...
REPAIR_GUESS_S = 2 * 3600.0  # ... for this long from now, unless the engineer says how long


@dataclass
class Built:
    """A Problem and what is needed to store its plan: per-lot order facts and per-line ids."""

    problem: Problem
    lines: list[LineInfo]
    orders: dict[str, dict[str, Any]]
    disruptions: list[Disruption] = field(default_factory=list)
    expected: dict[str, Expected] = field(default_factory=dict)


def _at(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class Planner:
    """Builds, solves and stores plans on one database."""

    def __init__(self, conninfo: str, solver: Solve | None = None, repair: Repair | None = None,
                 time_limit_s: float = 5.0, repair_limit_s: float = 1.0) -> None:
        self.conninfo = conninfo
        self.solver = solver or DEFAULT_SOLVER
        self.repair = repair if repair is not None else DEFAULT_REPAIR
        self.time_limit_s = time_limit_s  # a full plan
        self.repair_limit_s = repair_limit_s  # a re-plan after a capacity drop: proposed within seconds

    # ------------------------------------------------------------------ problem
    def build(self, conn: Conn, now: datetime, extra: list[Disruption] | None = None) -> Built:
        """The Problem of every open order from `now` on (started production orders stay first on their line)."""
        model = load_model(conn)
        lines = [ln for ln in model.lines if conn.execute(
            "SELECT 1 FROM machines WHERE site_id = %s AND line_id = %s LIMIT 1", [ln.site, ln.line]).fetchone()]
        expected = expected_ap(conn, lines, now)
        orders = {str(r[0]): {"order_id": str(r[0]), "site": str(r[1]), "product": str(r[2]), "quantity": float(r[3]),
                              "due": r[4], "weight": float(r[5]), "allowed": None if r[6] is None else list(r[6]),
                              "release": r[7]}
                  for r in conn.execute("SELECT order_id, site_id, product_id, quantity, due_ts, weight, allowed_sites,"
                                        " release_ts FROM plan_orders WHERE status = 'open' ORDER BY order_id").fetchall()}
        started: dict[str, list[tuple[str, str, str, datetime, float]]] = {}
        for oid, lot_id, site, line, at, qty in conn.execute(
                "SELECT order_id, lot_id, site_id, line_id, started_at, quantity FROM production_orders"
                " WHERE status = 'started' ORDER BY started_at").fetchall():
            started.setdefault(str(oid), []).append((str(lot_id), str(site), str(line), at, float(qty)))
        taken = {str(oid): (float(q), list(ids)) for oid, q, ids in conn.execute(
            "SELECT order_id, sum(quantity), array_agg(lot_id) FROM production_orders"
            " WHERE status IN ('started', 'done') GROUP BY order_id").fetchall()}
        origin = now.timestamp()
        lots: list[Lot] = []
        fixed: dict[str, list[int]] = {}
        lot_lines: list[tuple[int, LineInfo | None]] = []
        for o in orders.values():
            if o["product"] not in model.products:
                continue
            family = model.products[o["product"]][0]
            due = o["due"].timestamp() - origin
            release = max(0.0, o["release"].timestamp() - origin) if o["release"] else 0.0
            # A started lot keeps its line (first there) with what is not counted yet.
            for lot_id, site, line, at, qty in started.get(o["order_id"], []):
                pinned = next((ln for ln in lines if ln.site == site and ln.line == line), None)
                left = max(qty - self.progress_units(conn, site, line, o["product"], at), 0.0)
                if pinned is None or left <= 0 or model.makes(pinned, o["product"]) is None:
                    continue
                fixed.setdefault(pinned.key, []).append(len(lots))
                lots.append(Lot(lot_id, o["order_id"], o["product"], family, left, due, o["weight"], release))
                lot_lines.append((len(lots) - 1, pinned))
            # The rest of the order (not started, not made) is planned freely, split when it is long.
            done_qty, used_ids = taken.get(o["order_id"], (0.0, []))
            rest = o["quantity"] - done_qty
            capable = [ln for ln in lines if self._can(model, ln, o)]
            if rest <= 1e-9 or not capable:
                continue
            best_h = min(rest / (c.rate_per_min * c.yield_) / 60
                         / (expected[ln.key].availability * expected[ln.key].performance)
                         for ln in capable if (c := model.makes(ln, o["product"])) is not None)
            k = min(MAX_LOTS, len(capable) * 2, max(1, math.ceil(best_h / MAX_LOT_H)))
            ids = [o["order_id"]] if k == 1 and not used_ids else []
            i = 0
            while len(ids) < k:
                i += 1
                if f"{o['order_id']}.{i}" not in used_ids:
                    ids.append(f"{o['order_id']}.{i}")
            for lot_id in ids:
                lots.append(Lot(lot_id, o["order_id"], o["product"], family, rest / k, due, o["weight"], release))
                lot_lines.append((len(lots) - 1, None))
        n, m = len(lots), len(lines)
        proc = np.full((n, m), np.inf)
        tr_s = np.zeros((n, m))
        tr_c = np.zeros((n, m))
        for j, lot in enumerate(lots):
            o = orders[lot.order_id]
            pinned = lot_lines[j][1]
            for i, ln in enumerate(lines):
                cap = model.makes(ln, lot.product)
                if cap is None or not self._can(model, ln, o) or (pinned is not None and pinned.key != ln.key):
                    continue
                e = expected[ln.key]
                proc[j, i] = lot.quantity / (cap.rate_per_min * cap.yield_) * 60 / (e.availability * e.performance)
                hours, cost = model.route(ln.site, o["site"])
                tr_s[j, i], tr_c[j, i] = hours * 3600, cost
        current = self.current_families(conn, model)
        # Changeovers per line as a family x family table, spread over the lots by fancy indexing.
        fam_ids = sorted({lot.family for lot in lots} | set(current.values()))
        fidx = np.array([fam_ids.index(lot.family) for lot in lots], np.int64)
        setup = np.zeros((m, n, n))
        init = np.zeros((m, n))
        for i, ln in enumerate(lines):
            table = np.array([[model.changeover_min(ln, a, b) * 60 for b in fam_ids] for a in fam_ids]).reshape(
                len(fam_ids), len(fam_ids))
            setup[i] = table[fidx[:, None], fidx[None, :]]
            now_family = current.get(ln.key)
            if now_family is not None:
                init[i] = table[fam_ids.index(now_family)][fidx]
        disruptions = self.disruptions(conn, now) + list(extra or [])
        unavailable = self.unavailable(conn, lines, now, disruptions)
        problem = Problem(
            lots=tuple(lots), lines=tuple(ln.key for ln in lines), proc_s=proc, setup_s=setup, initial_setup_s=init,
            transport_s=tr_s, transport_cost=tr_c, unavailable=unavailable, available_from_s=np.zeros(m),
            origin=origin, fixed=tuple(tuple(fixed.get(ln.key, [])) for ln in lines),
        )
        return Built(problem, lines, orders, disruptions, expected)

    @staticmethod
    def _can(model: NetworkModel, ln: LineInfo, order: dict[str, Any]) -> bool:
        allowed = order["allowed"]
        return model.makes(ln, order["product"]) is not None and (allowed is None or ln.site in allowed)

    def unavailable(self, conn: Conn, lines: list[LineInfo], now: datetime,
                    disruptions: list[Disruption]) -> tuple[tuple[tuple[float, float], ...], ...]:
        """Per line: time outside the site's planned intervals (breaks, no shift, planned stops) and disruptions,
        in seconds from `now`, up to the horizon."""
        lo, hi = _ms(now), _ms(now + timedelta(days=HORIZON_DAYS))
        cals: dict[str, SiteCalendar] = {}
        out = []
        for ln in lines:
            cal = cals.get(ln.site) or cals.setdefault(ln.site, load_site(conn, ln.site))
            work = net_intervals(cal, lo, hi)
            holes: list[tuple[int, int]] = []
            cur = lo
            for s, e in work:
                if s > cur:
                    holes.append((cur, s))
                cur = max(cur, e)
            if cur < hi:
                holes.append((cur, hi))
            for d in disruptions:
                if d.site == ln.site and d.line == ln.line and d.end > now:
                    holes.append((max(lo, _ms(d.start)), _ms(d.end)))
            merged: list[tuple[int, int]] = []
            for s, e in sorted(holes):
                if merged and s <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], e))
                elif e > s:
                    merged.append((s, e))
            out.append(tuple(((s - lo) / 1000, (e - lo) / 1000) for s, e in merged))
        return tuple(out)

    def disruptions(self, conn: Conn, now: datetime) -> list[Disruption]:
        """Lines with a machine now in a failure (18-20xxxx, 22xxxx) or in an unspecified, material or operator stop
        for over FAILURE_MIN_S: unavailable for REPAIR_GUESS_S from now."""
        out: dict[tuple[str, str], Disruption] = {}
        rows = conn.execute(
            "SELECT DISTINCT ON (c.site_id, c.machine_id) c.site_id, m.line_id, c.machine_id, c.ts, c.code"
            " FROM oee_state_changes c JOIN machines m USING (site_id, machine_id)"
            " JOIN plan_lines p ON p.site_id = m.site_id AND p.line_id = m.line_id"
            " WHERE c.ts > %s ORDER BY c.site_id, c.machine_id, c.ts DESC",
            [now - timedelta(days=2)]).fetchall()
        for site, line, machine, ts, code in rows:
            base = int(code) // 10_000
            failure = base in (18, 19, 20, 22)  # equipment, external, interference, technical other
            # Unspecified, material and operator stops count once they last; a changeover or setup is planned work.
            long_stop = base in (4, 6, 7, 8, 9, 14) and (now - ts).total_seconds() >= FAILURE_MIN_S
            if failure or long_stop:
                why = f"{machine}: state {code} since {ts.isoformat()}"
                out.setdefault((str(site), str(line)), Disruption(str(site), str(line), now,
                                                                 now + timedelta(seconds=REPAIR_GUESS_S), why))
        return list(out.values())

    def fingerprint(self, conn: Conn, now: datetime) -> Fingerprint:
        """What capacity rests on now: lines down, planned stops still ahead, calendar versions."""
        down = frozenset((d.site, d.line) for d in self.disruptions(conn, now))
        stops = frozenset((str(s), a.isoformat(), b.isoformat()) for s, a, b in conn.execute(
            "SELECT site_id, start_ts, end_ts FROM oee_planned_stops WHERE end_ts > %s", [now]).fetchall())
        cals = frozenset((str(s), u.isoformat()) for s, u in conn.execute(
            "SELECT site_id, updated_at FROM oee_site_config").fetchall())
        return Fingerprint(down, stops, cals)

    def current_families(self, conn: Conn, model: NetworkModel) -> dict[str, str]:
        """The family each line runs now (its latest started or finished production order)."""
        out = {}
        for site, line, product in conn.execute(
                "SELECT DISTINCT ON (site_id, line_id) site_id, line_id, product_id FROM production_orders"
                " WHERE status IN ('started', 'done') ORDER BY site_id, line_id, started_at DESC").fetchall():
            if product in model.products:
                out[f"{site}/{line}"] = model.products[str(product)][0]
        return out

    # ------------------------------------------------------------------ solve and store
    def propose(self, actor: str, token_id: int | None, *, reason: str = "plan", now: datetime | None = None,
                extra: list[Disruption] | None = None) -> dict[str, Any]:
        """Build, solve (repair from the accepted plan when asked to re-plan), store a proposed plan."""
        now = now or datetime.now(UTC)
        with translate_errors(), psycopg.connect(self.conninfo) as conn:
            built = self.build(conn, now, extra)
            base = conn.execute("SELECT plan_id FROM plan_versions WHERE status = 'accepted'"
                                " ORDER BY plan_id DESC LIMIT 1").fetchone()
            base_id = int(base[0]) if base else None
            warm = self._warm(conn, built, base_id) if base_id is not None else None
            t0 = time.perf_counter()
            if not built.problem.lots:
                plan = greedy.evaluate(built.problem, [[] for _ in built.lines], solver="empty")
            elif reason != "plan" and warm is not None and self.repair is not None:
                changed = [i for i, ln in enumerate(built.lines)
                           if any(d.site == ln.site and d.line == ln.line for d in built.disruptions)]
                plan = self.repair(built.problem, warm, changed, self.repair_limit_s)
            else:
                plan = self.solver(built.problem, self.time_limit_s, warm, 0)
            plan = _checked(built.problem, plan, time.perf_counter() - t0)
            plan_id = self._store(conn, built, plan, actor, reason, base_id, now)
            conn.execute("UPDATE plan_versions SET basis = %s WHERE plan_id = %s",
                         [json.dumps(self.fingerprint(conn, now).to_json()), plan_id])
            sql, params = audit_params(token_id, actor, "planning.plan.propose", None, str(plan_id),
                                       {"reason": reason, "lots": len(built.problem.lots), "solver": plan.solver,
                                        "weighted_tardiness": plan.weighted_tardiness})
            conn.execute(sql, params)
        return {"plan_id": plan_id, "base_plan_id": base_id, "solver": plan.solver, "solve_s": plan.solve_s,
                "lots": len(built.problem.lots), "weighted_tardiness": plan.weighted_tardiness,
                "disruptions": [{"site": d.site, "line": d.line, "start": d.start.isoformat(), "end": d.end.isoformat(),
                                 "why": d.why} for d in built.disruptions]}

    def _warm(self, conn: Conn, built: Built, base_id: int) -> Plan | None:
        """The accepted plan's sequences mapped onto this problem's lots (lots that no longer exist drop out)."""
        index = {lot.id: j for j, lot in enumerate(built.problem.lots)}
        keys = {ln.key: i for i, ln in enumerate(built.lines)}
        seqs: list[list[int]] = [[] for _ in built.lines]
        used: set[int] = set()
        for lot_id, site, line in conn.execute("SELECT lot_id, site_id, line_id FROM plan_lots WHERE plan_id = %s"
                                               " ORDER BY site_id, line_id, seq", [base_id]).fetchall():
            j, i = index.get(str(lot_id)), keys.get(f"{site}/{line}")
            if j is None or i is None or j in used or not math.isfinite(built.problem.proc_s[j, i]):
                continue
            seqs[i].append(j)
            used.add(j)
        for i, fixed in enumerate(built.problem.fixed):  # fixed lots first, in their order
            seqs[i] = list(fixed) + [j for j in seqs[i] if j not in fixed]
            used.update(fixed)
        missing = [j for j in range(len(built.problem.lots)) if j not in used]
        for j in missing:  # new lots: on their fastest line, at the end
            i = int(np.argmin(built.problem.proc_s[j]))
            seqs[i].append(j)
        return greedy.evaluate(built.problem, seqs, solver="warm-start")

    def _store(self, conn: Conn, built: Built, plan: Plan, actor: str, reason: str, base_id: int | None,
               now: datetime) -> int:
        p = built.problem
        row = conn.execute(
            "INSERT INTO plan_versions (created_by, reason, base_plan_id, origin_ts, solver, solve_s, weighted_tardiness,"
            " makespan_s, changeover_s, transport_cost, lower_bound, optimal) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING plan_id",
            [actor, reason, base_id, now, plan.solver or "unknown", plan.solve_s, plan.weighted_tardiness, plan.makespan,
             plan.changeover_s, plan.transport_cost, plan.lower_bound, plan.optimal]).fetchone()
        assert row is not None
        plan_id = int(row[0])
        seq_of = {j: k for seq in plan.sequences for k, j in enumerate(seq)}
        for s in plan.scheduled:
            lot, ln = p.lots[s.lot], built.lines[s.line]
            order = built.orders[lot.order_id]
            conn.execute(
                "INSERT INTO plan_lots (plan_id, lot_id, order_id, order_site, product_id, family_id, quantity, site_id,"
                " line_id, seq, start_ts, setup_s, end_ts, arrival_ts, due_ts, tardiness_s, why_late) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [plan_id, lot.id, lot.order_id, order["site"], lot.product, lot.family, lot.quantity, ln.site, ln.line,
                 seq_of[s.lot], _at(now, s.start_s), s.setup_s, _at(now, s.end_s),
                 _at(now, s.end_s + float(p.transport_s[s.lot, s.line])),
                 order["due"], s.tardiness_s, plan.why_late.get(s.lot)])
        return plan_id

    # ------------------------------------------------------------------ decisions
    def decide(self, plan_id: int, accept: bool, actor: str, token_id: int | None) -> dict[str, Any]:
        """Accept (older accepted plan superseded, its unstarted production orders replaced) or reject a proposal."""
        with translate_errors(), psycopg.connect(self.conninfo) as conn, conn.transaction():
            row = conn.execute("SELECT status FROM plan_versions WHERE plan_id = %s FOR UPDATE", [plan_id]).fetchone()
            if row is None:
                raise LookupError(plan_id)
            if row[0] != "proposed":
                raise ValueError(f"plan {plan_id} is {row[0]}, not proposed")
            created = 0
            if accept:
                conn.execute("UPDATE plan_versions SET status = 'superseded' WHERE status = 'accepted'")
                conn.execute("UPDATE production_orders SET status = 'cancelled' WHERE status = 'planned'")
                started = {str(r[0]) for r in conn.execute(
                    "SELECT lot_id FROM production_orders WHERE status = 'started'").fetchall()}
                for lot in conn.execute(
                        "SELECT lot_id, order_id, site_id, line_id, product_id, quantity, seq, start_ts, end_ts"
                        " FROM plan_lots WHERE plan_id = %s ORDER BY site_id, line_id, seq", [plan_id]).fetchall():
                    if str(lot[0]) in started:
                        conn.execute("UPDATE production_orders SET plan_id = %s, seq = %s, planned_end = %s"
                                     " WHERE lot_id = %s AND status = 'started'", [plan_id, lot[6], lot[8], lot[0]])
                        continue
                    conn.execute("INSERT INTO production_orders (plan_id, lot_id, order_id, site_id, line_id, product_id,"
                                 " quantity, seq, planned_start, planned_end) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                 [plan_id, *lot])
                    created += 1
            status = "accepted" if accept else "rejected"
            conn.execute("UPDATE plan_versions SET status = %s, decided_at = now(), decided_by = %s WHERE plan_id = %s",
                         [status, actor, plan_id])
            sql, params = audit_params(token_id, actor, f"planning.plan.{'accept' if accept else 'reject'}", None,
                                       str(plan_id), {"production_orders": created})
            conn.execute(sql, params)
        return {"plan_id": plan_id, "status": status, "production_orders": created}

    # ------------------------------------------------------------------ progress
    def progress_units(self, conn: Conn, site: str, line: str, product: str, since: datetime | None,
                       until: datetime | None = None) -> float:
        """Good units of `product` made on a line since `since` (until `until`, a finished order's end):
        increases of the output machine's Counts/Good (every machine's for 'all'), divided by the capability's
        counts per unit."""
        if since is None:
            return 0.0
        row = conn.execute(
            "SELECT p.output_machine, c.counts_per_unit FROM plan_lines p LEFT JOIN plan_capabilities c"
            " ON c.kind_id = p.kind_id AND c.product_id = %s WHERE p.site_id = %s AND p.line_id = %s",
            [product, site, line]).fetchone()
        if row is None:
            return 0.0
        output, per_unit = str(row[0]), float(row[1] or 1.0)
        machines = [str(r[0]) for r in conn.execute(
            "SELECT machine_id FROM machines WHERE site_id = %s AND line_id = %s", [site, line]).fetchall()]
        if output != "all":
            machines = [output]
        total = 0.0
        for (tag,) in conn.execute("SELECT tag_id FROM tags WHERE site_id = %s AND machine_id = ANY(%s)"
                                   " AND name = 'Counts/Good'", [site, machines]).fetchall():
            r = conn.execute(
                "SELECT coalesce(sum(greatest(d, 0)), 0) FROM (SELECT value - lag(value) OVER (ORDER BY ts) AS d"
                " FROM samples WHERE tag_id = %(t)s AND ts >= coalesce((SELECT max(ts) FROM samples WHERE"
                " tag_id = %(t)s AND ts <= %(s)s), %(s)s) AND (%(u)s::timestamptz IS NULL OR ts <= %(u)s)) x",
                {"t": tag, "s": since, "u": until}).fetchone()
            total += float(r[0]) if r else 0.0
        return total / per_unit


def _checked(problem: Problem, plan: Plan, took_s: float) -> Plan:
    """The solver's sequences timed by the one evaluator (stored times and figures mean the same whichever
    solver ran); a lot the solver left out goes last on its fastest line, with a warning."""
    sequences = [list(seq) for seq in plan.sequences]
    placed = {j for seq in sequences for j in seq}
    for j in range(len(problem.lots)):
        if j not in placed:
            log.warning("solver %s left out lot %s; appended on its fastest line", plan.solver, problem.lots[j].id)
            sequences[int(np.argmin(problem.proc_s[j]))].append(j)
    out = greedy.evaluate(problem, sequences, solver=plan.solver or "unknown")
    out.solve_s = plan.solve_s or took_s
    out.lower_bound, out.optimal = plan.lower_bound, plan.optimal
    if plan.why_late:
        out.why_late.update(plan.why_late)
    return out
