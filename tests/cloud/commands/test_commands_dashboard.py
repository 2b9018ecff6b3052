"""The dashboard's remote operations in Chromium, against the real simulator and edge agent: the command panel
(buttons by role, confirmation with a reason, live status until confirmed), the fleet console, the config
history with upload, diff and push; in English and Chinese."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.cloud.dashboard.conftest import artifacts, chromium
from tests.support.browser import browser_tab, fits
from zhizao.bench.command import CommandStack

__all__ = ["artifacts", "chromium"]  # the dashboard tests' fixtures, for this module




def sign_in(page: Any, stack: CommandStack, role: str) -> None:
    page.goto(f"{stack.api_url}/")
    page.get_by_label("Access token").fill(stack.tokens[role])
    page.get_by_role("button", name="Sign in").click()


def send_command(page: Any, button: Any, reason: str) -> None:
    button.click()
    page.locator("#cmd-dialog[open]").wait_for()
    page.locator("#cmd-confirm").click()  # without a reason: refused in the dialog
    page.locator("#cmd-dialog .cmd-error", has_text="reason").wait_for()
    page.locator("#cmd-reason").fill(reason)
    page.locator("#cmd-confirm").click()


def test_command_panel_by_role_with_confirmation_and_live_status(stack: CommandStack, chromium: Any,
                                                                  artifacts: Path) -> None:  # fmt: skip
    m = stack.machines[0]
    machine_page = f"{stack.api_url}/ui/#/site/{stack.site}/machine/{m}"
    with browser_tab(chromium, artifacts, "commands-failure.png") as (page, errors):
        sign_in(page, stack, "engineer")
        page.goto(machine_page)
        page.locator("#commands").wait_for()
        send_command(page, page.locator("#commands button[data-method=Stop]"), "test stop")
        page.locator("#cmd-live[data-status=confirmed]").wait_for(timeout=10_000)
        assert not stack.sim.model.run_cmd[0]
        page.locator("#cmd-value-Rate-Setpoint").fill("45.5")
        send_command(page, page.locator("#commands button[data-metric='Rate/Setpoint']"), "test setpoint")
        page.locator("#cmd-live[data-status=confirmed]", has_text="read back 45.5").wait_for(timeout=10_000)
        assert float(stack.sim.model.setpoint[0]) == 45.5
        send_command(page, page.locator("#commands button[data-method=Start]"), "test start")
        page.locator("#cmd-live[data-status=confirmed]", has_text="Start").wait_for(timeout=10_000)
        assert page.locator("#cmd-list li").count() >= 3
        fits(page)
        assert not errors, errors
    with browser_tab(chromium, artifacts, "commands-viewer-failure.png") as (page, errors):
        sign_in(page, stack, "viewer")
        page.goto(machine_page)
        page.locator("#commands").wait_for()
        assert page.locator("#commands button").count() == 0  # a viewer sees the history, no buttons
        assert "may not send commands" in page.locator("#commands").inner_text()
        page.locator("#lang").click()
        page.locator("#commands h2", has_text="远程指令").wait_for()
        assert "已确认" in page.locator("#cmd-list").inner_text()
        assert not errors, errors


def test_fleet_console_and_config_history_with_upload_diff_and_push(stack: CommandStack, chromium: Any,
                                                                     artifacts: Path) -> None:  # fmt: skip
    raw = stack.config_raw()
    with browser_tab(chromium, artifacts, "fleet-failure.png") as (page, errors):
        sign_in(page, stack, "engineer")
        page.locator("#fleet-link").click()
        row = page.locator(f"#fleet tr[data-edge='{stack.edge}']")
        row.locator("[data-status=online]").wait_for(timeout=10_000)
        assert stack.machines[0] in row.inner_text()
        fits(page)
        row.locator("a").click()
        page.locator("#config-text").wait_for()
        page.locator("#config-text").fill("site: nope\n")
        page.locator("#config-upload").click()
        page.locator("#config-error", has_text="document.site").wait_for()
        page.locator("#config-text").fill(yaml.safe_dump(raw, sort_keys=False))
        page.locator("#config-comment").fill("first")
        page.locator("#config-upload").click()
        page.locator("#config-versions button[data-version='1']").wait_for()
        raw["sparkplug"]["publish_interval_ms"] = 60
        page.locator("#config-text").fill(yaml.safe_dump(raw, sort_keys=False))
        page.locator("#config-upload").click()
        page.locator("#config-status", has_text="version 2").wait_for()
        page.locator("#config-versions button[data-version='2']").wait_for()
        assert "+  publish_interval_ms: 60" in page.locator("#config-diff").inner_text()
        page.locator("#config-push").click()
        page.locator("#config-pushes li[data-status=applied]").wait_for(timeout=30_000)
        page.locator("#config-versions button[data-version='1']").click()
        page.locator("#config-push", has_text="v1").wait_for()  # an older version is a rollback
        page.locator("#lang").click()
        page.get_by_role("heading", name="配置版本", exact=True).wait_for()
        # The one console error: the browser's own line for the refused upload (400) above.
        assert [e for e in errors if "status of 400" not in e] == [] and len(errors) == 1, errors
