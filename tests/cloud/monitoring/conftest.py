"""Monitoring fixtures: the OEE test fleet, rules, and the cloud service (API + OEE + monitoring, no ingest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from tests.support.oeefixtures import make_fleet, store_batch
from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings


@dataclass
class Monitored:
    """A started service over the fleet, its tags, and one client per role."""

    db: str
    url: str
    service: CloudService
    tags: dict[tuple[str, str, str], int]
    admin: httpx.Client
    viewer: httpx.Client
    operator: httpx.Client
    engineer_b: httpx.Client  # engineer of site-b only

    def feed(self, tag: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        """Store samples as the ingest would, hand them to the monitoring service, wait until processed."""
        mon = self.service.monitoring
        assert mon is not None
        with psycopg.connect(self.db) as conn:
            store_batch(conn, tag, ts, value)
        mon.on_committed(tag, ts, value)
        assert mon.flush(30)


def add_rule(db: str, rule_type: str, params: dict[str, Any], *, tag: str | None = None, site: str | None = None,
             priority: str = "medium") -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("INSERT INTO monitoring_rules (rule_type, site_id, tag_name, params, priority)"
                           " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                           [rule_type, site, tag, json.dumps(params), priority]).fetchone()
    assert row is not None
    return int(row[0])


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
