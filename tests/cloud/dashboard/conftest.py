"""Dashboard fixtures: the real cloud service on a fresh database with two fed sites, a token, Chromium."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.dashboard_feed import Cloud, Line
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.fixture
def cloud(fresh_database: str, mqtt_url: str, unique_id: str) -> Iterator[Cloud]:
    """Cloud service (API + ingest + live hub) with two sites: a: two lines of two machines, b: one line."""
    site_a, site_b = f"{unique_id}-a", f"{unique_id}-b"
    settings = CloudSettings(database_url=fresh_database, mqtt_url=mqtt_url, host_id=unique_id, api_port=0)
    service = CloudService(settings, warm_up=False, ingest_settings=IngestSettings(sites=(site_a, site_b)))
    url = service.start_in_thread()
    lines = {
        "cnc-1": Line(mqtt_url, site_a, "cnc-1", ["cnc-1-m01", "cnc-1-m02"]),
        "cnc-2": Line(mqtt_url, site_a, "cnc-2", ["cnc-2-m01", "cnc-2-m02"]),
        "smt-1": Line(mqtt_url, site_b, "smt-1", ["smt-1-m01", "smt-1-m02"]),
    }
    try:
        token = create_token(fresh_database, "operator", "*", "dashboard-test")
        for i, line in enumerate(lines.values()):
            line.birth()
            line.history(seed=i)
        _wait_stored(url, token, site_a, "cnc-2-m02")
        _wait_stored(url, token, site_b, "smt-1-m02")
        yield Cloud(url, token, service, lines, [site_a, site_b])
    finally:
        for line in lines.values():
            line.close()
        service.stop()


def _wait_stored(url: str, token: str, site: str, machine: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/api/v1/latest", params={"site": site, "machine": machine},
                      headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if r.status_code == 200 and any(v["name"] == "Temperature/Spindle" for v in r.json()):
            return
        time.sleep(0.2)
    raise AssertionError(f"the ingest did not store {site}/{machine} within {timeout} s")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium driven by Playwright (never a downloaded browser).

    Module scope, not session: while Playwright's sync API is running it keeps an asyncio loop running in
    the main thread, and every later test that calls asyncio.run() would fail.
    """
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
    """Where screenshots go (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
