"""Bad input goes to dead letters while good data flows; acks wait for the commit, also through DB outages."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg
from prometheus_client import REGISTRY

from tests.support.spnode import T0, SpNode, now_ms, wait_for
from zhizao.broker.sparkplug.topics import MessageType, device_topic
from zhizao.cloud.ingest.service import IngestService

REASONS = ("not_protobuf", "unknown_alias", "oversize", "unknown_group", "bad_topic")
HELD = ("non_finite", "future_timestamp")


def scalar(url: str, sql: str, *args: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
        return row[0] if row else None


def dead_letter_counter(reason: str) -> float:
    return REGISTRY.get_sample_value("zhizao_ingest_dead_letters_total", {"reason": reason}) or 0.0


def quarantine_counter(reason: str) -> float:
    return REGISTRY.get_sample_value("zhizao_ingest_quarantined_total", {"reason": reason}) or 0.0


def test_each_kind_of_bad_input_is_dead_lettered_or_held_and_good_data_keeps_flowing(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    other = f"{unique_id}x"
    make_service(max_payload_bytes=4096, allowed_sites=frozenset({unique_id}), sites=(unique_id, other))
    before = {r: dead_letter_counter(r) for r in REASONS}
    held_before = {r: quarantine_counter(r) for r in HELD}
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 4})
    stranger = SpNode(mqtt_url, other, "line-1", {"m1": 4})
    try:
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        topic = device_topic(unique_id, MessageType.DDATA, "line-1", "m1")
        good = 0

        def send_good() -> None:
            nonlocal good
            node.new_batch()
            n = 20
            node.ddata("m1", T0 + good + np.arange(n, dtype=np.int64) * 1000, np.arange(n) % 4, np.ones(n))
            good += n

        send_good()
        node.pub(topic, b"\x00\xffthis is not protobuf")  # not_protobuf
        send_good()
        node.alias[("m1", 9)] = 4242
        node.ddata("m1", np.full(2, T0 + 9 * 10**6, np.int64), np.array([0, 9]), np.array([5.0, 5.0]))  # 1 good, 1 unknown
        good += 1
        send_good()
        node.ddata("m1", T0 + 10**7 + np.arange(3, dtype=np.int64), np.array([0, 1, 2]),
                   np.array([np.nan, np.inf, 1.0]))  # non_finite x2, 1 good
        good += 1
        node.ddata("m1", np.array([T0 + 2 * 10**7, now_ms() + 86_400_000], np.int64), np.array([0, 1]),
                   np.array([1.0, 2.0]))  # future_timestamp, 1 good
        good += 1
        big = 400  # (its seq is never read: the host sees a gap and asks for a rebirth, as it should)
        node.ddata("m1", T0 + 3 * 10**7 + np.arange(big, dtype=np.int64), np.arange(big) % 4, np.ones(big))  # oversize
        stranger.birth()  # unknown_group (3 messages: NBIRTH + DBIRTH + ... all refused)
        node.pub(f"spBv1.0/{unique_id}/DDATA/line-1", b"")  # bad_topic: DDATA without a device
        send_good()
        node.new_batch()
        node.ddata("m1", np.array([T0 + 5 * 10**7], np.int64), np.array([0]), np.array([1.0]))
        good += 1
        wait_for(
            lambda: scalar(
                fresh_database,
                "SELECT count(*) FROM samples s JOIN tags t USING (tag_id) WHERE t.machine_id = 'm1' AND s.ts >= to_timestamp(%s / 1000.0)",
                T0,
            ) == good,
            what=f"all {good} good samples stored",
        )
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM dead_letters") == 6,
                 what="6 dead letters: one of every kind, two for the unknown group")
        with psycopg.connect(fresh_database) as conn:
            rows = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall())
            assert rows["not_protobuf"] == 1 and rows["unknown_alias"] == 1 and rows["oversize"] == 1
            assert rows["bad_topic"] == 1
            assert rows["unknown_group"] == 2  # the stranger's NBIRTH and DBIRTH
            detail, payload = conn.execute(
                "SELECT detail, payload FROM dead_letters WHERE reason = 'unknown_alias'"
            ).fetchone()  # type: ignore[misc]
            assert "1 of" in detail and len(payload) > 0
            # Refused samples of known tags are kept whole in quarantine, each with its own value and time.
            held = conn.execute(
                "SELECT reason, ts_ms, value FROM quarantine ORDER BY ts_ms, reason"
            ).fetchall()
        assert [(r, ts) for r, ts, _ in held] == [
            ("non_finite", T0 + 10**7), ("non_finite", T0 + 10**7 + 1), ("future_timestamp", held[2][1]),
        ]
        assert held[2][1] > now_ms() + 3_600_000 and held[2][2] == 2.0
        assert np.isnan(held[0][2]) and np.isinf(held[1][2])
        for reason in REASONS:
            assert dead_letter_counter(reason) - before[reason] == rows[reason], reason
        assert quarantine_counter("non_finite") - held_before["non_finite"] == 2
        assert quarantine_counter("future_timestamp") - held_before["future_timestamp"] == 1
    finally:
        node.close()
        stranger.close()


def test_no_ack_before_commit_and_acks_resume_after_a_database_outage(
    make_service: Callable[..., IngestService], fresh_database: str, database_url: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service(db_retry_max_s=0.5)
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 4})
    dbname = fresh_database.rsplit("/", 1)[1]
    try:
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        ts = T0 + np.arange(8, dtype=np.int64) * 1000
        metric = np.arange(8) % 4

        # 1. Writes blocked by a lock: the batch cannot commit, so no ack may be sent.
        locker = psycopg.connect(fresh_database)
        locker.execute("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")
        node.new_batch()
        node.ddata("m1", ts, metric, np.ones(8))
        node.new_batch()
        node.ddata("m1", ts + 10**6, metric, np.ones(8))  # closes batch 1
        wait_for(lambda: bool(scalar(fresh_database, "SELECT count(*) FROM pg_stat_activity"
                                     " WHERE datname = current_database() AND wait_event_type = 'Lock'")),
                 what="a writer blocked by the lock")
        assert node.acks == []
        locker.rollback()
        locker.close()
        wait_for(lambda: node.acks == [1], what="ack of batch 1 after the lock is released")
        assert scalar(fresh_database, "SELECT count(*) FROM samples WHERE ts >= to_timestamp(%s / 1000.0)", T0) >= 8

        # 2. The database refuses connections and drops the ingest's sessions: retry, hold acks, recover.
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [dbname])
        node.new_batch()
        node.ddata("m1", ts + 2 * 10**6, metric, np.ones(8))  # closes batch 2
        node.new_batch()
        node.ddata("m1", ts + 3 * 10**6, metric, np.ones(8))  # closes batch 3
        # A writer tried to store them and gave up on a connection (the pool waits 10 s for one): acks held.
        wait_for(lambda: svc.stats()["db_down"] == 1, timeout=30, what="the writers meeting the outage")
        assert max(node.acks) == 1, "no ack while the database is down"
        _allow(database_url, dbname)
        wait_for(lambda: max(node.acks) >= 3, timeout=40, what="acks after the database is back")
        assert scalar(
            fresh_database,
            "SELECT count(*) FROM samples s JOIN tags t USING (tag_id) WHERE t.machine_id = 'm1' AND s.ts >= to_timestamp(%s / 1000.0)",
            T0,
        ) == 32
        assert svc.stats()["db_down"] == 0
    finally:
        _allow(database_url, dbname)
        node.close()


def _allow(database_url: str, dbname: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')


def test_a_flood_of_garbage_is_counted_in_full_but_stored_at_a_bounded_rate(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service(dead_letter_rows_per_s=20)
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        topic = device_topic(unique_id, MessageType.DDATA, "line-1", "m1")
        for _ in range(300):
            node.client.publish(topic, b"\xff\xff garbage", qos=0)
        node.new_batch()
        node.ddata("m1", np.array([T0, T0 + 1], np.int64), np.array([0, 1]), np.ones(2))
        wait_for(lambda: svc.stats()["dead_letters"] == 300, what="all 300 counted")
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM samples WHERE ts < to_timestamp(%s / 1000.0 + 1)",
                                T0) == 2, what="the good samples stored")
        stored = scalar(fresh_database, "SELECT count(*) FROM dead_letters")
        assert isinstance(stored, int) and 20 <= stored < 100
    finally:
        node.close()


def test_overload_drops_data_with_bounded_memory_holds_acks_and_the_replay_after_rebirth_fills_the_gap(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service(queue_max_bytes=4096, batch_max_samples=10, pipeline_depth=1, writers=1,
                       rebirth_min_interval_ms=300)
    dropped = REGISTRY.get_sample_value("zhizao_ingest_dropped_total", {"reason": "overload"}) or 0.0
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 4})
    try:
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        locker = psycopg.connect(fresh_database)
        locker.execute("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")  # the writer stalls: back-pressure
        messages = []
        for i in range(120):
            ts = T0 + i * 100 + np.arange(20, dtype=np.int64)
            batch = node.new_batch()
            messages.append((batch, ts))
            node.ddata("m1", ts, np.arange(20) % 4, np.full(20, float(i)))
        wait_for(
            lambda: (REGISTRY.get_sample_value("zhizao_ingest_dropped_total", {"reason": "overload"}) or 0) > dropped,
            what="DATA dropped once the receive budget is full",
        )
        assert svc.stats()["queue_bytes"] <= 4096
        locker.rollback()
        locker.close()
        wait_for(lambda: node.rebirth_requests() >= 1, what="rebirth request for the node that lost data")
        acked = max(node.acks, default=0)  # an ack still on its way only makes the replay below longer
        assert acked < 119, "acks must stop before the dropped messages"
        # What the edge does on a rebirth: NBIRTH, then every unacknowledged sample as historical data
        # (paced, as the edge's replay is; this test's receive budget is only 4 KiB).
        node.birth()
        for batch, ts in messages:
            if batch > acked:
                seen = svc.stats()["messages_received"]
                node.new_batch()
                node.ddata("m1", ts, np.arange(20) % 4, np.full(20, float(batch)), historical=True)
                wait_for(lambda s=seen: svc.stats()["messages_received"] > s, what="the replayed message taken in")
        node.new_batch()
        node.ddata("m1", np.array([T0 + 10**6], np.int64), np.array([0]), np.array([1.0]))
        wait_for(
            lambda: scalar(
                fresh_database,
                "SELECT count(*) FROM samples WHERE ts < to_timestamp(%s / 1000.0 + 100)", T0,
            ) == 120 * 20,
            timeout=30,
            what="every sample stored exactly once after the replay",
        )
        wait_for(lambda: max(node.acks) > 120, what="acks resume after the rebirth")
        # Acks go out in commit order, so any ack of the first session came before these: none reached the end.
        assert max((a for a in node.acks if a <= 120), default=0) < 119, "acks must stop before the dropped messages"
    finally:
        node.close()
