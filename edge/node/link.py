"""The edge node's MQTT link: the shared `MqttClient` (broker.mqtt) with events posted into asyncio.

The client runs its network thread and reconnects by itself (capped, jittered backoff; MQTT 5, else 3.1.1 with
`protocol: auto`). Its callbacks only post `LinkEvent`s to the asyncio loop; every Sparkplug decision is taken
there. Before every CONNECT the client asks for the Will, where the next NDEATH with a new bdSeq is made, so
each CONNECT carries its own bdSeq (an attempt whose socket never opened reuses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from zhizao.broker.mqtt import (
    Delivery,
    MqttClient,
    MqttError,
    MqttOptions,
    MqttUrlError,
    Protocol,
    TlsFiles,
    Will,
)
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
    """The connection is gone (the client reconnects on its own unless we are stopping)."""

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
"""Called on the network thread before each CONNECT: returns (bdSeq, will topic, will payload)."""


class Published:
    """Handle of one publish: `done` once written to the socket (QoS 0) or acknowledged (QoS 1)."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    @property
    def done(self) -> bool:
        """True once sent (QoS 0) or acknowledged by the broker (QoS 1)."""
        return self._delivery.done

    async def wait(self, within_s: float) -> bool:
        """Wait up to `within_s` seconds for `done` (signalled from the network thread, so poll)."""
        for _ in range(max(1, int(within_s / 0.01))):
            if self.done:
                break
            await asyncio.sleep(0.01)
        return self.done


_PROTOCOLS: dict[object, Protocol] = {"auto": "auto", 5: "5", 3: "3.1.1"}


def mqtt_options(config: MqttConfig, client_id: str) -> MqttOptions:
    """The shared client's options for an edge node: clean start, session expiry 0 (Sparkplug)."""
    tls = config.tls
    return MqttOptions(
        url=config.effective_url(),
        client_id=client_id,
        protocol=_PROTOCOLS[config.protocol],
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        tls=TlsFiles(tls.ca_file, tls.cert_file, tls.key_file, tls.insecure) if tls is not None else None,
        keepalive_s=config.keepalive_s,
        clean_start=True,
        session_expiry_s=0,
        reconnect_min_s=config.reconnect_min_s,
        reconnect_max_s=config.reconnect_max_s,
        max_inflight=100,
    )


class MqttLink:
    """The shared MQTT client configured for Sparkplug: clean start, session expiry 0, Will from `will_factory`."""

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
        try:
            options = mqtt_options(config, client_id)
        except MqttUrlError as exc:  # ZHIZAO_MQTT_URL
            raise LinkError(f"mqtt.url: {exc}") from None
        try:
            self._client = MqttClient(
                options,
                will=self._next_will,
                on_connected=lambda: self._post(Connected(self._bd_seq)),
                on_connect_failed=lambda reason: self._post(ConnectFailed(reason)),
                on_disconnected=lambda reason: self._post(Disconnected(reason)),
                on_subscribed=lambda mid, failed: self._post(Subscribed(mid, failed)),
                on_message=lambda topic, payload: self._post(Message(topic, payload)),
            )
        except MqttError as exc:
            raise LinkError(f"mqtt.{exc}") from None
        self.endpoint = self._client.endpoint

    # ---- network thread -> asyncio ---------------------------------------------------------------------
    def _post(self, event: LinkEvent) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens any more
                loop.call_soon_threadsafe(self._on_event, event)

    def _next_will(self) -> Will:
        bd_seq, topic, payload = self._will_factory()
        self._bd_seq = bd_seq
        return Will(topic, payload, qos=1, retain=False)

    # ---- asyncio side --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background (retried with capped, jittered backoff until `disconnect`)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._client.start()
        except MqttError as exc:
            raise LinkError(f"mqtt.{exc}") from None

    def subscribe(self, topics: list[tuple[str, int]]) -> int:
        """Subscribe to topic filters; returns the mid whose `Subscribed` event confirms them."""
        try:
            return self._client.subscribe(topics)
        except MqttError as exc:
            raise LinkError(f"mqtt {exc}") from None

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Published:
        """Queue a PUBLISH; a lost connection shows as a handle that never gets `done`."""
        try:
            return Published(self._client.publish(topic, payload, qos=qos, retain=retain))
        except MqttError as exc:
            raise LinkError(f"mqtt {exc}") from None

    @property
    def queued_bytes(self) -> int:
        """Bytes still to be written to the socket (back-pressure signal)."""
        return self._client.queued_bytes

    async def disconnect(self, with_will: bool) -> None:
        """Send DISCONNECT (MQTT 5: "Disconnect with Will Message" when `with_will`) and stop the thread."""
        await asyncio.to_thread(self._client.stop, with_will=with_will)

    async def restart(self, with_will: bool = True) -> None:
        """Drop the connection and connect afresh (new CONNECT, new bdSeq); `with_will=False` after an explicit
        NDEATH, so the broker does not publish the Will as a second one."""
        await self.disconnect(with_will=with_will)
        self.start()
