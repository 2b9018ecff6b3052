"""Config model of the OPC UA adapter (one `adapters[]` entry with `type: opcua`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from zhizao.edge.config import AdapterSettings

__all__ = ["OpcUaConfig", "PollingConfig", "SecurityConfig", "SubscriptionConfig"]

_HOUR_MS = 3_600_000.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubscriptionConfig(_Section):
    """One subscription with many monitored items: intervals, queue and absolute deadband."""

    publishing_interval_ms: float = Field(default=250.0, gt=0, le=_HOUR_MS)
    sampling_interval_ms: float = Field(default=100.0, gt=0, le=_HOUR_MS)
    queue_size: int = Field(default=100, ge=1, le=100_000, description="values kept per item between publishes")
    deadband: float = Field(default=0.0, ge=0.0, description="absolute deadband for Float/Double nodes; 0: off")
    max_notifications_per_publish: int = Field(default=10_000, ge=0, le=1_000_000, description="0: no limit")
    missing_retry_s: float = Field(default=5.0, gt=0, le=3600, description=(
        "how often nodes the server does not have yet (BadNodeIdUnknown, e.g. a PLC whose address space is "
        "still loading) are tried again while the others are monitored"))

    @model_validator(mode="after")
    def _sane(self) -> SubscriptionConfig:
        if self.sampling_interval_ms > self.publishing_interval_ms * self.queue_size:
            raise ValueError(
                "sampling_interval_ms: longer than the queue covers "
                f"(publishing_interval_ms x queue_size = {self.publishing_interval_ms * self.queue_size})"
            )
        return self


class PollingConfig(_Section):
    """Polling mode: read every node each `interval_ms` (for servers without subscriptions)."""

    interval_ms: float = Field(default=1000.0, ge=10.0, le=_HOUR_MS)


class SecurityConfig(_Section):
    """Channel security and user identity. `mode: None` must be written explicitly (no silent plaintext)."""

    mode: Literal["None", "Sign", "SignAndEncrypt"]
    policy: Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "Basic256Sha256"
    certificate: Path | None = Field(default=None, description="client certificate (DER or PEM)")
    private_key: Path | None = Field(default=None, description="client private key (PEM)")
    server_certificate: Path | None = Field(
        default=None, description="pinned server certificate; without it the client trusts the endpoint's cert"
    )
    application_uri: str = Field(default="urn:zhizao:edge", description="must match the client certificate's URI")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="prefer password_env: no secret in the file")
    password_env: str | None = Field(default=None, description="name of the environment variable with the password")

    @model_validator(mode="after")
    def _complete(self) -> SecurityConfig:
        for key in ("certificate", "private_key"):
            if self.mode != "None" and getattr(self, key) is None:
                raise ValueError(f"{key}: required for mode {self.mode!r} (client certificate and private key)")
        if self.password is not None and self.password_env is not None:
            raise ValueError("password_env: set either password or password_env, not both")
        has_password = self.password is not None or self.password_env is not None
        if self.username is None and has_password:
            raise ValueError("username: required with a password")
        if self.username is not None and not has_password:
            raise ValueError("password: required with username (or password_env)")
        return self


class OpcUaConfig(AdapterSettings):
    """An OPC UA server the agent reads: endpoint, subscription or polling, chunking, security."""

    type: Literal["opcua"]
    endpoint: str
    mode: Literal["subscription", "polling"] = "subscription"
    subscription: SubscriptionConfig = SubscriptionConfig()
    polling: PollingConfig = PollingConfig()
    security: SecurityConfig
    chunk_size: int = Field(
        default=1000, ge=1, le=100_000,
        description="most nodes per Read / monitored items per CreateMonitoredItems (lowered to the server's limits)",
    )
    fast_decode: bool = Field(
        default=True, description="decode data changes straight into arrays (false: asyncua's own decoder)"
    )
    timeout_s: float = Field(default=4.0, gt=0, le=600, description="per-request timeout")
    watchdog_s: float = Field(
        default=5.0, gt=0, le=60,
        description="how often the session is probed; also the probe timeout, so a busy server is not taken for dead",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith("opc.tcp://") or len(v) <= len("opc.tcp://"):
            raise ValueError("not an OPC UA endpoint (opc.tcp://host:port[/path])")
        return v
