"""Overlapping cells read small: the centre map parts deeply overlapping red cells less well
under ~12 working px of radius. bcd-256's test part scaled by 0.75 (cells ~21 px: blocks of 2
leave 10.5) read red-cell recall 0.874 against 0.910 at full size; such a field is read again at
a block size that need not be whole (:func:`morph.segment.field._locate`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from morph import shifts
from morph.evaluation import box_matches
from morph.io import read_image
from morph.localize import load_localizer
from morph.readers import read_bcd256_boxes
from morph.segment import segment_field
from morph.segment.arrays import area_mean, block_mean
from morph.segment.config import SegmentConfig
from morph.segment.field import _checked_rgb, _locate
from morph.segment.regions import full_resolution_mask
from morph.synth import render_field


@pytest.fixture(scope="module")
def localizer():
    return load_localizer(None)


def test_area_mean_keeps_the_mean_and_agrees_with_blocks():
    rng = np.random.default_rng(0)
    image = rng.random((37, 50, 3)).astype(np.float32)
    assert np.allclose(area_mean(image, 2.0)[:18, :25], block_mean(image, 2)[:18, :25], atol=1e-6)
    small = area_mean(image, 1.5)
    assert small.shape == (25, 34, 3) and small.dtype == np.float32
    # each output pixel is the mean over its 1.5 px square: pixel 0 whole and half of pixel 1
    ramp = np.tile(np.arange(30, dtype=np.float32), (6, 1))
    row = area_mean(ramp, 1.5)[0]
    assert row[:2] == pytest.approx([0.5 / 1.5, (0.5 * 1 + 2) / 1.5]) and row.mean() == pytest.approx(ramp.mean())


@pytest.mark.parametrize("k", [1.0, 2.0, 1.6, 2.5])
def test_a_working_mask_comes_back_at_full_resolution(k):
    yy, xx = np.mgrid[0:21, 0:21]
    disc = (yy - 10) ** 2 + (xx - 10) ** 2 <= 64
    full, y0, x0 = full_resolution_mask(disc, 5, 7, k)
    assert (y0, x0) == (int(np.ceil(5 * k - 0.5)), int(np.ceil(7 * k - 0.5)))
    assert full.sum() == pytest.approx(disc.sum() * k * k, rel=0.06)
    if k == int(k):
        assert np.array_equal(full, disc.repeat(int(k), 0).repeat(int(k), 1))


def test_a_crowded_field_read_small_is_read_again_finer(bcd_dir: Path, localizer):
    # bcd-256 test field 39 at 0.75x: 20 of its 24 red cells found at blocks of 2 (10.5 working
    # px), 23 at 13 px
    fields, _ = read_bcd256_boxes(bcd_dir, labels=("rbc",))
    field = next(f for f in fields if f.number == 39)
    small = shifts.rescale(read_image(field.image_path), 0.75)
    found = _locate(_checked_rgb(small, 0.2), SegmentConfig(), localizer)
    assert not isinstance(found, str)
    assert found.wv.k != int(found.wv.k) and found.r == pytest.approx(13.0, rel=0.05)
    seg = segment_field(small, um_per_px=0.2, centres=localizer)
    boxes = field.boxes["rbc"] * (small.shape[0] / 256)
    matched, found_n, n = box_matches(seg.cells, boxes)
    assert matched >= n - 2 and found_n <= matched + 1


def test_cells_side_by_side_keep_whole_blocks(localizer):
    # a rendered blood field (cells touch but hardly overlap): no second read
    f = render_field(2, field_type="blood")
    found = _locate(_checked_rgb(f.image, f.um_per_px), SegmentConfig(), localizer)
    assert not isinstance(found, str) and found.wv.k == int(found.wv.k)
