"""A slow machine early in a window: the OEE block says that no unit is complete yet, not a red "0.0 %"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.browser import browser_tab
from tests.support.dashboard_feed import Cloud
from zhizao.cloud.oee.queries import ratios_of

WINDOW = {"planned_s": 600.0, "run_s": 600.0, "all_s": 600.0, "good_ideal_s": 0.0, "flags": 0}


def test_a_window_that_ran_without_output_is_flagged_and_still_zero_by_definition() -> None:
    r = ratios_of({**WINDOW, "ideal_s": 0.0, "total": 0, "good": 0}, one_machine=True)
    assert r["no_output"] is True and r["oee"] == 0.0 and r["availability"] == 1.0
    made = ratios_of({**WINDOW, "ideal_s": 300.0, "good_ideal_s": 300.0, "total": 5, "good": 5}, one_machine=True)
    assert made["no_output"] is False and made["oee"] == 0.5
    idle = ratios_of({**WINDOW, "run_s": 0.0, "ideal_s": 0.0, "total": 0, "good": 0}, one_machine=True)
    assert idle["no_output"] is False  # it did not run: an availability loss, shown as the figure it is


def test_the_oee_block_says_no_unit_yet_in_both_languages(cloud: Cloud, chromium: Any, artifacts: Path) -> None:
    with browser_tab(chromium, artifacts, "no-output-failure.png") as (page, errors):
        page.goto(f"{cloud.url}/ui/")
        page.wait_for_load_state("networkidle")
        shown = page.evaluate("""async () => {
            const { apq } = await import("/ui/js/charts.js");
            const i18n = await import("/ui/js/i18n.js");
            const render = (w) => { const el = apq(w); document.body.append(el); return el; };
            const out = {};
            for (const lang of ["en", "zh-CN"]) {
                await i18n.setLang(lang);
                const el = render({ oee: 0, availability: 1, performance: 0, quality: null, no_output: true });
                out[lang] = { text: el.querySelector(".oee-figure").innerText,
                              band: el.querySelector(".oee-figure").className };
            }
            const made = render({ oee: 0.2, availability: 1, performance: 0.2, quality: 1, no_output: false });
            out.made = made.querySelector(".oee-figure").innerText;
            return out;
        }""")
        assert "No unit completed in this window yet" in shown["en"]["text"] and "0.0 %" not in shown["en"]["text"]
        assert "本时段尚未完成任何产品" in shown["zh-CN"]["text"]
        assert "band-none" in shown["en"]["band"]
        assert "20.0 %" in shown["made"]
        assert not errors, errors
