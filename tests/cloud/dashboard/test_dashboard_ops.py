"""Operators give stops a reason and engineers edit the shift calendar, in Debian's Chromium against the real service.

The operator's stop is a four-minute unspecified stop (code 40000) published over MQTT after the fed history.
Screenshots of both screens (English, and the calendar in Chinese) go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import browser_tab, fits
from tests.support.dashboard_feed import RUNNING, Cloud, now_ms
from zhizao.cloud.auth import create_token

UNSPECIFIED, INLET_JAM = 40000, 60000  # DESIGN.md section 4
MACHINE = "cnc-1-m01"


def _api(cloud: Cloud, token: str) -> httpx.Client:
    return httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _unspecified_stop(
    cloud: Cloud, api: httpx.Client, site: str, machine: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Publish a four-minute unspecified stop that ended six minutes ago; return it as /api/v1/states reports it.

    It is published after the machine's history (the OEE service keeps the state changes of batches after a
    machine's first one), and after the history's last state change, so it is a change, not a late sample.
    """
    end = now_ms() - 6 * 60_000
    cloud.lines["cnc-1"].data(machine, [(end - 4 * 60_000, "State", UNSPECIFIED), (end, "State", RUNNING)])
    deadline = time.monotonic() + timeout
    frm = (datetime.now(UTC) - timedelta(hours=8)).isoformat()
    while time.monotonic() < deadline:
        states = api.get("/api/v1/states", params={"site": site, "machine": machine, "from": frm}).json()
        stops = [s for s in states if s["code"] == UNSPECIFIED]
        if stops:
            return stops[0]
        time.sleep(0.3)
    raise AssertionError(f"no unspecified stop of {site}/{machine} in /api/v1/states within {timeout} s")


@contextlib.contextmanager
def _open(chromium: Any, artifacts: Path, cloud: Cloud, token: str, hash_: str) -> Iterator[tuple[Any, list[str]]]:
    """A fresh tab signed in with `token`, showing `#hash_`; errors the page logs are collected."""
    with browser_tab(chromium, artifacts, "dashboard-ops-failure.png") as (page, errors):
        page.goto(f"{cloud.url}/ui/#{hash_}")
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        yield page, errors


def test_an_operator_gives_a_stop_a_reason_and_a_viewer_cannot(
    cloud: Cloud, chromium: Any, artifacts: Path, fresh_database: str
) -> None:
    site = cloud.sites[0]
    with _api(cloud, cloud.token) as api:
        stop = _unspecified_stop(cloud, api, site, MACHINE)
    key = stop["stop_start"]

    # A viewer sees the timeline, but neither the list of stops nor the form nor marks to click.
    viewer = create_token(fresh_database, "viewer", "*", "ops-viewer")
    with _open(chromium, artifacts, cloud, viewer, f"/site/{site}/machine/{MACHINE}") as (page, errors):
        page.locator("#timeline svg rect.cat-unspecified").first.wait_for()
        page.locator(".m-pareto li").first.wait_for()
        assert page.locator("#stops").count() == 0
        assert page.locator(".tl-mark").count() == 0
        assert page.locator("#reason-form").count() == 0
        assert page.get_by_text("Stops without a reason").count() == 0
        assert not errors, errors

    # The operator: the stop is listed under the timeline and outlined on it.
    with _open(chromium, artifacts, cloud, cloud.token, f"/site/{site}/machine/{MACHINE}") as (page, errors):
        row = page.locator(f'#stops tr[data-key="{key}"]')
        row.wait_for()
        assert page.get_by_role("heading", name="Stops without a reason").count() == 1
        cells = row.locator("td").all_inner_texts()
        assert cells[1:3] == ["4 min", "Unspecified stop (40000)"], cells
        assert page.locator(".m-pareto").inner_text().count("Unspecified stop") == 1
        fits(page)

        # Picking it on the timeline opens the form with the site's reasons, grouped by category.
        page.locator(f'.tl-mark[data-key="{key}"]').click()
        form = page.locator("#reason-form")
        form.wait_for()
        assert page.locator(f'.tl-mark.picked[data-key="{key}"]').count() == 1
        assert row.locator("button").get_attribute("aria-pressed") == "true"
        assert page.locator("#reason").evaluate("el => document.activeElement === el")
        options = page.locator("#reason option").all_inner_texts()
        assert "Inlet jam (60000)" in options and "Preventive maintenance (210000)" in options
        assert not any("(40000)" in o or "(10000)" in o for o in options), options
        assert page.locator('#reason optgroup[label="Material"] option[value="60000"]').count() == 1
        # Save without a choice: the form says which field is missing and sends nothing.
        form.get_by_role("button", name="Save").click()
        page.locator("#reason-error", has_text="code").wait_for()
        page.select_option("#reason", str(INLET_JAM))
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-stop-reason.png"))

        form.get_by_role("button", name="Save").click()
        page.locator("#reason-ok", has_text="Inlet jam").wait_for(timeout=40_000)
        assert "OEE was recomputed" in page.locator("#reason-ok").inner_text()
        # The stop left the list and the marks; timeline and pareto were read again.
        assert row.count() == 0 and page.locator(".tl-mark").count() == 0
        page.get_by_text("No stops without a reason in the last 8 h.").wait_for()
        assert page.locator("#timeline svg rect.cat-unspecified").count() == 0
        assert page.locator("#timeline svg rect.cat-material").count() == 1
        pareto = page.locator(".m-pareto").inner_text()
        assert "Inlet jam" in pareto and "Unspecified stop" not in pareto, pareto
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-stop-reason-saved.png"))
        assert not errors, errors

    # The API agrees: the interval carries the reason, the pareto counts it and no longer the unspecified stop.
    with _api(cloud, cloud.token) as api:
        frm = (datetime.now(UTC) - timedelta(hours=8)).isoformat()
        states = api.get("/api/v1/states", params={"site": site, "machine": MACHINE, "from": frm}).json()
        given = next(s for s in states if s["stop_start"] == key)
        assert (given["code"], given["original_code"], given["category"]) == (
            INLET_JAM,
            UNSPECIFIED,
            "material",
        )
        losses = api.get(
            "/api/v1/losses", params={"scope": "machine", "site": site, "id": MACHINE, "from": frm}
        )
        pareto = {p["code"]: p for p in losses.json()["pareto"]}
        assert INLET_JAM in pareto and UNSPECIFIED not in pareto, pareto
        assert pareto[INLET_JAM]["seconds"] == pytest.approx(240, abs=1)
        assert pareto[INLET_JAM]["reason"] == "inlet jam"


def _calendar_body(tomorrow: str) -> dict[str, Any]:
    return {
        "timezone": "Asia/Shanghai",
        "shifts": [
            {
                "name": "Early",
                "start": "06:00",
                "hours": 8,
                "days": [1, 2, 3, 4, 5, 6],
                "breaks": [{"start": "10:00", "minutes": 15}],
            },
            {
                "name": "Late",
                "start": "14:00",
                "hours": 8,
                "days": [1, 2, 3, 4, 5, 6],
                "breaks": [{"start": "18:00", "minutes": 30}],
            },
            {"name": "Night", "start": "22:00", "hours": 8, "days": [1, 2, 3, 4, 5]},
        ],
        "no_shift": [{"name": "National Day", "first_day": "2026-10-01", "last_day": "2026-10-07"}],
        "planned_stops": [
            {
                "start": f"{tomorrow}T08:00:00+08:00",
                "end": f"{tomorrow}T12:00:00+08:00",
                "code": 210000,
                "note": "spindle service",
            }
        ],
        "state_classes": {
            "planned": [150000, 160000, 170000, 210000],
            "availability_loss": [40000, 100000, 180000],
            "performance_loss": [20000, 50000, 60000],
        },
    }


def test_an_engineer_edits_the_shift_calendar(
    cloud: Cloud, chromium: Any, artifacts: Path, fresh_database: str
) -> None:
    site = cloud.sites[0]
    engineer = create_token(fresh_database, "engineer", "*", "ops-engineer")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    with _api(cloud, engineer) as api:
        put = api.put(f"/api/v1/sites/{site}/calendar", json=_calendar_body(tomorrow))
        assert put.status_code == 200, put.text

    # An operator's site page has no link to the calendar; an engineer's has.
    with _open(chromium, artifacts, cloud, cloud.token, f"/site/{site}") as (page, errors):
        page.locator('article[data-scope="line"]').first.wait_for()
        assert page.locator("#calendar-link").count() == 0

    with _open(chromium, artifacts, cloud, engineer, f"/site/{site}") as (page, errors):
        page.locator("#calendar-link").wait_for()
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-site-engineer.png"))
        page.locator("#calendar-link").click()
        page.get_by_role("heading", name="Shift calendar").wait_for()
        assert page.url.endswith(f"#/site/{site}/calendar")
        shifts = page.locator(".shift")
        assert shifts.count() == 3
        late = shifts.nth(1)
        assert late.locator('[data-k="name"]').input_value() == "Late"
        assert late.locator('[data-k="end"]').input_value() == "22:00"
        assert "ends next day" in shifts.nth(2).locator(".shift-span").inner_text()
        assert late.locator(".break [data-k=start]").input_value() == "18:00"
        assert [c.is_checked() for c in shifts.nth(2).locator("[data-day]").all()] == [True] * 5 + [False] * 2
        stop = page.locator(".pstop").first
        assert stop.locator('[data-k="start"]').input_value() == f"{tomorrow} 08:00+08:00"
        assert stop.locator('[data-k="note"]').input_value() == "spindle service"
        assert (
            page.locator('.classes li[data-code="210000"]').inner_text() == "Preventive maintenance (210000)"
        )
        assert "National Day" in page.locator(".cal-side").inner_text()
        assert "Asia/Shanghai" in page.locator(".cal-top").inner_text()
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-calendar.png"), full_page=True)

        save = page.get_by_role("button", name="Save calendar")
        error = page.locator("#cal-error")
        # Bad time text: the API's error names the field and the value, and that field is marked.
        early_start = shifts.nth(0).locator('.shift-main [data-k="start"]')
        early_start.fill("6:00")
        save.click()
        error.filter(has_text="shifts.0.start='6:00'").wait_for()
        assert early_start.get_attribute("aria-invalid") == "true"
        assert early_start.evaluate("el => document.activeElement === el")
        early_start.fill("06:00")
        # A planned stop that ends before it starts: the API's error names planned_stops[0].end.
        stop.locator('[data-k="end"]').fill(f"{tomorrow} 07:00+08:00")
        save.click()
        error.filter(has_text="planned_stops[0].end").wait_for()
        assert "must be after start" in error.inner_text()
        assert stop.locator('[data-k="end"]').get_attribute("aria-invalid") == "true"
        assert early_start.get_attribute("aria-invalid") is None
        stop.locator('[data-k="end"]').fill(f"{tomorrow} 12:00+08:00")
        # An end that is not a time of day cannot become the shift's hours: the page names the field itself.
        late_end = late.locator('.shift-main [data-k="end"]')
        late_end.fill("25:00")
        save.click()
        error.filter(has_text="shifts.1.end=").wait_for()
        assert late_end.get_attribute("aria-invalid") == "true"
        page.screenshot(path=str(artifacts / "dashboard-calendar-error.png"))
        # The browser logs the two refused PUTs (400) as console errors; those are expected.
        assert sum("400" in e for e in errors) == len(errors) == 2, errors
        errors.clear()

        # The edit: the late shift ends at 22:30, and a second planned stop is added from the keyboard.
        late_end.fill("22:30")
        assert late.locator(".shift-span").inner_text() == "8.5 h"
        page.locator("#add-planned").click()
        added = page.locator(".pstop").nth(1)
        assert added.locator('[data-k="start"]').evaluate("el => document.activeElement === el")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.type("cleaning of the coolant tank")
        save.click()
        page.locator("#cal-ok", has_text="recomputed").wait_for(timeout=40_000)
        assert error.count() == 0 or error.inner_text() == ""
        assert page.locator(".shift").nth(1).locator('.shift-main [data-k="end"]').input_value() == "22:30"
        assert page.locator(".pstop").count() == 2
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-calendar-saved.png"))

        # Simplified Chinese: the same page, every text from the dictionary.
        page.get_by_role("button", name="切换到简体中文").click()
        page.get_by_role("heading", name="班次日历").wait_for()
        assert page.get_by_role("heading", name="计划停机").count() == 1
        assert page.get_by_role("button", name="保存日历").count() == 1
        assert "周一" in page.locator(".shift").first.inner_text()
        fits(page)
        page.screenshot(path=str(artifacts / "dashboard-calendar-zh.png"))
        assert not errors, errors

    # The API stored what the page saved.
    with _api(cloud, engineer) as api:
        stored = api.get(f"/api/v1/sites/{site}/calendar").json()
    late_shift = next(s for s in stored["shifts"] if s["name"] == "Late")
    assert late_shift["hours"] == 8.5 and late_shift["start"] == "14:00"
    assert late_shift["breaks"] == [{"start": "18:00", "minutes": 30.0, "code": 150000}]
    assert [s["name"] for s in stored["shifts"]] == ["Early", "Late", "Night"]
    assert stored["no_shift"][0]["name"] == "National Day"
    assert stored["state_classes"]["planned"] == [150000, 160000, 170000, 210000]
    assert stored["updated_by"] == "ops-engineer" and stored["source"] == "api"
    notes = sorted((p["note"], p["code"]) for p in stored["planned_stops"])
    assert notes == [("cleaning of the coolant tank", 210000), ("spindle service", 210000)]
    added_stop = next(p for p in stored["planned_stops"] if p["note"].startswith("cleaning"))
    assert datetime.fromisoformat(added_stop["end"]) - datetime.fromisoformat(
        added_stop["start"]
    ) == timedelta(hours=4)


def test_every_text_is_in_both_dictionaries() -> None:
    """Same key set in English and Chinese; every literal key the modules ask for exists; new texts are Chinese."""
    static = Path(__file__).resolve().parents[3] / "cloud" / "dashboard" / "static"
    en = json.loads((static / "i18n" / "en.json").read_text(encoding="utf-8"))
    zh = json.loads((static / "i18n" / "zh-CN.json").read_text(encoding="utf-8"))
    assert set(en) == set(zh), set(en) ^ set(zh)
    used = {
        k for f in static.rglob("*.js") for k in re.findall(r'\bt\("([^"]+)"', f.read_text(encoding="utf-8"))
    }
    assert used and not used - set(en), sorted(used - set(en))
    ours = [
        k
        for k in zh
        if k.split(".")[0] in ("stops", "reason", "cal", "day") or k in ("save", "saving", "cancel")
    ]
    assert len(ours) > 60
    not_chinese = [k for k in ours if not re.search(r"[\u4e00-\u9fff]", zh[k])]
    assert not not_chinese, not_chinese
    assert (zh["reason.label"], zh["cal.title"], zh["cal.planned"], zh["save"]) == (
        "停机原因",
        "班次日历",
        "计划停机",
        "保存",
    )
