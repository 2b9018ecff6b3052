"""The OPC UA adapter (asyncua client): subscriptions or polling -> `SampleBlock`s, writes and method calls.

Hot path: asyncua's per-item callback (`datachange_notification`, one task per value) is bypassed. A
`Subscription` subclass takes each whole `DataChangeNotification`, already decoded into arrays by
`fastdecode` (or, with `fast_decode: false`, asyncua's `MonitoredItems` turned into arrays here); client
handle = source index + 1, looked up through a numpy array; one sink call per notification.

Reconnects belong to the runtime: when the session drops, `run()` raises `AdapterTemporaryError` after
reporting the machines offline; the runtime calls `close()` then `connect()`, which builds a fresh client
(a reused asyncua client can hang after a network blackhole) and re-creates the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import math
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError, UaStringParsingError

from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.typed import EXACT_LIMIT, bytes_text, iso_ms, json_text
from zhizao.edge.adapters.base import (
    Adapter,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterTemporaryError,
    SampleSink,
)
from zhizao.edge.adapters.opcua.config import OpcUaConfig, SecurityConfig
from zhizao.edge.adapters.opcua.fastdecode import DataChangeArrays, decode_publish_response
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE, SampleBlock, SignalTable

__all__ = ["OpcUaAdapter"]

log = logging.getLogger(__name__)

_SC = StatusCodes
_AUTH_CODES = frozenset({
    _SC.BadUserAccessDenied, _SC.BadIdentityTokenInvalid, _SC.BadIdentityTokenRejected,
    _SC.BadSecurityChecksFailed, _SC.BadCertificateInvalid, _SC.BadCertificateUntrusted,
    _SC.BadCertificateTimeInvalid, _SC.BadCertificateHostNameInvalid, _SC.BadCertificateUriInvalid,
    _SC.BadCertificateUseNotAllowed, _SC.BadCertificateRevoked, _SC.BadCertificateIssuerRevoked,
    _SC.BadSecurityPolicyRejected, _SC.BadSecurityModeRejected, _SC.BadUserSignatureInvalid,
    _SC.BadApplicationSignatureInvalid, _SC.BadNoValidCertificates,
})
_CONFIG_CODES = frozenset({
    _SC.BadNodeIdUnknown, _SC.BadNodeIdInvalid, _SC.BadAttributeIdInvalid, _SC.BadTypeMismatch,
    _SC.BadNotWritable, _SC.BadNotReadable, _SC.BadMethodInvalid, _SC.BadNoMatch, _SC.BadArgumentsMissing,
    _SC.BadInvalidArgument, _SC.BadTooManyArguments, _SC.BadOutOfRange, _SC.BadFilterNotAllowed,
    _SC.BadMonitoredItemFilterUnsupported, _SC.BadBrowseNameInvalid, _SC.BadNotSupported,
})
_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_VARIANTS = {
    DataType.Double: ua.VariantType.Double, DataType.Float: ua.VariantType.Float,
    DataType.Int8: ua.VariantType.SByte, DataType.Int16: ua.VariantType.Int16,
    DataType.Int32: ua.VariantType.Int32, DataType.Int64: ua.VariantType.Int64,
    DataType.UInt8: ua.VariantType.Byte, DataType.UInt16: ua.VariantType.UInt16,
    DataType.UInt32: ua.VariantType.UInt32, DataType.UInt64: ua.VariantType.UInt64,
    DataType.Boolean: ua.VariantType.Boolean, DataType.String: ua.VariantType.String,
}
_INT_VARIANTS = frozenset(_VARIANTS[t] for t in (DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64,
                                                 DataType.UInt8, DataType.UInt16, DataType.UInt32, DataType.UInt64))
_FLOATS = frozenset({int(DataType.Double), int(DataType.Float)})
_SESSION_TIMEOUT_MS = 60_000
_NUMBERS = (float, int, bool)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _code_name(code: int) -> str:
    name, _ = ua.status_codes.get_name_and_doc(code)
    return str(name)


@contextlib.contextmanager
def _mapped(what: str, *, denied_is_auth: bool = True) -> Iterator[None]:
    """The one place where asyncua and socket exceptions become adapter errors."""
    try:
        yield
    except AdapterError:
        raise
    except UaStatusCodeError as exc:
        code = int(exc.code)
        text = f"{what}: {_code_name(code)}"
        err: AdapterError
        if code in _AUTH_CODES and (denied_is_auth or code != _SC.BadUserAccessDenied):
            err = AdapterAuthError(text)
        elif code in _CONFIG_CODES or code == _SC.BadUserAccessDenied:
            err = AdapterConfigError(text)
        else:
            err = AdapterTemporaryError(text)
        err.status_code, err.status_name = code, _code_name(code)
        raise err from exc
    except (OSError, TimeoutError, ConnectionError, EOFError) as exc:
        raise AdapterTemporaryError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except UaStringParsingError as exc:
        raise AdapterConfigError(f"{what}: {exc}") from exc
    except UaError as exc:
        if "No matching endpoints" in str(exc):  # the server offers no endpoint with our policy and mode
            raise AdapterConfigError(f"{what}: the server has no endpoint for this security policy/mode: {exc}") from exc
        raise AdapterTemporaryError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        # Certificates that do not load, values of the wrong type for a write, bad node ids.
        raise AdapterConfigError(f"{what}: {exc}") from exc
    except AssertionError as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and frames[-1].name == "open_secure_channel":
            # asyncua asserts instead of reporting the server's refusal of the secure channel (a node-opcua
            # server, for one, answers an untrusted client certificate this way). Retried: once the
            # certificate is trusted on the server, the next attempt succeeds.
            raise AdapterTemporaryError(
                f"{what}: the server refused the secure channel; most often it does not trust the agent's "
                "certificate yet (trust it from the server's rejected list) or the certificate's URI differs "
                "from security.application_uri") from exc
        raise AdapterTemporaryError(f"{what}: OPC UA library assertion failed: {exc!r}") from exc


async def secure_client(client: Client, sec: SecurityConfig) -> None:
    """Channel security of a client (Sign / SignAndEncrypt with the client certificate and key): the adapter
    and `zhizao edge browse` connect the same way."""
    assert sec.certificate is not None and sec.private_key is not None  # checked by SecurityConfig
    client.application_uri = sec.application_uri
    await client.set_security(
        _POLICIES[sec.policy], str(sec.certificate), str(sec.private_key),
        server_certificate=None if sec.server_certificate is None else str(sec.server_certificate),
        mode=getattr(ua.MessageSecurityMode, sec.mode),
    )


class _BatchSubscription(Subscription):
    """A subscription that hands whole DataChangeNotifications to one callback (no per-item tasks)."""

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters,
                 on_items: Callable[[list[ua.MonitoredItemNotification]], None],
                 on_arrays: Callable[[DataChangeArrays], None],
                 on_status: Callable[[ua.StatusCode], None]) -> None:
        super().__init__(session, params, handler=self)  # type: ignore[arg-type]  # a handler, so no iterator queue is allocated
        self._on_items = on_items
        self._on_arrays = on_arrays
        self._on_status = on_status

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        """Deliver each DataChangeNotification of a publish response as one batch."""
        self.last_publish_at = time.monotonic()
        msg = publish_result.NotificationMessage
        if msg.NotificationData is None:
            return
        self.last_sequence_number = int(msg.SequenceNumber)
        for notif in msg.NotificationData:
            if isinstance(notif, DataChangeArrays):
                self._on_arrays(notif)
            elif isinstance(notif, ua.DataChangeNotification):
                self._on_items(notif.MonitoredItems)
            elif isinstance(notif, ua.StatusChangeNotification):
                self._on_status(notif.Status)


def _quality(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
    """OPC UA status severity (top two bits) -> quality: Good 192, Uncertain 500 (stale), Bad 0."""
    sev = codes >> 30
    return np.where(sev == 0, QUALITY_GOOD, np.where(sev == 1, QUALITY_STALE, QUALITY_BAD)).astype(np.int16)


def _ms(dt: datetime | None, now_ms: int) -> int:
    return now_ms if dt is None else (dt - _EPOCH) // _ONE_MS  # exact integer floor, no float rounding


def _to_block(signal: npt.NDArray[np.int32], dvs: Sequence[ua.DataValue], now_ms: int) -> SampleBlock:
    """Columnar arrays from DataValues: source timestamps (server, then receive time, as fallbacks)."""
    n = len(dvs)
    ts_ms = np.fromiter(
        (_ms(dv.SourceTimestamp if dv.SourceTimestamp is not None else dv.ServerTimestamp, now_ms) for dv in dvs),
        np.int64, n)
    codes = np.fromiter((dv.StatusCode.value if dv.StatusCode is not None else 0 for dv in dvs), np.int64, n)
    text: list[tuple[int, str]] = []
    raw = [dv.Value.Value if dv.Value is not None else None for dv in dvs]
    # exact types (numpy would also parse numeric strings), and integers float64 holds exactly
    if all(type(v) in _NUMBERS and not (type(v) is int and not -EXACT_LIMIT <= v <= EXACT_LIMIT) for v in raw):
        value = np.fromiter(raw, np.float64, n)
    else:
        value = np.full(n, np.nan)
        for k, v in enumerate(raw):
            number, side = typed_value(v)
            if side is not None:
                text.append((k, side))
            else:
                value[k] = number
    return SampleBlock(signal, ts_ms, value, _quality(codes), tuple(text))


def _plain(v: object) -> object:
    """An OPC UA value as a JSON value (element of an array, matrix or structure field): LocalizedText as
    {"locale", "text"} (both strings, "" where the server leaves one out), Guid, NodeId and QualifiedName as
    their strings, ByteString as base64, StatusCode as its UInt32 code, enumerations as their codes, a Variant
    field as its value, structures as objects of their fields. TypeError for what has no such form (an
    ExtensionObject of a type the client could not decode)."""
    if v is None or isinstance(v, bool | int | float | str):
        return int(v) if isinstance(v, enum.Enum) else v
    if isinstance(v, datetime):
        aware = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        return iso_ms((aware - _EPOCH) // _ONE_MS)  # ValueError before 1970: no value
    if isinstance(v, ua.LocalizedText):
        return {"locale": v.Locale or "", "text": v.Text or ""}  # a part the server leaves out: ""
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return bytes_text(v)
    if isinstance(v, ua.NodeId | ua.QualifiedName):  # ExpandedNodeId is a NodeId
        return v.to_string()
    if isinstance(v, ua.StatusCode):
        return int(v.value)
    if isinstance(v, ua.XmlElement):
        return v.Value
    if isinstance(v, ua.Variant):  # a structure field of type BaseDataType
        return _plain(v.Value)
    if isinstance(v, list):
        return [_plain(e) for e in v]
    if isinstance(v, enum.Enum):
        return v.value
    if dataclasses.is_dataclass(v) and not isinstance(v, type | ua.ExtensionObject):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    raise TypeError(f"{type(v).__name__} has no JSON form")


def typed_value(v: object) -> tuple[float, str | None]:
    """An OPC UA value as (float64 lane value, side-lane text): numbers, booleans, StatusCode (its UInt32 code),
    enumerations and DateTime (epoch ms) in the float64 lane; the others as their canonical text
    (`broker.sparkplug.typed`): strings and XmlElement, Guid, NodeId/ExpandedNodeId (`ns=2;s=Foo`), QualifiedName
    (`2:Name`), ByteString (base64), 64-bit integers beyond 2**53 (digits), and JSON for arrays, matrices (nested
    arrays), structures (objects of their fields) and LocalizedText (`{"locale":"de","text":"Presse"}`).
    NaN without text: no value (null, or a type not carried)."""
    if v is None:
        return math.nan, None
    if isinstance(v, bool | float):
        return float(v), None
    if isinstance(v, int):
        return (float(v), None) if -EXACT_LIMIT <= v <= EXACT_LIMIT else (math.nan, str(v))
    if isinstance(v, str):
        return math.nan, v
    if isinstance(v, datetime):
        ms = ((v if v.tzinfo is not None else v.replace(tzinfo=UTC)) - _EPOCH) // _ONE_MS
        return (float(ms), None) if ms >= 0 else (math.nan, None)  # Sparkplug DateTime starts at 1970
    if isinstance(v, ua.StatusCode):
        return float(v.value), None
    if isinstance(v, uuid.UUID | bytes | ua.NodeId | ua.QualifiedName | ua.XmlElement):
        text = _plain(v)
        return math.nan, None if text is None else str(text)
    try:
        return math.nan, json_text(_plain(v))  # LocalizedText, arrays, matrices, structures
    except (TypeError, ValueError):  # elements without a JSON form (undecodable structures, DateTime < 1970)
        return math.nan, None


class OpcUaAdapter(Adapter):
    """Reads OPC UA nodes (the source table's `Signal.metric` is the node id) by subscription or polling."""

    name: ClassVar[str] = "opcua"
    config_model = OpcUaConfig

    def __init__(self, config: OpcUaConfig, signals: SignalTable, sink: SampleSink,
                 on_device_state: Callable[[str, bool], None] | None = None) -> None:
        super().__init__(config, signals, sink, on_device_state)
        self.config: OpcUaConfig = config
        self.delivery_interval_s = (config.polling.interval_ms if config.mode == "polling"
                                    else config.subscription.publishing_interval_ms) / 1000.0
        self._client: Client | None = None
        self._sub: _BatchSubscription | None = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._failure: BaseException | None = None
        self._online = False
        self._methods: dict[tuple[str, str], tuple[Node, Node]] = {}
        n = len(signals)
        # client handle h (= index + 1) -> source index; -1 for handles we never created
        self._lookup = np.full(n + 2, -1, np.int32)
        self._lookup[1:n + 1] = np.arange(n, dtype=np.int32)
        self._machines = list(dict.fromkeys(s.machine for s in signals.signals))
        self._chunk = config.chunk_size
        self._last: SampleBlock | None = None  # polling: the previous read, to emit changes only
        self._missing: list[int] = []  # subscription: source indices the server has no node for (yet)
        self.notifications = 0  # DataChangeNotifications received
        self.samples = 0  # value changes delivered to the sink

    # -- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open a session (fresh client), read the server's operation limits, subscribe or prime polling."""
        await self.close()
        cfg, sec = self.config, self.config.security
        self._lost = asyncio.Event()
        self._lost_reason, self._failure = "", None
        with _mapped(f"node ids of adapter {cfg.name!r}"):
            self._node_ids = [ua.NodeId.from_string(s.metric) for s in self.signals.signals]
        client = Client(cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=cfg.watchdog_s)
        client.application_uri = sec.application_uri
        # We never resume a session (a reconnect builds a fresh client), so the server need not keep it long;
        # a timeout servers accept as asked also keeps asyncua from warning about revised values on every connect.
        client.session_timeout = _SESSION_TIMEOUT_MS
        client.name = client.description = f"zhizao edge ({cfg.name})"
        if sec.username is not None:
            client.set_user(sec.username)
            client.set_password(self._password())
        client.connection_lost_callback = self._connection_lost
        self._client = client
        with _mapped(f"connect to {cfg.endpoint}"):
            if sec.mode != "None":
                await secure_client(client, sec)
            await client.connect()
            self._chunk = await self._server_chunk()
            if await self._has_server_structures(client):
                await self._load_structures(client)
            if cfg.mode == "subscription":
                await self._subscribe(client)
            else:
                self._last = None
        self._set_online(True)
        log.info("opcua %s: connected to %s (%d nodes, %s)", cfg.name, cfg.endpoint, len(self.signals), cfg.mode)

    async def run(self) -> None:
        """Deliver samples until cancelled; raise AdapterTemporaryError when the session drops."""
        if self._client is None or self._lost is None:
            raise AdapterTemporaryError(f"adapter {self.config.name!r} is not connected")
        if self.config.mode == "polling":
            while not self._lost.is_set():
                started = time.monotonic()
                await self._poll()
                delay = self.config.polling.interval_ms / 1000.0 - (time.monotonic() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), max(delay, 0.0))
        else:
            while not self._lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), self.config.subscription.missing_retry_s)
                if not self._lost.is_set():
                    await self._retry_missing()
        self._set_online(False)
        if self._failure is not None:
            raise AdapterTemporaryError(f"opcua {self.config.name}: sink failed: {self._failure!r}") from self._failure
        raise AdapterTemporaryError(f"connection to {self.config.endpoint} lost: {self._lost_reason}")

    async def close(self) -> None:
        """Delete the subscription and disconnect; safe before connect and when called twice."""
        client, self._client, self._sub = self._client, None, None
        self._methods.clear()
        if client is None:
            return
        self._set_online(False)
        client.connection_lost_callback = None
        try:
            await asyncio.wait_for(client.disconnect(), timeout=self.config.timeout_s)
        except (OSError, TimeoutError, UaError, ConnectionError, EOFError, RuntimeError) as exc:
            log.debug("opcua %s: disconnect: %r", self.config.name, exc)
        finally:
            client.disconnect_socket()

    # -- commands --------------------------------------------------------------------------------

    async def write(self, signal: int, value: float | int | bool | str) -> None:
        """Write `value` to the node of source `signal`, typed by the source's datatype."""
        client = self._require_client()
        if not 0 <= signal < len(self.signals):
            raise AdapterConfigError(f"opcua {self.config.name}: no source {signal}")
        src = self.signals.signals[signal]
        vtype = _VARIANTS.get(DataType(src.datatype))
        if vtype is None:
            raise AdapterConfigError(f"opcua {self.config.name}: cannot write datatype {src.datatype} ({src.metric})")
        with _mapped(f"write {src.metric} = {value!r}", denied_is_auth=False):
            v: Any = value
            if vtype in _INT_VARIANTS:
                v = int(value)
            elif vtype in (ua.VariantType.Double, ua.VariantType.Float):
                v = float(value)
            dv = ua.DataValue(ua.Variant(v, vtype))
            await client.get_node(self._node_ids[signal]).write_value(dv)

    async def read(self, signal: int) -> float | int | bool | str | None:
        """Read the current value of the node of source `signal` (a command's read-back)."""
        client = self._require_client()
        if not 0 <= signal < len(self.signals):
            raise AdapterConfigError(f"opcua {self.config.name}: no source {signal}")
        src = self.signals.signals[signal]
        with _mapped(f"read {src.metric}", denied_is_auth=False):
            dv = await client.get_node(self._node_ids[signal]).read_data_value()
            if dv.StatusCode is not None:
                dv.StatusCode.check()  # a bad status raises UaStatusCodeError, mapped above
            value = dv.Value.Value if dv.Value is not None else None
            return value if isinstance(value, float | int | bool | str) or value is None else str(value)

    async def call(self, machine: str, method: str, args: list[Any]) -> Any:
        """Call method `method` (e.g. Start, Stop, Reset) on the object that holds `machine`'s nodes."""
        client = self._require_client()
        with _mapped(f"call {machine}.{method}", denied_is_auth=False):
            target = self._methods.get((machine, method))
            if target is None:
                target = await self._find_method(client, machine, method)
                self._methods[(machine, method)] = target
            obj, meth = target
            return await obj.call_method(meth.nodeid, *args)

    # -- internals -------------------------------------------------------------------------------

    def _password(self) -> str:
        sec = self.config.security
        if sec.password is not None:
            return sec.password.get_secret_value()
        value = os.environ.get(sec.password_env or "")
        if value is None:
            raise AdapterConfigError(
                f"opcua {self.config.name}: environment variable {sec.password_env!r} (password_env) is not set"
            )
        return value

    def _require_client(self) -> Client:
        if self._client is None:
            raise AdapterTemporaryError(f"adapter {self.config.name!r} is not connected")
        return self._client

    async def _find_method(self, client: Client, machine: str, method: str) -> tuple[Node, Node]:
        index = next((i for i, s in enumerate(self.signals.signals) if s.machine == machine), None)
        if index is None:
            raise AdapterConfigError(f"opcua {self.config.name}: no nodes of machine {machine!r}")
        obj = await client.get_node(self._node_ids[index]).get_parent()
        if obj is None:
            raise AdapterConfigError(f"opcua {self.config.name}: machine {machine!r} has no parent object")
        for child in await obj.get_children(refs=ObjectIds.HasComponent, nodeclassmask=ua.NodeClass.Method):
            if (await child.read_browse_name()).Name == method:
                return obj, child
        raise AdapterConfigError(f"opcua {self.config.name}: machine {machine!r} has no method {method!r}")

    def _set_online(self, online: bool) -> None:
        if online == self._online:
            return
        self._online = online
        for machine in self._machines:
            self.on_device_state(machine, online)

    async def _connection_lost(self, exc: Exception) -> None:
        log.warning("opcua %s: connection to %s lost: %r", self.config.name, self.config.endpoint, exc)
        self._lost_reason = repr(exc)
        if self._lost is not None:
            self._lost.set()

    async def _has_server_structures(self, client: Client) -> bool:
        """True when a Text signal's node has a DataType of the server's own namespaces (a structure asyncua
        does not know yet); the standard ones (ns=0: Range, EUInformation...) asyncua decodes as they come."""
        ids = [self._node_ids[i] for i, s in enumerate(self.signals.signals) if s.datatype == DataType.Text]
        for start in range(0, len(ids), self._chunk):
            for dv in await client.uaclient.read_attributes(ids[start:start + self._chunk], AttributeIds.DataType):
                dtype = dv.Value.Value if dv.Value is not None else None
                if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex != 0:
                    return True
        return False

    async def _load_structures(self, client: Client) -> None:
        """Let asyncua decode the server's structures (ExtensionObjects) into their fields, from the server's
        DataTypeDefinitions. A server whose definitions cannot be read leaves them undecoded (no value)."""
        types_log = logging.getLogger("asyncua.ua.uatypes")
        level = types_log.level
        # asyncua warns of every standard type a server lists again ("Browsename collision"): noise, not ours
        types_log.setLevel(logging.ERROR)
        try:
            await client.load_data_type_definitions()
        except (OSError, TimeoutError):
            raise  # the connection itself failed: mapped by the caller, the runtime reconnects
        except Exception as exc:  # noqa: BLE001  asyncua builds Python types from the server's definitions
            log.warning("opcua %s: cannot load the server's structure definitions (%r): structure values of "
                        "types asyncua does not know arrive as no value", self.config.name, exc)
        finally:
            types_log.setLevel(level)

    async def _server_chunk(self) -> int:
        """The chunk size: the configured one, lowered to the server's MaxNodesPerRead / MonitoredItemsPerCall."""
        assert self._client is not None
        ids = [ua.NodeId(ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)),
               ua.NodeId(ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall))]
        chunk = self.config.chunk_size
        try:
            results = await self._client.uaclient.read_attributes(ids, AttributeIds.Value)
        except UaStatusCodeError:
            return chunk  # a server without OperationLimits: keep ours
        for dv in results:
            if dv.StatusCode is not None and dv.StatusCode.is_good() and dv.Value is not None:
                limit = dv.Value.Value
                if isinstance(limit, int) and limit > 0:
                    chunk = min(chunk, limit)
        return chunk

    async def _subscribe(self, client: Client) -> None:
        cfg = self.config.subscription
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = client.get_keepalive_count(cfg.publishing_interval_ms)
        params.MaxNotificationsPerPublish = cfg.max_notifications_per_publish
        params.PublishingEnabled = True
        params.Priority = 0
        session = client.uaclient.session
        if self.config.fast_decode:
            _install_fast_publish(session)
        sub = _BatchSubscription(session, params, self._on_items, self._on_arrays, self._on_status)
        result = await sub.init()
        revised = client.get_subscription_revised_params(params, result)
        if revised:
            await sub.update(revised)
        self._sub = sub
        # Registered like client.create_subscription() would, so asyncua's stale-subscription watchdog re-creates
        # it when the server silently drops it while the session stays up.
        client._subscriptions.append(sub)
        failed, self._missing = await self._monitor(sub, list(range(len(self._node_ids))))
        if failed:
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise AdapterConfigError(
                f"opcua {self.config.name}: cannot monitor {', '.join(failed[:5])}{more}"
            )
        if self._missing:
            ids = [self._node_ids[i].to_string() for i in self._missing[:5]]
            more = f" and {len(self._missing) - 5} more" if len(self._missing) > 5 else ""
            log.warning(
                "opcua %s: %d nodes are not in the server's address space (%s%s): monitoring the others and "
                "trying them again every %g s (a typo? `zhizao edge browse` lists what the server has)",
                self.config.name, len(self._missing), ", ".join(ids), more, cfg.missing_retry_s,
            )  # fmt: skip

    async def _monitor(self, sub: _BatchSubscription, indices: list[int]) -> tuple[list[str], list[int]]:
        """Create monitored items for `indices` in chunks the server accepts: (refused items, missing indices)."""
        failed: list[str] = []
        missing: list[int] = []
        for start in range(0, len(indices), self._chunk):
            chunk = indices[start:start + self._chunk]
            requests = [self._item_request(i) for i in chunk]
            for i, req, res in zip(chunk, requests, await sub.create_monitored_items(requests), strict=True):
                if isinstance(res, ua.StatusCode):
                    if res.value == _SC.BadNodeIdUnknown:
                        missing.append(i)
                    else:
                        failed.append(f"{req.ItemToMonitor.NodeId.to_string()} ({_code_name(res.value)})")
        return failed, missing

    async def _retry_missing(self) -> None:
        """Try the nodes the server did not have again; log the ones that are there now."""
        if not self._missing or self._sub is None:
            return
        with _mapped(f"monitor nodes of adapter {self.config.name!r}"):
            failed, still = await self._monitor(self._sub, self._missing)
        found = [i for i in self._missing if i not in set(still)]
        self._missing = still
        if found:
            log.info("opcua %s: %d nodes now monitored (%s); %d still missing", self.config.name, len(found),
                     ", ".join(self._node_ids[i].to_string() for i in found[:5]), len(still))  # fmt: skip
        if failed:
            raise AdapterConfigError(f"opcua {self.config.name}: cannot monitor {', '.join(failed[:5])}")

    @property
    def missing_nodes(self) -> int:
        """Configured nodes the server does not have (yet); they are retried while connected."""
        return len(self._missing)

    def _item_request(self, index: int) -> ua.MonitoredItemCreateRequest:
        cfg = self.config.subscription
        rv = ua.ReadValueId()
        rv.NodeId = self._node_ids[index]
        rv.AttributeId = AttributeIds.Value
        mp = ua.MonitoringParameters()
        mp.ClientHandle = index + 1
        mp.SamplingInterval = cfg.sampling_interval_ms
        mp.QueueSize = cfg.queue_size
        mp.DiscardOldest = True
        if cfg.deadband > 0 and self.signals.signals[index].datatype in _FLOATS:
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = ua.DeadbandType.Absolute
            flt.DeadbandValue = cfg.deadband
            mp.Filter = flt
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = mp
        return req

    def _emit(self, block: SampleBlock) -> None:
        try:
            self.sink(block)
        except Exception as exc:  # noqa: BLE001  the sink is the runtime's; surface its failure through run()
            log.error("opcua %s: sink failed: %r", self.config.name, exc)
            self._failure = exc
            if self._lost is not None:
                self._lost.set()
            return
        self.samples += len(block)

    def _on_items(self, items: list[ua.MonitoredItemNotification]) -> None:
        if not items:
            return
        self.notifications += 1
        handles = np.fromiter((it.ClientHandle for it in items), np.int64, len(items))
        signal = self._lookup[np.clip(handles, 0, len(self._lookup) - 1)]
        dvs = [it.Value for it in items]
        block = _to_block(signal, dvs, int(time.time() * 1000))
        if (signal < 0).any():  # a handle we never created (a stale item after a re-subscribe): drop it
            keep = signal >= 0
            block = _select(block, keep)
        self._emit(block)

    def _on_arrays(self, arrays: DataChangeArrays) -> None:
        n = len(arrays.handles)
        if not n:
            return
        self.notifications += 1
        signal = self._lookup[np.clip(arrays.handles, 0, len(self._lookup) - 1)]
        ts = arrays.ts_ms if arrays.has_ts.all() else np.where(arrays.has_ts, arrays.ts_ms, int(time.time() * 1000))
        block = SampleBlock(signal, ts, arrays.value, _quality(arrays.status), tuple(arrays.text))
        if (signal < 0).any():
            block = _select(block, signal >= 0)
        self._emit(block)

    def _on_status(self, status: ua.StatusCode) -> None:
        if not status.is_good():
            log.warning("opcua %s: subscription status %s", self.config.name, _code_name(status.value))
            self._lost_reason = f"subscription status {_code_name(status.value)}"
            if self._lost is not None:
                self._lost.set()

    async def _poll(self) -> None:
        """Read every node (chunked); emit the values whose value, status or timestamp changed."""
        client = self._require_client()
        dvs: list[ua.DataValue] = []
        with _mapped(f"read from {self.config.endpoint}"):
            for start in range(0, len(self._node_ids), self._chunk):
                params = ua.ReadParameters()
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                for nid in self._node_ids[start:start + self._chunk]:
                    rv = ua.ReadValueId()
                    rv.NodeId = nid
                    rv.AttributeId = AttributeIds.Value
                    params.NodesToRead.append(rv)
                dvs.extend(await client.uaclient.read(params))
        block = _to_block(np.arange(len(dvs), dtype=np.int32), dvs, int(time.time() * 1000))
        last, self._last = self._last, block
        if last is not None:
            same_text = {k for k, s in block.text} == {k for k, s in last.text} and block.text == last.text
            changed = ((block.ts_ms != last.ts_ms) | (block.quality != last.quality)
                       | ~((block.value == last.value) | (np.isnan(block.value) & np.isnan(last.value))))
            if not same_text:
                changed[[k for k, _ in block.text]] = True
            block = _select(block, changed)
        if len(block):
            self._emit(block)


def _install_fast_publish(session: Any) -> None:
    """Let the session's publish loop decode responses with `fastdecode` (arrays instead of objects).

    asyncua's publish loop calls `session.publish(acks)` and hands `response.Parameters` to the subscription
    callback; this replaces that one method on this session object only (asyncua 2.x internals, pinned <3).
    """
    from asyncua.ua.uaerrors import UaStructParsingError

    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> Any:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        try:
            return decode_publish_response(data)
        except Exception as exc:  # same contract as asyncua's publish(): a parse error is skipped
            log.error("opcua: cannot parse a publish response: %r", exc)
            raise UaStructParsingError from exc

    session.publish = publish


def _select(block: SampleBlock, keep: npt.NDArray[np.bool_]) -> SampleBlock:
    """The rows of `block` where `keep`, with text indices renumbered."""
    rows = np.nonzero(keep)[0]
    text: tuple[tuple[int, str], ...] = ()
    if block.text:
        new = {int(r): i for i, r in enumerate(rows)}
        text = tuple((new[k], s) for k, s in block.text if k in new)
    return SampleBlock(block.signal[rows], block.ts_ms[rows], block.value[rows], block.quality[rows], text)
