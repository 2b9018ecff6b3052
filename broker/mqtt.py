"""Broker addresses: `mqtt://[user:password@]host[:port]` and `mqtts://...`, overridable by ZHIZAO_MQTT_URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

ENV_MQTT_URL = "ZHIZAO_MQTT_URL"


class MqttUrlError(ValueError):
    """An MQTT URL that cannot be used."""


@dataclass(frozen=True)
class MqttEndpoint:
    """Where and how to connect to a broker."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Parse an MQTT URL; raise MqttUrlError naming the URL when it is not usable."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise MqttUrlError(f"mqtt url {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise MqttUrlError(f"mqtt url {url!r}: no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise MqttUrlError(f"mqtt url {url!r}: bad port") from None
    return MqttEndpoint(
        parts.hostname,
        port,
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def resolve_mqtt_url(configured: str | None) -> str:
    """The broker URL to use: ZHIZAO_MQTT_URL if set, else the configured one, else the local default."""
    return os.environ.get(ENV_MQTT_URL) or configured or "mqtt://127.0.0.1:1883"
