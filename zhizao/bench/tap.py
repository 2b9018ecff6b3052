"""`BrokerTap`: a benchmark's subscriber on the broker, built by the one MQTT client factory (`MqttClient`).

The benchmarks count or time what reaches the broker (`bench edge`, `bench cluster`, `bench live`); each does
so through a tap: protocol auto (5, else 3.1.1), the URL's credentials and TLS, its own client id, QoS 0
subscriptions made again on every connection. `on_message(topic, payload)` runs on the network thread.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence

import click

from zhizao.broker.mqtt import MqttClient, MqttError, MqttOptions


class BrokerTap:
    """Subscribes to `filters` (QoS 0) at `url`; returns once the broker has granted them (else ClickException)."""

    def __init__(
        self,
        url: str,
        name: str,
        filters: Sequence[str],
        on_message: Callable[[str, bytes], None],
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._filters = [(f, 0) for f in filters]
        self._granted = threading.Event()
        self._refused: tuple[str, ...] = ()
        client_id = f"zhizao-bench-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique: taps never kick each other
        try:
            self._client = MqttClient(
                MqttOptions(url=url, client_id=client_id),
                on_connected=self._subscribe,
                on_subscribed=self._subscribed,
                on_message=on_message,
            )
            self._client.start()
        except MqttError as exc:
            raise click.ClickException(f"broker: mqtt {exc}") from None
        if not self._granted.wait(timeout_s) or self._refused:
            problem = ", ".join(self._refused) or self._client.last_problem or f"no SUBACK within {timeout_s:g} s"
            self._client.stop()
            raise click.ClickException(f"broker at {self._client.where}: cannot subscribe to "
                                       f"{', '.join(filters)}: {problem}")  # fmt: skip

    def _subscribe(self) -> None:  # network thread, after each CONNACK
        self._client.subscribe(self._filters)

    def _subscribed(self, mid: int, refused: tuple[str, ...]) -> None:
        self._refused = refused
        self._granted.set()

    def close(self) -> None:
        """Disconnect and end the network thread."""
        self._client.stop()
