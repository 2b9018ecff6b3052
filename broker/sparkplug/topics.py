"""Sparkplug B topic names: `spBv1.0/{group}/{TYPE}/{edge}[/{device}]` and the host STATE topic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

NAMESPACE = "spBv1.0"

_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


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
    """Return `value` if it is a valid zhizao id (lowercase `[a-z0-9-]`), else raise TopicError naming the field."""
    if not isinstance(value, str) or not _ID.match(value):
        raise TopicError(f"{field}: {value!r} is not a valid id (lowercase letters, digits and '-', 1-64 chars)")
    return value


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
        return Topic(parts[1], mtype, parts[3], parts[4] if len(parts) == 5 else None)


def node_topic(group: str, mtype: MessageType, edge: str) -> str:
    """Topic of a node-level message (NBIRTH, NDEATH, NDATA, NCMD)."""
    return str(Topic(group, mtype, edge))


def device_topic(group: str, mtype: MessageType, edge: str, device: str) -> str:
    """Topic of a device-level message (DBIRTH, DDEATH, DDATA, DCMD)."""
    return str(Topic(group, mtype, edge, device))


def state_topic(host_id: str) -> str:
    """Sparkplug 3.0 primary host STATE topic."""
    return f"{NAMESPACE}/STATE/{host_id}"
