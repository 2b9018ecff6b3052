"""`zhizao bench ...`: the benchmarks users can run; each reports ratios against a same-run baseline."""

from __future__ import annotations

import click

from zhizao.cli import LazyGroup

_BENCHES: dict[str, tuple[str, str]] = {
    "edge": ("zhizao.edge.bench:bench_edge", "OPC UA value changes -> published Sparkplug samples per second."),
    "cluster": ("zhizao.edge.bench_cluster:bench_cluster", "Full simulated cluster, one agent per line: rates, CPU, no loss."),
    "ingest": ("zhizao.cloud.bench:bench_ingest", "Sparkplug DDATA bytes -> committed rows per second."),
    "kernels": ("zhizao.analytics.bench:bench_kernels", "OEE and anomaly kernels against pandas, bottleneck, reference."),
    "series": ("zhizao.cloud.api.bench:bench_series", "/api/v1/series latency: 24 h at 1-minute buckets, p50/p99."),
    "oee": ("zhizao.cloud.oee.bench:bench_oee", "/api/v1/oee latency: whole cluster over 24 h (hour windows), p50/p99."),
    "live": ("zhizao.cloud.dashboard.bench:bench_live", "Simulator Stop/Start -> state event on the live stream, p50/p99."),
}


@click.group(cls=LazyGroup, lazy=_BENCHES)
def bench() -> None:
    """Benchmarks: edge publishing, cloud ingest, analytics kernels."""
