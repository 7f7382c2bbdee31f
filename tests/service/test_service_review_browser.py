"""The review page in headless Chromium: store a case, reclassify three cells and confirm two,
see the verified report change, restart the service and find the case as it was left.

Skips cleanly without Chromium or Playwright (CI installs both, .ci/run)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import (
    browser_marks,
    sample_image,
    start_server,
    stop_server,
    wait_ready,
)

API_KEY = "review-test-key"
REPO = Path(__file__).resolve().parents[2]

pytestmark = browser_marks()
pytest.importorskip("playwright.sync_api")  # skip the module cleanly without Playwright



def _serve(store: Path) -> tuple[Any, str]:
    proc, url = start_server({"MORPH_MODEL": "tiny", "MORPH_API_KEYS": API_KEY, "MORPH_STORE_DIR": str(store)}, REPO)
    wait_ready(proc, url)
    return proc, url


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _counts(page: Any) -> dict[str, int]:
    rows = page.locator("#counts tbody tr")
    return {rows.nth(i).locator("td").nth(0).inner_text().strip(): int(rows.nth(i).locator("td").nth(1).inner_text())
            for i in range(rows.count())}


_TOPMOST_CELLS = """() => Array.from(document.querySelectorAll('#fields rect.cell.counted')).flatMap((r, i) => {
  const b = r.getBoundingClientRect();
  return document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2) === r ? [i] : [];
})"""


def _wait_reviewed(page: Any, n: int) -> None:
    page.wait_for_function(f"document.querySelector('#case-status').dataset.reviewed === '{n}'")


def _open_page(browser: Any, url: str) -> tuple[Any, Any]:
    """A fresh browser context on the service's page (the caller closes the context)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(url + "/")
    return ctx, page


def test_review_a_stored_case_then_find_it_after_a_restart(browser: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc, url = _serve(store)
    ctx, page = _open_page(browser, url)
    try:
        page.fill("#api-key", API_KEY)
        page.fill("#reviewer", "ann")
        page.check("#store")
        page.set_input_files("#files", str(sample_image(REPO, tmp_path)))
        page.click("#analyze")
        page.wait_for_selector("#review:not([hidden])")
        _wait_reviewed(page, 0)
        case_id = page.inner_text("#case-id").strip()
        before = _counts(page)
        cells = page.locator("#fields rect.cell.counted")
        assert cells.count() >= 5

        page.wait_for_function("document.querySelector('figure.field img.overlay').naturalWidth > 0")
        page.locator("figure.field").first.scroll_into_view_if_needed()
        clickable = page.evaluate(_TOPMOST_CELLS)  # cells no neighbour's box covers at their centre
        assert len(clickable) >= 3
        for n, i in enumerate(clickable[:3]):  # click a cell, then a number key: 6 teardrop (1 normal)
            cell = cells.nth(i)
            key = "1" if cell.get_attribute("data-label") == "teardrop" else "6"
            cell.click()
            page.keyboard.press(key)
            _wait_reviewed(page, n + 1)
        page.keyboard.press("ArrowRight")  # step on to a cell not reviewed yet, confirm it and the next
        for reviewed in (4, 5):
            while page.locator("#fields rect.cell.selected.reviewed").count():
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Enter")
            _wait_reviewed(page, reviewed)

        after = _counts(page)
        assert after != before and sum(after.values()) == sum(before.values())
        assert "in review" in page.inner_text("#case-status") and "3 relabelled" in page.inner_text("#case-status")
        assert "verified" in page.inner_text("#counts-kind")
        assert page.locator("#fields rect.cell.reviewed").count() == 5
        verified = _get(f"{url}/v1/cases/{case_id}/report")
        assert verified["reviewed_cells"] == 5 and verified["changed_cells"] == 3
        assert {k.replace("_", " "): v for k, v in verified["counts"].items()} == after
    finally:
        ctx.close()
        stop_server(proc)

    proc, url = _serve(store)  # a new process on the same store
    ctx, page = _open_page(browser, url)
    try:
        page.fill("#api-key", API_KEY)
        page.click("#load-cases")
        row = page.locator(f"#cases li[data-case-id='{case_id}']")
        assert "in review" in row.inner_text()
        row.locator("button").click()
        page.wait_for_selector("#review:not([hidden])")
        _wait_reviewed(page, 5)
        assert page.inner_text("#case-id").strip() == case_id
        assert page.locator("#fields rect.cell.reviewed").count() == 5
        assert _counts(page) == after
        page.wait_for_function("document.querySelector('figure.field img.overlay').naturalWidth > 0")
        audit = _get(f"{url}/v1/cases/{case_id}")["audit"]
        assert [a["action"] for a in audit] == ["relabel"] * 3 + ["confirm"] * 2
        assert {a["reviewer"] for a in audit} == {"ann"}
    finally:
        ctx.close()
        stop_server(proc)
