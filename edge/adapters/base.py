"""The adapter contract: how a device protocol feeds samples into the edge agent.

An adapter is one folder under `edge/adapters/<name>/` holding its config model, the adapter class, a README
with a sample config, and mirrored tests under `tests/edge/adapters/<name>/`. It is registered through the
entry-point group `zhizao.adapters` (`name = "package.module:Class"`), so an integrator ships a wheel without
touching this tree. The runtime, not the adapter, owns retries: an adapter raises one of the three errors
below and the runtime decides (retry with capped backoff, stop and tell the user, refuse to start).
Only the types a config names are imported (`load_adapters`), so a broken plugin affects only its own
configs. `zhizao.edge.adapters.testing.check_adapter` is the conformance suite every adapter passes; see
edge/adapters/README.md ("Adding an adapter").

Example (a minimal adapter that emits one constant signal every second)::

    class ConstAdapter(Adapter):
        name = "const"
        config_model = ConstConfig          # pydantic model, extra="forbid", frozen=True

        async def connect(self) -> None:
            pass                            # nothing to open

        async def run(self) -> None:
            while True:
                now = int(time.time() * 1000)
                self.sink(SampleBlock(np.array([0], np.int32), np.array([now], np.int64),
                                      np.array([42.0]), np.array([QUALITY_GOOD], np.int16)))
                await asyncio.sleep(1.0)

        async def close(self) -> None:
            pass
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel

from zhizao.edge.samples import SampleBlock, SignalTable

ENTRY_POINT_GROUP = "zhizao.adapters"

SampleSink = Callable[[SampleBlock], None]
"""Where an adapter delivers samples: called from the event loop, cheap, never blocks (the outbox appends)."""


class AdapterError(Exception):
    """Base of every error an adapter raises; library exceptions are mapped onto these at one place.

    `status_code` / `status_name`: the device protocol's status (e.g. OPC UA 0x803C0000 BadOutOfRange) when
    the device answered with one; commands report them."""

    status_code: int | None = None
    status_name: str | None = None


class AdapterTemporaryError(AdapterError):
    """The device is unreachable or dropped: the runtime retries with capped backoff."""


class AdapterAuthError(AdapterError):
    """Credentials or certificates were refused: the runtime stops this adapter and tells the user."""


class AdapterConfigError(AdapterError):
    """The configuration cannot work with this device (unknown node, wrong type): refuse to start."""


class Adapter(abc.ABC):
    """A device protocol driver. Lifecycle: `connect()` -> `run()` (until cancelled or an error) -> `close()`.

    Contract:
    - `signals` is the agent's signal table; the adapter emits sample blocks whose `signal` entries index it.
    - `sink(block)` receives every value change in arrival order, as arrays (never one call per sample when
      a notification carries many); timestamps are the device's source timestamps in UTC epoch ms.
    - `close()` may be called before `connect()` and more than once.
    - Only `AdapterError` subclasses leave the adapter.
    - `write()`, `call()` and `read()` serve remote commands (DCMD, read-back); adapters that cannot raise
      AdapterConfigError. Errors of a device that answered carry its `status_code` and `status_name`.
    - `on_device_state(machine, online)` is called by the adapter when a machine's data source is lost or back
      (session lost, bad status), so the runtime can publish DDEATH / DBIRTH.
    """

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    #: Usual longest wait between two `sink` calls while values change (a subscription's publishing
    #: interval, a poll's period). The runtime holds derived signals of a block's newest instant about twice
    #: this long when no block follows (a publish can end between two changes of one instant).
    delivery_interval_s: float = 1.0

    def __init__(
        self,
        config: Any,
        signals: SignalTable,
        sink: SampleSink,
        on_device_state: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.signals = signals
        self.sink = sink
        self.on_device_state = on_device_state or (lambda machine, online: None)

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the session and set up subscriptions (or polling)."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Deliver samples to `sink` until cancelled; raise AdapterTemporaryError when the device drops."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything; safe before connect and when called twice."""

    async def write(self, signal: int, value: float | int | bool | str) -> None:
        """Write a value to the device node behind `signal` (remote setpoint change)."""
        raise AdapterConfigError(f"adapter {self.name!r} does not support writes")

    async def call(self, machine: str, method: str, args: list[Any]) -> Any:
        """Call a device method (Start, Stop, Reset) on `machine`."""
        raise AdapterConfigError(f"adapter {self.name!r} does not support method calls")

    async def read(self, signal: int) -> float | int | bool | str | None:
        """Read the current value of the device node behind `signal` (the read-back of a command)."""
        raise AdapterConfigError(f"adapter {self.name!r} does not support reads")


class AdapterLoadError(Exception):
    """An installed adapter plugin failed to load; names the entry point, its value and the cause."""

    def __init__(self, name: str, value: str, cause: BaseException | str) -> None:
        why = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"adapter plugin {name!r} (entry point {name} = {value!r}) failed to load: {why}")
        self.name, self.value, self.cause = name, value, cause


def installed_adapters() -> dict[str, str]:
    """Adapter types installed in the `zhizao.adapters` entry-point group: name -> "module:Class"; imports nothing."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_adapter(name: str) -> type[Adapter]:
    """Import the adapter class installed as `name`; AdapterLoadError if that plugin is broken, KeyError if absent."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted(installed_adapters())) or "none"
        raise KeyError(f"no adapter {name!r} is installed (installed: {known})")
    ep = found[0]
    try:
        cls = ep.load()
    except Exception as exc:  # any failure inside a plugin's import is reported as one
        raise AdapterLoadError(ep.name, ep.value, exc) from exc
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterLoadError(ep.name, ep.value, f"{cls!r} is not a zhizao.edge.adapters.base.Adapter subclass")
    if getattr(cls, "name", None) != ep.name:
        raise AdapterLoadError(ep.name, ep.value, f"its class declares name = {getattr(cls, 'name', None)!r}")
    return cls


def load_adapters(names: Iterable[str]) -> tuple[dict[str, type[Adapter]], dict[str, AdapterLoadError]]:
    """Load only the adapter types `names` (those a config uses): (loaded by name, broken plugins by name).

    Names that are not installed appear in neither; a broken plugin never stops the others from loading.
    """
    installed = installed_adapters()
    loaded: dict[str, type[Adapter]] = {}
    broken: dict[str, AdapterLoadError] = {}
    for name in dict.fromkeys(names):
        if name not in installed:
            continue
        try:
            loaded[name] = load_adapter(name)
        except AdapterLoadError as exc:
            broken[name] = exc
    return loaded, broken
