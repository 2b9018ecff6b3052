"""Ingest end to end on real Mosquitto + PostgreSQL: births -> assets, DDATA -> rows once, acks after commit."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.support.db import count
from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.ingest.service import IngestService

MACHINE_ROWS = (
    "SELECT count(*) FROM samples s JOIN tags t USING (tag_id)"
    " WHERE t.machine_id IS NOT NULL AND s.ts >= to_timestamp(%s / 1000.0)"
)


def test_births_register_assets_and_data_is_stored_once(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 5, "m2": 3})
    try:
        node.birth()
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines") == 2, what="machines registered")
        assert count(fresh_database, "SELECT count(*) FROM sites WHERE site_id = %s", unique_id) == 1
        assert count(fresh_database, "SELECT count(*) FROM edge_nodes WHERE online AND bd_seq = 0") == 1
        # 5 + 3 Double tags, 2 Label tags, 3 health node metrics (bdSeq, Rebirth, zhizao/Batch not stored)
        assert count(fresh_database, "SELECT count(*) FROM tags") == 13
        assert count(fresh_database, "SELECT count(*) FROM tags WHERE machine_id IS NULL") == 3

        n = 1000
        ts = T0 + np.arange(n, dtype=np.int64) * 10
        metric = np.arange(n) % 5
        value = np.arange(n, dtype=np.float64)
        node.new_batch()
        node.ddata("m1", ts, metric, value)
        node.new_batch()
        node.ddata("m2", ts[:300], metric[:300] % 3, value[:300], health={2: 42.0, 3: 1234.5, 4: 3.0})
        node.new_batch()  # batch 3 closes batch 2: both become ackable
        node.ddata("m1", ts[:1] + 10**6, metric[:1], value[:1])
        wait_for(lambda: node.acks and node.acks[-1] >= 2, what="ack of batch 2")
        assert count(fresh_database, MACHINE_ROWS, T0) == 1301
        # Acks are published only after the commit: by now the rows are visible.
        assert count(fresh_database, "SELECT count(*) FROM edge_nodes WHERE acked_batch >= 2") == 1
        assert count(fresh_database, "SELECT outbox_depth FROM edge_nodes") == 42
        assert count(fresh_database, "SELECT reconnects FROM edge_nodes") == 3

        # Replay batch 1's samples as historical (in a new batch, as the edge's outbox does): zero new rows,
        # latest values not moved back.
        before = count(fresh_database, MACHINE_ROWS, T0)
        node.ddata("m1", ts, metric, value - 1, batch=node.new_batch(), historical=True)
        node.new_batch()
        node.ddata("m1", ts[:1] + 2 * 10**6, metric[:1], value[:1])
        wait_for(lambda: max(node.acks) >= 4, what="ack of batch 4 (the replay, closed by batch 5)")
        wait_for(lambda: count(fresh_database, MACHINE_ROWS, T0) == before + 1, what="the one new row")
        assert max(node.acks) == 4  # batch 5 is still open: nothing later arrived
        assert set(node.ack_bd_seqs) == {0}  # every ack names the session it belongs to
        # Live data moved the latest value; the historical replay (value - 1) did not.
        assert count(
            fresh_database,
            "SELECT count(*) FROM latest_values l JOIN tags t USING (tag_id)"
            " WHERE t.machine_id = 'm1' AND t.name = 'Value/1' AND l.value = 996",
        ) == 1
        assert count(
            fresh_database, "SELECT count(*) FROM (SELECT tag_id, ts FROM samples GROUP BY 1, 2 HAVING count(*) > 1) d"
        ) == 0
        # The same samples again as *live* data (a duplicate delivery): the optimistic plain INSERT hits the
        # unique constraint, falls back to ON CONFLICT DO NOTHING, and stores only the one new sample.
        rows = count(fresh_database, MACHINE_ROWS, T0)
        node.ddata("m1", np.append(ts, ts[-1] + 3 * 10**6), np.append(metric, 0), np.append(value, 1.0))
        # One message is stored in one transaction: the count goes from `rows` to its final value in one step.
        wait_for(lambda: count(fresh_database, MACHINE_ROWS, T0) == rows + 1, what="only the new live sample")
        assert count(fresh_database, "SELECT count(*) FROM dead_letters") == 0
        assert svc.stats()["dead_letters"] == 0
    finally:
        node.close()
