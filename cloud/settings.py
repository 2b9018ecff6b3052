"""Cloud service settings, read from the environment (`ZHIZAO_*`), with errors that name the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud.storage.migrate import TimescaleHorizons

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
}
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
            elif raw.strip() != "":
                values[field] = raw.strip()
        values.update(overrides)
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

    def horizons(self) -> TimescaleHorizons:
        """TimescaleDB horizons for `apply_migrations`."""
        return TimescaleHorizons(
            chunk_interval=self.chunk_interval,
            compress_after=self.compress_after,
            retain_raw_for=self.retain_raw_for,
            retain_1m_for=self.retain_1m_for,
            retain_1h_for=self.retain_1h_for,
        )
