"""Broker addresses: `mqtt://[user:password@]host[:port]` and `mqtts://...`, overridable by ZHIZAO_MQTT_URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_MQTT_URL = "ZHIZAO_MQTT_URL"


class MqttUrlError(ValueError):
    """An MQTT URL that cannot be used; `reason` says why."""

    def __init__(self, url: str, reason: str, variable: str | None = None) -> None:
        super().__init__(f"{variable}={url!r}: {reason}" if variable else f"mqtt url {url!r}: {reason}")
        self.url, self.reason = url, reason


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
        raise MqttUrlError(url, "scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise MqttUrlError(url, "no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise MqttUrlError(url, "bad port") from None
    return MqttEndpoint(
        parts.hostname,
        port,
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


class MqttEnvironment(BaseSettings):
    """`ZHIZAO_MQTT_URL`: a broker URL that overrides the configured one (edge agents, benchmarks, demo)."""

    model_config = SettingsConfigDict(env_prefix="ZHIZAO_", frozen=True, extra="ignore")

    mqtt_url: str | None = None

    @field_validator("mqtt_url")
    @classmethod
    def _usable(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        try:
            parse_mqtt_url(url.strip())
        except MqttUrlError as exc:
            raise ValueError(exc.reason) from None
        return url.strip()


def mqtt_url_from_env() -> str | None:
    """ZHIZAO_MQTT_URL when set; MqttUrlError naming the variable and its value when it is not a usable URL."""
    try:
        return MqttEnvironment().mqtt_url
    except ValidationError as exc:
        err = exc.errors()[0]
        reason = str(err["msg"]).removeprefix("Value error, ")
        raise MqttUrlError(str(err.get("input")), reason, ENV_MQTT_URL) from None


def resolve_mqtt_url(configured: str | None) -> str:
    """The broker URL to use: ZHIZAO_MQTT_URL if set, else the configured one, else the local default."""
    return mqtt_url_from_env() or configured or "mqtt://127.0.0.1:1883"
