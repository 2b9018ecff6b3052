"""`zhizao bench plan`: the planner's solver on public benchmark instances and on a generated cluster instance.

(a) `--instances DIR`: unrelated parallel machines with sequence-dependent setups, makespan, in the format of
    Vallada & Ruiz (2011) (files `I_<n>_<m>_S_1-<s>_<r>.txt`, e.g. github cesargusto/upmsp `instancias/` or
    Baumgratz/math-heuristic_to_upmsp `instances/`), each solved within `--limit` seconds; the relative
    percentage deviation RPD = 100 (C - best) / best against the values in `--bounds FILE` (`name;value`
    lines, e.g. cesargusto/upmsp `bounds/ruiz/Bounds_Large_Ruiz.csv`).
(b) a generated cluster instance with due dates on the seeded lines, against the greedy baseline (earliest due
    date to the earliest free capable line) in the same run: weighted tardiness, changeover time, solve time.
(c) re-planning after a line failure: the time of `repair` and its gap to a full re-solve given 10 s.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from zhizao.bench.harness import Report, json_option, machine_line
from zhizao.cloud.planning.problem import Lot, Objective, Plan, Problem

__all__ = ["bench_plan", "cluster_problem", "edd_plan", "fail_line", "load_bounds", "load_vr", "run_cluster",
           "run_replan", "run_vr"]


# ---- (a) Vallada & Ruiz instances ---------------------------------------------------------------------------
def load_vr(path: Path) -> Problem:
    """A Vallada & Ruiz (2011) UPMSP-SDST instance: `n m seed`, `m`, per job `machine p` pairs, `SSD`, then
    per machine `M<k>` and an n x n setup matrix. Makespan objective, no initial setup."""
    tok = path.read_text().split()
    try:
        n, m = int(tok[0]), int(tok[1])
        i = 4
        p = np.zeros((n, m))
        for j in range(n):
            for _ in range(m):
                p[j, int(tok[i])] = float(tok[i + 1])
                i += 2
        if tok[i] != "SSD":
            raise ValueError(f"expected 'SSD' after the processing times, found {tok[i]!r}")
        i += 1
        setup = np.zeros((m, n, n))
        for k in range(m):
            if tok[i] != f"M{k}":
                raise ValueError(f"expected 'M{k}', found {tok[i]!r}")
            setup[k] = np.asarray(tok[i + 1 : i + 1 + n * n], dtype=np.float64).reshape(n, n)
            i += 1 + n * n
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{path}: not a Vallada & Ruiz instance: {exc}") from exc
    lots = tuple(Lot(id=f"J{j}", order_id=f"J{j}", product=f"J{j}", family=f"J{j}", quantity=1.0) for j in range(n))
    return Problem(lots=lots, lines=tuple(f"M{k}" for k in range(m)), proc_s=p, setup_s=setup,
                   initial_setup_s=np.zeros((m, n)), transport_s=np.zeros((n, m)), transport_cost=np.zeros((n, m)),
                   unavailable=tuple(() for _ in range(m)), available_from_s=np.zeros(m),
                   objective=Objective.makespan)  # fmt: skip


def load_bounds(paths: list[Path]) -> dict[str, float]:
    """Best-known (or optimal) makespans by instance name from `name;value` lines."""
    out: dict[str, float] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            parts = line.strip().replace(",", ";").split(";")
            if len(parts) >= 2:
                try:
                    out[parts[0].strip().removesuffix(".txt")] = float(parts[1])
                except ValueError:
                    continue  # a header
    return out


def run_vr(files: list[Path], bounds: dict[str, float], limit_s: float, echo: bool = True) -> dict[str, Any]:
    """Solve each instance within `limit_s`; per-instance rows and per-(n, m) and overall summaries."""
    from zhizao.cloud.planning.solver import solve, warm_up

    warm_up()  # the kernels' load from numba's cache is not part of any instance's time
    rows: list[dict[str, Any]] = []
    for path in files:
        name = path.stem
        problem = load_vr(path)
        started = time.perf_counter()
        plan = solve(problem, limit_s, seed=0)
        took = time.perf_counter() - started
        best = bounds.get(name)
        rpd = None if best is None else 100.0 * (plan.makespan - best) / best
        n, m = len(problem.lots), len(problem.lines)
        rows.append({"instance": name, "n": n, "m": m, "makespan": plan.makespan, "best_known": best,
                     "rpd": rpd, "lower_bound": plan.lower_bound, "optimal": plan.optimal, "solve_s": took,
                     "solver": plan.solver})  # fmt: skip
        if echo:
            rpd_text = "-" if rpd is None else f"{rpd:+.2f}%"
            click.echo(f"  {name}: {plan.makespan:.0f} (best {best}) RPD {rpd_text} {took:.2f} s "
                       f"{plan.solver}{' optimal' if plan.optimal else ''}", err=True)  # fmt: skip
    groups: dict[str, Any] = {}
    for key in sorted({(r["n"], r["m"]) for r in rows}):
        sel = [r for r in rows if (r["n"], r["m"]) == key]
        groups[f"{key[0]}x{key[1]}"] = _summary(sel)
    return {"limit_s": limit_s, "summary": _summary(rows), "groups": groups, "instances": rows}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rpds = [r["rpd"] for r in rows if r["rpd"] is not None]
    return {
        "instances": len(rows),
        "with_bound": len(rpds),
        "mean_rpd": statistics.fmean(rpds) if rpds else None,
        "max_rpd": max(rpds) if rpds else None,
        "at_or_below_best": sum(1 for v in rpds if v <= 1e-9),
        "proved_optimal": sum(1 for r in rows if r["optimal"]),
        "max_solve_s": max((r["solve_s"] for r in rows), default=None),
        "mean_solve_s": statistics.fmean(r["solve_s"] for r in rows) if rows else None,
    }


# ---- (b) the cluster instance -------------------------------------------------------------------------------
# Line groups that can make each other's products (by the seeded lines' ids), and road distances between the
# sites in km (../shared/reference/cluster-facts.md: Lingang-Suzhou ~130, -Hangzhou ~190, -Hefei ~500,
# Suzhou-Hangzhou ~160, Suzhou-Hefei ~400, Hangzhou-Hefei ~400).
GROUPS = {"cnc": "machining", "aero": "machining", "smt": "electronics", "bms": "electronics", "weave": "textiles",
          "pack": "packaging", "mod": "battery"}  # fmt: skip
ROAD_KM = {("sh-lingang", "js-suzhou"): 130, ("sh-lingang", "zj-shaoxing"): 190, ("sh-lingang", "ah-hefei"): 500,
           ("js-suzhou", "zj-shaoxing"): 160, ("js-suzhou", "ah-hefei"): 400, ("zj-shaoxing", "ah-hefei"): 400}  # fmt: skip
ORIGIN = datetime(2026, 11, 2, tzinfo=UTC).timestamp() - 8 * 3600  # Monday 2026-11-02 00:00 Asia/Shanghai


def _km(a: str, b: str) -> float:
    return 0.0 if a == b else float(ROAD_KM.get((a, b), ROAD_KM.get((b, a), 300)))


def _downtime(calendar: Any, timezone: str, horizon_s: float) -> tuple[tuple[float, float], ...]:
    """The site calendar's breaks and no-shift time from ORIGIN on, at one-minute resolution."""
    from zhizao.broker.contract.calendar import CalendarClock

    clock = CalendarClock(calendar, timezone)
    out: list[tuple[float, float]] = []
    start = None
    for minute in range(int(horizon_s // 60) + 1):
        off = clock.code_at(int((ORIGIN + minute * 60) * 1000)) != 0
        if off and start is None:
            start = minute * 60.0
        elif not off and start is not None:
            out.append((start, minute * 60.0))
            start = None
    if start is not None:
        out.append((start, horizon_s + 60.0))
    return tuple(out)


def cluster_problem(n_orders: int = 300, days: int = 14, load: float = 0.9, seed: int = 7) -> Problem:
    """A generated order book on the seeded cluster's lines (seeds/cluster.yaml). Each line makes the products
    of its group (machining, electronics, textiles, packaging, battery), three families per group, at its
    slowest machine's ideal rate times a product factor in 0.6..1.4 (unrelated lines); changeovers between
    families 0.5..2 times the line's seeded changeover time (a quarter of it within a family); downtime from the
    site calendars; orders from all four sites with transport by road (1 h + 1 h per 80 km, cost 1 per km);
    due dates spread over `days`, quantities sized so the lines are loaded to about `load` of their time."""
    from zhizao.seeds import load_scenario

    rng = np.random.default_rng(seed)
    scenario = load_scenario()
    lines: list[tuple[str, str, str, float, float]] = []  # id, site, group, units per s, changeover s
    downtime: list[tuple[tuple[float, float], ...]] = []
    horizon = days * 86400.0 * 3
    for site in scenario.sites:
        site_down = _downtime(site.calendar, site.timezone, horizon)
        for line in site.lines:
            group = GROUPS[line.id.rsplit("-", 1)[0]]
            rate = min(mc.ideal_rate_per_min for mc in line.machines) / 60.0
            change = max(mc.behaviour.changeover_min for mc in line.machines) * 60.0
            lines.append((f"{site.id}/{line.id}", site.id, group, rate, change))
            downtime.append(site_down)
    sites = sorted({site.id for site in scenario.sites})
    groups = sorted({g for _, _, g, _, _ in lines})
    m = len(lines)
    # products: 4 per family, 3 families per group
    products = [(g, f"{g}-F{f}", f"{g}-F{f}-P{q}") for g in groups for f in range(3) for q in range(4)]
    factor = rng.uniform(0.6, 1.4, size=(len(products), m))
    work_per_group = {g: 0.0 for g in groups}
    chosen = rng.integers(0, len(products), size=n_orders)
    for idx in chosen:
        work_per_group[products[idx][0]] += 1.0
    n = n_orders
    proc = np.full((n, m), np.inf)
    lots: list[Lot] = []
    capacity = days * 86400.0 * 0.75  # the calendars leave about three quarters of the time
    for j, idx in enumerate(chosen):
        group, family, product = products[idx]
        mine = [k for k in range(m) if lines[k][2] == group]
        # quantity: this group's share of `load` x capacity, spread over its orders (x 0.3..1.7)
        hours = load * capacity * len(mine) / work_per_group[group] * rng.uniform(0.3, 1.7)
        mean_rate = float(np.mean([lines[k][3] for k in mine]))
        quantity = float(max(1, round(hours * mean_rate)))
        for k in mine:
            proc[j, k] = quantity / (lines[k][3] * factor[idx, k])
        release = float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0, days * 86400.0 * 0.5)]))
        due = release + float(rng.uniform(1.5, days)) * 86400.0
        lots.append(Lot(id=f"L{j:04d}", order_id=f"O{j:04d}", product=product, family=family, quantity=quantity,
                        due_s=due, weight=float(rng.choice([1.0, 1.0, 2.0, 5.0])), release_s=release))  # fmt: skip
    fam_names = sorted({lot.family for lot in lots} | {f for _, f, _ in products})
    fam_index = {f: i for i, f in enumerate(fam_names)}
    fam = np.array([fam_index[lot.family] for lot in lots])
    prod_index = {p: i for i, (_, _, p) in enumerate(products)}
    prod = np.array([prod_index[lot.product] for lot in lots])
    setup = np.zeros((m, n, n))
    initial = np.zeros((m, n))
    for k in range(m):
        between = rng.uniform(0.5, 2.0, size=(len(fam_names), len(fam_names))) * lines[k][4]
        np.fill_diagonal(between, 0.25 * lines[k][4])
        setup[k] = between[fam[:, None], fam[None, :]]
        setup[k][prod[:, None] == prod[None, :]] = 0.0
        start_family = int(rng.integers(0, len(fam_names)))
        initial[k] = between[start_family, fam]
    ordering = rng.choice(sites, size=n)
    km = np.array([[_km(str(ordering[j]), lines[k][1]) for k in range(m)] for j in range(n)])
    transport_s = np.where(km > 0, 3600.0 + km / 80.0 * 3600.0, 0.0)
    return Problem(lots=tuple(lots), lines=tuple(line[0] for line in lines), proc_s=proc, setup_s=setup,
                   initial_setup_s=initial, transport_s=transport_s, transport_cost=km.copy(),
                   unavailable=tuple(downtime), available_from_s=rng.uniform(0, 7200, size=m),
                   objective=Objective.tardiness, origin=ORIGIN)  # fmt: skip


def edd_plan(problem: Problem) -> tuple[Plan, str]:
    """The greedy baseline of the planning service (zhizao.cloud.planning.greedy: earliest due date first, each
    lot to the capable line that is free earliest), timed by the solver's evaluation like every other plan."""
    from zhizao.cloud.planning import greedy
    from zhizao.cloud.planning.solver import make_plan
    from zhizao.cloud.planning.solver.model import compile_problem

    started = time.perf_counter()
    plan = greedy.solve(problem, 0.0)
    inst = compile_problem(problem)
    return make_plan(problem, inst, plan.sequences, "greedy", time.perf_counter() - started), \
        "zhizao.cloud.planning.greedy.solve"  # fmt: skip

def _plan_figures(plan: Plan) -> dict[str, Any]:
    return {"weighted_tardiness_h": plan.weighted_tardiness / 3600, "changeover_h": plan.changeover_s / 3600,
            "transport_cost": plan.transport_cost, "late_lots": len(plan.why_late), "solve_s": plan.solve_s,
            "makespan_h": plan.makespan / 3600}  # fmt: skip


def run_cluster(problem: Problem, limit_s: float) -> tuple[dict[str, Any], Plan]:
    """Greedy EDD and the solver on the same instance, in the same run."""
    from zhizao.cloud.planning.solver import solve, warm_up

    warm_up()
    greedy, source = edd_plan(problem)
    plan = solve(problem, limit_s, seed=0)
    out = {"lots": len(problem.lots), "lines": len(problem.lines), "limit_s": limit_s, "greedy_source": source,
           "greedy": _plan_figures(greedy), "solver": _plan_figures(plan),
           "lower_bound_weighted_tardiness_h": (plan.lower_bound or 0.0) / 3600}  # fmt: skip
    return out, plan


# ---- (c) re-planning after a line failure -------------------------------------------------------------------
def fail_line(problem: Problem, line: int, start_s: float, hours: float) -> Problem:
    """`problem` with line `line` down from `start_s` for `hours` (merged into its downtime)."""
    end = start_s + hours * 3600.0
    merged: list[tuple[float, float]] = []
    for a, b in sorted([*problem.unavailable[line], (start_s, end)]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    unavailable = tuple(tuple(merged) if k == line else u for k, u in enumerate(problem.unavailable))
    return dataclasses.replace(problem, unavailable=unavailable)


def failure_lines(problem: Problem, plan: Plan, n: int) -> list[int]:
    """The `n` lines with the most lots that another line could make (the failures that move most work)."""
    alternatives = np.isfinite(problem.proc_s).sum(axis=1) > 1  # lots that another line can make
    ranked = sorted(range(len(plan.sequences)),
                    key=lambda k: (-sum(1 for j in plan.sequences[k] if alternatives[j]), k))
    return ranked[:n]


def run_replan(problem: Problem, plan: Plan, hours: float, repair_s: float, full_s: float,
               line: int | None = None) -> dict[str, Any]:
    """Fail `line` (default: the line with the most lots that other lines could make) for `hours` from the
    origin; repair within `repair_s` against a full re-solve given `full_s`."""
    from zhizao.cloud.planning.solver import repair, solve
    from zhizao.cloud.planning.solver.model import check_sequences

    if line is None:
        line = failure_lines(problem, plan, 1)[0]
    failed = fail_line(problem, line, 0.0, hours)
    started = time.perf_counter()
    repaired = repair(failed, plan, [line], repair_s)
    took = time.perf_counter() - started
    check_sequences(failed, repaired.sequences, "repaired")
    full = solve(failed, full_s, warm_start=plan, seed=1)
    stale = _evaluate(failed, plan)
    a, b = repaired.weighted_tardiness, full.weighted_tardiness
    gap = 0.0 if a <= b else ((a - b) / b * 100.0 if b > 0 else math.inf)
    moved = sum(1 for k, s in enumerate(repaired.sequences) for j in s if j not in set(plan.sequences[k]))
    return {"failed_line": problem.lines[line], "down_h": hours, "lots_on_failed_line": len(plan.sequences[line]),
            "repair_s": took, "repair_limit_s": repair_s, "full_limit_s": full_s,
            "old_plan_on_failed_problem": _plan_figures(stale), "repaired": _plan_figures(repaired),
            "full_resolve": _plan_figures(full), "gap_pct": gap, "lots_moved": moved}  # fmt: skip


def _evaluate(problem: Problem, plan: Plan) -> Plan:
    from zhizao.cloud.planning.solver import make_plan
    from zhizao.cloud.planning.solver.model import compile_problem

    return make_plan(problem, compile_problem(problem), plan.sequences, "old plan", 0.0)


@click.command("plan")
@click.option("--instances", "instances", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of Vallada & Ruiz instance files (searched recursively).")
@click.option("--bounds", "bounds", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="`name;value` file of best-known makespans (repeatable).")
@click.option("--match", default="I_*.txt", show_default=True, help="Glob on the instance file names.")
@click.option("--limit", "limit_s", type=float, default=30.0, show_default=True, help="Seconds per instance.")
@click.option("--max-instances", type=int, default=None, help="Only the first N matching instances.")
@click.option("--orders", type=int, default=300, show_default=True, help="Orders of the cluster instance (0: skip).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated cluster instance.")
@click.option("--cluster-limit", type=float, default=30.0, show_default=True, help="Solver seconds, cluster.")
@click.option("--repair-limit", type=float, default=1.0, show_default=True, help="Seconds for the repair.")
@click.option("--resolve-limit", type=float, default=10.0, show_default=True, help="Seconds for the re-solve.")
@click.option("--failures", type=click.IntRange(1, 50), default=1, show_default=True,
              help="Re-plan after each of this many line failures (the lines with the most movable lots), one at "
              "a time on the accepted plan.")
@json_option
def bench_plan(instances: Path | None, bounds: tuple[Path, ...], match: str, limit_s: float,
               max_instances: int | None, orders: int, seed: int, cluster_limit: float, repair_limit: float,
               resolve_limit: float, failures: int, json_path: Path | None) -> None:
    """The solver on Vallada & Ruiz instances (RPD to best-known), a cluster instance against greedy EDD,
    and re-planning after a line failure."""
    report = Report("plan")
    if instances is not None:
        files = sorted(p for p in instances.rglob("*") if p.is_file() and fnmatch.fnmatch(p.name, match))
        if max_instances is not None:
            files = files[:max_instances]
        if not files:
            raise click.ClickException(f"--instances {instances}: no file matches {match!r}")
        bound_files = list(bounds) or _find_bounds(instances)
        click.echo(f"zhizao bench plan: {len(files)} Vallada & Ruiz instances, {limit_s:g} s each, best-known "
                   f"values from {', '.join(map(str, bound_files)) or 'nowhere (no RPD)'}", err=True)  # fmt: skip
        report.figures["vr"] = vr = run_vr(files, load_bounds(bound_files), limit_s)
        vr["bounds"] = [str(p) for p in bound_files]
        s = vr["summary"]
        click.echo(f"vr: {s['instances']} instances, mean RPD {_pct(s['mean_rpd'])}, max RPD {_pct(s['max_rpd'])}, "
                   f"{s['at_or_below_best']} at or below the best known, {s['proved_optimal']} proved optimal, "
                   f"max solve {s['max_solve_s']:.2f} s")  # fmt: skip
        for key, g in vr["groups"].items():
            click.echo(f"  {key}: {g['instances']} instances, mean RPD {_pct(g['mean_rpd'])}, "
                       f"max solve {g['max_solve_s']:.2f} s")  # fmt: skip
    if orders > 0:
        problem = cluster_problem(orders, seed=seed)
        click.echo(f"zhizao bench plan: cluster instance, {orders} lots on {len(problem.lines)} lines, "
                   f"{cluster_limit:g} s", err=True)  # fmt: skip
        report.figures["cluster"], plan = run_cluster(problem, cluster_limit)
        c = report.figures["cluster"]
        ratio = report.ratio("weighted_tardiness/greedy", "cluster.solver.weighted_tardiness_h",
                             "cluster.greedy.weighted_tardiness_h")  # fmt: skip
        for who in ("greedy", "solver"):
            f = c[who]
            click.echo(f"cluster {who}: weighted tardiness {f['weighted_tardiness_h']:.1f} h, changeovers "
                       f"{f['changeover_h']:.1f} h, transport cost {f['transport_cost']:.0f}, {f['late_lots']} late, "
                       f"solve {f['solve_s']:.2f} s")  # fmt: skip
        click.echo(f"cluster: solver/greedy weighted tardiness {'-' if ratio is None else f'{ratio:.3f}'} "
                   f"(lower bound {c['lower_bound_weighted_tardiness_h']:.1f} h)")  # fmt: skip
        runs = []
        for line in failure_lines(problem, plan, failures):
            runs.append(r := run_replan(problem, plan, 48.0, repair_limit, resolve_limit, line))
            click.echo(f"replan: {r['failed_line']} down 48 h ({r['lots_on_failed_line']} lots): repaired in "
                       f"{r['repair_s']:.3f} s, weighted tardiness {r['repaired']['weighted_tardiness_h']:.1f} h vs "
                       f"{r['full_resolve']['weighted_tardiness_h']:.1f} h re-solved in {resolve_limit:g} s "
                       f"(gap {r['gap_pct']:.2f} %; old plan {r['old_plan_on_failed_problem']['weighted_tardiness_h']:.1f} h), "
                       f"{r['lots_moved']} lots moved")  # fmt: skip
        report.figures["replan"] = runs[0]
        gaps = [r["gap_pct"] for r in runs]
        report.figures["replans"] = summary = {
            "failures": len(runs), "max_repair_s": max(r["repair_s"] for r in runs), "mean_gap_pct": float(np.mean(gaps)),
            "max_gap_pct": max(gaps), "within_2pct": sum(1 for g in gaps if g <= 2.0), "runs": runs}  # fmt: skip
        if len(runs) > 1:
            click.echo(f"replan: {summary['failures']} failures, repair at most {summary['max_repair_s']:.3f} s, "
                       f"gap to the re-solve mean {summary['mean_gap_pct']:.2f} %, max {summary['max_gap_pct']:.2f} %, "
                       f"{summary['within_2pct']} within 2 %")  # fmt: skip
    report.finish()
    click.echo(machine_line(report.machine))
    report.write(json_path)


def _find_bounds(instances: Path) -> list[Path]:
    """Without --bounds: `*Bounds*.csv` files in the instance folder or beside it (cesargusto/upmsp keeps
    `bounds/ruiz/Bounds_Large_Ruiz.csv` next to `instancias/`)."""
    found = {p for base in (instances, instances.parent) for p in base.rglob("*.csv") if "bound" in p.name.lower()}
    return sorted(found)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}%"


