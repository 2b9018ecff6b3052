"""Cloud service settings from the environment (`ZHIZAO_*`, pydantic-settings); every bad variable is reported.

`CloudSettings.from_env()` reads the variables; `CloudSettings(...)` alone takes only the given values.
A `SettingsError` lists every variable at fault at once, one line each: `ZHIZAO_API_PORT='eighty': ...`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from zhizao.broker.mqtt import MqttUrlError, parse_mqtt_url
from zhizao.cloud.storage.migrate import TimescaleHorizons

if TYPE_CHECKING:
    from zhizao.cloud.ingest.settings import IngestSettings

__all__ = ["CloudSettings", "SettingsError"]

PREFIX = "ZHIZAO_"
SHARE_GROUP = "zhizao-ingest"  # the $share group of the host's DATA subscriptions (cloud.host.client)
# Horizons that may be switched off with an empty value, "off" or "none".
_OPTIONAL_HORIZONS = {"compress_after", "retain_raw_for", "retain_1m_for", "retain_1h_for"}
# The environment `from_env` reads; None: `CloudSettings(...)` takes only its arguments.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("zhizao_cloud_environ", default=None)


DATABASE_URL_FILE = "database-url"
"""File under the data dir where a running `zhizao demo` leaves its private database's URL, so that
`zhizao cloud token create` and the other cloud commands work beside it without flags."""


class SettingsError(ValueError):
    """Settings that cannot be used; the message names every environment variable at fault and its value."""


class CloudSettings(BaseSettings):
    """Everything `zhizao cloud serve` and the demo need to run the cloud service."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True, populate_by_name=True,
                                      validate_default=False)

    database_password_file: Path | None = None  # Docker/Kubernetes secret holding the database password
    database_url: str | None = None
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    host_id: str = Field(default="zhizao-cloud", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    data_dir: Path = Path("./.zhizao")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_root_path: str = ""
    # /docs and /openapi.json describe the API and hold no data, so they need no token; false removes them.
    api_docs: bool = True
    max_body_bytes: int = Field(default=1 << 20, ge=1024, validation_alias="ZHIZAO_API_MAX_BODY_BYTES")
    series_max_points: int = Field(default=100_000, ge=10)
    series_max_range_days: float = Field(default=400.0, gt=0)
    series_max_buckets: int = Field(default=20_000, ge=10)
    # Buckets newer than this are computed from raw samples: rollups are refreshed a little after commits.
    series_rollup_lag_s: float = Field(default=300.0, ge=0)
    db_pool_size: int = Field(default=8, ge=1, le=200)
    # Aliases: these variables are not named ZHIZAO_<FIELD> (names fixed by deploy/ and the README).
    chunk_interval: str = Field(default="1 day", validation_alias="ZHIZAO_TS_CHUNK_INTERVAL")
    compress_after: str | None = Field(default="7 days", validation_alias="ZHIZAO_TS_COMPRESS_AFTER")
    retain_raw_for: str | None = Field(default="365 days", validation_alias="ZHIZAO_TS_RETAIN_RAW_FOR")
    retain_1m_for: str | None = Field(default=None, validation_alias="ZHIZAO_TS_RETAIN_1M_FOR")
    retain_1h_for: str | None = Field(default=None, validation_alias="ZHIZAO_TS_RETAIN_1H_FOR")
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = "auto"
    # Several workers split DATA through `$share/zhizao-ingest/...` (each still sees every birth).
    ingest_shared_subscription: bool = False
    # Delivery acks (the zhizao extension), on unless set false; with a shared subscription too, where the ack
    # watermark comes from the batches every worker committed (cloud/host/shared.py).
    ingest_acks: bool | None = None
    ingest_sites: Annotated[tuple[str, ...], NoDecode] = ()
    # A font with Chinese glyphs for PDF shift reports (.ttf/.otf/.ttc); unset: the first one installed of
    # cloud/reports/pdf.py FONT_CANDIDATES (Debian fonts-wqy-microhei first).
    report_font: Path | None = None
    # Remote commands (cloud/commands): the Ed25519 signing key (default <data_dir>/command-key.pem, created on
    # first start), how long a sent command may go without an outcome, and commands per machine and minute.
    commands: bool = True
    command_key_file: Path | None = None
    command_result_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    command_rate_per_min: int = Field(default=30, ge=1, le=10_000)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then (in `from_env`) the environment; no .env or secrets directory."""
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        if isinstance(env_settings, EnvSettingsSource):
            env_settings.env_vars = {k.lower(): v for k, v in environ.items()}  # case-insensitive, as its own
        return (init_settings, env_settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CloudSettings:
        """Settings from `ZHIZAO_*` variables (`overrides` win); SettingsError names every variable at fault."""
        with _reading(os.environ if environ is None else environ):
            try:
                return cls(**overrides)
            except ValidationError as exc:
                raise SettingsError(describe(exc)) from None

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        name = info.field_name
        if name in _OPTIONAL_HORIZONS and text.lower() in ("", "off", "none"):
            return None
        if text == "":
            raise PydanticUseDefault()  # an empty variable means "not set"
        if name == "ingest_sites":
            return tuple(p.strip() for p in text.split(",") if p.strip())
        if name == "ingest_shared_subscription":
            flag = text.lower()
            if flag in ("0", "false", "no", "off"):
                return False
            if flag in ("1", "true", "yes", "on", SHARE_GROUP):
                return True
            raise ValueError(f"give true/false (the share group is always {SHARE_GROUP!r})")
        return text

    @field_validator("database_password_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                path.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read it ({exc})") from None
        return path

    @field_validator("database_url")
    @classmethod
    def _with_password(cls, url: str | None, info: ValidationInfo) -> str | None:
        password_file = info.data.get("database_password_file")
        if url is None or password_file is None:
            return url
        return _with_password(url, password_file)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, url: str) -> str:
        try:
            parse_mqtt_url(url)
        except MqttUrlError as exc:
            raise ValueError(exc.reason) from None
        return url

    def require_database_url(self) -> str:
        """The database URL, or SettingsError telling how to give one."""
        if not self.database_url:
            raise SettingsError("ZHIZAO_DATABASE_URL is not set; give postgresql://user@host:port/dbname")
        return self.database_url

    def ingest_settings(self) -> IngestSettings:
        """Settings of the ingest that `CloudService` runs."""
        from zhizao.cloud.ingest.settings import IngestSettings

        acks = True if self.ingest_acks is None else self.ingest_acks
        return IngestSettings(horizons=self.horizons(), mqtt_protocol=self.mqtt_protocol, acks=acks,
                              shared_subscription=self.ingest_shared_subscription, sites=self.ingest_sites)

    def command_key_path(self) -> Path:
        """Where the command signing key lives."""
        return self.command_key_file or self.data_dir / "command-key.pem"

    def horizons(self) -> TimescaleHorizons:
        """TimescaleDB horizons for `apply_migrations`."""
        return TimescaleHorizons(
            chunk_interval=self.chunk_interval,
            compress_after=self.compress_after,
            retain_raw_for=self.retain_raw_for,
            retain_1m_for=self.retain_1m_for,
            retain_1h_for=self.retain_1h_for,
        )


@contextmanager
def _reading(environ: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable of an error location (a field name or the variable itself)."""
    if not loc:
        return "(settings)"
    key = str(loc[0])
    if key.startswith(PREFIX):
        return key
    field = CloudSettings.model_fields.get(key)
    alias = field.validation_alias if field is not None else None
    return alias if isinstance(alias, str) else f"{PREFIX}{key.upper()}"


def describe(exc: ValidationError) -> str:
    """One line per bad setting: `VARIABLE=value: what is wrong`."""
    lines = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{_variable(err['loc'])}={err.get('input')!r}: {msg}")
    return "\n".join(lines)


def _with_password(url: str, password_file: Path) -> str:
    """The database URL with the password read from a file (Docker/Kubernetes secrets); a URL that already
    carries a password is kept."""
    parts = urlsplit(url)
    if parts.password:
        return url
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read ZHIZAO_DATABASE_PASSWORD_FILE={str(password_file)!r} ({exc})") from None
    if not parts.username:
        raise ValueError("must name the user (postgresql://user@host/db) when ZHIZAO_DATABASE_PASSWORD_FILE is "
                         "given")
    host = parts.netloc.split("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}").geturl()
