"""Primary host duties on a real broker: STATE birth/Will, deaths with bdSeq, seq gaps and rebirths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import psycopg
from prometheus_client import REGISTRY

from tests.support.spnode import T0, SpNode, Watcher, wait_for
from zhizao.broker.extensions import decode_state
from zhizao.broker.sparkplug.codec import encode_death
from zhizao.broker.sparkplug.topics import MessageType, device_topic, state_topic
from zhizao.cloud.ingest.service import IngestService


def scalar(url: str, sql: str, *args: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
        return row[0] if row else None


def _no_birth_drops() -> float:
    """How many DATA messages the (in-process) host dropped for lack of a birth, so far."""
    return REGISTRY.get_sample_value("zhizao_ingest_dropped_total", {"reason": "no_birth"}) or 0.0


def test_state_birth_and_will_share_a_timestamp_and_offline_is_answered(
    make_service: Callable[..., IngestService], mqtt_url: str, unique_id: str
) -> None:
    host_id = f"host-{unique_id}"
    watch = Watcher(mqtt_url, [state_topic(host_id)])
    try:
        svc = make_service()
        wait_for(lambda: watch.on(state_topic(host_id)), what="STATE birth")
        online, ts = decode_state(watch.on(state_topic(host_id))[0])
        assert online and ts > 0
        # Someone publishes our STATE offline (e.g. a stale Will): the host says online again, same ts.
        watch.client.publish(state_topic(host_id), json.dumps({"online": False, "timestamp": ts}), qos=1, retain=True)
        wait_for(lambda: len(watch.on(state_topic(host_id))) >= 3, what="STATE republished online")
        assert decode_state(watch.on(state_topic(host_id))[-1]) == (True, ts)
        svc.stop()
        wait_for(lambda: not decode_state(watch.on(state_topic(host_id))[-1])[0], what="STATE offline on stop")
        assert decode_state(watch.on(state_topic(host_id))[-1]) == (False, ts)
    finally:
        watch.close()


def test_will_marks_the_host_offline_when_its_process_dies(
    fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    host_id = f"host-{unique_id}"
    code = (
        "import sys, time; from zhizao.cloud.ingest.service import IngestService; from zhizao.cloud.ingest.settings import IngestSettings\n"
        f"s = IngestService({fresh_database!r}, {mqtt_url!r}, {host_id!r}, IngestSettings(sites=({unique_id!r},)))\n"
        "s.start(); print('up', flush=True); time.sleep(60)\n"
    )
    watch = Watcher(mqtt_url, [state_topic(host_id)])
    try:
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
            try:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
                wait_for(lambda: watch.on(state_topic(host_id)), what="STATE online")
                online, ts = decode_state(watch.on(state_topic(host_id))[-1])
                assert online
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            finally:
                if proc.poll() is None:
                    proc.kill()
        # Mosquitto sends the Will when the keepalive... or at once on a broken socket.
        wait_for(lambda: not decode_state(watch.on(state_topic(host_id))[-1])[0], timeout=60, what="Will")
        assert decode_state(watch.on(state_topic(host_id))[-1]) == (False, ts)
    finally:
        watch.close()


def test_ndeath_with_matching_bdseq_marks_node_and_devices_offline_stale_one_ignored(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2, "m2": 2}, bd_seq=5)
    try:
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 2, what="births")
        # A stale NDEATH (an older session's bdSeq) changes nothing.
        node.pub(f"spBv1.0/{unique_id}/NDEATH/line-1", encode_death(None, bd_seq=4))
        # DDEATH for m2 takes only that machine offline, at the payload timestamp.
        node.pub(device_topic(unique_id, MessageType.DDEATH, "line-1", "m2"), encode_death(T0, seq=node.next_seq()))
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="DDEATH")
        assert scalar(fresh_database, "SELECT online FROM edge_nodes") is True
        assert scalar(fresh_database, "SELECT extract(epoch FROM last_death) * 1000 FROM machines WHERE machine_id = 'm2'") == T0
        node.death()  # matching bdSeq 5
        wait_for(lambda: scalar(fresh_database, "SELECT online FROM edge_nodes") is False, what="NDEATH")
        assert scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 0
        assert scalar(fresh_database, "SELECT last_death IS NOT NULL FROM edge_nodes") is True
    finally:
        node.close()


def test_seq_gap_requests_rebirth_after_the_reorder_timeout_and_holds_acks(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service(reorder_timeout_ms=600, rebirth_min_interval_ms=3000)
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="births")
        ts = T0 + np.arange(4, dtype=np.int64)
        metric = np.array([0, 1, 0, 1])
        for _ in range(2):
            node.new_batch()
            node.ddata("m1", ts + node.batch * 100, metric, np.ones(4))
        wait_for(lambda: node.acks == [1], what="ack of batch 1")
        node.next_seq()  # this seq number is never sent: a gap
        node.new_batch()
        node.ddata("m1", ts + node.batch * 100, metric, np.ones(4))
        gap_seen = time.monotonic()
        node.new_batch()
        node.ddata("m1", ts + node.batch * 100, metric, np.ones(4))
        wait_for(lambda: node.rebirth_requests() == 1, what="rebirth NCMD")
        assert time.monotonic() - gap_seen >= 0.5  # not before the reorder timeout
        assert max(node.acks) <= 2
        node.birth()
        node.new_batch()
        node.ddata("m1", ts + node.batch * 100, metric, np.ones(4))
        node.new_batch()
        node.ddata("m1", ts + node.batch * 100, metric, np.ones(4))
        wait_for(lambda: max(node.acks) >= 5, what="acks resume after the rebirth")
        # Batch 2 ended before the gap, so it may be acked; nothing after the gap ever is (the session froze
        # there and the node replays after its rebirth). The host acks in the order it commits, so any ack of
        # batches 3 or 4 would have arrived before the ack of batch 5.
        assert not {3, 4} & set(node.acks), node.acks
    finally:
        node.close()


def test_data_before_birth_and_unknown_alias_request_a_rate_limited_rebirth(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service(rebirth_min_interval_ms=1500)
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        ts = T0 + np.arange(2, dtype=np.int64)
        dropped = _no_birth_drops()
        for _ in range(5):
            node.ddata("m1", ts, np.array([0, 1]), np.ones(2))
        wait_for(lambda: node.rebirth_requests() == 1, what="rebirth request for DATA before BIRTH")
        wait_for(lambda: _no_birth_drops() == dropped + 5, what="the host handled all five DATA before BIRTH")
        assert node.rebirth_requests() == 1  # rate-limited: five messages, one request
        assert scalar(fresh_database, "SELECT count(*) FROM samples") == 0
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="births")
        node.alias[("m1", 7)] = 7777  # an alias the birth never declared
        node.ddata("m1", ts, np.array([0, 7]), np.ones(2))
        wait_for(lambda: node.rebirth_requests() == 2, timeout=5, what="rebirth request for an unknown alias")
        # The dead letters are committed with the next DB batch, a little after the rebirth request went out.
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM dead_letters WHERE reason = 'unknown_alias'")
                 == 1, what="the unknown_alias dead letter")  # fmt: skip
        assert scalar(fresh_database, "SELECT count(*) FROM dead_letters WHERE reason = 'data_before_birth'") == 5
    finally:
        node.close()


def test_host_speaks_mqtt_311_when_configured(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    host_id = f"host-{unique_id}"
    watch = Watcher(mqtt_url, [state_topic(host_id)])
    make_service(mqtt_protocol="3.1.1")
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        wait_for(lambda: watch.on(state_topic(host_id)), what="STATE birth over MQTT 3.1.1")
        assert decode_state(watch.on(state_topic(host_id))[-1])[0] is True
        node.birth()
        wait_for(lambda: scalar(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        node.new_batch()
        node.ddata("m1", T0 + np.arange(2, dtype=np.int64), np.array([0, 1]), np.ones(2))
        node.new_batch()
        node.ddata("m1", T0 + 10 + np.arange(2, dtype=np.int64), np.array([0, 1]), np.ones(2))
        wait_for(lambda: node.acks == [1], what="ack over MQTT 3.1.1")
    finally:
        node.close()
        watch.close()
