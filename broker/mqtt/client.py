"""`MqttClient`: the only place edge, cloud and the benchmarks build paho clients (TLS, protocol fallback,
reconnects, Will)."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from zhizao.broker.mqtt.backoff import Backoff
from zhizao.broker.mqtt.url import MqttUrlError, parse_mqtt_url

log = logging.getLogger(__name__)

Protocol = Literal["auto", "5", "3.1.1"]
# CONNACK reason codes meaning "not MQTT 5": v5 0x84 Unsupported Protocol Version; a 3.1.1 broker's code 1.
_NOT_V5 = {132, 1}


class MqttError(RuntimeError):
    """The MQTT client cannot be set up or used; the message starts with the option at fault."""


@dataclass(frozen=True)
class TlsFiles:
    """TLS material: CA bundle (default: the system's), client certificate and key for mutual TLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname verification (tests only)


@dataclass(frozen=True)
class Will:
    """The Will message of one CONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class MqttOptions:
    """How to connect: URL, client id, protocol ("auto": 5, else 3.1.1), credentials, TLS, session, backoff."""

    url: str
    client_id: str
    protocol: Protocol = "auto"
    username: str | None = None  # default: the URL's
    password: str | None = None
    tls: TlsFiles | None = None  # TLS is on for mqtts:// URLs or when this is given
    keepalive_s: int = 30
    clean_start: bool = True  # MQTT 3.1.1: clean session
    session_expiry_s: int = 0  # MQTT 5 only
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    reconnect_jitter: float = 0.5
    max_inflight: int = 20
    max_queued: int = 0  # 0: unbounded


class Delivery:
    """Handle of one PUBLISH."""

    def __init__(self, info: paho.MQTTMessageInfo, qos: int) -> None:
        self._info = info
        self._qos = qos

    @property
    def accepted(self) -> bool:
        """Sent, or (QoS > 0 while offline) kept by paho for the next connection."""
        rc = self._info.rc
        return rc == paho.MQTT_ERR_SUCCESS or (self._qos > 0 and rc == paho.MQTT_ERR_NO_CONN)

    @property
    def done(self) -> bool:
        """Written to the socket (QoS 0) or acknowledged by the broker (QoS 1/2)."""
        return self._info.rc == paho.MQTT_ERR_SUCCESS and self._info.is_published()

    def wait(self, timeout_s: float) -> bool:
        """Block up to `timeout_s` for `done` (not on the network thread)."""
        try:
            self._info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return self.done


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not Path(path).is_file():
            raise MqttError(f"tls.{name}={str(path)!r}: no such file")
    if tls.key_file is not None and tls.cert_file is None:
        raise MqttError(f"tls.key_file={str(tls.key_file)!r}: given without tls.cert_file")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise MqttError(f"tls: cannot load the certificates ({exc})") from None
    if tls.insecure:
        context.check_hostname = False
    return context


class MqttClient:
    """A paho client run on its own network thread: connects, reconnects and falls back by itself.

    Callbacks run on the network thread and must not block: `will()` before each CONNECT (an attempt whose
    socket never opened reuses the previous Will), `on_connected()` after a successful CONNACK,
    `on_connect_failed(reason)`, `on_disconnected(reason)`, `on_subscribed(mid, refused reason codes)`,
    `on_message(topic, payload)`. An exception in a callback is logged; it never stops the network thread.
    """

    def __init__(
        self,
        options: MqttOptions,
        *,
        will: Callable[[], Will | None] | None = None,
        on_connected: Callable[[], None] | None = None,
        on_connect_failed: Callable[[str], None] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        on_subscribed: Callable[[int, tuple[str, ...]], None] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.options = o = options
        try:
            self.endpoint = parse_mqtt_url(o.url)
        except MqttUrlError as exc:
            raise MqttError(f"url={o.url!r}: {exc.reason}") from None
        if not o.client_id:
            raise MqttError("client_id='': must not be empty")
        if not 5 <= o.keepalive_s <= 65535:
            raise MqttError(f"keepalive_s={o.keepalive_s!r}: must be in [5, 65535]")
        try:
            self._backoff = Backoff(o.reconnect_min_s, o.reconnect_max_s, o.reconnect_jitter)
        except ValueError as exc:
            raise MqttError(str(exc)) from None
        self._ssl = _tls_context(o.tls or TlsFiles()) if (self.endpoint.tls or o.tls is not None) else None
        self._will_hook, self._on_connected, self._on_connect_failed = will, on_connected, on_connect_failed
        self._on_disconnected, self._on_subscribed, self._on_message = on_disconnected, on_subscribed, on_message
        self._v5 = o.protocol != "3.1.1"
        self._v5_seen = False  # a v5 session was established: a later close is never taken for "no v5"
        self._will: Will | None = None
        self._reuse_will = False
        self._connack = False
        self._problem: str | None = None  # the refusal or failure last logged, until the next success
        self._lock = threading.Lock()
        self._stopping = False
        self._started = False
        self._client = self._build()

    @property
    def where(self) -> str:
        """host:port of the broker."""
        return f"{self.endpoint.host}:{self.endpoint.port}"

    @property
    def last_problem(self) -> str | None:
        """The refusal or failure of the last attempts, until a connection succeeds."""
        return self._problem

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The protocol version of the current (or next) CONNECT."""
        return "5" if self._v5 else "3.1.1"

    def _build(self) -> paho.Client:
        o, ep = self.options, self.endpoint
        if self._v5:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=o.client_id, protocol=paho.MQTTv5)
        else:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=o.client_id, protocol=paho.MQTTv311,
                                 clean_session=o.clean_start)
        username = o.username or ep.username
        if username:
            client.username_pw_set(username, o.password if o.password is not None else ep.password)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        client.max_inflight_messages_set(o.max_inflight)
        client.max_queued_messages_set(o.max_queued)
        client.on_pre_connect = self._pre_connect
        client.on_connect = self._connected
        client.on_connect_fail = self._connect_failed
        client.on_disconnect = self._disconnected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        return client

    def _connect(self, client: paho.Client) -> None:
        o = self.options
        try:
            if self._v5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = o.session_expiry_s
                client.connect_async(self.endpoint.host, self.endpoint.port, o.keepalive_s,
                                     clean_start=o.clean_start, properties=props)
            else:
                client.connect_async(self.endpoint.host, self.endpoint.port, o.keepalive_s)
        except (OSError, ValueError) as exc:
            raise MqttError(f"url={self.options.url!r}: cannot connect to {self.where}: {exc}") from None
        client.loop_start()

    # ---- lifecycle (caller's threads) ----------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background; retried after `Backoff` delays until `stop`."""
        with self._lock:
            self._stopping = False
            if self._started:
                # paho's loop_start makes a new wakeup socket pair and drops the previous run's unclosed:
                # a fresh paho client per run (the old one closes its pair when it is collected).
                self._client = self._build()
            self._started = True
            self._connect(self._client)

    def stop(self, *, with_will: bool = False) -> None:
        """Send DISCONNECT (MQTT 5 with `with_will`: "Disconnect with Will Message") and end the thread."""
        with self._lock:
            self._stopping = True
            client = self._client
        reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message") if self._v5 and with_will else None
        try:
            client.disconnect(reasoncode=reason)
        except (OSError, ValueError) as exc:
            log.debug("mqtt %s: disconnect: %s", self.options.client_id, exc)
        client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Delivery:
        """Queue a PUBLISH (thread-safe); see `Delivery` for what became of it."""
        try:
            return Delivery(self._client.publish(topic, payload, qos=qos, retain=retain), qos)
        except (ValueError, RuntimeError) as exc:
            raise MqttError(f"publish to {topic!r}: {exc}") from None

    def subscribe(self, topics: list[tuple[str, int]]) -> int:
        """Subscribe to (filter, qos) pairs; returns the mid that `on_subscribed` confirms."""
        try:
            rc, mid = self._client.subscribe(topics)
        except ValueError as exc:
            raise MqttError(f"subscribe {topics!r}: {exc}") from None
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe {topics!r}: {paho.error_string(rc)}")
        return mid

    @property
    def queued_bytes(self) -> int:
        """Bytes paho still has to write to the socket (back-pressure signal; paho has no public counter)."""
        return sum(len(p["packet"]) - p["pos"] for p in list(self._client._out_packet))

    # ---- network thread ------------------------------------------------------------------------------
    def _call(self, what: str, hook: Callable[..., object] | None, *args: object) -> object:
        if hook is None:
            return None
        try:
            return hook(*args)
        except Exception:  # a caller's bug must not end the network thread (no reconnects)
            log.exception("mqtt %s: %s callback failed", self.options.client_id, what)
            return None

    def _note(self, problem: str) -> None:
        if problem != self._problem:  # once per distinct refusal or failure, until the next success
            self._problem = problem
            log.warning("mqtt %s: %s; retrying (backoff up to %g s)", self.options.client_id, problem,
                        self._backoff.max_s)

    def _schedule_retry(self, client: paho.Client) -> None:
        delay = self._backoff.next_delay()
        # paho waits its min delay first after reconnect_delay_set: min = max = our delay makes it wait
        # exactly that (annotated int; paho sleeps on any float).
        client.reconnect_delay_set(cast(int, delay), cast(int, delay))

    def _pre_connect(self, client: paho.Client, userdata: object) -> None:
        if client is not self._client:
            return
        self._connack = False
        if self._will_hook is not None:
            if self._will is None or not self._reuse_will:
                try:
                    self._will = self._will_hook()
                except Exception as exc:  # no CONNECT without its Will: paho counts this as a failed attempt
                    self._will = None
                    log.exception("mqtt %s: cannot make the Will of the next CONNECT", self.options.client_id)
                    raise OSError(f"no Will for the CONNECT: {exc}") from exc
            if self._will is None:
                client.will_clear()
            else:
                client.will_set(self._will.topic, self._will.payload, qos=self._will.qos, retain=self._will.retain)
        self._reuse_will = False

    def _connected(self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode,
                   props: object) -> None:
        if client is not self._client:
            return
        self._connack = True
        if rc.is_failure:
            reason = f"{self.where} refused the connection: {rc} (reason code {rc.value})"
            if self.options.protocol == "auto" and self._v5 and rc.value in _NOT_V5:
                self._fall_back(reason)
                return
            self._note(reason)  # paho calls on_disconnect next, which schedules the retry
            self._call("on_connect_failed", self._on_connect_failed, reason)
            return
        self._backoff.reset()
        self._v5_seen = self._v5_seen or self._v5
        if self._problem is not None:
            log.info("mqtt %s: connected to %s (MQTT %s)", self.options.client_id, self.where, self.protocol)
            self._problem = None
        self._call("on_connected", self._on_connected)

    def _connect_failed(self, client: paho.Client, userdata: object) -> None:
        if client is not self._client:
            return
        self._reuse_will = True  # the socket did not open (or TLS failed): no CONNECT carried that Will
        reason = f"cannot reach {self.where} (connection refused, timed out or TLS handshake failed)"
        self._note(reason)
        self._schedule_retry(client)
        self._call("on_connect_failed", self._on_connect_failed, reason)

    def _disconnected(self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode,
                      props: object) -> None:
        if client is not self._client:
            return
        if not self._stopping:
            if not self._connack and self.options.protocol == "auto" and self._v5 and not self._v5_seen:
                # Some 3.1.1-only brokers close the socket on an MQTT 5 CONNECT instead of answering it.
                self._fall_back(f"{self.where} closed the connection without a CONNACK ({rc})")
                return
            self._schedule_retry(client)
        self._call("on_disconnected", self._on_disconnected, str(rc))

    def _fall_back(self, why: str) -> None:
        log.warning("mqtt %s: %s; using MQTT 3.1.1", self.options.client_id, why)
        with self._lock:
            if self._stopping:
                return
            old = self._client
            self._v5 = False
            self._client = self._build()
            old.disconnect()  # we are on old's network thread: it ends after this callback
            self._connect(self._client)

    def _subscribed(self, client: paho.Client, userdata: object, mid: int, rcs: list[ReasonCode],
                    props: object) -> None:
        if client is self._client:
            refused = tuple(f"{rc} (reason code {rc.value})" for rc in rcs if rc.is_failure)
            self._call("on_subscribed", self._on_subscribed, mid, refused)

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if client is self._client:
            self._call("on_message", self._on_message, msg.topic, bytes(msg.payload))
