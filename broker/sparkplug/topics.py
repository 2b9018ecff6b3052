"""Sparkplug B topic names: `spBv1.0/{group}/{TYPE}/{edge}[/{device}]` and the host STATE topic."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from zhizao.broker.contract import ids
from zhizao.broker.contract.hierarchy import MachineRef

NAMESPACE = "spBv1.0"


class TopicError(ValueError):
    """A topic or id that does not follow the Sparkplug namespace or zhizao's id rules."""


class MessageType(StrEnum):
    """Sparkplug message types."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


DEVICE_TYPES = frozenset({MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD})


def validate_id(field: str, value: str) -> str:
    """Return `value` if it follows the contract's id rule, else raise TopicError naming the field and value."""
    try:
        return ids.validate_id(field, value)
    except ids.IdError as exc:
        raise TopicError(str(exc)) from None


@dataclass(frozen=True)
class Topic:
    """A parsed Sparkplug topic; `device` is set exactly for the D* message types."""

    group: str
    type: MessageType
    edge: str
    device: str | None = None

    def __post_init__(self) -> None:
        if (self.type in DEVICE_TYPES) != (self.device is not None):
            raise TopicError(f"{self.type}: device id {'required' if self.device is None else 'not allowed'}")
        validate_id("group_id", self.group)
        validate_id("edge_node_id", self.edge)
        if self.device is not None:
            validate_id("device_id", self.device)

    @property
    def machine(self) -> MachineRef | None:
        """The machine a device-level topic is about (None for node-level topics)."""
        return None if self.device is None else MachineRef(self.group, self.edge, self.device)

    def __str__(self) -> str:
        base = f"{NAMESPACE}/{self.group}/{self.type.value}/{self.edge}"
        return base if self.device is None else f"{base}/{self.device}"

    @staticmethod
    def parse(text: str) -> Topic:
        """Parse an MQTT topic into a Topic; raise TopicError saying what is wrong."""
        parts = text.split("/")
        if len(parts) < 4 or parts[0] != NAMESPACE:
            raise TopicError(f"topic {text!r} is not spBv1.0/group/TYPE/edge[/device]")
        try:
            mtype = MessageType(parts[2])
        except ValueError:
            raise TopicError(f"topic {text!r}: unknown message type {parts[2]!r}") from None
        if mtype is MessageType.STATE:
            raise TopicError(f"topic {text!r}: STATE lives at spBv1.0/STATE/host_id")
        if len(parts) > 5 or (len(parts) == 5) != (mtype in DEVICE_TYPES):
            raise TopicError(f"topic {text!r}: wrong number of levels for {mtype}")
        for level in parts[1:]:
            if not level or any(c in level for c in "+#"):
                raise TopicError(f"topic {text!r}: empty level or wildcard character")
        try:
            return Topic(parts[1], mtype, parts[3], parts[4] if len(parts) == 5 else None)
        except TopicError as exc:
            raise TopicError(f"topic {text!r}: {exc}") from None


def node_topic(group: str, mtype: MessageType, edge: str) -> str:
    """Topic of a node-level message (NBIRTH, NDEATH, NDATA, NCMD)."""
    return str(Topic(group, mtype, edge))


def device_topic(group: str, mtype: MessageType, edge: str, device: str) -> str:
    """Topic of a device-level message (DBIRTH, DDEATH, DDATA, DCMD)."""
    return str(Topic(group, mtype, edge, device))


def machine_topic(mtype: MessageType, machine: MachineRef) -> str:
    """Topic of a device-level message about `machine` (group = site, edge node = its line, device = machine)."""
    return device_topic(machine.site, mtype, machine.edge, machine.machine)


def state_topic(host_id: str) -> str:
    """Sparkplug 3.0 primary host STATE topic."""
    return f"{NAMESPACE}/STATE/{host_id}"
