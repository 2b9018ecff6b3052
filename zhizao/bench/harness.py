"""What every benchmark shares: the machine report, same-run figures and ratios, percentiles, `--json FILE`.

A benchmark records what it measured in one `Report` (`figures`, a JSON object) and derives every ratio with
`Report.ratio(name, numerator, denominator)`, which takes both figures from that same report by their dotted
path: a ratio is always of two figures measured in the same run. `Report.write(path)` writes the one schema
all benchmarks share, at full precision (only the printed text is rounded):

    {"schema": "zhizao.bench/1", "bench": "edge", "machine": {...}, "figures": {...},
     "ratios": {"samples_per_s": {"value": 4.2, "numerator": "agent.samples_per_s",
                                  "denominator": "baseline.samples_per_s"}}}
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import numpy as np

__all__ = [
    "CREATED_DATABASES",
    "SCHEMA",
    "Report",
    "cpu_seconds",
    "json_option",
    "latency_summary",
    "machine_info",
    "machine_line",
    "percentile",
    "require",
    "scratch_database",
    "time_calls_ms",
    "times",
]

SCHEMA = "zhizao.bench/1"

CREATED_DATABASES: list[str] = []  # scratch databases this process created (and dropped): tests check the cleanup


@contextlib.contextmanager
def scratch_database(server_url: str, bench: str) -> Iterator[str]:
    """A new database on `server_url`'s server for one benchmark run (its URL), dropped afterwards."""
    import psycopg

    name = f"zhizao_bench_{bench}_{uuid.uuid4().hex[:10]}"
    CREATED_DATABASES.append(name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

json_option = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the report (machine, figures, ratios) to this JSON file.",
)  # fmt: skip


def require(command: str, extra: str, *modules: str) -> None:
    """Import `modules`, or stop `command` with one sentence naming the extra that installs them (exit 1)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name.split(".")[0])
    if missing:
        names = " and ".join(missing)
        raise click.ClickException(
            f"{command} needs {names}, which {'is' if len(missing) == 1 else 'are'} not installed here: "
            f"pip install 'zhizao[{extra}]'"
        )


# ---- the machine -------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _postgresql(database_url: str) -> dict[str, str | None] | None:
    """Server version and the TimescaleDB version the server offers (None when it has none)."""
    import psycopg

    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            ts = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
    except psycopg.Error:
        return None
    return {"server": str(version[0]) if version else None, "timescaledb": str(ts[0]) if ts else None}


def machine_info(database_url: str | None = None) -> dict[str, Any]:
    """The machine the figures were measured on; take it at the end of a run (the load average says how busy
    the machine was while it ran). With `database_url`, also the PostgreSQL server's version."""
    import numba

    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "load_average_1m": load[0],
        "load_average_5m": load[1],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "postgresql": _postgresql(database_url) if database_url else None,
    }


def machine_line(machine: dict[str, Any]) -> str:
    """The machine report as one printed line."""
    mem = machine["memory_gib"]
    pg = machine["postgresql"]
    parts = [
        f"machine: {machine['cpu']}, {machine['cores']} cores",
        *([f"{mem:.1f} GiB"] if mem is not None else []),
        f"load average {machine['load_average_1m']:.2f}",
        f"Python {machine['python']}, numba {machine['numba']}",
    ]
    if pg is not None:
        parts.append(f"PostgreSQL {pg['server']}" + (f" (TimescaleDB {pg['timescaledb']} available)"
                                                     if pg["timescaledb"] else ""))
    return ", ".join(parts)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- latencies ---------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks (NumPy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies in milliseconds, and how many there were."""
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms),
            "n": float(len(ms))}  # fmt: skip


def time_calls_ms(fn: Callable[[], object], n: int, warm: int) -> list[float]:
    """Milliseconds of each of `n` calls of `fn`, after `warm` untimed calls (pools, plans, caches)."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def times(ratio: float | None, digits: int = 2) -> str:
    """A ratio as printed: `4.20x`, or `-` when there is none."""
    return "-" if ratio is None else f"{ratio:.{digits}f}x"


# ---- the report --------------------------------------------------------------------------------------------
def _finite(doc: Any) -> Any:
    """JSON has no NaN or infinity: undefined figures (e.g. a delay with no detection) become null."""
    if isinstance(doc, np.generic):  # NumPy scalars as the Python numbers they hold
        doc = doc.item()
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: _finite(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_finite(v) for v in doc]
    return doc


@dataclass
class Report:
    """The figures of one benchmark run, the ratios between them, and the machine they were measured on."""

    bench: str
    figures: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def figure(self, path: str) -> Any:
        """The figure at a dotted path (`agent.samples_per_s`); KeyError if this run did not record it."""
        node: Any = self.figures
        for key in path.split("."):
            node = node[key]
        return node

    def ratio(self, name: str, numerator: str, denominator: str) -> float | None:
        """Record and return figure(numerator) / figure(denominator): both from this run (None if either is
        missing from the measurement, e.g. a baseline that does not apply, or the denominator is 0)."""
        num, den = self.figure(numerator), self.figure(denominator)
        value = None if num is None or den is None or den == 0 else float(num) / float(den)
        self.ratios[name] = {"value": value, "numerator": numerator, "denominator": denominator}
        return value

    def finish(self, database_url: str | None = None) -> dict[str, Any]:
        """Take the machine report (at the end of the run); returns it."""
        self.machine = machine_info(database_url)
        return self.machine

    def to_json(self) -> dict[str, Any]:
        """The shared schema: schema, bench, machine, figures, ratios."""
        doc = {"schema": SCHEMA, "bench": self.bench, "machine": self.machine, "figures": self.figures,
               "ratios": self.ratios}  # fmt: skip
        return dict(_finite(doc))

    def write(self, path: Path | None) -> None:
        """Write the JSON report to `path` (nothing when None)."""
        if path is None:
            return
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        click.echo(f"wrote {path}", err=True)
