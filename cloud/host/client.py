"""The primary host's MQTT connection: STATE birth/Will, subscriptions, publishing, over the shared client.

The client itself (TLS, MQTT 5 with fallback to 3.1.1, reconnect backoff) is `zhizao.broker.mqtt.MqttClient`;
its errors become `HostError` here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

from zhizao.broker.extensions import ExtensionError, decode_state, encode_state
from zhizao.broker.mqtt import MqttClient, MqttError, MqttOptions, Protocol, Will
from zhizao.broker.sparkplug.topics import NAMESPACE, state_topic

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int], None]
"""Called on the network thread with (topic, payload, receive time in epoch ms); must not block."""

__all__ = ["HostClient", "HostError", "MessageHandler", "Protocol", "now_ms", "subscriptions"]


class HostError(RuntimeError):
    """The host could not connect or publish (bad URL, broker unreachable, protocol failure)."""


def now_ms() -> int:
    """Current UTC time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def subscriptions(
    host_id: str, *, shared: bool = False, sites: tuple[str, ...] = (), share_group: str = "zhizao-ingest"
) -> list[tuple[str, int]]:
    """The (filter, qos) list the host subscribes to.

    Not shared: the whole namespace, or only the given sites (groups). Shared: DATA through `$share/<group>/...` so workers split the load,
    and births/deaths on ordinary subscriptions, since every worker needs every node's alias map.
    """
    own = (state_topic(host_id), 1)
    if not shared:
        return [own] + ([(f"{NAMESPACE}/{site}/#", 1) for site in sites] or [(f"{NAMESPACE}/#", 1)])
    groups = sites or ("+",)
    subs = [own]
    for site in groups:
        subs += [(f"$share/{share_group}/{NAMESPACE}/{site}/{t}/#", 1) for t in ("NDATA", "DDATA")]
        subs += [(f"{NAMESPACE}/{site}/{t}/#", 1) for t in ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH")]
    return subs


class HostClient:
    """A Sparkplug 3.0 primary host connection: Will + birth on `spBv1.0/STATE/<host_id>`, auto-reconnect."""

    def __init__(
        self,
        mqtt_url: str,
        host_id: str,
        on_message: MessageHandler,
        *,
        subscriptions: list[tuple[str, int]],
        protocol: Protocol = "auto",
        keepalive: int = 30,
        on_reconnected: Callable[[], None] | None = None,
    ) -> None:
        self.host_id = host_id
        # Called on the network thread when a later connection is subscribed, before its first message: what
        # was published while the host was away (births included) never reaches it (clean start).
        self._on_reconnected = on_reconnected
        self._state_topic = state_topic(host_id)
        self._handler = on_message
        self._subs = subscriptions
        self._subscribe_mid: int | None = None
        self._state_ts = now_ms()
        self._connected = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self.reconnects = 0
        self._was_connected = False
        options = MqttOptions(
            url=mqtt_url,
            client_id=f"{host_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            protocol=protocol,
            keepalive_s=keepalive,
            clean_start=True,
            session_expiry_s=0,
            reconnect_min_s=1.0,
            reconnect_max_s=15.0,
            max_queued=10_000,  # acks queued while offline stay bounded
        )
        try:
            self._client = MqttClient(
                options,
                will=self._next_will,
                on_connected=self._on_connect,
                on_disconnected=self._on_disconnect,
                on_subscribed=self._on_subscribe,
                on_message=self._on_message,
            )
        except MqttError as exc:
            raise HostError(f"mqtt {exc}") from None
        self._where = self._client.where

    @property
    def connected(self) -> bool:
        """Whether the MQTT session is up."""
        return self._connected.is_set()

    @property
    def protocol(self) -> str:
        """The MQTT version in use ("5" or "3.1.1")."""
        return self._client.protocol

    def _next_will(self) -> Will:
        # A new timestamp per CONNECT; the birth after it repeats it (tck-id-host-topic-phid-*).
        self._state_ts = now_ms()
        return Will(self._state_topic, encode_state(False, self._state_ts), qos=1, retain=True)

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and start the network thread; raise HostError if not online within `wait_s`."""
        try:
            self._client.start()
        except MqttError as exc:
            raise HostError(f"mqtt {exc}") from None
        if not self._connected.wait(wait_s):
            self.stop(publish_offline=False)
            problem = self._client.last_problem
            raise HostError(f"no MQTT session with {self._where} within {wait_s:.0f} s"
                            + (f" ({problem})" if problem else ""))

    def stop(self, publish_offline: bool = True) -> None:
        """Publish STATE offline (the Will is not sent on a clean disconnect), disconnect, stop the thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        if publish_offline and self._connected.is_set():
            delivery = self._client.publish(self._state_topic, encode_state(False, self._state_ts), qos=1, retain=True)
            if not delivery.wait(3.0):
                log.warning("STATE offline was not confirmed by the broker")
        self._client.stop()
        self._connected.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Publish (thread-safe); False when it was not sent or queued (QoS 0 offline, paho queue full)."""
        try:
            return self._client.publish(topic, payload, qos=qos, retain=retain).accepted
        except MqttError as exc:
            raise HostError(f"mqtt {exc}") from None

    # --- callbacks (network thread) ---

    def _on_connect(self) -> None:
        # Subscribed before the birth, as the spec asks: STATE online (and `connected`) follow the SUBACK,
        # so no edge node can publish a birth the host is not yet subscribed to.
        try:
            self._subscribe_mid = self._client.subscribe(self._subs)
        except MqttError as exc:
            log.error("host %s cannot subscribe: %s", self.host_id, exc)

    def _on_subscribe(self, mid: int, refused: tuple[str, ...]) -> None:
        if mid != self._subscribe_mid:
            return
        if refused:
            log.warning("broker refused %d of the host's %d subscriptions: %s", len(refused), len(self._subs),
                        refused[0])
        if self._was_connected and self._on_reconnected is not None:
            self._on_reconnected()
        # Same timestamp as the Will of this connection.
        self._client.publish(self._state_topic, encode_state(True, self._state_ts), qos=1, retain=True)
        self._connected.set()
        self._was_connected = True
        log.info("host %s online at %s (MQTT %s)", self.host_id, self._where, self._client.protocol)

    def _on_disconnect(self, reason: str) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self._stopping:
            return
        if self._was_connected:
            self.reconnects += 1
        if was:
            log.warning("host %s lost the broker (%s); reconnecting", self.host_id, reason)

    def _on_message(self, topic: str, payload: bytes) -> None:
        received = now_ms()
        if topic == self._state_topic:
            self._on_own_state(payload)
            return
        self._handler(topic, payload, received)

    def _on_own_state(self, payload: bytes) -> None:
        try:
            online, ts = decode_state(payload)
        except ExtensionError:
            online, ts = False, 0
        if not online and not self._stopping:
            # Someone (a stale Will, another instance) said we are offline: say we are online again.
            log.info("host %s saw its own STATE offline (ts %s); republishing online", self.host_id, ts)
            self._client.publish(self._state_topic, encode_state(True, self._state_ts), qos=1, retain=True)
