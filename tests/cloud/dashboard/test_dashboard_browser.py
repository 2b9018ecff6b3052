"""The dashboard in Debian's Chromium against the real service: login, drill-down, live state, language.

Screenshots of the overview and a machine page (English and Chinese) go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.browser import browser_tab, fits
from tests.support.dashboard_feed import FAILURE, RUNNING, Cloud


def test_login_drill_down_live_state_and_language(cloud: Cloud, chromium: Any, artifacts: Path) -> None:
    site_a, site_b = cloud.sites
    with browser_tab(chromium, artifacts, "dashboard-failure.png") as (page, errors):
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        # Login: a wrong token is refused with a message, the right one opens the overview.
        page.goto(f"{cloud.url}/")
        page.get_by_label("Access token").fill("zz_wrong")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").filter(has_text="not accepted").wait_for()
        errors.clear()  # the browser logs the refused token's 401 as a console error; that one is expected
        page.get_by_label("Access token").fill(cloud.token)
        page.get_by_role("button", name="Sign in").click()

        # Overview: the cluster and a card per site, live stream connected.
        page.locator(f'article[data-site="{site_b}"]').wait_for()
        assert page.locator("article[data-site]").count() == 2
        assert page.locator('[data-scope="cluster"]').count() == 1
        page.locator(".live-on").wait_for(timeout=10_000)
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-overview.png"))

        # Drill down: site -> line -> machine.
        page.get_by_role("link", name=site_a).click()
        page.locator('article[data-scope="line"][data-id="cnc-2"]').wait_for()
        assert page.locator('.chip[data-machine="cnc-2-m01"]').get_attribute("data-state-code") == str(RUNNING)
        fits(page)
        page.get_by_role("link", name="cnc-2", exact=True).click()
        page.locator('article[data-scope="machine"][data-id="cnc-2-m02"]').wait_for()
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-line.png"))
        page.get_by_role("link", name="cnc-2-m01", exact=True).first.click()
        page.locator("#state").wait_for()
        assert page.locator("h1").inner_text() == "cnc-2-m01"
        page.locator(".signal-chart canvas").wait_for()  # uPlot drew the temperature's last hour
        assert "Temperature/Spindle" in page.locator("#signal").inner_text()
        assert page.locator("#state").get_attribute("data-state-code") == str(RUNNING)

        # Live: a failure on the wire shows on the open machine page without a reload.
        published = time.monotonic()
        cloud.lines["cnc-2"].state("cnc-2-m01", FAILURE)
        page.locator(f'#state[data-state-code="{FAILURE}"]').wait_for(timeout=10_000)
        seen_after = time.monotonic() - published
        assert page.locator(".state-name").inner_text() == "Equipment failure"
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-machine.png"))

        # Language: Simplified Chinese for the header, the state and the panels; kept across pages.
        page.get_by_role("button", name="切换到简体中文").click()
        page.get_by_role("button", name="退出").wait_for()
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        page.locator(".state-name", has_text="设备故障").wait_for()
        assert page.get_by_role("heading", name="状态时间线，近 8 小时").count() == 1
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-machine-zh.png"))
        page.get_by_role("link", name="集群").click()
        page.get_by_text("区域产业集群").wait_for()
        page.locator(f'article[data-site="{site_b}"] canvas').wait_for()
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-overview-zh.png"))

        # Offline by design: every request went to the service itself (no CDN).
        assert all(u.startswith(cloud.url) or u.startswith("data:") for u in requests), requests
        assert not errors, errors
        print(f"state change seen in the browser {seen_after:.2f} s after publishing")
