"""Display names from the seeds (`zhizao cloud seed`) head the line and machine pages; ids stay as tooltips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.support.browser import browser_tab
from tests.support.dashboard_feed import Cloud


def test_seeded_names_are_shown_instead_of_ids(cloud: Cloud, chromium: Any, artifacts: Path) -> None:
    site_a = cloud.sites[0]
    with psycopg.connect(cloud.service.settings.require_database_url()) as conn:
        conn.execute("UPDATE edge_nodes SET name = 'Machining cell 2' WHERE site_id = %s AND edge_node_id = 'cnc-2'",
                     [site_a])  # fmt: skip
        conn.execute("UPDATE machines SET name = '5-axis centre A' WHERE site_id = %s AND machine_id = 'cnc-2-m01'",
                     [site_a])  # fmt: skip
    with browser_tab(chromium, artifacts, "names-failure.png") as (page, errors):
        page.goto(f"{cloud.url}/")
        page.get_by_label("Access token").fill(cloud.token)
        page.get_by_role("button", name="Sign in").click()
        page.goto(f"{cloud.url}/ui/#/site/{site_a}/line/cnc-2")
        page.locator('article[data-scope="machine"][data-id="cnc-2-m01"]').wait_for()
        assert page.locator("h1").inner_text() == "Machining cell 2"
        card = page.locator('article[data-scope="machine"][data-id="cnc-2-m01"] h2')
        assert card.inner_text() == "5-axis centre A" and card.get_attribute("title") == "cnc-2-m01"
        assert page.locator('article[data-scope="machine"][data-id="cnc-2-m02"] h2').inner_text() == "cnc-2-m02"
        page.goto(f"{cloud.url}/ui/#/site/{site_a}/machine/cnc-2-m01")
        page.locator("#state").wait_for()
        assert page.locator("h1").inner_text() == "5-axis centre A"
        assert not errors, errors
