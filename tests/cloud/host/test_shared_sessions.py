"""Sparkplug sessions and the ack ledger in PostgreSQL (cloud/host/shared.py), on a real database: the
watermark covers only batch ids some worker committed, across concurrent transactions and sessions."""

from __future__ import annotations

import threading

import psycopg
import pytest

from zhizao.cloud.host import shared
from zhizao.cloud.host.session import NodeKey
from zhizao.cloud.storage.migrate import apply_migrations

KEY = NodeKey("s1", "e1")


@pytest.fixture
def db(fresh_database: str) -> str:
    apply_migrations(fresh_database)
    return fresh_database


def _birth(conn: psycopg.Connection[tuple[object, ...]], bd_seq: int, ms: int, batch: int | None) -> int | None:
    return shared.record_birth(conn, KEY, bd_seq, ms, batch, b"nbirth", {"Outbox/Depth": 7})


def test_every_worker_recording_the_same_birth_gets_one_generation_and_a_new_birth_the_next(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        assert _birth(conn, 0, 1000, 10) == 1
        assert _birth(conn, 0, 1000, 10) == 1  # the other worker, same NBIRTH
        assert _birth(conn, 0, 2000, 15) == 2  # a rebirth: same bdSeq, later birth, new batch counter
        assert _birth(conn, 0, 1000, 10) is None  # a worker far behind: a newer session is recorded
        birth = shared.load_birth(conn, KEY)
        assert birth is not None and (birth.generation, birth.birth_batch, birth.node_tags) == (2, 15, {"Outbox/Depth": 7})
        shared.record_death(conn, KEY, 2)
        assert shared.load_birth(conn, KEY) is None


def test_the_watermark_is_contiguous_over_committed_batches_and_stops_at_a_gap(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        gen = _birth(conn, 3, 1000, 10)
        assert gen is not None
        with conn.transaction():
            assert shared.commit_batches(conn, KEY, gen, [12, 13]) == (10, 3)  # 11 not committed: nothing acked
        with conn.transaction():
            assert shared.commit_batches(conn, KEY, gen, [11]) == (13, 3)
        with conn.transaction():
            assert shared.commit_batches(conn, KEY, gen, [15]) == (13, 3)
        row = conn.execute("SELECT gap_since IS NOT NULL FROM ingest_sessions").fetchone()
        assert row == (True,)
        # A stalled gap is claimed once: one worker asks for the rebirth, the others see nothing to ask.
        conn.execute("UPDATE ingest_sessions SET gap_since = now() - interval '10 s'")
        assert shared.claim_stalled(conn, 500, 5000, ()) == [KEY]
        assert shared.claim_stalled(conn, 500, 5000, ()) == []
        # Batches of an earlier session never count towards the next one.
        new = _birth(conn, 3, 2000, 15)
        assert new == gen + 1
        with conn.transaction():
            assert shared.commit_batches(conn, KEY, gen, [16, 17]) is None
        with conn.transaction():
            assert shared.commit_batches(conn, KEY, new, [16]) == (16, 3)


def test_two_workers_committing_side_by_side_see_each_others_batches(db: str) -> None:
    """Worker A holds the session row (its transaction open, batch 11); worker B commits batch 12 meanwhile.
    B waits for A's commit and then sees batch 11, so the watermark reaches 12 without any later batch."""
    with psycopg.connect(db, autocommit=True) as setup:
        gen = _birth(setup, 0, 1000, 10)
        assert gen is not None
    results: list[tuple[int, int | None] | None] = []
    with psycopg.connect(db) as a, psycopg.connect(db) as b:
        with a.transaction():
            assert shared.commit_batches(a, KEY, gen, [11]) == (11, 0)

            def worker_b() -> None:
                with b.transaction():
                    results.append(shared.commit_batches(b, KEY, gen, [12]))

            t = threading.Thread(target=worker_b)
            t.start()
            t.join(0.5)
            assert t.is_alive()  # B waits on the session row A holds
        t.join(10)
    assert results == [(12, 0)]
