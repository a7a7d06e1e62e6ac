"""Browser checks shared by the web UI tests (a uniquely named module, no fixtures): Debian's Chromium,
the two viewports every page must fit, axe-core's verdict on a page, and screenshots for docs/."""

from __future__ import annotations

import os
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Locator, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
_AXE = Axe()


def overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0 when it fits)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def serious_violations(page: Page) -> list[str]:
    """axe-core's critical and serious findings on the page, one line each (rule, impact, first target)."""
    results = _AXE.run(page)
    out = []
    for v in results.response["violations"]:
        if v["impact"] in ("critical", "serious"):
            targets = [str(n["target"]) for n in v["nodes"][:3]]
            out.append(f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(targets)}")
    return out


def check_page(page: Page, what: str) -> None:
    """The page fits its viewport and axe finds nothing critical or serious."""
    extra = overflow(page)
    assert extra <= 0, f"{what} is {extra} px wider than the {page.viewport_size} viewport"
    found = serious_violations(page)
    assert not found, f"{what}: " + "\n".join(found)


def shoot(target: Page | Locator, name: str, tmp_path: Path) -> None:
    """A screenshot (of a page or one element): into docs/ when ``ADAPTER_HUB_SCREENSHOTS`` names that folder
    (to refresh the README's pictures), else a throwaway one."""
    folder = Path(os.environ["ADAPTER_HUB_SCREENSHOTS"]) if os.environ.get("ADAPTER_HUB_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"web-{name}.png"
    target.screenshot(path=str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
