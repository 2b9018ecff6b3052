"""Report test fixtures: the OEE fleet database, a cloud service over it, and a finished shift of scripted data."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.apifixtures import scratch_database
from tests.support.oeefixtures import Running, make_fleet
from tests.support.reportfixtures import ShiftData, feed_shift
from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.fixture
def running(fresh_database: str) -> Iterator[Running]:
    """The fleet in a fresh database, the cloud service with its OEE service, an admin client."""
    with _service(fresh_database) as r:
        yield r


@contextlib.contextmanager
def _service(db: str) -> Iterator[Running]:
    tags = make_fleet(db)
    service = CloudService(CloudSettings(database_url=db, api_port=0), ingest=False, warm_up=False)
    url = service.start_in_thread()
    token = create_token(db, "admin", "*", "report-admin")
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield Running(url, db, service, tags, client)
    finally:
        client.close()
        service.stop()


@pytest.fixture(scope="module")
def fed(database_url: str) -> Iterator[Running]:
    """One database per module with shift A of 2026-11-02 (08:00-16:00 Shanghai) fed for site-a, m1's stop given a
    reason, Chinese names set; the cloud service over it and an admin client. Tests add comments and targets
    only (never figures), so they share one feed."""
    with scratch_database(database_url) as url, _service(url) as r:
        _fill(r)
        yield r


def _fill(r: Running) -> ShiftData:
    data = feed_shift(r)
    with psycopg.connect(r.db) as conn:
        conn.execute("UPDATE edge_nodes SET name = 'Crank cell', name_zh = '曲轴加工单元' WHERE edge_node_id = 'l1'")
        conn.execute("UPDATE edge_nodes SET name = 'Blisk cell', name_zh = '叶盘单元' WHERE edge_node_id = 'l2'")
        conn.execute("UPDATE sites SET name = 'Site A', name_zh = '甲工厂' WHERE site_id = 'site-a'")
    return data


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, as in the dashboard tests (module scope: see theirs)."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots and exported files go (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
