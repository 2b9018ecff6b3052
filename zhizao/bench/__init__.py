"""`zhizao bench ...`: the benchmarks users can run; each reports ratios against a same-run baseline.

One module per benchmark; `harness` holds what they share (machine report, same-run ratios, percentiles,
the `--json FILE` schema, the check for optional packages). Product packages never import this one.
"""

from __future__ import annotations

import click

from zhizao.cli import LazyGroup

_BENCHES: dict[str, tuple[str, str]] = {
    "edge": ("zhizao.bench.edge:bench_edge", "OPC UA value changes -> published Sparkplug samples per second."),
    "cluster": ("zhizao.bench.cluster:bench_cluster", "Full simulated cluster, one agent per line: rates, CPU, no loss."),
    "decode": ("zhizao.bench.decode:bench_decode", "pysparkplug reads every message of a cluster run: errors, mismatches."),
    "ingest": ("zhizao.bench.ingest:bench_ingest", "Sparkplug DDATA bytes -> committed rows per second."),
    "kernels": ("zhizao.bench.kernels:bench_kernels", "OEE and anomaly kernels against pandas, bottleneck, reference."),
    "series": ("zhizao.bench.series:bench_series", "/api/v1/series latency: 24 h at 1-minute buckets, p50/p99."),
    "oee": ("zhizao.bench.oee:bench_oee", "/api/v1/oee latency: whole cluster over 24 h (hour windows), p50/p99."),
    "live": ("zhizao.bench.live:bench_live", "Simulator Stop/Start -> state event on the live stream, p50/p99."),
    "detect": ("zhizao.bench.detect:bench_detect", "Detectors on NAB and SKAB (local checkouts), their own scoring."),
    "monitor": ("zhizao.bench.monitor:bench_monitor", "Seeded faults -> alarms before failure, false alarms, EEMUA 191."),
    "faults": ("zhizao.bench.faults:bench_faults", "Fault matrix: samples attempted, stored, lost, duplicated per row."),
    "command": ("zhizao.bench.command:bench_command", "API command -> OPC UA write -> read-back confirmed, p50/p99."),
    "plan": ("zhizao.bench.plan:bench_plan", "Planner: Vallada & Ruiz RPD, cluster vs greedy EDD, re-plan time."),
}


@click.group(cls=LazyGroup, lazy=_BENCHES)
def bench() -> None:
    """Benchmarks: edge publishing, cloud ingest and queries, live latency, analytics kernels."""
