"""The primary host's MQTT connection (paho-mqtt 2.x): STATE birth/Will, subscriptions, publishing.

This is the only module of the host that imports paho; paho errors become `HostError` here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from zhizao.broker.extensions import ExtensionError, decode_state, encode_state
from zhizao.broker.mqtt import MqttEndpoint, parse_mqtt_url
from zhizao.broker.sparkplug.topics import NAMESPACE, state_topic

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int], None]
"""Called on paho's network thread with (topic, payload, receive time in epoch ms); must not block."""

Protocol = Literal["auto", "5", "3.1.1"]

# CONNACK codes meaning "this broker does not speak MQTT 5" (v5 0x84, v3.1.1 1).
_UNSUPPORTED_PROTOCOL = {132, 1}


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
    ) -> None:
        try:
            self._endpoint: MqttEndpoint = parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            raise HostError(str(exc)) from None
        self.host_id = host_id
        self._state_topic = state_topic(host_id)
        self._handler = on_message
        self._subs = subscriptions
        self._subscribe_mid: int | None = None
        self._protocol: Protocol = protocol
        self._v5 = protocol != "3.1.1"
        self._keepalive = keepalive
        self._state_ts = now_ms()
        self._connected = threading.Event()
        self._tcp_failed = False  # nothing listens: no reason to try another protocol version
        self._stopping = False
        self._lock = threading.Lock()
        self.reconnects = 0
        self._client = self._make_client()

    @property
    def connected(self) -> bool:
        """Whether the MQTT session is up."""
        return self._connected.is_set()

    def _make_client(self) -> mqtt.Client:
        client_id = f"{self.host_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        version = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        kwargs: dict[str, Any] = {} if self._v5 else {"clean_session": True}
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kwargs)
        ep = self._endpoint
        if ep.username:
            client.username_pw_set(ep.username, ep.password)
        if ep.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        client.max_queued_messages_set(10_000)  # acks queued while offline stay bounded
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._set_will(client)
        return client

    def _set_will(self, client: mqtt.Client) -> None:
        # A new timestamp per connection; the birth on connect repeats it (tck-id-host-topic-phid-*).
        self._state_ts = now_ms()
        client.will_set(self._state_topic, encode_state(False, self._state_ts), qos=1, retain=True)

    def start(self, wait_s: float = 10.0) -> None:
        """Connect and start paho's network thread; raise HostError if not connected within `wait_s`."""
        self._connect()
        if not self._connected.wait(wait_s):
            if self._protocol == "auto" and self._v5 and not self._tcp_failed:
                # Some brokers close the socket on an MQTT 5 CONNECT instead of answering.
                self._fallback_to_v311()
                if self._connected.wait(wait_s):
                    return
            self.stop(publish_offline=False)
            raise HostError(
                f"no MQTT session with {self._endpoint.host}:{self._endpoint.port} within {wait_s:.0f} s"
            )

    def _connect(self) -> None:
        ep = self._endpoint
        try:
            if self._v5:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 0
                self._client.connect_async(
                    ep.host, ep.port, keepalive=self._keepalive, clean_start=True, properties=props
                )
            else:
                self._client.connect_async(ep.host, ep.port, keepalive=self._keepalive)
            self._client.loop_start()
        except (OSError, ValueError) as exc:
            raise HostError(f"cannot connect to {ep.host}:{ep.port}: {exc}") from exc

    def _fallback_to_v311(self) -> None:
        log.info("broker did not accept MQTT 5; falling back to MQTT 3.1.1")
        self._client.loop_stop()
        self._v5 = False
        self._client = self._make_client()
        self._connect()

    def stop(self, publish_offline: bool = True) -> None:
        """Publish STATE offline (the Will is not sent on a clean disconnect), disconnect, stop the thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        if publish_offline and self._connected.is_set():
            info = self._client.publish(
                self._state_topic, encode_state(False, self._state_ts), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError):
                log.warning("STATE offline was not confirmed by the broker")
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Publish (thread-safe); False when it was not sent or queued (QoS 0 offline, paho queue full)."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, RuntimeError) as exc:
            raise HostError(f"publish to {topic!r} failed: {exc}") from exc
        # QoS > 0 while disconnected: paho keeps the message and sends it after the reconnect.
        return info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN)

    # --- paho callbacks (network thread) ---

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the host connection: %s", reason)
            if self._protocol == "auto" and self._v5 and reason.value in _UNSUPPORTED_PROTOCOL:
                threading.Thread(target=self._fallback_to_v311, daemon=True).start()
            return
        # Subscribed before the birth, as the spec asks: STATE online (and `connected`) follow the SUBACK,
        # so no edge node can publish a birth the host is not yet subscribed to.
        _, self._subscribe_mid = client.subscribe(self._subs)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], props: object
    ) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.warning("broker refused %d of the host's %d subscriptions: %s", len(refused), len(reasons), refused[0])
        # Same timestamp as the Will of this connection.
        client.publish(self._state_topic, encode_state(True, self._state_ts), qos=1, retain=True)
        self._connected.set()
        log.info("host %s online at %s:%s", self.host_id, self._endpoint.host, self._endpoint.port)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._tcp_failed = True

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self._stopping:
            return
        self.reconnects += 1
        if was:
            log.warning("host %s lost the broker (%s); reconnecting", self.host_id, reason)
        self._set_will(client)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received = now_ms()
        topic = msg.topic
        payload = bytes(msg.payload)
        if topic == self._state_topic:
            self._on_own_state(client, payload)
            return
        self._handler(topic, payload, received)

    def _on_own_state(self, client: mqtt.Client, payload: bytes) -> None:
        try:
            online, ts = decode_state(payload)
        except ExtensionError:
            online, ts = False, 0
        if not online and not self._stopping:
            # Someone (a stale Will, another instance) said we are offline: say we are online again.
            log.info("host %s saw its own STATE offline (ts %s); republishing online", self.host_id, ts)
            client.publish(self._state_topic, encode_state(True, self._state_ts), qos=1, retain=True)
