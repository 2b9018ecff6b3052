"""The one place the edge node touches paho-mqtt: connection, Will, events into asyncio, errors mapped to ours.

paho runs its network loop in its own thread (`loop_start`) and reconnects by itself with capped backoff.
Its callbacks only post `LinkEvent`s to the asyncio loop; every Sparkplug decision is taken there. Before
every CONNECT (first and automatic reconnects) paho calls `on_pre_connect`, where the next Will (NDEATH with
a new bdSeq) is installed, so each CONNECT carries its own bdSeq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from zhizao.broker.mqtt import MqttUrlError, parse_mqtt_url
from zhizao.edge.node.config import MqttConfig

log = logging.getLogger(__name__)


class LinkError(Exception):
    """The MQTT connection cannot be set up or used (bad URL, TLS files, closed link)."""


@dataclass(frozen=True)
class Connected:
    """CONNACK success; `bd_seq` is the bdSeq of the Will this CONNECT carried."""

    bd_seq: int


@dataclass(frozen=True)
class ConnectFailed:
    """The broker refused the CONNECT or the socket could not be opened."""

    reason: str


@dataclass(frozen=True)
class Disconnected:
    """The connection is gone (paho reconnects on its own unless we are stopping)."""

    reason: str


@dataclass(frozen=True)
class Subscribed:
    """SUBACK for `mid`; `failed` lists the refused topic filters' reason codes."""

    mid: int
    failed: tuple[str, ...]


@dataclass(frozen=True)
class Message:
    """An incoming PUBLISH."""

    topic: str
    payload: bytes


LinkEvent = Connected | ConnectFailed | Disconnected | Subscribed | Message
WillFactory = Callable[[], tuple[int, str, bytes]]
"""Called in paho's thread before each CONNECT: returns (bdSeq, will topic, will payload)."""


class Published:
    """Handle of one publish: `done` once written to the socket (QoS 0) or acknowledged (QoS 1)."""

    def __init__(self, info: paho.MQTTMessageInfo | None) -> None:
        self._info = info

    @property
    def done(self) -> bool:
        """True once paho has sent (QoS 0) or the broker has acknowledged (QoS 1) the message."""
        return self._info is not None and self._info.rc == paho.MQTT_ERR_SUCCESS and self._info.is_published()

    async def wait(self, within_s: float) -> bool:
        """Wait up to `within_s` seconds for `done` (paho signals it from its thread, so poll)."""
        for _ in range(max(1, int(within_s / 0.01))):
            if self.done:
                break
            await asyncio.sleep(0.01)
        return self.done


class MqttLink:
    """A paho client configured for Sparkplug: clean start, session expiry 0, Will from `will_factory`."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will_factory: WillFactory,
        on_event: Callable[[LinkEvent], None],
    ) -> None:
        self.config = config
        self._will_factory = will_factory
        self._on_event = on_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bd_seq = -1
        self._will: tuple[int, str, bytes] | None = None
        self._reuse_will = False
        try:
            self.endpoint = parse_mqtt_url(config.effective_url())
        except MqttUrlError as exc:
            raise LinkError(f"mqtt.url: {exc}") from None
        self.v5 = config.protocol == 5
        if self.v5:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        else:
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=True
            )
        username = config.username or self.endpoint.username
        password = config.password.get_secret_value() if config.password else self.endpoint.password
        if username:
            client.username_pw_set(username, password)
        if self.endpoint.tls or config.tls is not None:
            tls = config.tls
            try:
                client.tls_set(
                    ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                    certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                    keyfile=str(tls.key_file) if tls and tls.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise LinkError(f"mqtt.tls: {exc}") from None
            if tls and tls.insecure:
                client.tls_insecure_set(True)
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        client.max_inflight_messages_set(100)
        client.on_pre_connect = self._pre_connect
        client.on_connect = self._connected
        client.on_connect_fail = self._connect_failed
        client.on_disconnect = self._disconnected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self._client = client

    # ---- paho thread -> asyncio --------------------------------------------------------------------
    def _post(self, event: LinkEvent) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens any more
                loop.call_soon_threadsafe(self._on_event, event)

    def _pre_connect(self, client: paho.Client, userdata: object) -> None:
        # A new bdSeq per CONNECT sent; an attempt that never opened a socket sent none, so its Will is reused.
        if self._will is None or not self._reuse_will:
            self._will = self._will_factory()
        self._reuse_will = False
        bd_seq, topic, payload = self._will
        self._bd_seq = bd_seq
        client.will_set(topic, payload, qos=1, retain=False)

    def _connected(
        self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        if rc.is_failure:
            self._post(ConnectFailed(str(rc)))
        else:
            self._post(Connected(self._bd_seq))

    def _connect_failed(self, client: paho.Client, userdata: object) -> None:
        self._reuse_will = True  # paho calls this when the socket could not be opened: no CONNECT went out
        self._post(ConnectFailed("connection refused or unreachable"))

    def _disconnected(
        self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        self._post(Disconnected(str(rc)))

    def _subscribed(
        self, client: paho.Client, userdata: object, mid: int, rcs: list[ReasonCode], props: object
    ) -> None:
        self._post(Subscribed(mid, tuple(str(rc) for rc in rcs if rc.is_failure)))

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self._post(Message(msg.topic, bytes(msg.payload)))

    # ---- asyncio side --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background (retried with capped backoff until `stop`)."""
        self._loop = asyncio.get_running_loop()
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
        try:
            self._client.connect_async(
                self.endpoint.host,
                self.endpoint.port,
                self.config.keepalive_s,
                clean_start=True,
                properties=properties,
            )
        except (OSError, ValueError) as exc:
            raise LinkError(
                f"mqtt: cannot connect to {self.endpoint.host}:{self.endpoint.port}: {exc}"
            ) from None
        self._client.loop_start()

    def subscribe(self, topics: list[tuple[str, int]]) -> int:
        """Subscribe to topic filters; returns the mid whose `Subscribed` event confirms them."""
        try:
            rc, mid = self._client.subscribe(topics)
        except ValueError as exc:
            raise LinkError(f"mqtt subscribe {topics!r}: {exc}") from None
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"mqtt subscribe failed: {paho.error_string(rc)}")
        return mid

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Published:
        """Queue a PUBLISH (retain false); a lost connection shows as a handle that never gets `done`."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=False)
        except (ValueError, RuntimeError) as exc:
            raise LinkError(f"mqtt publish to {topic!r}: {exc}") from None
        return Published(info)

    @property
    def queued_bytes(self) -> int:
        """Bytes paho still has to write to the socket (back-pressure signal)."""
        return sum(len(p["packet"]) - p["pos"] for p in list(self._client._out_packet))

    async def disconnect(self, with_will: bool) -> None:
        """Send DISCONNECT (MQTT 5: "Disconnect with Will Message" when `with_will`) and stop the loop."""
        reason = None
        if self.v5 and with_will:
            reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        with contextlib.suppress(OSError, ValueError):
            self._client.disconnect(reasoncode=reason)
        await asyncio.to_thread(self._client.loop_stop)

    async def restart(self) -> None:
        """Drop the connection and connect afresh (new CONNECT, new bdSeq)."""
        await self.disconnect(with_will=True)
        self.start()
