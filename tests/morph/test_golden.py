"""Golden outputs: the whole pipeline's report on 30+ real and rendered fields, kept on disk.

A refactor must leave these reports identical (timings excluded). A change that is *meant* to
move outputs (a retrained model, a new rule) regenerates them on purpose and says why in its
commit:

    MORPH_UPDATE_GOLDEN=1 python -m pytest -q tests/morph/test_golden.py

The cases: the shipped sample images (always), rendered blood / NMB / marrow fields (always), and
Chula RBC-12, TXL-PBC test and bcd-256 fields (skipped cleanly when ../shared/data is absent).
Each case is one report, so counts, findings and differentials are pinned as well as the cells.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import REPO, shared_data_dir

GOLDEN_DIR = REPO / "tests" / "golden"
UPDATE = os.environ.get("MORPH_UPDATE_GOLDEN") == "1"


def _round_floats(value: Any, digits: int = 4) -> Any:
    """Floats to ``digits`` decimals so that the last bit of a float sum cannot fail the test."""
    if isinstance(value, float):
        return value if math.isnan(value) or math.isinf(value) else round(value, digits)
    if isinstance(value, dict):
        return {k: _round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(v, digits) for v in value]
    return value


def _strip_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_timings(v) for k, v in value.items() if "time" not in k and k != "elapsed_s"}
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


def canonical(report: dict[str, Any]) -> dict[str, Any]:
    return _round_floats(_strip_timings(report))


def _rendered_inputs() -> list[tuple[str, np.ndarray]]:
    from morph.synth import render_field

    out: list[tuple[str, np.ndarray]] = []
    for seed in range(4):
        out.append((f"rendered-blood-{seed}", render_field(1000 + seed, field_type="blood").image))
    for seed in range(3):
        out.append((f"rendered-nmb-{seed}", render_field(2000 + seed, field_type="nmb").image))
    for seed in range(3):
        out.append((f"rendered-marrow-{seed}", render_field(3000 + seed, field_type="marrow").image))
    return out


def _paths(kind: str) -> list[Path]:
    data = shared_data_dir()
    if kind == "samples":
        return sorted((REPO / "sample_images").glob("*.jpg"))
    if kind == "chula":
        return sorted((data / "chula-rbc-12" / "images").glob("*.jpg"))[:8]
    if kind == "txl":
        return sorted((data / "txl-pbc" / "images" / "test").glob("*.jpg"))[:8]
    if kind == "bcd":
        return sorted((data / "bcd-256" / "images").glob("*.png"))[:4]
    raise ValueError(kind)


CASES: dict[str, dict[str, Any]] = {
    "samples": {"stain": "wright"},
    "rendered": {"stain": "wright"},
    "chula": {"stain": "wright"},
    "txl": {"stain": "wright"},
    "bcd": {"stain": "wright"},
}


@pytest.fixture(scope="module")
def analyzer():
    from morph.classify import load_model
    from morph.pipeline import Analyzer

    return Analyzer(load_model(None))


def _report(analyzer: Any, case: str) -> dict[str, Any]:
    from morph.io import read_image
    from morph.pipeline import AnalysisOptions

    if case == "rendered":
        inputs: list[tuple[str, Any]] = list(_rendered_inputs())
    else:
        paths = _paths(case)
        if not paths:
            pytest.skip(f"no {case} fields at {shared_data_dir()}")
        inputs = [(p.name, read_image(p)) for p in paths]
    report = analyzer.analyze_case(inputs, AnalysisOptions(stain=CASES[case]["stain"]))
    return canonical(report.to_dict())


@pytest.mark.parametrize("case", sorted(CASES))
def test_report_matches_golden(analyzer: Any, case: str) -> None:
    got = _report(analyzer, case)
    path = GOLDEN_DIR / f"{case}.json.gz"
    if UPDATE:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(json.dumps(got, indent=1, sort_keys=True).encode(), mtime=0))
    if not path.exists():
        pytest.fail(f"{path} missing: run with MORPH_UPDATE_GOLDEN=1 to write it")
    want = json.loads(gzip.decompress(path.read_bytes()))
    # Compare section by section so that a failure names what moved.
    for key in sorted(set(want) | set(got)):
        if key == "images":
            assert len(got["images"]) == len(want["images"]), "number of fields changed"
            for g, w in zip(got["images"], want["images"], strict=True):
                assert g == w, f"{case}: field {w['path']} changed"
        else:
            assert got.get(key) == want.get(key), f"{case}: report[{key!r}] changed"
