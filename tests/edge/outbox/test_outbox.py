"""The durable outbox on a real filesystem: torn tails, restart replay, budget, acks, batch ids."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from zhizao.edge.node.config import OutboxConfig
from zhizao.edge.outbox import Outbox, OutboxError, OutboxFullError, read_outbox
from zhizao.edge.samples import QUALITY_GOOD, SampleBlock


def make_block(start: int, n: int, *, text: bool = False) -> SampleBlock:
    """n samples whose values encode their global index, so every sample is recognisable."""
    idx = np.arange(start, start + n)
    return SampleBlock(
        (idx % 7).astype(np.int32),
        (1_700_000_000_000 + idx).astype(np.int64),
        idx.astype(np.float64),
        np.full(n, QUALITY_GOOD, np.int16),
        ((0, f"text-{start}-é"),) if text else (),
    )


def values(blocks: list[SampleBlock]) -> list[float]:
    return [float(v) for b in blocks for v in b.value]


def cfg(**kw: object) -> OutboxConfig:
    base: dict[str, object] = {"max_bytes": 1 << 24, "segment_bytes": 1 << 12, "fsync_interval_s": 0.0}
    base.update(kw)
    return OutboxConfig.model_validate(base)


def test_round_trip_keeps_arrays_and_text(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    b = make_block(0, 50, text=True)
    box.append(b)
    box.close()
    [(pos, got)] = read_outbox(tmp_path)
    assert pos == 0
    for name in ("signal", "ts_ms", "value", "quality"):
        assert np.array_equal(getattr(got, name), getattr(b, name)), name
    assert got.text == ((0, "text-0-é"),)


def test_restart_reloads_unacked_for_replay(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    for k in range(20):
        box.append(make_block(k * 100, 100))
    box.begin_session()
    live, positions = box.take_live()
    assert len(live) == 0 and positions == []
    box.close()

    box = Outbox(tmp_path, cfg())
    assert box.depth_samples == 2000
    box.begin_session()
    got: list[SampleBlock] = []
    while box.replay_pending:
        block, _ = box.take_replay(max_samples=300)
        assert len(block) <= 400  # whole records, about max_samples
        got.append(block)
    assert values(got) == list(map(float, range(2000)))
    box.close()


@pytest.mark.parametrize("cut_from_end", [1, 100, 20 * 10 + 25, 20 * 10 + 32 + 5])
def test_torn_tail_is_dropped_never_misread(tmp_path: Path, cut_from_end: int) -> None:
    # records of 10 samples are 32 + 220 bytes: the cuts land mid-payload and mid-header of the last record
    box = Outbox(tmp_path, cfg(segment_bytes=1 << 20))
    for k in range(3):
        box.append(make_block(k * 10, 10))
    box.close()
    [seg] = sorted(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - cut_from_end])
    box = Outbox(tmp_path, cfg())
    assert box.depth_samples == 20
    box.begin_session()
    block, _ = box.take_replay(10_000)
    assert values([block]) == list(map(float, range(20)))
    box.append(make_block(1000, 5))  # appending after a repaired tail works and is read back
    box.close()
    assert values([b for _, b in read_outbox(tmp_path)]) == [
        *map(float, range(20)),
        *map(float, range(1000, 1005)),
    ]


def test_garbage_after_records_is_detected(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg(segment_bytes=1 << 20))
    box.append(make_block(0, 10))
    box.close()
    [seg] = sorted(tmp_path.glob("*.seg"))
    with open(seg, "ab") as f:
        f.write(b"ZOB1" + os.urandom(500))
    box = Outbox(tmp_path, cfg())
    assert box.depth_samples == 10
    box.close()
    assert values([b for _, b in read_outbox(tmp_path)]) == list(map(float, range(10)))


def test_acks_release_in_order_and_delete_segments(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    box.begin_session()
    for k in range(40):
        box.append(make_block(k * 100, 100))
    _, positions = box.take_live()
    b1 = box.next_batch()
    box.mark_published(positions[:20], b1)
    b2 = box.next_batch()
    box.mark_published(positions[20:], b2)
    segs_before = len(list(tmp_path.glob("*.seg")))
    assert segs_before > 2
    assert box.ack(b1 - 1) == 0
    assert box.ack(b1) == 2000
    assert box.depth_samples == 2000
    assert len(list(tmp_path.glob("*.seg"))) < segs_before
    assert box.ack(b2) == 2000
    assert box.depth_samples == 0
    assert box.depth_bytes == 0 and list(tmp_path.glob("*.seg")) == []
    box.close()
    box = Outbox(tmp_path, cfg())
    assert box.depth_samples == 0  # acked data is not replayed after a restart
    box.close()


def test_unpublished_records_block_the_watermark(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    box.begin_session()
    box.append(make_block(0, 10))
    box.append(make_block(10, 10))
    _, positions = box.take_live()
    batch = box.next_batch()
    box.mark_published(positions[1:], batch)  # the first record never went out
    assert box.ack(batch) == 0
    assert box.depth_samples == 20
    box.close()


def test_batch_ids_strictly_increase_across_restarts(tmp_path: Path) -> None:
    seen: list[int] = []
    for _ in range(3):
        box = Outbox(tmp_path, cfg())
        seen += [box.next_batch() for _ in range(5)]
        box.close()
    assert seen == sorted(set(seen)) and seen[0] >= 1


def test_budget_warns_once_then_refuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path, cfg(max_bytes=1 << 16, warn_fraction=0.5, segment_bytes=1 << 20))
    caplog.set_level(logging.INFO, logger="zhizao.edge.outbox")
    appended = 0
    with pytest.raises(OutboxFullError, match="full"):
        for k in range(1000):
            box.append(make_block(k * 100, 100))
            appended += 100
    warnings = [r for r in caplog.records if "disk budget used" in r.getMessage()]
    assert len(warnings) == 1
    assert box.rejected_samples == 100
    assert box.depth_samples == appended  # nothing already stored was dropped
    assert box.depth_bytes <= 1 << 16
    with pytest.raises(OutboxFullError):
        box.append(make_block(0, 100))
    assert len([r for r in caplog.records if "FULL" in r.getMessage()]) == 1
    box.close()


def test_second_process_cannot_share_an_outbox(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    with pytest.raises(OutboxError, match="in use"):
        Outbox(tmp_path, cfg())
    box.close()


def test_live_blocks_kept_only_during_a_session(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    box.append(make_block(0, 5))  # before any session: history
    box.begin_session()
    box.append(make_block(5, 5))
    live, positions = box.take_live()
    assert values([live]) == [5.0, 6.0, 7.0, 8.0, 9.0] and positions == [1]
    hist, hpos = box.take_replay(100)
    assert values([hist]) == [0.0, 1.0, 2.0, 3.0, 4.0] and hpos == [0]
    box.end_session()
    box.append(make_block(10, 5))
    live, positions = box.take_live()
    assert len(live) == 0 and positions == []
    box.close()


def test_an_ack_after_a_rebirth_releases_only_what_this_session_replayed(tmp_path: Path) -> None:
    """Published in session 1, never committed; session 2 replays a part and that part is acked: the rest stays."""
    box = Outbox(tmp_path, cfg())
    box.begin_session()
    for k in range(10):
        box.append(make_block(k * 10, 10))
        _, positions = box.take_live()
        box.mark_published(positions, box.next_batch())  # session 1: batches 1..10, none acknowledged
    box.begin_session()  # rebirth: everything is history again
    history, positions = box.take_replay(max_samples=30)
    assert values([history]) == [float(v) for v in range(30)]
    batch = box.next_batch()
    box.mark_published(positions, batch)
    assert box.ack(batch) == 30  # the cloud committed the first replayed batch
    assert box.depth_samples == 70, "samples that were never replayed in this session were released"
    rest, _ = box.take_replay(max_samples=1000)
    assert values([rest]) == [float(v) for v in range(30, 100)]


def test_an_ack_for_a_batch_never_handed_out_releases_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path, cfg())
    box.begin_session()
    box.append(make_block(0, 10))
    _, positions = box.take_live()
    box.mark_published(positions, box.next_batch())
    assert box.ack(10**12) == 0
    assert box.depth_samples == 10
    assert box.ack(box.last_batch) == 10
