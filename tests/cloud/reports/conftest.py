"""Report test fixtures: the OEE fleet database, a cloud service over it, and a finished shift of scripted data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

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
    tags = make_fleet(fresh_database)
    service = CloudService(CloudSettings(database_url=fresh_database, api_port=0), ingest=False, warm_up=False)
    url = service.start_in_thread()
    token = create_token(fresh_database, "admin", "*", "report-admin")
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield Running(url, fresh_database, service, tags, client)
    finally:
        client.close()
        service.stop()


@pytest.fixture
def shift_data(running: Running) -> ShiftData:
    """Shift A of 2026-11-02 (08:00-16:00 Shanghai) fed for site-a, a reason given, Chinese line names set."""
    data = feed_shift(running)
    with psycopg.connect(running.db) as conn:
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
