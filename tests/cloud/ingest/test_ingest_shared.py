"""Scale-out: two ingest workers share DATA through `$share/zhizao-ingest/...`; both see every birth."""

from __future__ import annotations

import numpy as np
import psycopg

from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.host.client import subscriptions
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings


def test_shared_subscription_filters_split_data_and_keep_births_for_everyone() -> None:
    subs = dict(subscriptions("h", shared=True, sites=("s1",)))
    assert subs["spBv1.0/STATE/h"] == 1
    assert "$share/zhizao-ingest/spBv1.0/s1/DDATA/#" in subs and "$share/zhizao-ingest/spBv1.0/s1/NDATA/#" in subs
    assert {"spBv1.0/s1/NBIRTH/#", "spBv1.0/s1/DBIRTH/#", "spBv1.0/s1/NDEATH/#", "spBv1.0/s1/DDEATH/#"} <= set(subs)
    assert not any(f.startswith("spBv1.0/s1/DDATA") for f in subs)  # DATA never reaches every worker


def test_two_workers_store_every_sample_once(fresh_database: str, mqtt_url: str, unique_id: str) -> None:
    settings = IngestSettings(shared_subscription=True, sites=(unique_id,), acks=False, batch_max_ms=50)
    workers = [IngestService(fresh_database, mqtt_url, f"host-{unique_id}-{i}", settings) for i in range(2)]
    for w in workers:
        w.start()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 4})
    try:
        node.birth()
        wait_for(lambda: all(w.stats()["nodes_online"] == 1 for w in workers), what="both workers saw the birth")
        wait_for(lambda: all(w.stats()["samples_received"] >= 11 for w in workers), what="births processed")
        base = [w.stats()["samples_received"] for w in workers]
        n = 60
        for i in range(n):
            node.new_batch()
            node.ddata("m1", T0 + i * 10 + np.arange(4, dtype=np.int64), np.arange(4), np.full(4, float(i)))

        def stored() -> int:
            with psycopg.connect(fresh_database) as conn:
                row = conn.execute("SELECT count(*) FROM samples WHERE ts >= to_timestamp(%s / 1000.0)"
                                   " AND ts < to_timestamp(%s / 1000.0 + 60)", [T0, T0]).fetchone()
                return int(row[0]) if row else -1

        wait_for(lambda: stored() == 4 * n, what="every sample stored once")
        received = [w.stats()["samples_received"] - b for w, b in zip(workers, base, strict=True)]
        # Each DDATA went to exactly one worker (4 samples + its zhizao/Batch metric), and both got some.
        assert sum(received) == 5 * n and all(r > 0 for r in received), received
    finally:
        node.close()
        for w in workers:
            w.stop()
