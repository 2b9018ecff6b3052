"""The remote-operations stack the command, config and dashboard tests share: the real OPC UA simulator, one
edge agent (signed commands), the cloud service on a scratch database, started once per test module and
stopped after it (a stack left running would answer the messages of later tests on the shared broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from zhizao.bench.command import CommandStack, command_stack

RATE = 25  # commands per machine and minute in this cloud


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandStack]:
    """Simulator + cloud + edge agent with two machines; a scratch database, dropped afterwards."""
    from urllib.parse import urlsplit

    from tests.conftest import MQTT_URL

    name = f"zhizao_t_cmd_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(database_url)._replace(path=f"/{name}").geturl()
    try:
        with command_stack(url, MQTT_URL, tmp_path_factory.mktemp("cmd"), result_timeout_s=10.0,
                           rate_per_min=RATE) as st:  # fmt: skip
            yield st
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
