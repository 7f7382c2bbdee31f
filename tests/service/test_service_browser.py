"""The review page in a real headless Chromium (Debian's package) driven by Playwright.

Skips cleanly when Chromium or Playwright is absent locally; CI installs both (.ci/run).
Playwright never downloads a browser here: it launches /usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from svc_helpers import encode, field_image

CHROMIUM = os.environ.get("MORPH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
API_KEY = "browser-test-key"
REPO = Path(__file__).resolve().parents[2]

_HAVE_CHROMIUM = bool(Path(CHROMIUM).exists() or shutil.which(CHROMIUM))
if not _HAVE_CHROMIUM and os.environ.get("CI") == "true":
    # CI installs Chromium (.ci/run): there this test must run, not skip.
    raise RuntimeError(f"CI: Chromium not found at {CHROMIUM}; .ci/run should install it")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not _HAVE_CHROMIUM, reason=f"Chromium not installed at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """uvicorn on a free loopback port with the tiny model and an API key."""
    port = _free_port()
    env = {**os.environ, "MORPH_MODEL": "tiny", "MORPH_API_KEYS": API_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"the server did not start:\n{out[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server + "/")
    yield pg
    ctx.close()


def _sample_image(tmp_path: Path) -> Path:
    samples = sorted((REPO / "sample_images").glob("*.png")) + sorted((REPO / "sample_images").glob("*.jp*g"))
    if samples:
        return samples[0]
    p = tmp_path / "field.png"
    p.write_bytes(encode(field_image(3, height=480, width=640)))
    return p


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
