"""Monitoring test helpers: a started cloud service over the OEE test fleet with one client per role; rules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import psycopg

from tests.support.oeefixtures import store_batch
from zhizao.cloud.service import CloudService


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


