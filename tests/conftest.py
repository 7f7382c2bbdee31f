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


def _data_set(data_dir: Path, folder: str, marker: str, name: str, *, marker_is_file: bool = False) -> Path:
    """``data_dir/folder``, or a skip when its ``marker`` (a folder in it, or a file) is absent."""
    d = data_dir / folder
    present = (d / marker).is_file() if marker_is_file else (d / marker).is_dir()
    if not present:
        pytest.skip(f"{name} not found at {d}")
    return d


@pytest.fixture(scope="session")
def chula_dir(data_dir: Path) -> Path:
    return _data_set(data_dir, "chula-rbc-12", "images", "Chula RBC-12")


@pytest.fixture(scope="session")
def txl_dir(data_dir: Path) -> Path:
    return _data_set(data_dir, "txl-pbc", "images", "TXL-PBC")


@pytest.fixture
def disc_field():
    return draw_disc_field


@pytest.fixture(scope="session")
def bcd_dir(data_dir: Path) -> Path:
    return _data_set(data_dir, "bcd-256", "annotations.csv", "bcd-256", marker_is_file=True)
