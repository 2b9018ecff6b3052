"""Device nodes -> machine signals (DESIGN.md section 2): the agent's `SignalTable` and vectorized transforms.

`build_mapping(config)` returns an `AgentMapping`:
- `signals`: the published signal table (one entry per configured machine signal, in config order);
- `plans[adapter_name]`: what each adapter is built with: its config section and its *source table*, the
  device points it reads, where `Signal.metric` holds the device address (the OPC UA node id) and a source's
  index is what the adapter puts in `SampleBlock.signal`. A node used by several signals is read once.
- `transform(adapter_name, block)`: the adapter's block of device values -> a block of published samples.
  It keeps per-source state in arrays (last raw counter values, unwrapped totals, last inputs of the state
  machine), so it must see every block of that adapter in order.

Rules:
- `value`: published = raw * scale + offset; quality and NaN pass through; strings pass through.
- `counter` (PackML ProdProcessedCount, Int32 that wraps): raw values are read as uint32 (so the Int32
  wrap from 2**31-1 to -2**31 is a step of +1). The step between consecutive samples is
  `d = (raw - previous) mod 2**32`; if `d <= MAX_COUNTER_STEP` (2**24) it is production (this covers the
  wraps); otherwise the device was reset, and the step is the new raw value when that is small (counting
  restarted from 0; `<= MAX_COUNTER_STEP`), else 0. The published Int64 starts at the first raw value (uint32)
  and only ever adds steps, so it is monotonic and never shows negative production. (A reset that lands
  within MAX_COUNTER_STEP above the old value modulo 2**32, e.g. -1 -> 0, is indistinguishable from production.)
- `good_counter`: Counts/Good = running max of (unwrapped processed - unwrapped defective), emitted on a
  change of either input: monotonic even when the defective count moves first.
- `packml_state`: StateCurrent is mapped *by state name* (`numbering` packtags 0..17 or opc30060 0..16) to a
  target: `running` -> 10000, or 20000 when CurMachSpeed < slow_below x MachSpeed (the machine's `Rate/Current`
  and `Rate/Ideal` signals; default slow_below 0.95); `stop_reason` -> the StopReason value, first looked up in
  `stop_reasons` (the PLC's own numbers -> state codes), when it is a valid state code (10000..229999), else
  40000 (unspecified stop); `unknown` -> 30000; or a fixed code. Defaults:
  Execute running, Undefined unknown, every other state stop_reason. A State sample is emitted when the
  code changes; inputs arriving in the same millisecond count as one change (the last one wins).
- Derived signals pair their inputs by source timestamp, not by arrival order (OPC UA delivers a publish's
  notifications grouped per monitored item): inputs are taken in time order (arrival order among equal
  timestamps), counters unwrapped in time order, and forward fills start from the inputs already used.
- A publish may end between two changes of one source instant (ProdProcessedCount at t in this publish,
  ProdDefectiveCount at t in the next). So `transform` holds back each derived signal's inputs of the newest
  instant of the block and uses them with the next block of the adapter (whatever it holds: the instant is
  complete once a later publish came), or when `flush(adapter)` is called: the agent calls it a short time
  after a block that left inputs held (no later publish came) and when an adapter stops, so nothing waits
  for ever and nothing is lost. Counters, Counts/Total and value signals are never held.
- Derived samples carry the timestamp of the input that triggered them, raised to the latest one already
  emitted for that signal, so each derived signal's timestamps never go back (initial values of different
  nodes arrive in any time order).
- Derived signals (counter, good_counter, packml_state) use only samples with good quality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import numpy.typing as npt

from zhizao.broker.contract.states import (
    MAX_STATE_CODE,
    MIN_STATE_CODE,
    RUNNING,
    SLOWER,
    UNKNOWN,
    UNSPECIFIED_STOP,
    is_state_code,
)
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.config import AdapterSettings, AgentConfig, DataTypeName, SignalConfig
from zhizao.edge.samples import QUALITY_GOOD, SampleBlock, Signal, SignalTable

__all__ = [
    "MAX_COUNTER_STEP",
    "PACKML_STATE_NAMES",
    "AdapterPlan",
    "AgentMapping",
    "build_mapping",
    "is_state_code",
]

# PackTags Status.StateCurrent numbering (OMAC PackML V2022): index = number.
PACKML_STATE_NAMES = (
    "Undefined", "Clearing", "Stopped", "Starting", "Idle", "Suspended", "Execute", "Stopping", "Aborting",
    "Aborted", "Holding", "Held", "Unholding", "Suspending", "Unsuspending", "Resetting", "Completing", "Complete",
)
# OPC 30060 TMC StateEnumeration numbering of the same states (a different order: map by name, never by number).
OPC30060_STATE_NAMES = (
    "Stopped", "Resetting", "Idle", "Starting", "Execute", "Completing", "Complete", "Aborting", "Aborted",
    "Stopping", "Clearing", "Suspending", "Suspended", "Unsuspending", "Holding", "Held", "Unholding",
)

_T_RUNNING, _T_STOP_REASON, _T_UNKNOWN = -1, -2, -3
MAX_COUNTER_STEP = 1 << 24
_U32 = 1 << 32

_DATATYPES = {name: DataType[name] for name in get_args(DataTypeName)}


def _state_table(sig: SignalConfig) -> npt.NDArray[np.int64]:
    names = OPC30060_STATE_NAMES if sig.numbering == "opc30060" else PACKML_STATE_NAMES
    targets: dict[str, int | str] = {"Undefined": "unknown", "Execute": "running"}
    targets.update(sig.states or {})
    special = {"running": _T_RUNNING, "stop_reason": _T_STOP_REASON, "unknown": _T_UNKNOWN}
    out = np.empty(len(names), np.int64)
    for i, name in enumerate(names):
        t = targets.get(name, "stop_reason")
        out[i] = special[t] if isinstance(t, str) else t
    return out


@dataclass
class AdapterPlan:
    """What one adapter is built with: its config section and the device points (sources) it reads."""

    name: str
    type: str
    config: AdapterSettings
    sources: SignalTable
    machines: list[str]


@dataclass
class _StateRoute:
    out: int
    state: int
    stop_reason: int
    cur_speed: int
    ideal_speed: int
    table: npt.NDArray[np.int64]
    slow_below: float
    reason_from: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))  # PLC codes, sorted
    reason_to: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))  # their state codes
    last_code: int = -1
    last_ts: int = -(2**62)
    inputs: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))  # per source: feeds this state
    # last input values used (state, stop reason, current and ideal speed) and the inputs held back
    memory: npt.NDArray[np.float64] = field(default_factory=lambda: np.full(4, np.nan))
    held: _Held = field(default_factory=lambda: _Held.none())


@dataclass
class _Held:
    """Inputs of a derived signal at the newest instant of a block: (source, ts, value) rows, one instant."""

    src: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]

    @staticmethod
    def none() -> _Held:
        return _Held(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))


@dataclass
class _GoodRoute:
    out: int
    processed: int
    defective: int
    last: int = -1
    last_ts: int = -(2**62)
    inputs: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))  # per source
    # last unwrapped processed and defective counts used, and the inputs held back
    memory: npt.NDArray[np.float64] = field(default_factory=lambda: np.full(2, np.nan))
    held: _Held = field(default_factory=lambda: _Held.none())


@dataclass
class _Routes:
    """Per-adapter routing from sources to published signals, with the per-source state arrays."""

    n: int
    value_src: list[int] = field(default_factory=list)
    value_out: list[int] = field(default_factory=list)
    value_scale: list[float] = field(default_factory=list)
    value_offset: list[float] = field(default_factory=list)
    counter_src: list[int] = field(default_factory=list)
    counter_out: list[int] = field(default_factory=list)
    states: list[_StateRoute] = field(default_factory=list)
    goods: list[_GoodRoute] = field(default_factory=list)
    # filled by freeze()
    v_src: npt.NDArray[np.int64] = field(init=False)
    v_out: npt.NDArray[np.int32] = field(init=False)
    v_scale: npt.NDArray[np.float64] = field(init=False)
    v_offset: npt.NDArray[np.float64] = field(init=False)
    is_counter: npt.NDArray[np.bool_] = field(init=False)
    c_out: npt.NDArray[np.int64] = field(init=False)
    last_raw: npt.NDArray[np.int64] = field(init=False)
    total: npt.NDArray[np.int64] = field(init=False)
    seen: npt.NDArray[np.bool_] = field(init=False)
    derived_by_src: dict[int, list[_StateRoute | _GoodRoute]] = field(init=False)
    holding: dict[int, _StateRoute | _GoodRoute] = field(init=False)  # routes with held inputs, by id

    def freeze(self) -> None:
        """Turn the route lists into lookup arrays and allocate the state arrays."""
        self.v_src = np.asarray(self.value_src, np.int64)
        self.v_out = np.asarray(self.value_out, np.int32)
        self.v_scale = np.asarray(self.value_scale, np.float64)
        self.v_offset = np.asarray(self.value_offset, np.float64)
        # Sources that need unwrapping: counter outputs and the inputs of good counters.
        unwrap = set(self.counter_src) | {g.processed for g in self.goods} | {g.defective for g in self.goods}
        self.is_counter = np.zeros(self.n, bool)
        self.is_counter[list(unwrap)] = True
        self.c_out = np.full(self.n, -1, np.int64)
        self.c_out[self.counter_src] = self.counter_out
        self.last_raw = np.zeros(self.n, np.int64)  # last raw counter value, uint32 space
        self.total = np.zeros(self.n, np.int64)  # unwrapped published total
        self.seen = np.zeros(self.n, bool)
        self.derived_by_src: dict[int, list[_StateRoute | _GoodRoute]] = {}
        self.holding = {}
        for s in self.states:
            s.inputs = np.zeros(self.n, bool)
            for src in (s.state, s.stop_reason, s.cur_speed, s.ideal_speed):
                if src >= 0:
                    s.inputs[src] = True
                    self.derived_by_src.setdefault(src, []).append(s)
        for g in self.goods:
            g.inputs = np.zeros(self.n, bool)
            for src in (g.processed, g.defective):
                g.inputs[src] = True
                self.derived_by_src.setdefault(src, []).append(g)


class AgentMapping:
    """The agent's published signals and, per adapter, its sources and the transform between them."""

    def __init__(self, signals: SignalTable, plans: dict[str, AdapterPlan], routes: dict[str, _Routes],
                 write_targets: dict[int, tuple[str, int]]) -> None:
        self.signals = signals
        self.plans = plans
        self._routes = routes
        self._write_targets = write_targets
        self._machine_adapter = {m: p.name for p in plans.values() for m in p.machines}

    def write_target(self, signal: int) -> tuple[str, int] | None:
        """The (adapter name, source index) a remote write to published `signal` goes to; None if not writable."""
        return self._write_targets.get(signal)

    def adapter_of(self, machine: str) -> str | None:
        """The name of the adapter that reads `machine`."""
        return self._machine_adapter.get(machine)

    def transform(self, adapter: str, block: SampleBlock) -> SampleBlock:
        """Map a block of the adapter's source values to published samples, in arrival order. Derived signals'
        inputs of the block's newest instant are held back until the next block or `flush` (module doc)."""
        if len(block) == 0:
            return block
        return _transform(self._routes[adapter], block, hold=True)

    def holding(self, adapter: str) -> bool:
        """Whether derived inputs of `adapter` are held back (call `flush` if no block follows soon)."""
        return bool(self._routes[adapter].holding)

    def flush(self, adapter: str) -> SampleBlock:
        """The derived samples of the inputs held back for `adapter` (empty if none)."""
        r = self._routes[adapter]
        if not r.holding:
            return SampleBlock.empty()
        return _transform(r, SampleBlock.empty(), hold=False)


def build_mapping(config: AgentConfig) -> AgentMapping:
    """Build the published signal table, the per-adapter source tables and routes from an agent config."""
    signals = SignalTable()
    plans: dict[str, AdapterPlan] = {}
    index: dict[str, dict[str, int]] = {}
    for a in config.adapters:
        plans[a.name] = AdapterPlan(a.name, a.type, a, SignalTable(), [])
        index[a.name] = {}
    pending: dict[str, list[tuple[str, int, SignalConfig]]] = {a.name: [] for a in config.adapters}
    write_targets: dict[int, tuple[str, int]] = {}

    def source(adapter: str, machine: str, node_id: str, datatype: DataType) -> int:
        known = index[adapter]
        if node_id not in known:
            known[node_id] = plans[adapter].sources.add(Signal(machine, node_id, int(datatype)))
        return known[node_id]

    for m in config.machines:
        plans[m.adapter].machines.append(m.id)
        for s in m.signals:
            dt = _DATATYPES[s.published_datatype()]
            out = signals.add(Signal(m.id, s.metric, int(dt), s.unit))
            pending[m.adapter].append((m.id, out, s))

    routes: dict[str, _Routes] = {}
    for name, items in pending.items():
        r = _Routes(0)
        speeds: dict[tuple[str, str], int] = {}
        for machine, out, s in items:
            if s.map == "value":
                src = source(name, machine, s.node_id, _DATATYPES[s.published_datatype()])
                r.value_src.append(src)
                r.value_out.append(out)
                r.value_scale.append(1.0 if s.scale is None else s.scale)
                r.value_offset.append(0.0 if s.offset is None else s.offset)
                write_targets[out] = (name, src)
                speeds[(machine, s.metric)] = src
            elif s.map == "counter":
                r.counter_src.append(source(name, machine, s.node_id, DataType.Int32))
                r.counter_out.append(out)
        for machine, out, s in items:
            if s.map == "good_counter":
                assert s.defective_node_id is not None  # checked by SignalConfig
                r.goods.append(_GoodRoute(out, source(name, machine, s.node_id, DataType.Int32),
                                          source(name, machine, s.defective_node_id, DataType.Int32)))
            elif s.map == "packml_state":
                stop = -1 if s.stop_reason_node_id is None else source(name, machine, s.stop_reason_node_id,
                                                                       DataType.Int32)
                plc = sorted((s.stop_reasons or {}).items())
                r.states.append(_StateRoute(
                    out, source(name, machine, s.node_id, DataType.Int32), stop,
                    speeds.get((machine, "Rate/Current"), -1), speeds.get((machine, "Rate/Ideal"), -1),
                    _state_table(s), 0.95 if s.slow_below is None else s.slow_below,
                    np.array([k for k, _ in plc], np.float64), np.array([c for _, c in plc], np.float64),
                ))
        r.n = len(plans[name].sources)
        r.freeze()
        routes[name] = r
    return AgentMapping(signals, plans, routes, write_targets)


def _ffill(pos_mask: npt.NDArray[np.bool_], values: npt.NDArray[np.float64], initial: float) -> npt.NDArray[np.float64]:
    """Forward-fill: at each position, the last `values[k]` with `pos_mask[k]`, else `initial`."""
    vals = np.concatenate(([initial], values))
    idx = np.where(np.concatenate(([True], pos_mask)), np.arange(len(vals)), 0)
    return vals[np.maximum.accumulate(idx)][1:]


def _monotonic_ts(ts: npt.NDArray[np.int64], last: int) -> npt.NDArray[np.int64]:
    """Timestamps for a derived signal: never earlier than one already emitted (inputs arrive out of time order)."""
    out: npt.NDArray[np.int64] = np.maximum.accumulate(np.maximum(ts, last))
    return out


def _keep_last_per_ms(ts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Mask keeping the last of each run of equal timestamps."""
    keep = np.ones(len(ts), bool)
    keep[:-1] = ts[:-1] != ts[1:]
    return keep


def _unwrap(r: _Routes, src: int, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Unwrapped totals for consecutive raw samples of one counter source; updates its state."""
    u = raw.astype(np.int64) & (_U32 - 1)
    if r.seen[src]:
        prev = np.concatenate(([r.last_raw[src]], u[:-1]))
        base = r.total[src]
    else:
        prev = np.concatenate(([u[0]], u[:-1]))
        base = u[0]
    d = (u - prev) % _U32
    step = np.where(d <= MAX_COUNTER_STEP, d, np.where(u <= MAX_COUNTER_STEP, u, 0))
    totals: npt.NDArray[np.int64] = (base + np.cumsum(step)).astype(np.int64)
    r.seen[src] = True
    r.last_raw[src] = u[-1]
    r.total[src] = totals[-1]
    return totals


def _transform(r: _Routes, block: SampleBlock, *, hold: bool) -> SampleBlock:
    src = block.signal.astype(np.int64)
    good = block.quality == QUALITY_GOOD
    parts_pos: list[npt.NDArray[np.int64]] = []
    parts_out: list[npt.NDArray[np.int32]] = []
    parts_val: list[npt.NDArray[np.float64]] = []
    parts_q: list[npt.NDArray[np.int16]] = []
    parts_ts: list[npt.NDArray[np.int64]] = []
    text_rows: dict[int, int] = {}

    # value routes: a source may feed several value signals, so match routes, not sources.
    if len(r.v_src):
        pos, route = _match(src, r.v_src)
        parts_pos.append(pos)
        parts_out.append(r.v_out[route])
        parts_val.append(block.value[pos] * r.v_scale[route] + r.v_offset[route])
        parts_q.append(block.quality[pos])
        parts_ts.append(block.ts_ms[pos])
        if block.text:
            text_rows = {int(p): k for k, p in enumerate(pos)}

    # counters: unwrap per source (a loop over the counter sources present, arrays inside), in source-time
    # order. Derived signals keep the inputs they used: they never start from the block's end.
    unwrapped = np.zeros(len(src), np.int64)
    is_cnt = r.is_counter[src] & good
    if is_cnt.any():
        cpos = np.nonzero(is_cnt)[0]
        csrc = src[cpos]
        for s in np.unique(csrc):
            p = cpos[csrc == s]
            p = p[np.argsort(block.ts_ms[p], kind="stable")]
            unwrapped[p] = _unwrap(r, int(s), block.value[p])
            if r.c_out[s] >= 0:
                parts_pos.append(p)
                parts_out.append(np.full(len(p), r.c_out[s], np.int32))
                parts_val.append(unwrapped[p].astype(np.float64))
                parts_q.append(np.full(len(p), QUALITY_GOOD, np.int16))
                parts_ts.append(block.ts_ms[p])

    # derived signals (state, good count): forward-fill their inputs in source-time order, the held ones first.
    if r.derived_by_src:
        todo = dict(r.holding)
        for s in np.unique(src[good]):
            for d in r.derived_by_src.get(int(s), ()):
                todo[id(d)] = d
        counts = unwrapped.astype(np.float64)
        for d in todo.values():
            pos, isrc, its, ival = _inputs(r, d, src, good, counts if isinstance(d, _GoodRoute) else block.value,
                                           block.ts_ms, hold)
            out = _good(d, pos, isrc, its, ival) if isinstance(d, _GoodRoute) else _state(d, pos, isrc, its, ival)
            if out is not None:
                parts_pos.append(out[0])
                parts_out.append(np.full(len(out[0]), d.out, np.int32))
                parts_val.append(out[1])
                parts_q.append(np.full(len(out[0]), QUALITY_GOOD, np.int16))
                parts_ts.append(out[2])

    if not parts_pos:
        return SampleBlock.empty()
    pos_all = np.concatenate(parts_pos)
    order = np.argsort(pos_all, kind="stable")
    texts: tuple[tuple[int, str], ...] = ()
    if text_rows:
        inverse = np.empty(len(order), np.int64)
        inverse[order] = np.arange(len(order))
        texts = tuple((int(inverse[text_rows[k]]), s) for k, s in block.text if k in text_rows)
    return SampleBlock(
        np.concatenate(parts_out)[order],
        np.concatenate(parts_ts)[order],
        np.concatenate(parts_val)[order],
        np.concatenate(parts_q)[order],
        texts,
    )


def _match(src: npt.NDArray[np.int64], route_src: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(sample position, route index) pairs where a sample's source has a value route; arrival order kept."""
    order = np.argsort(route_src, kind="stable")
    sorted_src = route_src[order]
    lo = np.searchsorted(sorted_src, src, "left")
    hi = np.searchsorted(sorted_src, src, "right")
    counts = hi - lo
    pos = np.repeat(np.arange(len(src)), counts)
    # route offsets within each sample's run of matching routes
    starts = np.repeat(lo, counts)
    within = np.arange(len(pos)) - np.repeat(np.cumsum(counts) - counts, counts)
    return pos, order[starts + within]


def _inputs(r: _Routes, d: _StateRoute | _GoodRoute, src: npt.NDArray[np.int64], good: npt.NDArray[np.bool_],
            value: npt.NDArray[np.float64], ts: npt.NDArray[np.int64], hold: bool
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The inputs of derived signal `d` to use now, in source-time order (arrival order among equal times):
    the ones held from the previous block (block position -1) and this block's, except, with `hold`, those
    of this block's newest instant when it is later than the held one (they wait for the next block).

    A device's notifications come grouped per monitored item (all changes of one node, then the next), not
    in time order, and one publish may end inside an instant: pairing goes by source time, across blocks."""
    new = np.nonzero(good & d.inputs[src])[0]
    h = d.held
    pos = np.concatenate((np.full(len(h.ts), -1, np.int64), new))
    isrc = np.concatenate((h.src, src[new]))
    its = np.concatenate((h.ts, ts[new]))
    ival = np.concatenate((h.value, value[new]))
    back = np.zeros(len(pos), bool)
    if hold and len(new):
        newest = ts[new].max()
        if not len(h.ts) or newest > h.ts[0]:
            back = its == newest
    d.held = _Held(isrc[back], its[back], ival[back])
    if len(d.held.ts):
        r.holding[id(d)] = d
    else:
        r.holding.pop(id(d), None)
    use = np.nonzero(~back)[0]
    use = use[np.argsort(its[use], kind="stable")]
    return pos[use], isrc[use], its[use], ival[use]


def _out_positions(pos: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Output positions of derived samples computed in time order: the latest input position so far, so
    that each derived signal stays in time order in the published block."""
    out: npt.NDArray[np.int64] = np.maximum.accumulate(pos) if len(pos) else pos
    return out


def _good(g: _GoodRoute, pos: npt.NDArray[np.int64], src: npt.NDArray[np.int64], ts: npt.NDArray[np.int64],
          counts: npt.NDArray[np.float64]
          ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]] | None:
    if not len(pos):
        return None
    tot = _ffill(src == g.processed, counts, float(g.memory[0]))
    dfc = _ffill(src == g.defective, counts, float(g.memory[1]))
    g.memory[:] = (tot[-1], dfc[-1])
    ok = ~(np.isnan(tot) | np.isnan(dfc))
    pos, ts, tot, dfc = pos[ok], ts[ok], tot[ok], dfc[ok]
    if not len(pos):
        return None
    # Inputs of one millisecond count as one change: a processed and a defective count moving together
    # must not leave their in-between difference (one too high) in the running maximum.
    t = _monotonic_ts(ts, g.last_ts)
    keep = _keep_last_per_ms(t)
    pos, t = pos[keep], t[keep]
    value = np.maximum.accumulate(np.maximum((tot - dfc)[keep], float(g.last)))
    g.last, g.last_ts = int(value[-1]), int(t[-1])
    return _out_positions(pos), value, t


def _state(s: _StateRoute, pos: npt.NDArray[np.int64], sp: npt.NDArray[np.int64], ts: npt.NDArray[np.int64],
           vp: npt.NDArray[np.float64]
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]] | None:
    if not len(pos):
        return None
    inputs = (s.state, s.stop_reason, s.cur_speed, s.ideal_speed)
    state, reason, cur, ideal = (np.full(len(pos), np.nan) if i < 0 else _ffill(sp == i, vp, float(s.memory[k]))
                                 for k, i in enumerate(inputs))
    s.memory[:] = (state[-1], reason[-1], cur[-1], ideal[-1])
    known = ~np.isnan(state)
    pos, ts, state, reason, cur, ideal = pos[known], ts[known], state[known], reason[known], cur[known], ideal[known]
    if not len(pos):
        return None
    num = state.astype(np.int64)
    target = np.where((num >= 0) & (num < len(s.table)), s.table[np.clip(num, 0, len(s.table) - 1)], _T_UNKNOWN)
    slow = (ideal > 0) & (cur < s.slow_below * ideal)  # NaN speeds compare False: full speed
    if len(s.reason_from):  # the PLC's own stop-reason numbers -> state codes (stop_reasons)
        at = np.clip(np.searchsorted(s.reason_from, reason), 0, len(s.reason_from) - 1)
        reason = np.where(s.reason_from[at] == reason, s.reason_to[at], reason)
    valid_reason = (reason >= MIN_STATE_CODE) & (reason < MAX_STATE_CODE) & (reason == np.floor(reason))
    code = np.where(target == _T_RUNNING, np.where(slow, SLOWER, RUNNING),
                    np.where(target == _T_STOP_REASON, np.where(valid_reason, reason, UNSPECIFIED_STOP),
                             np.where(target == _T_UNKNOWN, UNKNOWN, target))).astype(np.int64)
    t = _monotonic_ts(ts, s.last_ts)
    keep = _keep_last_per_ms(t)
    pos, code, t = pos[keep], code[keep], t[keep]
    prev = np.concatenate(([s.last_code], code[:-1]))
    change = code != prev
    s.last_code, s.last_ts = int(code[-1]), int(t[-1])
    return _out_positions(pos)[change], code[change].astype(np.float64), t[change]
