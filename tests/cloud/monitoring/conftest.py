"""Monitoring fixtures: the OEE test fleet, rules, and the cloud service (API + OEE + monitoring, no ingest)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.monitorfixtures import Monitored, add_rule
from tests.support.oeefixtures import make_fleet
from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings


@pytest.fixture
def monitored(fresh_database: str) -> Iterator[Monitored]:
    """Fleet + a threshold rule on Temperature/Spindle (high 70, deadband 2) + the service and clients."""
    tags = make_fleet(fresh_database)
    add_rule(fresh_database, "detector", {"detector": "none"})
    add_rule(fresh_database, "threshold", {"high": 70.0, "deadband": 2.0}, tag="Temperature/Spindle", priority="high")
    service = CloudService(CloudSettings(database_url=fresh_database, api_port=0), ingest=False, warm_up=False)
    assert service.monitoring is not None and service.monitoring.webhooks is not None
    service.monitoring.webhooks.base_s = 0.05  # retries in tens of ms, not seconds
    service.monitoring.webhooks.max_attempts = 3
    url = service.start_in_thread()

    def client(role: str, sites: str, name: str) -> httpx.Client:
        token = create_token(fresh_database, role, sites, name)
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    clients = [client("admin", "*", "admin"), client("viewer", "site-a", "viewer a"),
               client("operator", "site-a", "operator a"), client("engineer", "site-b", "engineer b")]
    try:
        yield Monitored(fresh_database, url, service, tags, *clients)
    finally:
        for c in clients:
            c.close()
        service.stop()
