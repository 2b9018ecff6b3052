"""zhizao extensions to Sparkplug B: delivery acknowledgements and the Sparkplug 3.0 host STATE payload.

Delivery extension (DESIGN.md section 3): every NDATA/DDATA carries the node metric `zhizao/Batch`
(Int64, strictly increasing per edge node across restarts). After the host has committed a batch to the
database it publishes the highest committed batch id on `zhizao/v1/ack/{site}/{edge}` (QoS 1), as JSON
`{"batch": N, "bdSeq": B, "timestamp": T}`. The ack belongs to the edge session of that bdSeq: the host's ack
watermark starts anew with every NBIRTH, and an edge ignores an ack of another session (an ack without bdSeq,
from an older host, is taken as one of the current session). Other Sparkplug hosts ignore both.

What "committed" means for N: every DATA message of the session up to the one with batch N is committed (or
kept whole in quarantine), by whichever host worker received it. The edge gives each DATA message its own id,
the previous one + 1, and reports its counter (the last id handed out) as `zhizao/Batch` in the NBIRTH; so the
session's batches are the ids after the NBIRTH's counter, and N is the end of the unbroken run of committed
ones. One host process sees a node's whole stream and closes a batch when the next one arrives. Several workers
of an MQTT 5 shared subscription (the broker hands each message to one of them; Mosquitto: round robin) each
see part of it: they record the id of every message they commit in PostgreSQL, in the same transaction, and
the ack is the contiguous watermark over what all of them recorded (`cloud/host/shared.py`). So an ack never
covers a batch another worker received and has not committed; a batch no worker commits (a worker killed
holding it) stops the watermark, and the node is asked to rebirth and replays everything after the last ack.

Compatibility: the payload and topic are the same as before, with or without shared workers, so an edge and
a host of different versions understand each other's acks. A shared-subscription host needs the edge's ids to
be consecutive and the counter in the NBIRTH (the zhizao edge has always sent both); an edge whose ids skip
gets no ack past the first skip from such a host (it keeps its data; run one worker per site for it).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from zhizao.broker.sparkplug.topics import validate_id

BATCH_METRIC = "zhizao/Batch"
ACK_PREFIX = "zhizao/v1/ack"
ACK_TOPIC_FILTER = f"{ACK_PREFIX}/+/+"


class ExtensionError(ValueError):
    """A malformed ack or STATE payload."""


def ack_topic(site: str, edge: str) -> str:
    """Topic on which the host acknowledges committed batches of one edge node."""
    return f"{ACK_PREFIX}/{validate_id('site', site)}/{validate_id('edge_node', edge)}"


def parse_ack_topic(topic: str) -> tuple[str, str]:
    """(site, edge) of an ack topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != ACK_PREFIX:
        raise ExtensionError(f"topic {topic!r} is not {ACK_PREFIX}/site/edge")
    return parts[3], parts[4]


class Ack(NamedTuple):
    """An acknowledgement: the highest committed batch id of one edge session (its bdSeq, when the host knows it)."""

    batch: int
    bd_seq: int | None = None


def encode_ack(batch: int, timestamp_ms: int, bd_seq: int | None = None) -> bytes:
    """Ack payload: the highest batch id committed to the database, and the bdSeq of the session it belongs to."""
    doc: dict[str, int] = {"batch": int(batch), "timestamp": int(timestamp_ms)}
    if bd_seq is not None:
        doc["bdSeq"] = int(bd_seq)
    return json.dumps(doc).encode()


def decode_ack(payload: bytes) -> Ack:
    """The batch id (and session bdSeq, absent in acks of older hosts) of an ack payload."""
    try:
        doc = json.loads(payload)
        batch = doc["batch"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ExtensionError(f"ack payload {payload[:64]!r} is not {{'batch': N}}: {exc}") from None
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        raise ExtensionError(f"ack payload: batch {batch!r} is not a non-negative integer")
    bd_seq = doc.get("bdSeq")
    if bd_seq is not None and (not isinstance(bd_seq, int) or isinstance(bd_seq, bool) or not 0 <= bd_seq <= 255):
        raise ExtensionError(f"ack payload: bdSeq {bd_seq!r} is not an integer in 0..255")
    return Ack(batch, bd_seq)


def encode_state(online: bool, timestamp_ms: int) -> bytes:
    """Sparkplug 3.0 host STATE payload (JSON, published retained with QoS 1)."""
    return json.dumps({"online": bool(online), "timestamp": int(timestamp_ms)}).encode()


def decode_state(payload: bytes) -> tuple[bool, int]:
    """(online, timestamp_ms) of a host STATE payload."""
    try:
        doc = json.loads(payload)
        online, ts = doc["online"], doc["timestamp"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ExtensionError(f"STATE payload {payload[:64]!r} is not {{'online','timestamp'}}: {exc}") from None
    if not isinstance(online, bool) or not isinstance(ts, int):
        raise ExtensionError(f"STATE payload: online={online!r} timestamp={ts!r} have wrong types")
    return online, ts
