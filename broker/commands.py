"""zhizao command extension: signed Sparkplug DCMDs, their results, and the agent info topic.

A command is a standard Sparkplug DCMD on `spBv1.0/{site}/DCMD/{edge}/{machine}` whose metrics are the
signal to write (by its DBIRTH name, with the birth datatype) or a method to call (`Method/Start`,
`Method/Stop`, `Method/Reset`: Boolean true), plus four zhizao metrics that a plain Sparkplug edge ignores:

- `zhizao/Command/Id` (String): the command's id, a UUID; it is also the nonce an edge remembers until the
  command expires, so a replayed DCMD is refused;
- `zhizao/Command/Expires` (Int64, epoch ms): after this instant the edge refuses the command;
- `zhizao/Command/KeyId` (String): which cloud key signed it (the first 16 hex digits of sha256(public key));
- `zhizao/Command/Signature` (String, base64): Ed25519 over `signed_bytes(...)`: the site, edge, machine, id,
  expiry and every other metric (name, datatype, value) in payload order, as canonical JSON.

A config push is an NCMD signed the same way (machine ""), carrying `zhizao/Config/Document` (the agent
config YAML), `zhizao/Config/Version` and `zhizao/Config/RollbackAfterS`; the agent reports `applied`,
`refused` or `rolled_back` for it.

The edge reports on `zhizao/v1/cmd/{site}/{edge}` (QoS 1, JSON, as the delivery acks): `delivered` when a
verified command is taken for execution, then `confirmed` (read back equal), `failed` (device refused:
OPC UA status code and name) or `refused` (not signed, replayed, expired, outside a limit). Refusals of a
DCMD whose id cannot be trusted carry no id and are only counted.

On connect the agent publishes its info, retained, on `zhizao/v1/edge/{site}/{edge}`: agent version,
config version, the command targets with their limits (so the cloud refuses out-of-limit values before
sending), and later its health (outbox, devices, errors, clock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from zhizao.broker.sparkplug.codec import BirthMetric, Decoded, encode_metrics
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import validate_id

__all__ = [
    "COMMAND_ID",
    "CONFIG_DOCUMENT",
    "CONFIG_ROLLBACK_S",
    "CONFIG_VERSION",
    "EXPIRES",
    "INFO_TOPIC_FILTER",
    "KEY_ID",
    "METHOD_PREFIX",
    "RESULT_TOPIC_FILTER",
    "SIGNATURE",
    "CommandError",
    "CommandResult",
    "SignedCommand",
    "decode_result",
    "encode_command",
    "encode_result",
    "generate_key",
    "info_topic",
    "key_id",
    "load_or_create_key",
    "parse_public_key",
    "public_key_text",
    "result_topic",
    "signed_bytes",
    "verify_command",
]

COMMAND_ID = "zhizao/Command/Id"
EXPIRES = "zhizao/Command/Expires"
KEY_ID = "zhizao/Command/KeyId"
SIGNATURE = "zhizao/Command/Signature"
_EXTENSION = (COMMAND_ID, EXPIRES, KEY_ID, SIGNATURE)
METHOD_PREFIX = "Method/"
RESULT_PREFIX = "zhizao/v1/cmd"
RESULT_TOPIC_FILTER = f"{RESULT_PREFIX}/+/+"
INFO_PREFIX = "zhizao/v1/edge"
INFO_TOPIC_FILTER = f"{INFO_PREFIX}/+/+"
RESULT_STATUSES = frozenset({"delivered", "confirmed", "failed", "refused", "applied", "rolled_back"})
# Remote configuration (an NCMD, signed like a DCMD with machine ""): the agent config YAML, the cloud's
# version number, and how long the new config may take to connect its devices before the agent rolls back.
CONFIG_DOCUMENT = "zhizao/Config/Document"
CONFIG_VERSION = "zhizao/Config/Version"
CONFIG_ROLLBACK_S = "zhizao/Config/RollbackAfterS"
_TEXT = frozenset({int(DataType.String), int(DataType.Text)})
_BOOL = int(DataType.Boolean)
_FLOATS = frozenset({int(DataType.Double), int(DataType.Float)})
_FLOAT32 = int(DataType.Float)


class CommandError(ValueError):
    """A command that cannot be signed, verified or parsed; `reason` is a short counter label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---- keys --------------------------------------------------------------------------------------------------
def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The PEM signing key at `path`; created (mode 0600) when the file does not exist."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise CommandError("key", f"{path}: not an Ed25519 private key")
        return key
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two services starting at once never share a temp file
    tmp.touch(0o600)
    tmp.write_bytes(pem)
    tmp.replace(path)
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes (what an agent config's `commands.public_keys` holds)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes; CommandError saying what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("key", f"{text[:20]!r}...: not base64") from None
    if len(raw) != 32:
        raise CommandError("key", f"{text[:20]!r}...: {len(raw)} bytes, an Ed25519 public key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Short id of a key pair: the first 16 hex digits of sha256 over the raw public key."""
    return hashlib.sha256(base64.b64decode(public_key_text(key))).hexdigest()[:16]


# ---- signing -----------------------------------------------------------------------------------------------
def _canonical_value(datatype: int, value: Any) -> Any:
    if value is None:
        return None
    if datatype in _TEXT:
        return str(value)
    if datatype == _BOOL:
        return bool(value)
    if datatype in _FLOATS:
        v = float(value)
        if datatype == _FLOAT32:  # what survives the 32-bit float on the wire
            v = struct.unpack("<f", struct.pack("<f", v))[0]
        return repr(v) if not math.isfinite(v) else v
    return int(value)


def signed_bytes(site: str, edge: str, machine: str, command_id: str, expires_ms: int,
                 metrics: Iterable[tuple[str, int, Any]]) -> bytes:  # fmt: skip
    """The bytes a command signature covers: canonical JSON of the target, id, expiry and metrics."""
    doc = {
        "v": 1, "site": site, "edge": edge, "machine": machine, "id": command_id, "expires": int(expires_ms),
        "metrics": [[name, int(dt), _canonical_value(int(dt), v)] for name, dt, v in metrics],
    }  # fmt: skip
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_command(key: Ed25519PrivateKey, site: str, edge: str, machine: str, command_id: str,
                   expires_ms: int, metrics: Sequence[BirthMetric], timestamp_ms: int) -> bytes:  # fmt: skip
    """A signed DCMD payload: `metrics` (the write or the method) plus the four zhizao command metrics."""
    for i, m in enumerate(metrics):
        if m.name in _EXTENSION:
            raise CommandError("metric", f"metrics[{i}].name: {m.name!r} is reserved for the command extension")
    body = [(m.name, int(m.datatype), m.value) for m in metrics]
    signature = key.sign(signed_bytes(site, edge, machine, command_id, expires_ms, body))
    extra = [
        BirthMetric(COMMAND_ID, DataType.String, command_id),
        BirthMetric(EXPIRES, DataType.Int64, int(expires_ms)),
        BirthMetric(KEY_ID, DataType.String, key_id(key)),
        BirthMetric(SIGNATURE, DataType.String, base64.b64encode(signature).decode()),
    ]
    return encode_metrics(timestamp_ms, [*metrics, *extra])


@dataclass(frozen=True)
class SignedCommand:
    """A DCMD whose signature checked out: id, expiry and the metrics to act on (name, datatype, value)."""

    command_id: str
    expires_ms: int
    metrics: tuple[tuple[str, int, float | int | bool | str | None], ...]


def _value(decoded: Decoded, i: int) -> float | int | bool | str | None:
    dt = int(decoded.datatype[i])
    if decoded.is_null[i]:
        return None
    if dt in _TEXT:
        return decoded.text.get(i, "")
    v = float(decoded.value[i])
    if dt == _BOOL:
        return v != 0.0
    if dt in _FLOATS:
        return v
    return int(v)


def verify_command(decoded: Decoded, keys: dict[str, Ed25519PublicKey], site: str, edge: str, machine: str,
                   now_ms: int, max_skew_ms: int = 30_000) -> SignedCommand:  # fmt: skip
    """Check a decoded DCMD's signature and expiry; CommandError with reason `unsigned`, `unknown-key`,
    `bad-signature` or `expired` otherwise. Replays are the caller's check (it remembers ids)."""
    found: dict[str, int] = {}
    for i, name in enumerate(decoded.names):
        if name in _EXTENSION:
            found[name] = i
    missing = [n for n in _EXTENSION if n not in found]
    if missing:
        raise CommandError("unsigned", f"DCMD for {machine} without {', '.join(missing)}: not signed by the cloud")
    cid = str(_value(decoded, found[COMMAND_ID]) or "")
    expires_raw = _value(decoded, found[EXPIRES])
    kid = str(_value(decoded, found[KEY_ID]) or "")
    sig_text = str(_value(decoded, found[SIGNATURE]) or "")
    if not isinstance(expires_raw, int):
        raise CommandError("unsigned", f"DCMD {cid!r}: {EXPIRES} is not an Int64")
    pub = keys.get(kid)
    if pub is None:
        raise CommandError("unknown-key", f"DCMD {cid!r}: signed with key {kid!r}, which this agent does not trust")
    body = [
        (name, int(decoded.datatype[i]), _value(decoded, i))
        for i, name in enumerate(decoded.names)
        if name not in _EXTENSION
    ]
    try:
        signature = base64.b64decode(sig_text, validate=True)
        pub.verify(signature, signed_bytes(site, edge, machine, cid, expires_raw, body))
    except (binascii.Error, ValueError, InvalidSignature):
        raise CommandError("bad-signature", f"DCMD {cid!r}: the signature does not match its content") from None
    if now_ms > expires_raw + max_skew_ms:
        raise CommandError("expired", f"DCMD {cid!r}: expired {(now_ms - expires_raw) / 1000:.1f} s ago")
    return SignedCommand(cid, expires_raw, tuple(body))


# ---- results and agent info ---------------------------------------------------------------------------------
def result_topic(site: str, edge: str) -> str:
    """Where an edge reports the outcome of commands."""
    return f"{RESULT_PREFIX}/{validate_id('site', site)}/{validate_id('edge_node', edge)}"


def info_topic(site: str, edge: str) -> str:
    """Where an edge publishes its info and health (retained)."""
    return f"{INFO_PREFIX}/{validate_id('site', site)}/{validate_id('edge_node', edge)}"


def parse_topic(topic: str, prefix: str) -> tuple[str, str]:
    """(site, edge) of a result or info topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != prefix:
        raise CommandError("topic", f"topic {topic!r} is not {prefix}/site/edge")
    return parts[3], parts[4]


@dataclass(frozen=True)
class CommandResult:
    """What an edge reports about one command."""

    status: str
    command_id: str | None = None
    machine: str | None = None
    message: str = ""
    value: float | int | bool | str | None = None
    code: int | None = None
    code_name: str | None = None
    reason: str | None = None
    timestamp_ms: int = 0


def encode_result(result: CommandResult) -> bytes:
    """Result payload (JSON)."""
    doc = {"status": result.status, "id": result.command_id, "machine": result.machine, "message": result.message,
           "value": result.value, "code": result.code, "codeName": result.code_name, "reason": result.reason,
           "timestamp": result.timestamp_ms}  # fmt: skip
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def decode_result(payload: bytes) -> CommandResult:
    """A result payload; CommandError when it is not one."""
    try:
        doc = json.loads(payload)
        status = doc["status"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError("result", f"result payload {payload[:64]!r} is not {{'status': ...}}: {exc}") from None
    if status not in RESULT_STATUSES:
        raise CommandError("result", f"result status {status!r} is not one of {sorted(RESULT_STATUSES)}")
    code = doc.get("code")
    value = doc.get("value")
    if not (value is None or isinstance(value, str | int | float | bool)):
        value = str(value)
    return CommandResult(
        status, _opt_str(doc.get("id")), _opt_str(doc.get("machine")), str(doc.get("message", ""))[:2000], value,
        code if isinstance(code, int) and not isinstance(code, bool) else None, _opt_str(doc.get("codeName")),
        _opt_str(doc.get("reason")), int(doc.get("timestamp", 0)) if isinstance(doc.get("timestamp"), int) else 0,
    )  # fmt: skip


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)[:200]
