"""Helpers shared by the service tests (imported by conftest and the test modules)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from morph.pipeline import Analyzer


def tiny_analyzer() -> Analyzer:
    """The pipeline with the untrained tiny classifier (fast; labels are arbitrary)."""
    try:
        from morph.classify import build_untrained
    except ImportError:  # pragma: no cover - before the classifier landed
        return Analyzer(classifier=None)
    return Analyzer(classifier=build_untrained("morphnet_tiny"))


def field_image(seed: int = 0, height: int = 240, width: int = 320) -> np.ndarray:
    """A synthetic smear field (morph.synth), or simple discs if the renderer is unavailable."""
    try:
        from morph.synth import render_field

        return render_field(seed, height=height, width=width).image
    except ImportError:  # pragma: no cover
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:height, :width]
        img = np.full((height, width, 3), 232, np.uint8)
        for _ in range(12):
            cx, cy = rng.integers(30, width - 30), rng.integers(30, height - 30)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 22**2] = (205, 120, 130)
        return img


def encode(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()



def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the one error schema with this status and code, and leaks no traceback."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "detail"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    return body["error"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], cwd: Any) -> tuple[Any, str]:
    """Start ``uvicorn service.app:app`` on a free loopback port (not waiting); returns (process, url)."""
    import os
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: Any, url: str, timeout_s: float = 240.0) -> None:
    """Wait until ``url``/readyz answers 200; raise with the server's output if it died or hung."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"the server at {url} did not start:\n{out[-3000:]}")
        time.sleep(0.1)


def stop_server(proc: Any) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: Debian's Chromium, which the browser tests drive through Playwright (never a downloaded browser).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str:
    import os

    return os.environ.get("MORPH_CHROMIUM", "/usr/bin/chromium")


def have_chromium() -> bool:
    """True when Chromium is installed; on CI (which installs it) its absence is an error, not a skip."""
    import os
    import shutil
    from pathlib import Path

    found = bool(Path(chromium_path()).exists() or shutil.which(chromium_path()))
    if not found and os.environ.get("CI") == "true":
        raise RuntimeError(f"CI: Chromium not found at {chromium_path()}; .ci/run should install it")
    return found


def sample_image(repo: Any, tmp_path: Any) -> Any:
    """The first sample image of the repository, or a rendered field written to ``tmp_path``."""
    samples = sorted((repo / "sample_images").glob("*.png")) + sorted((repo / "sample_images").glob("*.jp*g"))
    if samples:
        return samples[0]
    p = tmp_path / "field.png"
    p.write_bytes(encode(field_image(3, height=480, width=640)))
    return p


def browser_marks() -> list:
    """Marks for a test module that drives Chromium: ``browser``, and a skip when it is absent."""
    import pytest

    return [
        pytest.mark.browser,
        pytest.mark.skipif(not have_chromium(), reason=f"Chromium not installed at {chromium_path()}"),
    ]
