"""CloudSettings from ZHIZAO_* variables: defaults, overrides, horizons, and errors naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhizao.cloud.settings import CloudSettings, SettingsError


def test_defaults_and_environment() -> None:
    s = CloudSettings.from_env({})
    assert (s.host_id, s.api_port, s.data_dir, s.database_url) == ("zhizao-cloud", 8080, Path(".zhizao"), None)
    s = CloudSettings.from_env({"ZHIZAO_DATABASE_URL": "postgresql://db/x", "ZHIZAO_HOST_ID": "cloud-2",
                                "ZHIZAO_API_PORT": "9000", "ZHIZAO_TS_COMPRESS_AFTER": "off",
                                "ZHIZAO_TS_RETAIN_RAW_FOR": "90 days", "ZHIZAO_API_DOCS": "false"})
    assert (s.database_url, s.host_id, s.api_port, s.api_docs) == ("postgresql://db/x", "cloud-2", 9000, False)
    h = s.horizons()
    assert (h.compress_after, h.retain_raw_for, h.chunk_interval) == (None, "90 days", "1 day")


def test_overrides_win_over_the_environment() -> None:
    s = CloudSettings.from_env({"ZHIZAO_API_PORT": "9000"}, api_port=0)
    assert s.api_port == 0


@pytest.mark.parametrize(
    "env,message",
    [
        ({"ZHIZAO_API_PORT": "eighty"}, "ZHIZAO_API_PORT='eighty': "),
        ({"ZHIZAO_API_PORT": "70000"}, "ZHIZAO_API_PORT='70000': "),
        ({"ZHIZAO_HOST_ID": "bad host/id"}, "ZHIZAO_HOST_ID='bad host/id': "),
        ({"ZHIZAO_SERIES_MAX_POINTS": "1"}, "ZHIZAO_SERIES_MAX_POINTS='1': "),
    ],
)
def test_errors_name_the_variable_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        CloudSettings.from_env(env)
    assert str(info.value).startswith(message)


def test_database_url_is_required_to_serve() -> None:
    with pytest.raises(SettingsError, match="ZHIZAO_DATABASE_URL is not set"):
        CloudSettings.from_env({}).require_database_url()


def test_password_file_and_ingest_scale_out(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("s3cr/t:pw\n")
    s = CloudSettings.from_env({"ZHIZAO_DATABASE_URL": "postgresql://zhizao@db:5432/zhizao",
                                "ZHIZAO_DATABASE_PASSWORD_FILE": str(secret),
                                "ZHIZAO_INGEST_SHARED_SUBSCRIPTION": "zhizao-ingest",
                                "ZHIZAO_INGEST_SITES": "sh-lingang, js-suzhou", "ZHIZAO_MQTT_PROTOCOL": "3.1.1"})
    assert s.database_url == "postgresql://zhizao:s3cr%2Ft%3Apw@db:5432/zhizao"
    ingest = s.ingest_settings()
    assert (ingest.shared_subscription, ingest.sites, ingest.mqtt_protocol) == (True, ("sh-lingang", "js-suzhou"),
                                                                               "3.1.1")
    assert ingest.horizons == s.horizons()
    with pytest.raises(SettingsError, match="ZHIZAO_INGEST_SHARED_SUBSCRIPTION='workers'"):
        CloudSettings.from_env({"ZHIZAO_INGEST_SHARED_SUBSCRIPTION": "workers"})
    with pytest.raises(SettingsError, match="ZHIZAO_DATABASE_PASSWORD_FILE='/nonexistent': cannot read it"):
        CloudSettings.from_env({"ZHIZAO_DATABASE_URL": "postgresql://u@h/d",
                                "ZHIZAO_DATABASE_PASSWORD_FILE": "/nonexistent"})


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        CloudSettings.from_env({"ZHIZAO_API_PORT": "eighty", "ZHIZAO_MQTT_URL": "ftp://broker",
                                "ZHIZAO_DB_POOL_SIZE": "8", "ZHIZAO_TS_RETAIN_RAW_FOR": "90 days"})
    lines = str(info.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("ZHIZAO_MQTT_URL='ftp://broker': scheme must be mqtt:// or mqtts://")
    assert lines[1].startswith("ZHIZAO_API_PORT='eighty': Input should be a valid integer")


def test_aliased_and_empty_variables() -> None:
    s = CloudSettings.from_env({"ZHIZAO_API_MAX_BODY_BYTES": "4096", "ZHIZAO_TS_CHUNK_INTERVAL": "2 days",
                                "ZHIZAO_API_PORT": " ", "ZHIZAO_TS_RETAIN_1H_FOR": "5 years"})
    assert (s.max_body_bytes, s.chunk_interval, s.api_port, s.retain_1h_for) == (4096, "2 days", 8080, "5 years")
    with pytest.raises(SettingsError, match=r"^ZHIZAO_API_MAX_BODY_BYTES='12': "):
        CloudSettings.from_env({"ZHIZAO_API_MAX_BODY_BYTES": "12"})
    # Without from_env, only the given values count.
    assert CloudSettings(api_port=1).host_id == "zhizao-cloud"


def test_cloud_serve_with_bad_variables_exits_with_the_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIZAO_")}
    env.update(ZHIZAO_API_PORT="eighty", ZHIZAO_HOST_ID="bad host/id", ZHIZAO_DATA_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "zhizao", "cloud", "serve"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ZHIZAO_HOST_ID='bad host/id': String should match pattern" in proc.stderr
    assert "ZHIZAO_API_PORT='eighty': Input should be a valid integer" in proc.stderr


def test_acks_default_on_also_with_a_shared_subscription_and_can_be_set() -> None:
    from zhizao.cloud.settings import CloudSettings

    assert CloudSettings.from_env({}).ingest_settings().acks is True
    # The ack ledger in PostgreSQL keeps acks correct with several workers (issue 15): no longer off by default.
    assert CloudSettings.from_env({"ZHIZAO_INGEST_SHARED_SUBSCRIPTION": "true"}).ingest_settings().acks is True
    assert CloudSettings.from_env({"ZHIZAO_INGEST_ACKS": "false"}).ingest_settings().acks is False
    forced = CloudSettings.from_env({"ZHIZAO_INGEST_SHARED_SUBSCRIPTION": "true", "ZHIZAO_INGEST_ACKS": "true"})
    assert forced.ingest_settings().acks is True
