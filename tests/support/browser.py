"""Browser helpers of the dashboard tests: a 1366x768 tab in Debian's Chromium and the no-scroll check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VIEWPORT = {"width": 1366, "height": 768}


def fits(page: Any) -> None:
    """No horizontal scrolling at 1366x768."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"page is {width} px wide, wider than the 1366 px screen"


@contextlib.contextmanager
def browser_tab(chromium: Any, artifacts: Path, failure_png: str) -> Iterator[tuple[Any, list[str]]]:
    """A fresh 1366x768 tab and the errors its page logs; a screenshot to `artifacts/failure_png` when the
    block fails; the tab is closed afterwards."""
    context = chromium.new_context(viewport=VIEWPORT, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield page, errors
    except Exception:
        page.screenshot(path=str(artifacts / failure_png))
        print("browser errors:", errors)
        raise
    finally:
        context.close()
