"""The API docs render in a real browser with no internet: Swagger UI and ReDoc come from the wheel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.browser import browser_tab
from tests.support.dashboard_feed import Cloud


def test_swagger_ui_and_redoc_render_without_a_cdn(cloud: Cloud, chromium: Any, artifacts: Path) -> None:
    with browser_tab(chromium, artifacts, "api-docs-failure.png") as (page, errors):
        outside: list[tuple[str, str]] = []
        own = (cloud.url, f"blob:{cloud.url}")
        page.on("request", lambda r: None if r.url.startswith(own) else outside.append((r.resource_type, r.url)))
        page.goto(f"{cloud.url}/docs")
        page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        assert any("/api/v1/quarantine" in p for p in paths) and any("/api/v1/state-codes" in p for p in paths)
        page.goto(f"{cloud.url}/redoc")
        page.wait_for_selector("text=zhizao cloud API", timeout=20_000)
        # Everything that makes the pages work comes from the service; ReDoc's bundle only links its own
        # "powered by" logo from its vendor's site, an image that simply stays missing offline.
        assert [u for kind, u in outside if kind != "image"] == [], outside
        assert {u for _, u in outside} <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, outside
        assert [e for e in errors if "ERR_NAME_NOT_RESOLVED" not in e] == [], errors
