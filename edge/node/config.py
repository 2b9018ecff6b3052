"""Config sections the edge-node runtime owns: `mqtt`, `sparkplug`, `outbox` of the agent config file.

A minimal config needs only `mqtt.url`; every other field has a working default. `ZHIZAO_MQTT_URL`
overrides `mqtt.url` (applied where the agent config is loaded, see `effective_url`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from zhizao.broker.contract.ids import validate_id
from zhizao.broker.mqtt import mqtt_url_from_env


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """TLS for `mqtts://` brokers: CA bundle, optional client certificate (mutual TLS)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(default=False, description="skip hostname verification (tests only)")


class MqttConfig(_Section):
    """Broker connection: URL (`mqtt://host:port` or `mqtts://`), protocol auto (5, else 3.1.1), 5 or 3 (= 3.1.1)."""

    url: str
    protocol: Literal["auto", 5, 3] = "auto"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    client_id: str | None = Field(default=None, description=(
        "default: the edge node id; the shipped Mosquitto ACL (broker/mosquitto/acl) binds topics to the username "
        "(`{site}.{edge node}`), not to the client id; on a broker shared by sites whose edge node ids repeat, "
        "set one per agent (its TLS listener makes it the certificate's CN anyway)"))
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    reconnect_min_s: float = Field(default=1, gt=0, le=60, description="first reconnect delay; doubles per try")
    reconnect_max_s: float = Field(default=30, gt=0, le=600, description="cap of the reconnect delay (jittered)")

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if not (v.startswith("mqtt://") or v.startswith("mqtts://")):
            raise ValueError(f"{v!r} is not an MQTT URL (mqtt://host:port or mqtts://host:port)")
        return v

    @model_validator(mode="after")
    def _reconnect_range(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s={self.reconnect_max_s!r}: must be >= reconnect_min_s "
                             f"({self.reconnect_min_s!r})")
        return self

    def effective_url(self) -> str:
        """The broker URL to use: `ZHIZAO_MQTT_URL` when set, else `url`."""
        return mqtt_url_from_env() or self.url


class SparkplugConfig(_Section):
    """Sparkplug B edge-node behaviour: primary host wait, publish interval, message size."""

    primary_host: str | None = Field(
        default=None, description="Sparkplug host id to wait for (STATE online) before NBIRTH; None: no wait"
    )
    publish_interval_ms: int = Field(default=250, ge=10, le=60_000)
    max_samples_per_message: int = Field(default=5000, ge=1, le=100_000)
    replay_samples_per_interval: int = Field(
        default=50_000,
        ge=1,
        description="historical samples replayed per publish interval, so live data keeps flowing",
    )
    health_interval_s: float = Field(default=5.0, ge=0.1, le=3600, description="node health NDATA period")
    bdseq_file: Path | None = Field(default=None, description="default: <outbox.dir>/bdseq")

    @field_validator("primary_host")
    @classmethod
    def _host_id(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in "+/#")):
            raise ValueError(f"{v!r} is not a Sparkplug host id (non-empty, no '+', '/', '#')")
        return v


class OutboxConfig(_Section):
    """Durable store-and-forward: where, how big, how often fsync, and whether the host sends acks."""

    dir: Path | None = Field(default=None, description="default: .zhizao/edge/{site}/{edge_node}/outbox")
    max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    warn_fraction: float = Field(default=0.8, gt=0.0, le=1.0)
    segment_bytes: int = Field(
        default=16 << 20, ge=1 << 12, description="roll to a new segment file past this"
    )
    fsync_interval_s: float = Field(
        default=1.0, ge=0.0, description="fsync at most this often (power-loss window); 0: fsync every append"
    )
    acks: bool = Field(
        default=True,
        description="true: keep batches until the host acks (zhizao extension); false: plain Sparkplug",
    )

    def resolve_dir(self, site: str, edge_node: str) -> Path:
        """The outbox directory for this edge node (`dir`, or a per-node default under `.zhizao/`)."""
        return self.dir if self.dir is not None else Path(".zhizao", "edge", site, edge_node, "outbox")


def check_id(field: str, value: str) -> str:
    """Validate a Sparkplug id by the contract's id rule; raise IdError (a ValueError) naming the field and value."""
    return validate_id(field, value)
