"""The dashboard's shift report page in Debian's Chromium: figures as the API has them, CSV and PDF downloads,
an operator's comment, the A4 print view in English and Chinese; line targets on the overview and line pages.

Screenshots and the printed PDFs go to test-artifacts/ (git-ignored): report-page-en.png, report-print-en.png,
report-print-zh.png, report-print-zh.pdf, report-overview-targets.png, report-line-target.png.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader

from tests.support.browser import browser_tab, fits
from tests.support.oeefixtures import Running
from tests.support.reportfixtures import (
    SHIFT_START,
    by_id,
    csv_blocks,
    current_shift_windows,
    pdf_text,
)
from zhizao.cloud.auth import create_token
from zhizao.cloud.oee.store import dt


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


@contextlib.contextmanager
def _open(chromium: Any, artifacts: Path, r: Running, token: str, hash_: str) -> Iterator[tuple[Any, list[str]]]:
    with browser_tab(chromium, artifacts, "report-page-failure.png") as (page, errors):
        page.goto(f"{r.url}/ui/#{hash_}")
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        yield page, errors


def test_report_page_downloads_comment_and_print_view(fed: Running, chromium: Any,
                                                      artifacts: Path) -> None:
    fed.client.put("/api/v1/sites/site-a/lines/l1/target", json={"oee": 0.8}).raise_for_status()
    api = fed.client.get("/api/v1/reports/shift", params={"site": "site-a", "shift_start": dt(SHIFT_START)
                                                              .isoformat()}).json()
    operator = create_token(fed.db, "operator", "site-a", "report-operator")
    with _open(chromium, artifacts, fed, operator, f"/site/site-a/report/{SHIFT_START}") as (page, errors):
        doc = page.locator("#report-doc")
        doc.get_by_role("heading", name="Shift report · Site A").wait_for()
        summary = doc.locator(".report-summary table.figures tbody tr")
        assert summary.count() == 3
        site_row = summary.nth(0).locator("td")
        assert site_row.nth(0).inner_text() == _pct(api["site_figures"]["oee"])
        l1 = by_id(api["lines"], "l1")
        crank = doc.locator(".report-summary table.figures tr", has_text="Crank cell")
        assert crank.locator("td").nth(0).inner_text() == _pct(l1["oee"])
        assert crank.locator("td").last.inner_text() == "80.0 %"
        assert doc.locator('[data-line="l1"] .report-target').inner_text() == "Target 80.0 % · below target"
        stops = doc.locator('[data-line="l1"] table.stop-table tbody tr')
        assert [stops.nth(i).get_attribute("data-code") for i in range(stops.count())] == \
            [str(s["code"]) for s in l1["top_stops"]]
        fits(page)
        page.screenshot(path=str(artifacts / "report-page-en.png"), full_page=True)

        # The exports: real links, fetched with the token and saved.
        assert "/api/v1/reports/shift?" in (page.locator("#report-csv").get_attribute("href") or "")
        with page.expect_download() as got:
            page.locator("#report-csv").click()
        blocks = csv_blocks(Path(got.value.path()).read_bytes())
        assert {r["line_id"] for r in blocks["figures"] if r["level"] == "line"} == {"l1", "l2"}
        with page.expect_download() as got:
            page.locator("#report-pdf").click()
        assert got.value.suggested_filename.endswith("-en.pdf")
        assert "Crank cell" in pdf_text(Path(got.value.path()).read_bytes())

        # An operator's comment on line l1, shown at once and stored.
        page.locator("#comment-text").fill("Coolant pump replaced on m2")
        page.locator("#comment-line").select_option("l1")
        page.locator("#comment-form button[type=submit]").click()
        doc.locator(".report-comments li", has_text="Coolant pump replaced on m2").wait_for()
        stored = fed.client.get("/api/v1/reports/shift", params={"site": "site-a", "line": "l1",
                                                                     "shift_start": str(SHIFT_START)}).json()
        assert [(c["line"], c["author"]) for c in stored["comments"]] == [("l1", "report-operator")]

        # The print view: no header, tools or form; A4 pages from the browser's own print.
        page.emulate_media(media="print")
        assert page.locator("header.top").is_hidden() and page.locator(".report-tools").is_hidden()
        assert page.locator("#comment-form").is_hidden()
        page.screenshot(path=str(artifacts / "report-print-en.png"), full_page=True)
        page.emulate_media(media="screen")

        page.locator("#lang").click()
        doc.get_by_role("heading", name="班次报告 · 甲工厂").wait_for()
        assert doc.locator(".report-summary table.figures tr", has_text="曲轴加工单元").count() == 1
        assert doc.locator('[data-line="l1"] .report-target').inner_text() == "目标 80.0 % · 未达标"
        page.emulate_media(media="print")
        page.screenshot(path=str(artifacts / "report-print-zh.png"), full_page=True)
        # The page size is the print CSS's own (@page size: A4), not one the test asks for.
        printed = page.pdf(prefer_css_page_size=True, print_background=True)
        (artifacts / "report-print-zh.pdf").write_bytes(printed)
        reader = PdfReader(artifacts / "report-print-zh.pdf")
        box = reader.pages[0].mediabox
        assert abs(float(box.width) - 595.3) < 2 and abs(float(box.height) - 841.9) < 2  # A4 in points
        text = pdf_text(printed)
        assert "曲轴加工单元" in text and "Coolant pump replaced on m2" in text
        page.evaluate("localStorage.setItem('zhizao.lang', 'en')")
        assert not errors, errors


def test_viewer_sees_no_comment_form_and_targets_show_on_overview_and_line(
        fed: Running, chromium: Any, artifacts: Path) -> None:
    fed.client.put("/api/v1/sites/site-a/lines/l1/target", json={"oee": 0.8}).raise_for_status()
    current_shift_windows(fed.db)  # l1's current shift: OEE 2700 / 4600 = 58.7 % by sums
    viewer = create_token(fed.db, "viewer", "*", "report-viewer")
    with _open(chromium, artifacts, fed, viewer, f"/site/site-a/report/{SHIFT_START}/l2") as (page, errors):
        page.locator("#report-doc").get_by_role("heading", name="Line · Blisk cell").wait_for()
        assert page.locator(".report-summary").count() == 0 and page.locator("#comment-form").count() == 0

        page.goto(f"{fed.url}/ui/#/")
        item = page.locator('.target-list li[data-line="l1"]')
        item.wait_for()
        assert item.locator(".target-val").inner_text() == "58.7 % / 80.0 %"
        assert item.locator(".target-state").inner_text() == "below target"
        # l2 has no target: not listed.
        assert page.locator('.target-list li[data-line="l2"]').count() == 0
        fits(page)
        page.screenshot(path=str(artifacts / "report-overview-targets.png"))

        page.goto(f"{fed.url}/ui/#/site/site-a/line/l1")
        note = page.locator(".line-head .target-note")
        note.wait_for()
        assert note.inner_text() == "Target 80.0 % · below target (−21.3 pts)"
        assert note.get_attribute("data-target") == "0.8"
        assert page.locator(".line-head .oee-val").inner_text() == "58.7 %"
        assert page.locator("#report-link").get_attribute("href") == "#/site/site-a/line/l1/report"
        page.locator("#report-link").click()
        page.locator("#report-doc").get_by_role("heading", name="Line · Crank cell").wait_for()
        fits(page)
        page.goto(f"{fed.url}/ui/#/site/site-a/line/l1")
        note.wait_for()
        page.screenshot(path=str(artifacts / "report-line-target.png"))
        assert not errors, errors
    with httpx.Client(base_url=fed.url, headers={"Authorization": f"Bearer {viewer}"}) as c:
        assert c.post("/api/v1/reports/shift/comments", json={"site": "site-a", "shift_start": str(SHIFT_START),
                                                             "text": "x"}).status_code == 403
