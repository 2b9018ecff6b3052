"""Scale-out: two ingest workers share DATA through `$share/zhizao-ingest/...`; both see every birth."""

from __future__ import annotations

import numpy as np
import psycopg

from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.host.client import subscriptions
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.ingest.writer import CommitListener


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


def _workers(fresh_database: str, mqtt_url: str, unique_id: str, n: int = 2) -> list[IngestService]:
    settings = IngestSettings(shared_subscription=True, sites=(unique_id,), batch_max_ms=50,
                              reorder_timeout_ms=500, rebirth_min_interval_ms=1000)  # fmt: skip
    return [IngestService(fresh_database, mqtt_url, f"host-{unique_id}-{i}", settings) for i in range(n)]


def test_acks_of_two_workers_cover_only_batches_one_of_them_committed(
    fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    """Mosquitto round-robins the DATA: the ack is the watermark of the batches either worker committed, it
    stands at a batch no worker got (here: never published), and that gap asks the node to rebirth."""
    workers = _workers(fresh_database, mqtt_url, unique_id)
    for w in workers:
        w.start()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        node.birth()
        wait_for(lambda: all(w.stats()["nodes_online"] == 1 for w in workers), what="both workers saw the birth")
        for i in range(1, 21):
            node.ddata("m1", T0 + i * 10 + np.arange(2, dtype=np.int64), np.arange(2), np.ones(2), batch=i)
        wait_for(lambda: node.acks and max(node.acks) == 20, what="ack of batch 20")
        assert all(w.stats()["acks_sent"] > 0 for w in workers)  # each worker acked what it committed
        for i in (22, 23, 24, 25):  # batch 21 is lost on the way (as with a worker killed holding it)
            node.ddata("m1", T0 + i * 10 + np.arange(2, dtype=np.int64), np.arange(2), np.ones(2), batch=i)
        wait_for(lambda: node.rebirth_requests() >= 1, what="a rebirth request for the gap at batch 21")
        assert max(node.acks) == 20
        with psycopg.connect(fresh_database) as conn:
            row = conn.execute("SELECT acked_batch, gap_since IS NOT NULL FROM ingest_sessions WHERE site_id = %s",
                               [unique_id]).fetchone()  # fmt: skip
        assert row == (20, True)
        # The rebirth starts a new session at the node's batch counter; its batches are acked again.
        node.batch = 25
        node.birth()
        wait_for(lambda: all(w.stats()["nodes_online"] == 1 for w in workers), what="the rebirth seen")
        for i in range(26, 31):
            node.ddata("m1", T0 + i * 10 + np.arange(2, dtype=np.int64), np.arange(2), np.ones(2), batch=i)
        wait_for(lambda: max(node.acks) == 30, what="ack of batch 30 in the new session")
    finally:
        node.close()
        for w in workers:
            w.stop()


def test_a_worker_started_after_the_birth_adopts_the_session_and_one_worker_owns_the_site(
    fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    """The second worker never saw the births: it resolves the aliases from the session in PostgreSQL. Every
    committed sample reaches the commit listeners of exactly one worker, the site's owner (advisory lock)."""
    first, second = _workers(fresh_database, mqtt_url, unique_id)
    heard: list[list[int]] = [[], []]

    def listener(i: int) -> CommitListener:
        return lambda tag, ts, value: heard[i].extend(ts.tolist())

    for i, w in enumerate((first, second)):
        w.add_commit_listener(listener(i))
    first.start()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        node.birth()
        wait_for(lambda: first.stats()["nodes_online"] == 1, what="the birth")
        second.start()
        n = 40
        for i in range(1, n + 1):
            node.ddata("m1", T0 + i * 10 + np.arange(2, dtype=np.int64), np.arange(2), np.full(2, float(i)), batch=i)
        wait_for(lambda: node.acks and max(node.acks) == n, what=f"ack of batch {n}")
        assert second.stats()["samples_received"] > 0 and second.stats()["dead_letters"] == 0
        wait_for(lambda: len(heard[0]) + len(heard[1]) == 2 * n, what="every committed sample to a listener")
        assert sorted(heard[0] + heard[1]) == sorted(T0 + i * 10 + k for i in range(1, n + 1) for k in range(2))
        assert min(len(heard[0]), len(heard[1])) == 0  # all of them to one worker: the site's owner
    finally:
        node.close()
        first.stop()
        second.stop()
