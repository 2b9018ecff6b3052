"""Cloud service settings, read from the environment (`ZHIZAO_*`), with errors that name the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhizao.cloud.storage.migrate import TimescaleHorizons

if TYPE_CHECKING:
    from zhizao.cloud.ingest.settings import IngestSettings

__all__ = ["CloudSettings", "SettingsError"]


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the environment variable and its value."""


# field name -> environment variable; every field of CloudSettings can be set this way.
_ENV: dict[str, str] = {
    "database_url": "ZHIZAO_DATABASE_URL",
    "mqtt_url": "ZHIZAO_MQTT_URL",
    "host_id": "ZHIZAO_HOST_ID",
    "data_dir": "ZHIZAO_DATA_DIR",
    "api_host": "ZHIZAO_API_HOST",
    "api_port": "ZHIZAO_API_PORT",
    "api_root_path": "ZHIZAO_API_ROOT_PATH",
    "api_docs": "ZHIZAO_API_DOCS",
    "max_body_bytes": "ZHIZAO_API_MAX_BODY_BYTES",
    "series_max_points": "ZHIZAO_SERIES_MAX_POINTS",
    "series_max_range_days": "ZHIZAO_SERIES_MAX_RANGE_DAYS",
    "series_max_buckets": "ZHIZAO_SERIES_MAX_BUCKETS",
    "series_rollup_lag_s": "ZHIZAO_SERIES_ROLLUP_LAG_S",
    "db_pool_size": "ZHIZAO_DB_POOL_SIZE",
    "chunk_interval": "ZHIZAO_TS_CHUNK_INTERVAL",
    "compress_after": "ZHIZAO_TS_COMPRESS_AFTER",
    "retain_raw_for": "ZHIZAO_TS_RETAIN_RAW_FOR",
    "retain_1m_for": "ZHIZAO_TS_RETAIN_1M_FOR",
    "retain_1h_for": "ZHIZAO_TS_RETAIN_1H_FOR",
    "mqtt_protocol": "ZHIZAO_MQTT_PROTOCOL",
    "ingest_shared_subscription": "ZHIZAO_INGEST_SHARED_SUBSCRIPTION",
    "ingest_sites": "ZHIZAO_INGEST_SITES",
}
SHARE_GROUP = "zhizao-ingest"  # the $share group of the host's DATA subscriptions (cloud.host.client)
# Horizons that may be switched off with an empty value or "off".
_OPTIONAL_HORIZONS = {"compress_after", "retain_raw_for", "retain_1m_for", "retain_1h_for"}


class CloudSettings(BaseModel):
    """Everything `zhizao cloud serve` and the demo need to run the cloud service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = None
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    host_id: str = Field(default="zhizao-cloud", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    data_dir: Path = Path("./.zhizao")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_root_path: str = ""
    # /docs and /openapi.json describe the API and hold no data, so they need no token; false removes them.
    api_docs: bool = True
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    series_max_points: int = Field(default=100_000, ge=10)
    series_max_range_days: float = Field(default=400.0, gt=0)
    series_max_buckets: int = Field(default=20_000, ge=10)
    # Buckets newer than this are computed from raw samples: rollups are refreshed a little after commits.
    series_rollup_lag_s: float = Field(default=300.0, ge=0)
    db_pool_size: int = Field(default=8, ge=1, le=200)
    chunk_interval: str = "1 day"
    compress_after: str | None = "7 days"
    retain_raw_for: str | None = "365 days"
    retain_1m_for: str | None = None
    retain_1h_for: str | None = None
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = "auto"
    # Several workers split DATA through `$share/zhizao-ingest/...` (each still sees every birth).
    ingest_shared_subscription: bool = False
    ingest_sites: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CloudSettings:
        """Settings from `ZHIZAO_*` variables (then `overrides`); SettingsError names the variable at fault."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, var in _ENV.items():
            raw = env.get(var)
            if raw is None:
                continue
            if field in _OPTIONAL_HORIZONS and raw.strip().lower() in ("", "off", "none"):
                values[field] = None
            elif field == "ingest_shared_subscription":
                values[field] = _share_flag(var, raw)
            elif field == "ingest_sites":
                values[field] = tuple(p.strip() for p in raw.split(",") if p.strip())
            elif raw.strip() != "":
                values[field] = raw.strip()
        values.update(overrides)
        password_file = env.get("ZHIZAO_DATABASE_PASSWORD_FILE")
        if password_file and values.get("database_url"):
            values["database_url"] = _with_password(str(values["database_url"]), password_file)
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "?"
            where = _ENV.get(field, field)
            raise SettingsError(f"{where}={err.get('input')!r}: {err['msg']}") from None

    def require_database_url(self) -> str:
        """The database URL, or SettingsError telling how to give one."""
        if not self.database_url:
            raise SettingsError("ZHIZAO_DATABASE_URL is not set; give postgresql://user@host:port/dbname")
        return self.database_url

    def ingest_settings(self) -> IngestSettings:
        """Settings of the ingest that `CloudService` runs."""
        from zhizao.cloud.ingest.settings import IngestSettings

        return IngestSettings(horizons=self.horizons(), mqtt_protocol=self.mqtt_protocol,
                              shared_subscription=self.ingest_shared_subscription, sites=self.ingest_sites)

    def horizons(self) -> TimescaleHorizons:
        """TimescaleDB horizons for `apply_migrations`."""
        return TimescaleHorizons(
            chunk_interval=self.chunk_interval,
            compress_after=self.compress_after,
            retain_raw_for=self.retain_raw_for,
            retain_1m_for=self.retain_1m_for,
            retain_1h_for=self.retain_1h_for,
        )


def _share_flag(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on", SHARE_GROUP):
        return True
    raise SettingsError(f"{var}={raw!r}: give true/false (the share group is always {SHARE_GROUP!r})")


def _with_password(url: str, password_file: str) -> str:
    """The database URL with the password read from a file (Docker/Kubernetes secrets); a URL that already
    carries a password is kept."""
    parts = urlsplit(url)
    if parts.password:
        return url
    try:
        password = Path(password_file).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"ZHIZAO_DATABASE_PASSWORD_FILE={password_file!r}: cannot read it ({exc})") from None
    if not parts.username:
        raise SettingsError(f"ZHIZAO_DATABASE_PASSWORD_FILE={password_file!r}: ZHIZAO_DATABASE_URL must name "
                            "the user (postgresql://user@host/db)")
    host = parts.netloc.split("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}").geturl()
