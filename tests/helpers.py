"""Helpers the tests import: the repository root, the shared data folder, a synthetic field and
batch-output comparison. Fixtures live in conftest.py (pytest finds them; nothing imports it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MORPH_DATA_DIR", REPO.parent / "shared" / "data"))


def draw_disc_field(
    n: int = 12, h: int = 240, w: int = 320, radius: int = 22, seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A quick Wright-like field: pink discs with central pallor on a pale background,
    placed without overlap away from the border. Returns the image and the centres."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (222, 226, 232)
    yy, xx = np.mgrid[0:h, 0:w]
    centres: list[tuple[float, float]] = []
    tries = 0
    while len(centres) < n and tries < 5000:
        tries += 1
        cx = rng.uniform(radius + 4, w - radius - 4)
        cy = rng.uniform(radius + 4, h - radius - 4)
        if all((cx - x) ** 2 + (cy - y) ** 2 > (2 * radius + 6) ** 2 for x, y in centres):
            centres.append((cx, cy))
    for cx, cy in centres:
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        cell = r2 <= radius**2
        pallor = r2 <= (radius * 0.4) ** 2
        img[cell] = (196, 120, 140)
        img[pallor] = (210, 160, 175)
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), centres


def output_files(out: Path) -> dict[str, bytes]:
    """Every file under a batch output folder, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_same_outputs(a: Path, b: Path) -> None:
    """Every file byte for byte, except run.json compared without its per-invocation "run" block."""
    fa, fb = output_files(a), output_files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "run.json":
            ja, jb = json.loads(fa[name]), json.loads(fb[name])
            ja.pop("run"), jb.pop("run")
            assert ja == jb
        else:
            assert fa[name] == fb[name], f"{name} differs"
