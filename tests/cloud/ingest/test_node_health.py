"""An edge node's own troubles reach the cloud: outbox fill, samples refused because its outbox was full,
refused commands (its health NDATA) and its samples the cloud holds in quarantine, on `/api/v1/edge-nodes`
(a real edge node, Mosquitto, the ingest and the API on PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.apifixtures import bearer, make_client
from tests.support.node import block, signal_table
from tests.support.spnode import until
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.service import IngestService
from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig
from zhizao.edge.node.session import EdgeNode
from zhizao.edge.outbox import Outbox, OutboxFullError


def test_edge_nodes_show_outbox_fill_refusals_and_quarantine(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str, tmp_path: Path
) -> None:
    make_service()
    token = create_token(fresh_database, "viewer", unique_id, "view")

    def node_row() -> dict[str, Any] | None:
        with make_client(fresh_database) as client:
            rows = client.get(f"/api/v1/edge-nodes?site={unique_id}", headers=bearer(token))
        return rows.json()[0] if rows.status_code == 200 and rows.json() else None

    async def main() -> tuple[int, dict[str, Any]]:
        outbox = Outbox(tmp_path / "outbox", OutboxConfig(fsync_interval_s=0, max_bytes=1 << 16))
        node = EdgeNode(unique_id, "line-1", MqttConfig(url=mqtt_url),
                        SparkplugConfig(primary_host=f"host-{unique_id}", publish_interval_ms=50, health_interval_s=0.2),
                        outbox, signal_table())  # fmt: skip
        try:
            await node.start()
            # A device clock two hours ahead: the cloud refuses these samples and keeps them in quarantine.
            outbox.append(block([2, 2, 2], [1.0, 2.0, 3.0], t0=int(time.time() * 1000) + 7_200_000))
            # Then more than the outbox holds, faster than acks free it: the agent refuses samples.
            big = block([2] * 500, [float(i) for i in range(500)])
            with pytest.raises(OutboxFullError):
                for _ in range(10_000):
                    outbox.append(big)
            refused = outbox.rejected_samples
            seen: list[dict[str, Any]] = []

            def reported() -> bool:
                row = node_row()
                seen[:] = [row] if row else []
                return bool(row and row["outbox_refused_samples"] == refused and row["quarantined_samples"] == 3)

            await until(lambda: reported(), 30.0, "the refusals and the quarantine on /api/v1/edge-nodes")
            return refused, seen[0]
        finally:
            await node.stop()
            outbox.close()

    refused, row = asyncio.run(main())
    assert refused >= 500
    assert row["outbox_fill"] is not None and 0.0 <= row["outbox_fill"] <= 1.0
    assert row["commands_refused"] == 0 and row["online"] is True
