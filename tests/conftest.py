"""Shared fixtures: the real data sets (skipping cleanly when absent) and small synthetic images.
Plain helpers are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import draw_disc_field, shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d}")
    return d


@pytest.fixture(scope="session")
def chula_dir(data_dir: Path) -> Path:
    d = data_dir / "chula-rbc-12"
    if not (d / "images").is_dir():
        pytest.skip(f"Chula RBC-12 not found at {d}")
    return d


@pytest.fixture(scope="session")
def txl_dir(data_dir: Path) -> Path:
    d = data_dir / "txl-pbc"
    if not (d / "images").is_dir():
        pytest.skip(f"TXL-PBC not found at {d}")
    return d


@pytest.fixture
def disc_field():
    return draw_disc_field


@pytest.fixture(scope="session")
def bcd_dir(data_dir: Path) -> Path:
    d = data_dir / "bcd-256"
    if not (d / "annotations.csv").is_file():
        pytest.skip(f"bcd-256 not found at {d}")
    return d
