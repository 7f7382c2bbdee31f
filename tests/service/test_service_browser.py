"""The review page in a real headless Chromium (Debian's package) driven by Playwright.

Skips cleanly when Chromium or Playwright is absent locally; CI installs both (.ci/run).
Playwright never downloads a browser here: it launches /usr/bin/chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from svc_helpers import (
    browser_marks,
    sample_image,
    start_server,
    stop_server,
    wait_ready,
)

API_KEY = "browser-test-key"
REPO = Path(__file__).resolve().parents[2]

pytestmark = browser_marks()
pytest.importorskip("playwright.sync_api")  # skip the module cleanly without Playwright


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """uvicorn on a free loopback port with the tiny model and an API key."""
    proc, url = start_server({"MORPH_MODEL": "tiny", "MORPH_API_KEYS": API_KEY}, REPO)
    try:
        wait_ready(proc, url, timeout_s=60)
        yield url
    finally:
        stop_server(proc)



@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server + "/")
    yield pg
    ctx.close()


def _sample_image(tmp_path: Path) -> Path:
    return Path(sample_image(REPO, tmp_path))


def test_page_shows_overlay_cells_counts_and_differentials(page, tmp_path):
    page.fill("#api-key", API_KEY)
    page.set_input_files("#files", str(_sample_image(tmp_path)))
    page.click("#analyze")
    page.wait_for_selector("#results:not([hidden])")
    assert page.is_hidden("#error")

    img = page.locator("figure.field img.overlay").first
    assert (img.get_attribute("src") or "").startswith("data:image/png;base64,")
    page.wait_for_function("document.querySelector('figure.field img.overlay').naturalWidth > 0")
    assert img.evaluate("e => e.naturalWidth") == 640

    cells = page.locator("figure.field svg.cells rect.cell")
    assert cells.count() > 0
    cell = cells.first
    cell.hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    label = cell.get_attribute("data-label")
    assert label and label in tip.inner_text() and "%" in tip.inner_text()

    assert page.locator("#counts tbody tr").count() > 0
    items = page.locator("#differentials > li")
    assert items.count() > 0
    first = items.first.inner_text()
    assert "score" in first or "No differential" in first


def test_page_says_clearly_when_a_file_is_not_an_image(page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is a text file, not a smear\n")
    page.fill("#api-key", API_KEY)
    page.set_input_files("#files", str(fake))
    page.click("#analyze")
    err = page.locator("#error")
    err.wait_for(state="visible")
    text = err.inner_text()
    assert "notes.jpg" in text and "not an image" in text
    assert page.is_hidden("#results")


def test_page_reports_a_missing_api_key(page, tmp_path):
    page.set_input_files("#files", str(_sample_image(tmp_path)))
    page.click("#analyze")
    err = page.locator("#error")
    err.wait_for(state="visible")
    assert "API key" in err.inner_text()
