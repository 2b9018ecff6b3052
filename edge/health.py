"""Prometheus metrics of an edge agent: outbox depth and fill, samples in and out, MQTT reconnects, adapters.

Counters are fed from the plain counters the outbox and the edge node keep (`update()` adds the deltas), so
the hot path never touches prometheus-client. `/metrics` is served only when `metrics_port` is configured, on
`metrics_host` (127.0.0.1 unless set: it has no authentication).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server

from zhizao.edge.node.session import EdgeNode
from zhizao.edge.outbox import Outbox

log = logging.getLogger(__name__)

_L = ["site", "edge_node"]
OUTBOX_DEPTH = Gauge("zhizao_edge_outbox_depth_samples", "Samples in the outbox not yet acknowledged", _L)
OUTBOX_BYTES = Gauge("zhizao_edge_outbox_bytes", "Bytes of outbox segment files on disk", _L)
OUTBOX_FILL = Gauge("zhizao_edge_outbox_fill_ratio", "Outbox bytes / disk budget", _L)
OUTBOX_REJECTED = Counter(
    "zhizao_edge_outbox_rejected_samples", "Samples refused because the outbox was full", _L
)
SAMPLES_IN = Counter("zhizao_edge_samples_appended", "Samples appended to the outbox", _L)
SAMPLES_OUT = Counter("zhizao_edge_samples_published", "Samples published in DDATA", [*_L, "kind"])
MESSAGES = Counter("zhizao_edge_mqtt_messages_published", "Sparkplug messages published", _L)
RECONNECTS = Counter("zhizao_edge_mqtt_reconnects", "MQTT reconnects", _L)
SAMPLES_PER_S = Gauge(
    "zhizao_edge_samples_per_second", "Samples appended per second (last health interval)", _L
)
ONLINE = Gauge("zhizao_edge_online", "1 while the edge node is born (NBIRTH sent)", _L)
ADAPTER_UP = Gauge("zhizao_edge_adapter_up", "1 while the adapter's device session is up", [*_L, "adapter"])
COMMANDS_REFUSED = Counter("zhizao_edge_commands_refused", "NCMD/DCMD refused (unknown, not writable, bad value)", _L)
ADAPTER_RESTARTS = Counter(
    "zhizao_edge_adapter_restarts", "Adapter reconnect attempts after errors", [*_L, "adapter"]
)


class HealthExporter:
    """Mirrors one agent's counters into the process-wide prometheus metrics (labelled by site, edge node)."""

    def __init__(self, site: str, edge_node: str, node: EdgeNode, outbox: Outbox) -> None:
        self.labels = (site, edge_node)
        self.node = node
        self.outbox = outbox
        self._last: dict[str, int] = {}
        self._server: Any = None

    def _delta(self, key: str, value: int) -> int:
        d = value - self._last.get(key, 0)
        self._last[key] = value
        return max(d, 0)

    def update(self) -> None:
        """Copy the current figures into the metrics."""
        box, stats, lb = self.outbox, self.node.stats, self.labels
        OUTBOX_DEPTH.labels(*lb).set(box.depth_samples)
        OUTBOX_BYTES.labels(*lb).set(box.depth_bytes)
        OUTBOX_FILL.labels(*lb).set(box.depth_bytes / box.config.max_bytes)
        OUTBOX_REJECTED.labels(*lb).inc(self._delta("rejected", box.rejected_samples))
        SAMPLES_IN.labels(*lb).inc(self._delta("appended", box.appended_samples))
        SAMPLES_OUT.labels(*lb, "live").inc(self._delta("live", stats.live_samples))
        SAMPLES_OUT.labels(*lb, "historical").inc(self._delta("historical", stats.historical_samples))
        MESSAGES.labels(*lb).inc(self._delta("messages", stats.messages))
        RECONNECTS.labels(*lb).inc(self._delta("reconnects", stats.reconnects))
        COMMANDS_REFUSED.labels(*lb).inc(self._delta("commands_refused", stats.rejected_commands))
        SAMPLES_PER_S.labels(*lb).set(self.node.samples_per_s)
        ONLINE.labels(*lb).set(1 if self.node.state == "online" else 0)

    def adapter(self, name: str, up: bool, restarted: bool = False) -> None:
        """Record an adapter's state change."""
        ADAPTER_UP.labels(*self.labels, name).set(1 if up else 0)
        if restarted:
            ADAPTER_RESTARTS.labels(*self.labels, name).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on `host:port` until `close` (it has no authentication: this host only by default)."""
        self._server, _ = start_http_server(port, addr=host)
        log.info("edge agent %s/%s: metrics on %s:%d/metrics", *self.labels, host, port)

    def close(self) -> None:
        """Stop the /metrics server if one runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
