"""Per-edge-node Sparkplug session state (bdSeq, seq, alias maps, online devices, ack bookkeeping).

The host keeps this behind `SessionStore`; each worker holds its sessions in memory. Workers of a shared
subscription also record every birth and their committed batch ids in PostgreSQL (`cloud/host/shared.py`), so
any of them can adopt a session it did not see born, and acks follow what all of them committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from zhizao.broker.sparkplug.codec import Decoded


class NodeKey(NamedTuple):
    """(site, edge node): Sparkplug group_id and edge_node_id."""

    site: str
    edge: str


@dataclass
class AliasMap:
    """alias -> (tag id, datatype) of one edge node, with sorted numpy arrays for vectorised lookup."""

    tag_of: dict[int, int] = field(default_factory=dict)
    type_of: dict[int, int] = field(default_factory=dict)
    tag_of_name: dict[tuple[str | None, str], int] = field(default_factory=dict)  # (device, name) -> tag
    type_of_tag: dict[int, int] = field(default_factory=dict)  # tag id -> datatype declared by the birth
    _keys: npt.NDArray[np.uint64] | None = None
    _tags: npt.NDArray[np.int32] | None = None
    _type_keys: npt.NDArray[np.int32] | None = None
    _types: npt.NDArray[np.uint32] | None = None

    def add(self, alias: int | None, tag_id: int, datatype: int, device: str | None, name: str) -> None:
        """Register one metric of a birth (metrics without an alias are found by name)."""
        self.tag_of_name[(device, name)] = tag_id
        self.type_of_tag[tag_id] = datatype
        self._type_keys = None
        if alias is not None:
            self.tag_of[alias] = tag_id
            self.type_of[alias] = datatype
            self._keys = None

    def lookup(self, aliases: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
        """Tag id per alias, -1 where the alias is unknown (one searchsorted per message)."""
        if self._keys is None:
            keys = np.fromiter(self.tag_of.keys(), np.uint64, len(self.tag_of))
            order = np.argsort(keys)
            self._keys = keys[order]
            self._tags = np.fromiter(self.tag_of.values(), np.int32, len(self.tag_of))[order]
        assert self._tags is not None
        if len(self._keys) == 0:
            return np.full(len(aliases), -1, np.int32)
        pos = np.searchsorted(self._keys, aliases)
        pos[pos >= len(self._keys)] = 0
        return np.where(self._keys[pos] == aliases, self._tags[pos], np.int32(-1)).astype(np.int32)

    def declared_types(self, tags: npt.NDArray[np.int32]) -> npt.NDArray[np.uint32]:
        """The datatype each tag was born with, 0 (Unknown) for -1 or a tag not in this session's births."""
        if self._type_keys is None:
            keys = np.fromiter(self.type_of_tag.keys(), np.int32, len(self.type_of_tag))
            order = np.argsort(keys)
            self._type_keys = keys[order]
            self._types = np.fromiter(self.type_of_tag.values(), np.uint32, len(self.type_of_tag))[order]
        assert self._types is not None
        if len(self._type_keys) == 0:
            return np.zeros(len(tags), np.uint32)
        pos = np.searchsorted(self._type_keys, tags)
        pos[pos >= len(self._type_keys)] = 0
        return np.where(self._type_keys[pos] == tags, self._types[pos], np.uint32(0)).astype(np.uint32)


@dataclass
class NodeSession:
    """Everything the host knows about one edge node's current Sparkplug session."""

    key: NodeKey
    online: bool = False
    born: bool = False  # an NBIRTH of the current session was processed
    bd_seq: int | None = None
    next_seq: int | None = None
    missing: dict[int, float] = field(default_factory=dict)  # seq -> monotonic time the gap was seen
    aliases: AliasMap = field(default_factory=AliasMap)
    node_tags: dict[str, int] = field(default_factory=dict)  # name -> tag id of node metrics
    # device (None: the node) -> alias -> "batch", "control" or a health field
    special_aliases: dict[str | None, dict[int, str]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)  # devices born in this session
    last_rebirth_request: float = float("-inf")
    # Delivery acks (zhizao extension): a batch id is acked only once a message of a later batch arrived
    # (a batch may span several messages), never past a seq gap, and never beyond what was committed.
    last_batch_seen: int | None = None
    closed_through: int | None = None  # the highest batch seen complete (acks are cumulative)
    frozen: str | None = None  # why acks may not advance (a seq gap, dropped messages) until the next birth
    ack_promised: int | None = None  # the last ack value handed to the DB writer
    last_batch_id: int | None = None  # latest zhizao/Batch seen, for edge_nodes.last_batch
    # Shared subscriptions (cloud/host/shared.py): the session's generation in PostgreSQL, None when not shared
    # or when a newer session is recorded there (then nothing of this one enters the ack ledger).
    generation: int | None = None

    def reset_for_birth(self, bd_seq: int | None) -> None:
        """A new NBIRTH: fresh alias map and seq, devices must be born again, ack tracking restarts."""
        self.online = True
        self.born = True
        self.bd_seq = bd_seq
        self.next_seq = 1
        self.missing.clear()
        self.aliases = AliasMap()
        self.node_tags = {}
        self.special_aliases = {}
        self.devices = set()
        # The ack watermark belongs to one edge session: a new birth starts it anew (the edge may restart its
        # batch ids, e.g. with a new outbox), and acks of this session carry its bdSeq. Closures queued before
        # the birth still go out with the old bdSeq, which the edge ignores; it replays that data anyway.
        self.last_batch_seen = None
        self.closed_through = None
        self.ack_promised = None
        self.frozen = None
        self.generation = None

    def track_seq(self, seq: int, now: float) -> None:
        """Track Sparkplug seq (0..255 per node across message types); a gap holds acks and starts the timer."""
        expected = self.next_seq
        if expected is None or seq == expected:
            self.next_seq = (seq + 1) % 256
            return
        if seq in self.missing:  # a late, reordered message fills the gap
            del self.missing[seq]
            if not self.missing and self.frozen == "seq_gap":
                self.frozen = None
            return
        gap = (seq - expected) % 256
        if gap > 128:
            return  # behind the expected value: a duplicate or a very late message; nothing to track
        for k in range(gap):
            self.missing[(expected + k) % 256] = now
        if self.frozen is None:
            self.frozen = "seq_gap"
        self.next_seq = (seq + 1) % 256

    def learn_birth(
        self,
        device: str | None,
        decoded: Decoded,
        tags: dict[str, int],
        role_of: Callable[[str | None, str], str | None],
    ) -> None:
        """Add a birth's metrics to the alias map; note aliased metrics with a protocol role (batch, control,
        health), of the node or of a device, so DATA that sends them by alias is understood."""
        for i, name in enumerate(decoded.names):
            if not name:
                continue
            alias = int(decoded.alias[i]) if decoded.has_alias[i] else None
            if alias is not None:
                role = role_of(device, name)
                if role is not None:
                    self.special_aliases.setdefault(device, {})[alias] = role
            tag = tags.get(name)
            if tag is not None:
                self.aliases.add(alias, tag, int(decoded.datatype[i]), device, name)

    def see_batch(self, batch_id: int) -> bool:
        """A message of `batch_id` arrived: the previous batch is complete (its messages are contiguous).

        False when the id goes backwards within the session (batch ids strictly increase): nothing is closed,
        and the caller holds acks until the next birth."""
        previous = self.last_batch_seen
        if previous is not None and batch_id < previous:
            return False
        if (
            previous is not None
            and batch_id != previous
            and self.frozen is None
            and (self.closed_through is None or previous > self.closed_through)
        ):
            self.closed_through = previous
        self.last_batch_seen = batch_id
        self.last_batch_id = batch_id
        return True


class SessionStore(Protocol):
    """Where session state lives: in memory for one worker, a shared store for several."""

    def get(self, key: NodeKey) -> NodeSession | None:
        """The session of an edge node, or None if the host has not seen it."""

    def get_or_create(self, key: NodeKey) -> NodeSession:
        """The session of an edge node, created empty when unknown."""

    def all(self) -> list[NodeSession]:
        """Every known session."""


class InMemorySessionStore:
    """SessionStore for a single ingest process."""

    def __init__(self) -> None:
        self._sessions: dict[NodeKey, NodeSession] = {}

    def get(self, key: NodeKey) -> NodeSession | None:
        """The session of an edge node, or None."""
        return self._sessions.get(key)

    def get_or_create(self, key: NodeKey) -> NodeSession:
        """The session of an edge node, created empty when unknown."""
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = NodeSession(key)
        return session

    def all(self) -> list[NodeSession]:
        """Every known session."""
        return list(self._sessions.values())
