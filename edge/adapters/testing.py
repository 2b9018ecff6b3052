"""The adapter conformance suite, shipped so that an integrator can run it on their own adapter.

`check_adapter(MyAdapter, MyHarness())` starts the harness's device, runs every check of the adapter
contract (`zhizao.edge.adapters.base.Adapter`) against it, stops the device, and returns a
`ConformanceReport` of the checks passed, or raises `ConformanceError` (an AssertionError) naming every
check that failed and why. The same suite runs in our CI over every installed adapter.

The checks, by name:

- class: an `Adapter` subclass, not abstract, with a `name` and a `config_model` deriving from
  `zhizao.edge.config.AdapterSettings`
- config type: both harness configs are instances of `config_model`, with `type` equal to the adapter's name
- config round trip: `config_model.model_validate(config.model_dump(mode="json")) == config` (YAML in, same out)
- config refuses extra keys: an unknown key is a validation error of type `extra_forbidden` (a typo)
- config frozen: assigning a field of a validated config raises a validation error
- harness: the harness has every member of the `Harness` protocol
- close before connect: `close()` on a fresh adapter, twice, raises nothing
- run before connect: `run()` on a fresh adapter raises an `AdapterError` (and does not hang)
- commands before connect: `write()` and `call()` on a fresh adapter raise an `AdapterError`
- unreachable device: `connect()` to the unreachable config raises `AdapterTemporaryError` within the timeout
- close after failed connect: `close()` after that raises nothing
- quiet while down: the adapter that never connected delivered no samples and no device-state reports
- connect: `connect()` to the live device returns within the timeout
- samples arrive: after `harness.poke()`, every source has a sample and there is one sample more than sources
- run is cancellable: cancelling the `run()` task ends it within the timeout
- close twice after run: `close()`, twice, raises nothing
- sink on the event loop: every sink call came from the event loop's thread, with a `SampleBlock`
- sample arrays: int32 signal, int64 ts_ms, float64 value, int16 quality columns; text entries point
  into their block at NaN values
- signal indices: the samples' `signal` entries are exactly the indices of the source table
- timestamps: `ts_ms` are UTC epoch milliseconds of now (not seconds, nanoseconds or local time)
- quality codes: only QUALITY_GOOD, QUALITY_STALE and QUALITY_BAD
- device state: every machine of the source table was reported online, and offline again on close
- reconnect after close: the same instance connects again, delivers a poked change, and closes (the
  runtime reuses an adapter across retries)

Every check also fails when the adapter lets an exception other than an `AdapterError` out.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ValidationError

from zhizao.edge.adapters.base import Adapter, AdapterError, AdapterTemporaryError
from zhizao.edge.config import AdapterSettings
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE, SampleBlock, SignalTable

__all__ = ["CHECKS", "ConformanceError", "ConformanceReport", "Harness", "check_adapter"]

CHECKS: tuple[str, ...] = (
    "class", "harness", "config type", "config round trip", "config refuses extra keys", "config frozen",
    "close before connect", "run before connect", "commands before connect", "unreachable device",
    "close after failed connect",
    "quiet while down", "connect", "samples arrive", "run is cancellable", "close twice after run",
    "sink on the event loop", "sample arrays", "signal indices", "timestamps", "quality codes", "device state",
    "reconnect after close",
)  # fmt: skip
"""Every check `check_adapter` runs, in order."""

_T = TypeVar("_T")
_CLOCK_SLACK_MS = 3_600_000  # initial values may carry the device's older source timestamps: allow one hour
_QUALITIES = {QUALITY_GOOD, QUALITY_STALE, QUALITY_BAD}


@runtime_checkable
class Harness(Protocol):
    """A device for one adapter type that `check_adapter` can start, reach, poke and stop.

    Contract:
    - `start()` brings the device up (a server on a free port, a file, a serial loopback ...). It is called
      once, from plain code (no running event loop), before any other member is used.
    - `config` is a validated instance of the adapter's `config_model` that reaches the live device;
      `unreachable` is one of the same model for a device that is not there (a closed port, a missing
      path), so that `connect()` must raise `AdapterTemporaryError`.
    - `sources` is the adapter's source table (`Signal.metric` holds the device address); each source must
      produce at least one sample between `connect()` and the end of `poke()` plus the timeout.
    - `poke()` makes the device change the value of at least one source, as the device would; it is awaited
      on the event loop that runs the adapter.
    - `stop()` tears the device down; it is called once at the end, also after a failed check.

    Example (a harness for an adapter that reads numbers from a text file, one line per source)::

        class FileHarness:
            def start(self) -> None:
                self.dir = Path(tempfile.mkdtemp())
                (self.dir / "values.txt").write_text("1\\n2\\n")

            def stop(self) -> None:
                shutil.rmtree(self.dir)

            @property
            def config(self) -> FileConfig:
                return FileConfig(type="file", name="dev", path=self.dir / "values.txt")

            @property
            def unreachable(self) -> FileConfig:
                return FileConfig(type="file", name="dev", path=self.dir / "missing.txt")

            @property
            def sources(self) -> SignalTable:
                return SignalTable([Signal("m01", "line:0", 10), Signal("m01", "line:1", 10)])

            async def poke(self) -> None:
                (self.dir / "values.txt").write_text("1\\n3\\n")

        check_adapter(FileAdapter, FileHarness())
    """

    def start(self) -> None:
        """Bring the device up."""

    def stop(self) -> None:
        """Tear the device down."""

    @property
    def config(self) -> BaseModel:
        """A config that reaches the live device."""

    @property
    def unreachable(self) -> BaseModel:
        """A config of the same model for a device that is not there."""

    @property
    def sources(self) -> SignalTable:
        """The source table the adapter is built with."""

    async def poke(self) -> None:
        """Make the device change at least one source's value."""


@dataclass(frozen=True)
class ConformanceReport:
    """The outcome of `check_adapter`: every check passed, by name, in order."""

    adapter: str
    passed: tuple[str, ...]

    def __str__(self) -> str:
        return f"adapter {self.adapter!r}: {len(self.passed)} conformance checks passed ({', '.join(self.passed)})"


class ConformanceError(AssertionError):
    """An adapter failed conformance checks; `failures` holds (check name, reason) pairs, `passed` the rest."""

    def __init__(self, adapter: str, failures: list[tuple[str, str]], passed: list[str]) -> None:
        lines = [f"adapter {adapter!r} failed {len(failures)} conformance check(s):"]
        lines += [f"  - {name}: {why}" for name, why in failures]
        skipped = [c for c in CHECKS if c not in passed and c not in {n for n, _ in failures}]
        if skipped:
            lines.append(f"  (not run after those failures: {', '.join(skipped)})")
        super().__init__("\n".join(lines))
        self.adapter = adapter
        self.failures = tuple(failures)
        self.passed = tuple(passed)


class _Failed(Exception):
    """One check failed; the message says why."""


class _Abort(Exception):
    """The rest of a group of checks depends on the one that failed."""


@dataclass
class _Run:
    timeout_s: float
    passed: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Record the block as check `name`: passed, or failed with the reason (and abort its group)."""
        try:
            yield
        except _Failed as exc:
            self.failures.append((name, str(exc)))
            raise _Abort from exc
        except AdapterError as exc:
            self.failures.append((name, f"unexpected {type(exc).__name__}: {exc}"))
            raise _Abort from exc
        except Exception as exc:  # a stray exception is exactly what we report
            self.failures.append(
                (name, f"{type(exc).__name__} left the adapter: {exc} (only AdapterError subclasses may)")
            )
            raise _Abort from exc
        self.passed.append(name)

    async def within(self, what: str, aw: Awaitable[_T]) -> _T:
        """Await `aw`; fail the check if it takes longer than the timeout."""
        try:
            return await asyncio.wait_for(aw, self.timeout_s)
        except TimeoutError:
            raise _Failed(f"{what} did not finish within {self.timeout_s:g} s") from None


def _expect(ok: bool, why: str) -> None:
    if not ok:
        raise _Failed(why)


class _Sink:
    """Collects blocks and device-state reports, and notes every call that broke the sink contract."""

    def __init__(self) -> None:
        self.blocks: list[SampleBlock] = []
        self.states: list[tuple[str, bool]] = []
        self.misuse: list[str] = []
        self.loop_thread: int | None = None
        self.since = 0  # count only blocks from here on (a reconnect starts a new round)

    def __call__(self, block: SampleBlock) -> None:
        if not isinstance(block, SampleBlock):
            self.misuse.append(f"sink called with {type(block).__name__}, not a SampleBlock")
            return
        if threading.get_ident() != self.loop_thread:
            self.misuse.append("sink called from another thread than the event loop's")
        self.blocks.append(block)

    def on_device_state(self, machine: str, online: bool) -> None:
        self.states.append((machine, online))

    def count(self) -> int:
        return sum(len(b) for b in self.blocks[self.since:])

    def signals(self) -> set[int]:
        return {int(s) for b in self.blocks[self.since:] for s in np.unique(b.signal)}


def check_adapter(adapter_class: type[Adapter], harness: Harness, *, timeout_s: float = 10.0) -> ConformanceReport:
    """Run every conformance check (see CHECKS) of `adapter_class` against `harness`; ConformanceError names failures.

    Example::

        from zhizao.edge.adapters.opcua import OpcUaAdapter
        from zhizao.edge.adapters.opcua.testing import OpcUaHarness
        from zhizao.edge.adapters.testing import check_adapter

        print(check_adapter(OpcUaAdapter, OpcUaHarness()))
    """
    label = getattr(adapter_class, "name", None) or getattr(adapter_class, "__name__", repr(adapter_class))
    run = _Run(timeout_s)
    try:
        _check_class(run, adapter_class)
        with run.check("harness"):
            missing = [m for m in ("start", "stop", "config", "unreachable", "sources", "poke")
                       if m not in dir(harness)]  # dir(): properties are not evaluated before start()
            _expect(not missing, f"{type(harness).__name__} lacks {', '.join(missing)} (see Harness)")
            _expect(inspect.iscoroutinefunction(harness.poke), "harness.poke must be an async def")
    except _Abort:
        raise ConformanceError(str(label), run.failures, run.passed) from None
    try:
        harness.start()
    except Exception as exc:  # reported like a failed check
        raise ConformanceError(str(label), [("harness start", f"{type(exc).__name__}: {exc}")], run.passed) from exc
    try:
        with contextlib.suppress(_Abort):
            _check_config(run, adapter_class, harness)
        with contextlib.suppress(_Abort):
            asyncio.run(_check_unreachable(run, adapter_class, harness))
        with contextlib.suppress(_Abort):
            asyncio.run(_check_live(run, adapter_class, harness))
    finally:
        harness.stop()
    if run.failures:
        raise ConformanceError(str(label), run.failures, run.passed)
    return ConformanceReport(str(label), tuple(run.passed))


def _check_class(run: _Run, cls: type[Adapter]) -> None:
    with run.check("class"):
        _expect(isinstance(cls, type) and issubclass(cls, Adapter), f"{cls!r} is not an Adapter subclass")
        _expect(not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods unimplemented")
        name = getattr(cls, "name", None)
        _expect(isinstance(name, str) and bool(name), f"{cls.__name__}.name must be a non-empty str, got {name!r}")
        model = getattr(cls, "config_model", None)
        _expect(
            isinstance(model, type) and issubclass(model, AdapterSettings),
            f"{cls.__name__}.config_model must derive from zhizao.edge.config.AdapterSettings, got {model!r}",
        )


def _check_config(run: _Run, cls: type[Adapter], h: Harness) -> None:
    model = cls.config_model
    with run.check("config type"):
        for which, cfg in (("config", h.config), ("unreachable", h.unreachable)):
            _expect(isinstance(cfg, model), f"harness.{which} is a {type(cfg).__name__}, not a {model.__name__}")
            kind = getattr(cfg, "type", None)
            _expect(kind == cls.name, f"harness.{which}.type is {kind!r}, expected the adapter name {cls.name!r}")
    data = h.config.model_dump(mode="json")
    with run.check("config round trip"):
        try:
            again = model.model_validate(data)
        except ValidationError as exc:
            raise _Failed(f"the dumped config does not validate again: {exc}") from None
        _expect(again == h.config, f"validating the dumped config gives {again!r}, not {h.config!r}")
    with run.check("config refuses extra keys"):
        try:
            model.model_validate({**data, "no_such_key": 1})
        except ValidationError as exc:
            kinds = {(e["type"], tuple(e["loc"])) for e in exc.errors()}
            _expect(("extra_forbidden", ("no_such_key",)) in kinds,
                    f"an unknown key gave other errors, not extra_forbidden: {exc}")
        else:
            raise _Failed(f"{model.__name__} accepted the unknown key 'no_such_key' (use extra='forbid')")
    with run.check("config frozen"):
        probe = model.model_validate(data)  # a copy: a model that is not frozen must not spoil the harness's
        try:
            probe.name = "other"  # type: ignore[attr-defined]
        except ValidationError:
            pass
        else:
            raise _Failed(f"{model.__name__} let `name` be assigned after validation (use frozen=True)")


async def _check_unreachable(run: _Run, cls: type[Adapter], h: Harness) -> None:
    sink = _Sink()
    sink.loop_thread = threading.get_ident()
    with run.check("close before connect"):
        dead = cls(h.unreachable, h.sources, sink, sink.on_device_state)
        await run.within("close()", dead.close())
        await run.within("a second close()", dead.close())
    with run.check("run before connect"):
        try:
            await run.within("run() before connect()", dead.run())
        except AdapterError:
            pass
        else:
            raise _Failed("run() before connect() returned instead of raising an AdapterError")
    with run.check("commands before connect"):
        machine = h.sources.signals[0].machine if len(h.sources) else "m"
        for what, command in (("write(0, 1.0)", lambda: dead.write(0, 1.0)),
                              (f"call({machine!r}, 'Start', [])", lambda: dead.call(machine, "Start", []))):
            try:
                await run.within(f"{what} before connect()", command())
            except AdapterError:
                pass
            else:
                raise _Failed(f"{what} before connect() returned instead of raising an AdapterError")
    with run.check("unreachable device"):
        try:
            await run.within("connect() to the unreachable device", dead.connect())
        except AdapterTemporaryError:
            pass
        except AdapterError as exc:
            raise _Failed(f"connect() to an unreachable device raised {type(exc).__name__} ({exc}), "
                          "expected AdapterTemporaryError (the runtime retries it)") from None
        else:
            raise _Failed("connect() to the unreachable device succeeded")
    with run.check("close after failed connect"):
        await run.within("close()", dead.close())
    with run.check("quiet while down"):
        _expect(not sink.blocks, f"an adapter that never connected delivered {len(sink.blocks)} block(s)")
        _expect(not sink.states, f"an adapter that never connected reported device states {sink.states}")


async def _collect(run: _Run, h: Harness, sink: _Sink, task: asyncio.Task[None], need: int) -> None:
    """Poke the device and wait until every source has a sample and `need` samples have arrived."""
    await run.within("harness.poke()", h.poke())
    deadline = time.monotonic() + run.timeout_s
    n = len(h.sources)
    while sink.count() < need or len(sink.signals()) < n:
        if task.done():
            exc = task.exception()
            raise _Failed(f"run() ended early: {exc!r}" if exc else "run() returned before it was cancelled")
        if time.monotonic() > deadline:
            missing = sorted(set(range(n)) - sink.signals())
            raise _Failed(f"after {run.timeout_s:g} s: {sink.count()} sample(s), expected >= {need}; "
                          f"sources without a sample: {missing}")
        await asyncio.sleep(0.02)


async def _stop_run(run: _Run, task: asyncio.Task[None]) -> None:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=run.timeout_s)
    _expect(bool(done), f"run() was still running {run.timeout_s:g} s after it was cancelled")
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        _expect(isinstance(exc, AdapterError), f"run() ended with {exc!r} when cancelled")


async def _check_live(run: _Run, cls: type[Adapter], h: Harness) -> None:
    sink = _Sink()
    sink.loop_thread = threading.get_ident()
    n = len(h.sources)
    before = int(time.time() * 1000) - _CLOCK_SLACK_MS
    live = cls(h.config, h.sources, sink, sink.on_device_state)
    task: asyncio.Task[None] | None = None
    try:
        with run.check("connect"):
            await run.within("connect()", live.connect())
        task = asyncio.create_task(live.run())
        with run.check("samples arrive"):
            await _collect(run, h, sink, task, n + 1)
        with run.check("run is cancellable"):
            await _stop_run(run, task)
        with run.check("close twice after run"):
            await run.within("close()", live.close())
            await run.within("a second close()", live.close())
    finally:
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=run.timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.close(), run.timeout_s)
    # The checks of what arrived are independent of each other: each one is reported on its own.
    after = int(time.time() * 1000) + 1000
    b = SampleBlock.concat(sink.blocks)
    with contextlib.suppress(_Abort), run.check("sink on the event loop"):
        _expect(not sink.misuse, "; ".join(sorted(set(sink.misuse))))
    with contextlib.suppress(_Abort), run.check("sample arrays"):
        got = {"signal": b.signal.dtype, "ts_ms": b.ts_ms.dtype, "value": b.value.dtype, "quality": b.quality.dtype}
        want = {"signal": np.int32, "ts_ms": np.int64, "value": np.float64, "quality": np.int16}
        bad = [f"{k} is {got[k]}, expected {np.dtype(want[k]).name}" for k in got if got[k] != want[k]]
        _expect(not bad, "; ".join(bad))
        for block in sink.blocks:
            for i, _text in block.text:
                _expect(0 <= i < len(block) and bool(np.isnan(block.value[i])),
                        f"text entry {i} of a block of {len(block)} must index a NaN value")
    with contextlib.suppress(_Abort), run.check("signal indices"):
        seen = set(b.signal.tolist())
        _expect(seen == set(range(n)), f"signal entries {sorted(seen)}, expected the source indices 0..{n - 1}")
    with contextlib.suppress(_Abort), run.check("timestamps"):
        lo, hi = int(b.ts_ms.min()), int(b.ts_ms.max())
        _expect(bool(np.all((b.ts_ms >= before) & (b.ts_ms <= after))),
                f"ts_ms in [{lo}, {hi}], expected UTC epoch milliseconds of now in [{before}, {after}] "
                "(seconds, nanoseconds or local time?)")
    with contextlib.suppress(_Abort), run.check("quality codes"):
        odd = sorted(set(b.quality.tolist()) - _QUALITIES)
        _expect(not odd, f"quality codes {odd} are not QUALITY_GOOD/STALE/BAD ({sorted(_QUALITIES)})")
    with contextlib.suppress(_Abort), run.check("device state"):
        machines = {s.machine for s in h.sources.signals}
        online = {m for m, up in sink.states if up}
        offline = {m for m, up in sink.states if not up}
        _expect(online == machines, f"reported online {sorted(online)}, expected every machine {sorted(machines)}")
        _expect(offline == machines, f"reported offline on close {sorted(offline)}, expected {sorted(machines)}")
    with run.check("reconnect after close"):
        sink.since = len(sink.blocks)
        await run.within("connect() after close()", live.connect())
        task = asyncio.create_task(live.run())
        try:
            await _collect(run, h, sink, task, n)
            await _stop_run(run, task)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=run.timeout_s)
            await run.within("close() after reconnecting", live.close())
