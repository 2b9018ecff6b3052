"""Mapping transforms: PackML state -> state codes, Int32 counter wraps and resets, good counts, scaling."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from zhizao.edge.config import parse_agent_config
from zhizao.edge.mapping import MAX_COUNTER_STEP, AgentMapping, build_mapping
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD, SampleBlock

CASE = Path(__file__).parent / "cases" / "valid-two-machines" / "agent.yaml"
M1 = "ns=2;s=sh-lingang/cnc-1/cnc-1-m01/"
M2 = "ns=2;s=sh-lingang/cnc-1/cnc-1-m02/"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_mapping(edit: Any = None) -> AgentMapping:
    data = yaml.safe_load(CASE.read_text(encoding="utf-8"))
    if edit is not None:
        edit(data)
    return build_mapping(parse_agent_config(data))


def block(mapping: AgentMapping, rows: list[tuple[Any, ...]]) -> SampleBlock:
    """Rows of (node id, ts_ms, value[, quality]) -> a source block of adapter 'sim'."""
    index = {s.metric: i for i, s in enumerate(mapping.plans["sim"].sources.signals)}
    return SampleBlock(
        np.array([index[r[0]] for r in rows], np.int32),
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows], np.float64),
        np.array([r[3] if len(r) > 3 else QUALITY_GOOD for r in rows], np.int16),
    )


def transform(mapping: AgentMapping, source: SampleBlock) -> SampleBlock:
    """One block through adapter 'sim', with the derived samples it holds back (its newest instant) flushed."""
    return SampleBlock.concat([mapping.transform("sim", source), mapping.flush("sim")])


def published(mapping: AgentMapping, out: SampleBlock, machine: str, metric: str) -> list[tuple[int, float]]:
    idx = next(i for i, s in enumerate(mapping.signals.signals) if s.machine == machine and s.metric == metric)
    rows = np.nonzero(out.signal == idx)[0]
    return [(int(out.ts_ms[r]), float(out.value[r])) for r in rows]


def states(mapping: AgentMapping, rows: list[tuple[Any, ...]]) -> list[tuple[int, float]]:
    return published(mapping, transform(mapping, block(mapping, rows)), "cnc-1-m01", "State")


def test_execute_full_and_reduced_speed() -> None:
    m = make_mapping()
    got = states(m, [
        (M1 + "MachSpeed", T0, 60.0),
        (M1 + "CurMachSpeed", T0, 60.0),
        (M1 + "State", T0 + 1, 6),  # Execute at full speed
        (M1 + "CurMachSpeed", T0 + 2, 59.0),  # within 5 %: still full speed, nothing new
        (M1 + "CurMachSpeed", T0 + 3, 40.0),  # slower
        (M1 + "CurMachSpeed", T0 + 4, 60.0),
    ])
    assert got == [(T0 + 1, 10000.0), (T0 + 3, 20000.0), (T0 + 4, 10000.0)]


@pytest.mark.parametrize(("packml", "reason", "code"), [
    (11, 180000, 180000),  # Held with a technical failure
    (5, 60001, 60001),  # Suspended, starved/blocked sub-code
    (2, 160000, 160000),  # Stopped, no shift
    (9, 0, 40000),  # Aborted without a reason: unspecified stop
    (11, 123, 40000),  # not a state code
    (4, 170000, 170000),  # Idle, no order
    (0, 0, 30000),  # Undefined: unknown
    (99, 0, 30000),  # not a PackML state number
])
def test_stop_states_take_the_stop_reason(packml: int, reason: int, code: int) -> None:
    m = make_mapping()
    # State and StopReason change in the same millisecond: one State sample, the final one.
    got = states(m, [(M1 + "State", T0, 6), (M1 + "State", T0 + 10, packml), (M1 + "StopReason", T0 + 10, reason)])
    assert got == [(T0, 10000.0), (T0 + 10, float(code))]


def test_state_only_on_change_and_across_blocks() -> None:
    m = make_mapping()
    assert states(m, [(M1 + "State", T0, 6), (M1 + "State", T0 + 1, 6)]) == [(T0, 10000.0)]
    assert states(m, [(M1 + "State", T0 + 2, 6)]) == []
    # the StopReason seen in an earlier block is remembered
    assert states(m, [(M1 + "StopReason", T0 + 3, 210000)]) == []
    assert states(m, [(M1 + "State", T0 + 4, 11)]) == [(T0 + 4, 210000.0)]


def test_plc_stop_reason_numbers_map_to_state_codes() -> None:
    """A PLC's own stop-reason numbers (17 door open, 23 tool change) reach OEE as catalogue codes, not 40000;
    a number that is already a state code passes; an unmapped number stays an unspecified stop."""

    def edit(d: dict[str, Any]) -> None:
        d["machines"][0]["signals"][0]["stop_reasons"] = {17: 41100, 23: 100000}

    m = make_mapping(edit)
    got = states(m, [(M1 + "State", T0, 6),
                     (M1 + "State", T0 + 1, 11), (M1 + "StopReason", T0 + 1, 17),
                     (M1 + "StopReason", T0 + 2, 23),
                     (M1 + "StopReason", T0 + 3, 180000),
                     (M1 + "StopReason", T0 + 4, 99)])
    assert got == [(T0, 10000.0), (T0 + 1, 41100.0), (T0 + 2, 100000.0), (T0 + 3, 180000.0), (T0 + 4, 40000.0)]


def test_stop_reasons_must_map_to_state_codes() -> None:
    from zhizao.edge.config import ConfigError

    with pytest.raises(ConfigError, match=r"stop reason 17: 123 is not a state code"):
        make_mapping(lambda d: d["machines"][0]["signals"][0].update(stop_reasons={17: 123}))


def test_state_table_by_name_and_opc30060_numbering() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["machines"][0]["signals"][0].update(numbering="opc30060", states={"Idle": 170000, "Held": "unknown"})

    m = make_mapping(edit)
    # OPC 30060 numbers: 4 Execute, 2 Idle, 15 Held
    got = states(m, [(M1 + "State", T0, 4), (M1 + "State", T0 + 1, 2), (M1 + "State", T0 + 2, 15)])
    assert got == [(T0, 10000.0), (T0 + 1, 170000.0), (T0 + 2, 30000.0)]


def test_bad_quality_does_not_move_derived_signals() -> None:
    m = make_mapping()
    out = transform(m, block(m, [(M1 + "State", T0, 6), (M1 + "State", T0 + 1, np.nan, QUALITY_BAD),
                                       (M1 + "ProdProcessedCount", T0 + 2, 5), (M1 + "ProdProcessedCount", T0 + 3, 0, QUALITY_BAD)]))
    assert published(m, out, "cnc-1-m01", "State") == [(T0, 10000.0)]
    assert published(m, out, "cnc-1-m01", "Counts/Total") == [(T0 + 2, 5.0)]


def test_counter_int32_wrap_and_reset() -> None:
    m = make_mapping()
    top = 2**31 - 1
    out = transform(m, block(m, [
        (M1 + "ProdProcessedCount", T0, top - 10),
        (M1 + "ProdProcessedCount", T0 + 1, top),
        (M1 + "ProdProcessedCount", T0 + 2, -(2**31) + 5),  # wrapped: +6
        (M1 + "ProdProcessedCount", T0 + 3, 0),  # reset (counter cleared)
        (M1 + "ProdProcessedCount", T0 + 4, 7),
    ]))
    totals = [v for _, v in published(m, out, "cnc-1-m01", "Counts/Total")]
    base = float(top - 10)
    assert totals == [base, base + 10, base + 16, base + 16, base + 23]
    # a reset seen between blocks, to a small value that was already counted after the reset
    out = transform(m, block(m, [(M1 + "ProdProcessedCount", T0 + 5, 3)]))
    assert published(m, out, "cnc-1-m01", "Counts/Total") == [(T0 + 5, base + 26)]


def test_good_count_is_processed_minus_defective_and_monotonic() -> None:
    m = make_mapping()
    out = transform(m, block(m, [
        (M1 + "ProdProcessedCount", T0, 100),
        (M1 + "ProdDefectiveCount", T0, 10),  # same ms as the processed count: one Good sample
        (M1 + "ProdProcessedCount", T0 + 1, 105),
        (M1 + "ProdDefectiveCount", T0 + 2, 12),  # defective moves first: Good must not drop
        (M1 + "ProdProcessedCount", T0 + 3, 110),
    ]))
    assert published(m, out, "cnc-1-m01", "Counts/Good") == [(T0, 90.0), (T0 + 1, 95.0), (T0 + 2, 95.0), (T0 + 3, 98.0)]
    assert published(m, out, "cnc-1-m01", "Counts/Total") == [(T0, 100.0), (T0 + 1, 105.0), (T0 + 3, 110.0)]


def test_processed_and_defective_in_the_same_ms_give_the_exact_good_count() -> None:
    m = make_mapping()
    out = transform(m, block(m, [
        (M1 + "ProdProcessedCount", T0, 100),
        (M1 + "ProdDefectiveCount", T0, 10),
        (M1 + "ProdProcessedCount", T0 + 1000, 105),  # a part made and two rejected in the same step
        (M1 + "ProdDefectiveCount", T0 + 1000, 12),
    ]))
    # 105 - 10 = 95 is only an in-between value: it must not survive in the running maximum
    assert published(m, out, "cnc-1-m01", "Counts/Good") == [(T0, 90.0), (T0 + 1000, 93.0)]


def test_values_scaled_in_arrival_order_with_quality() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["machines"][0]["signals"][5].update(scale=0.1, offset=-2.0)

    m = make_mapping(edit)
    out = transform(m, block(m, [
        (M1 + "Temperature/Spindle", T0 + 5, 400.0),
        (M1 + "MachSpeed", T0 + 1, 60.0),
        (M1 + "Temperature/Spindle", T0 + 2, 410.0, QUALITY_BAD),
    ]))
    names = [m.signals.signals[i].metric for i in out.signal]
    assert names == ["Temperature/Spindle", "Rate/Ideal", "Temperature/Spindle"]
    assert out.ts_ms.tolist() == [T0 + 5, T0 + 1, T0 + 2]
    assert out.value.tolist() == pytest.approx([38.0, 60.0, 39.0])
    assert out.quality.tolist() == [QUALITY_GOOD, QUALITY_GOOD, QUALITY_BAD]


def test_text_values_follow_their_rows() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["machines"][1]["signals"].append({"metric": "Order/Id", "node_id": M2 + "Order", "datatype": "String"})

    m = make_mapping(edit)
    src = block(m, [(M2 + "State", T0, 6), (M2 + "Order", T0 + 1, np.nan), (M2 + "Order", T0 + 2, np.nan)])
    src = SampleBlock(src.signal, src.ts_ms, src.value, src.quality, ((1, "A-17"), (2, "A-18")))
    out = transform(m, src)
    texts = {out.ts_ms[k]: s for k, s in out.text}
    assert texts == {T0 + 1: "A-17", T0 + 2: "A-18"}
    assert all(m.signals.signals[out.signal[k]].metric == "Order/Id" for k, _ in out.text)


def test_write_target_and_adapter_of() -> None:
    m = make_mapping()
    ideal = next(i for i, s in enumerate(m.signals.signals) if s.machine == "cnc-1-m01" and s.metric == "Rate/Ideal")
    adapter, src = m.write_target(ideal) or ("", -1)
    assert adapter == "sim" and m.plans["sim"].sources.signals[src].metric == M1 + "MachSpeed"
    state = next(i for i, s in enumerate(m.signals.signals) if s.metric == "State")
    assert m.write_target(state) is None
    assert m.adapter_of("cnc-1-m02") == "sim" and m.adapter_of("nope") is None


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(-(2**31), 2**31 - 1),
    steps=st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=1, max_size=60),
    cuts=st.lists(st.integers(1, 60), max_size=6),
)
def test_counter_total_equals_true_production(start: int, steps: list[tuple[int, bool]], cuts: list[int]) -> None:
    """An Int32 device counter that wraps and is reset: the published total grows by exactly what was made."""
    m = make_mapping()
    raw, value, made = [start], start, 0
    for inc, reset in steps:
        if reset and (inc - value) % 2**32 > MAX_COUNTER_STEP:
            value = inc  # reset: counting restarted from 0 and `inc` were made since
        else:
            # (a reset landing within MAX_COUNTER_STEP above the old value reads as production: not generated)
            value = (value + inc + 2**31) % 2**32 - 2**31
        made += inc
        raw.append(value)
    rows = [(M1 + "ProdProcessedCount", T0 + k, v) for k, v in enumerate(raw)]
    totals: list[float] = []
    bounds = sorted({c for c in cuts if c < len(rows)} | {0, len(rows)})
    for a, b in itertools.pairwise(bounds):
        out = transform(m, block(m, rows[a:b]))
        totals += [v for _, v in published(m, out, "cnc-1-m01", "Counts/Total")]
    assert len(totals) == len(raw)
    assert np.all(np.diff(totals) >= 0)
    assert totals[-1] - totals[0] == made


def test_derived_timestamps_never_go_back() -> None:
    """Initial values of different nodes arrive in any time order; derived series stay ordered in time."""
    m = make_mapping()
    out = transform(m, block(m, [
        (M1 + "ProdProcessedCount", T0 + 10, 50),
        (M1 + "ProdDefectiveCount", T0 + 3, 2),
        (M1 + "State", T0 + 20, 11),
        (M1 + "StopReason", T0 + 5, 180000),
    ]))
    assert published(m, out, "cnc-1-m01", "Counts/Good") == [(T0 + 10, 48.0)]
    assert published(m, out, "cnc-1-m01", "State") == [(T0 + 20, 180000.0)]
