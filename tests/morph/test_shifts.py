"""Image shifts (morph.shifts): each does what its name says, keeps the glass where it should,
is deterministic, and refuses bad arguments with a MorphError."""

from __future__ import annotations

import numpy as np
import pytest

from morph import shifts
from morph.errors import MorphError
from tests.helpers import draw_disc_field


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return draw_disc_field(n=10, h=160, w=200, radius=18)[0]


def _cell_mask(im: np.ndarray) -> np.ndarray:
    return im.mean(axis=2) < 205


def test_glass_colour_is_the_background(field):
    assert np.allclose(shifts.glass_colour(field), (222, 226, 232), atol=3)


def test_optical_density_round_trip(field):
    g = shifts.glass_colour(field)
    back = shifts.from_optical_density(shifts.to_optical_density(field, g), g)
    assert np.abs(back.astype(int) - field).max() <= 1


def test_scale_stain_makes_cells_paler_or_darker_and_keeps_glass(field):
    cells = _cell_mask(field)
    pale, dark = shifts.scale_stain(field, 0.5), shifts.scale_stain(field, 1.5)
    assert pale[cells].mean() > field[cells].mean() > dark[cells].mean()
    assert np.abs(pale[~cells].astype(int) - field[~cells]).mean() < 2
    od0 = shifts.to_optical_density(field, shifts.glass_colour(field))[cells].sum(axis=-1).mean()
    od1 = shifts.to_optical_density(pale, shifts.glass_colour(field))[cells].sum(axis=-1).mean()
    assert od1 == pytest.approx(0.5 * od0, rel=0.05)


def test_stain_hue_keeps_total_density_and_turns_colour(field):
    g = shifts.glass_colour(field)
    cells = _cell_mask(field)
    turned = shifts.rotate_stain_hue(field, 20)
    od0 = shifts.to_optical_density(field, g)[cells]
    od1 = shifts.to_optical_density(turned, g)[cells]
    assert od1.sum(axis=-1).mean() == pytest.approx(od0.sum(axis=-1).mean(), rel=0.03)
    assert np.abs(od1 - od0).mean() > 0.02
    assert np.array_equal(shifts.rotate_stain_hue(field, 0), shifts.from_optical_density(
        shifts.to_optical_density(field, g), g))


def test_colour_and_exposure_shifts(field):
    wb = shifts.white_balance(field, (1.1, 1.0, 0.9))
    assert wb[..., 0].mean() > field[..., 0].mean() and wb[..., 2].mean() < field[..., 2].mean()
    grey = shifts.adjust_saturation(field, 0.0)
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1
    assert shifts.adjust_brightness_gamma(field, brightness=0.8).mean() < field.mean()
    assert shifts.adjust_brightness_gamma(field, gamma=0.7).mean() > field.mean()


def test_optics_camera_and_scale(field):
    blurred = shifts.defocus(field, 2.0)
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(np.diff(field.astype(int), axis=1)).mean()
    j = shifts.jpeg_round_trip(field, 30)
    assert j.shape == field.shape and 0 < np.abs(j.astype(int) - field).mean() < 8
    n1, n2 = shifts.add_sensor_noise(field, 8.0, seed=3), shifts.add_sensor_noise(field, 8.0, seed=3)
    assert np.array_equal(n1, n2) and not np.array_equal(n1, shifts.add_sensor_noise(field, 8.0, seed=4))
    assert shifts.rescale(field, 0.5).shape == (80, 100, 3)
    assert shifts.rescale(field, 1.5).shape == (240, 300, 3)


def test_blank_areas(field):
    box = shifts.corner_box(field.shape, 0.1)
    assert box.mean() == pytest.approx(0.1, abs=0.01) and box[-1, -1] and not box[0, 0]
    assert (shifts.fill_region(field, box)[box] == 255).all()
    padded = shifts.pad(field, 10)
    assert padded.shape == (180, 220, 3) and (padded[:10] == 255).all()
    assert np.array_equal(padded[10:-10, 10:-10], field)
    rgba = shifts.with_transparency(field, box)
    assert rgba.shape == (160, 200, 4) and (rgba[box] == 0).all() and (rgba[~box, 3] == 255).all()


def test_replace_with_glass_removes_cells(field):
    cells = _cell_mask(field)
    keep = np.zeros(cells.shape, bool)
    keep[:, :100] = True
    out = shifts.replace_with_glass(field, ~keep, seed=1)
    assert np.array_equal(out[:, :100], field[:, :100])
    assert not _cell_mask(out)[:, 100:].any()
    assert np.abs(out[:, 100:].astype(float).mean((0, 1)) - (222, 226, 232)).max() < 4


def test_mosaic_tiles_in_reading_order(field):
    other = 255 - field
    big, placed = shifts.mosaic([field, other], 300, 500)
    assert big.shape == (300, 500, 3)
    assert placed[:4] == [(0, 0, 0), (1, 0, 200), (0, 0, 400), (1, 160, 0)]
    assert np.array_equal(big[:160, 200:400], other) and np.array_equal(big[160:, 200:400], field[:140])


@pytest.mark.parametrize("call", [
    lambda f: shifts.scale_stain(f, 0),
    lambda f: shifts.white_balance(f, (1, 1)),
    lambda f: shifts.jpeg_round_trip(f, 0),
    lambda f: shifts.rescale(f, -1),
    lambda f: shifts.pad(f, -2),
    lambda f: shifts.defocus(f[..., 0], 1.0),
    lambda f: shifts.fill_region(f, np.zeros((3, 3), bool)),
    lambda f: shifts.mosaic([], 10, 10),
])
def test_bad_arguments_raise(field, call):
    with pytest.raises(MorphError):
        call(field)


# ----------------------------------------------------------------------------- scoring helpers
def _cell(i: int, x0: int, y0: int, size: int, kind: str = "rbc"):
    from morph.types import Cell

    return Cell(id=i, x=x0 + size / 2, y=y0 + size / 2, bbox=(x0, y0, x0 + size, y0 + size), kind=kind,
                area_px=size * size, diameter_px=size, eccentricity=0.0, mask=np.ones((size, size), bool))


def test_point_scoring_finds_merges_and_misses():
    from morph.evaluation import cell_index_map, found_and_merged, point_owners

    cells = [_cell(0, 0, 0, 10), _cell(1, 20, 0, 10), _cell(2, 40, 0, 10, "platelet")]
    pts = np.array([(5, 5), (22, 2), (28, 8), (45, 5), (60, 5)], float)
    owners = point_owners(pts, cell_index_map((20, 80), cells))
    assert owners.tolist() == [0, 1, 1, -1, -1]
    assert found_and_merged(owners) == (1, 2)
    assert point_owners(pts, cell_index_map((20, 80), cells, ("platelet",))).tolist() == [-1, -1, -1, 2, -1]


def test_box_matching_is_one_to_one_by_centre():
    from morph.evaluation import bcd256_is_test, box_matches

    cells = [_cell(0, 0, 0, 10), _cell(1, 2, 2, 6), _cell(2, 40, 0, 10)]
    assert box_matches(cells, np.array([(0, 0, 12, 12), (100, 100, 110, 110)], float)) == (1, 3, 2)
    assert box_matches(cells, []) == (0, 3, 0)
    assert bcd256_is_test(99) and not bcd256_is_test(100)
