"""Synthetic smear renderer: determinism, ground-truth consistency, every label and field type."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from morph.errors import MorphError
from morph.labels import ALL_LABELS, PLATELET, kind_of
from morph.synth import (
    FIELD_TYPES,
    SYNTH_LABELS,
    RenderStyle,
    SynthField,
    crop_labels,
    render_cell_crop,
    render_field,
)

UM = 0.16  # tests pin the scale so they do not depend on the calibrated default


def _field(seed: int = 0, **kw: object) -> SynthField:
    kw.setdefault("height", 240)
    kw.setdefault("width", 320)
    kw.setdefault("um_per_px", UM)
    return render_field(seed, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("field_type", FIELD_TYPES)
def test_each_field_type_renders_with_consistent_truth(field_type: str) -> None:
    f = _field(3, field_type=field_type)
    h, w = f.image.shape[:2]
    assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
    assert f.field_type == field_type and f.um_per_px == UM
    assert f.stain == ("nmb" if field_type == "nmb" else "wright")
    assert len(f.cells) > 5
    for c in f.cells:
        x0, y0, x1, y1 = c.bbox
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert c.mask is not None and c.mask.shape == (y1 - y0, x1 - x0) and c.mask.dtype == bool
        assert c.mask.any()
        assert x0 <= c.x < x1 and y0 <= c.y < y1
        assert c.mask[int(c.y) - y0, int(c.x) - x0], f"centre outside its mask: {c}"
        assert c.label in SYNTH_LABELS[field_type]
        assert c.label == PLATELET or c.label in ALL_LABELS
        assert c.kind == kind_of(c.label)
        assert c.diameter_px > 0
        at_edge = x0 == 0 or y0 == 0 or x1 == w or y1 == h
        assert c.touches_border == at_edge
        if at_edge:  # a cut cell really reaches the edge with its mask
            edge_px = (c.mask[:, 0].any() and x0 == 0) or (c.mask[0, :].any() and y0 == 0) or \
                (c.mask[:, -1].any() and x1 == w) or (c.mask[-1, :].any() and y1 == h)
            assert edge_px


def test_same_seed_same_image_and_truth() -> None:
    a, b = _field(7), _field(7)
    assert np.array_equal(a.image, b.image)
    assert [c.to_dict() for c in a.cells] == [c.to_dict() for c in b.cells]
    assert not np.array_equal(a.image, _field(8).image)


def test_cells_pixels_are_darker_than_background() -> None:
    f = _field(1, field_type="blood")
    inst = f.instance_map()
    grey = f.image.astype(np.float32).mean(axis=2)
    assert grey[inst > 0].mean() < grey[inst == 0].mean() - 10


def test_instance_map_topmost_owns_overlap() -> None:
    f = _field(2, overlap=0.8, n_cells=60)
    inst = f.instance_map()
    last = len(f.cells) - 1
    c = f.cells[last]
    x0, y0, x1, y1 = c.bbox
    assert np.all(inst[y0:y1, x0:x1][c.mask] == last + 1)
    total = sum(int(c.mask.sum()) for c in f.cells)  # type: ignore[union-attr]
    assert total > int((inst > 0).sum())  # full masks overlap somewhere


def test_some_cells_touch_the_border() -> None:
    f = _field(4, n_cells=80)
    assert any(c.touches_border for c in f.cells)
    assert any(not c.touches_border for c in f.cells)


def test_label_weights_are_respected_roughly() -> None:
    f = render_field(5, height=480, width=640, um_per_px=0.2, n_cells=200,
                     label_weights={"normal": 3, "teardrop": 1}, overlap=0.3)
    counts = f.counts()
    assert set(counts) <= {"normal", "teardrop"}
    n = sum(counts.values())
    assert n >= 150
    assert 0.13 < counts.get("teardrop", 0) / n < 0.37


def test_numpy_integers_are_accepted() -> None:
    f = render_field(np.int64(3), height=np.int64(64), width=np.int32(80), n_cells=np.int64(4), um_per_px=UM)
    assert f.image.shape == (64, 80, 3)
    assert render_cell_crop(np.int64(1), "normal", size=np.int64(32)).shape == (32, 32, 3)


def test_n_cells_zero_gives_blank_field() -> None:
    f = _field(0, n_cells=0)
    assert f.cells == []
    assert f.image.std() < 20


def test_style_is_pinned_when_given() -> None:
    st = dataclasses.replace(RenderStyle(), noise=0.0, blur_um=0.0, vignetting=0.0)
    f = _field(9, style=st, n_cells=0)
    assert np.abs(f.image.astype(int) - np.array(st.background).round().astype(int)).max() <= 1


def test_size_scale_makes_macro_ovalocytes() -> None:
    base = RenderStyle.random(1)
    big = dataclasses.replace(base, size_scale={"ovalocyte": 1.3})
    kw = dict(n_cells=30, label_weights={"ovalocyte": 1.0}, overlap=0.0)
    d0 = np.median([c.diameter_px for c in _field(1, style=base, **kw).cells if not c.touches_border])
    d1 = np.median([c.diameter_px for c in _field(1, style=big, **kw).cells if not c.touches_border])
    assert 1.15 < d1 / d0 < 1.45


def test_normal_cell_size_follows_the_scale() -> None:
    st = dataclasses.replace(RenderStyle.random(2), rbc_diameter_um=7.5)
    f = _field(2, style=st, n_cells=40, label_weights={"normal": 1.0}, overlap=0.0)
    d_um = np.median([c.diameter_px for c in f.cells if not c.touches_border]) * UM
    assert 7.0 < d_um < 8.0


@pytest.mark.parametrize("stain", ["wright", "nmb"])
def test_every_crop_label_renders(stain: str) -> None:
    for i, label in enumerate(crop_labels(stain)):
        crop = render_cell_crop(i, label, stain=stain, size=48, um_per_px=0.25)
        assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
        # the centred cell darkens the centre relative to the corners' brightest pixel
        assert crop[20:28, 20:28].mean() < crop.reshape(-1, 3).max(axis=0).mean()


def test_crop_labels_cover_synth_labels() -> None:
    assert set(crop_labels("wright")) == set(SYNTH_LABELS["blood"]) | set(SYNTH_LABELS["marrow"])
    assert set(crop_labels("nmb")) == set(SYNTH_LABELS["nmb"])


def test_crop_is_deterministic_and_varies_with_seed() -> None:
    a = render_cell_crop(11, "teardrop", um_per_px=0.2)
    assert np.array_equal(a, render_cell_crop(11, "teardrop", um_per_px=0.2))
    assert not np.array_equal(a, render_cell_crop(12, "teardrop", um_per_px=0.2))
    assert a.shape == (64, 64, 3)


def test_crop_size_scale_grows_the_centred_cell() -> None:
    st = dataclasses.replace(RenderStyle.random(3), noise=0.0, vignetting=0.0)

    def area(scale: float) -> int:
        crop = render_cell_crop(5, "ovalocyte", um_per_px=0.25, size=64, context_cells=False,
                                style=st, size_scale=scale)
        bg = np.asarray(st.background)
        return int((np.abs(crop.astype(float) - bg).sum(axis=2) > 25).sum())

    assert 1.5 < area(1.3) / area(1.0) < 1.9  # area grows with the square of the diameter


def test_nmb_reticulocyte_has_dark_blue_reticulum() -> None:
    st = dataclasses.replace(RenderStyle.random(0, "nmb"), noise=0.0)
    ret = [render_cell_crop(s, "reticulocyte", stain="nmb", um_per_px=0.2, context_cells=False, style=st)
           for s in range(6)]
    nor = [render_cell_crop(s, "normal", stain="nmb", um_per_px=0.2, context_cells=False, style=st)
           for s in range(6)]
    # the darkest red-channel pixels in the cell: reticulum is much darker than plain cytoplasm
    assert np.mean([r[..., 0].min() for r in ret]) < np.mean([n[..., 0].min() for n in nor]) - 30


@pytest.mark.parametrize(
    "call",
    [
        lambda: render_field(0, field_type="urine"),
        lambda: render_field(0, label_weights={"teardrop": 1, "normoblast": 1}),
        lambda: render_field(0, label_weights={"banana": 1}),
        lambda: render_field(0, label_weights={"normal": -1}),
        lambda: render_field(0, label_weights={"normal": 0}),
        lambda: render_field(0, overlap=1.5),
        lambda: render_field(0, um_per_px=0.0),
        lambda: render_field(0, height=4),
        lambda: render_field(-1),
        lambda: render_field(0, n_cells=-3),
        lambda: render_field(0, style={"noise": 1}),  # type: ignore[arg-type]
        lambda: render_cell_crop(-2, "normal"),
        lambda: render_cell_crop(0, "banana"),
        lambda: render_cell_crop(0, "teardrop", stain="nmb"),
        lambda: render_cell_crop(0, "normal", stain="giemsa"),
        lambda: render_cell_crop(0, "normal", size=0),
        lambda: render_cell_crop(0, "ovalocyte", size_scale=0.0),
    ],
)
def test_bad_requests_raise_morph_error(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MorphError) as e:
        call()
    assert e.value.code == "bad_request"


def test_neutrophil_lobe_counts_match_the_label_definition() -> None:
    from morph.synth import HYPERSEG_LOBES, NEUTROPHIL_LOBES, _make_spec

    rng = np.random.default_rng(0)
    st = RenderStyle()
    for label, (lo, hi) in (("neutrophil", NEUTROPHIL_LOBES), ("hypersegmented_neutrophil", HYPERSEG_LOBES)):
        counts = {len(_make_spec(label, rng, st, UM, "wright").p["lobes"]) for _ in range(60)}
        assert counts == set(range(lo, hi + 1))
    assert HYPERSEG_LOBES[0] >= 6  # the label means six or more lobes


def _overlapping_fraction(f: SynthField) -> float:
    cnt = np.zeros(f.image.shape[:2], np.int32)
    for c in f.cells:
        x0, y0, x1, y1 = c.bbox
        cnt[y0:y1, x0:x1] += c.mask  # type: ignore[operator]
    hit = 0
    for c in f.cells:
        x0, y0, x1, y1 = c.bbox
        hit += bool((cnt[y0:y1, x0:x1][c.mask] > 1).mean() > 0.03)
    return hit / max(len(f.cells), 1)


def test_overlap_parameter_controls_overlap() -> None:
    kw = dict(label_weights={"normal": 1.0}, n_cells=50)
    none = np.mean([_overlapping_fraction(_field(s, overlap=0.0, **kw)) for s in range(3)])
    many = np.mean([_overlapping_fraction(_field(s, overlap=0.5, **kw)) for s in range(3)])
    assert none < 0.05
    assert many > 0.3


def test_overlap_depth_draws_deeper_pairs() -> None:
    """bcd-256's overlapping pairs sit closer than the default renders (centres down to ~0.4 of
    the summed radii): overlap_depth reaches them; the default stays 0.6-0.9."""
    def closest(f: object) -> float:
        c = [x for x in f.cells if x.kind == "rbc"]  # type: ignore[attr-defined]
        return min(np.hypot(a.x - b.x, a.y - b.y) / ((a.diameter_px + b.diameter_px) / 2)
                   for i, a in enumerate(c) for b in c[i + 1:])
    kw = dict(label_weights={"normal": 1.0}, n_cells=50, overlap=0.6)
    assert min(closest(_field(s, **kw)) for s in range(3)) > 0.55
    assert min(closest(_field(s, overlap_depth=(0.4, 0.5), **kw)) for s in range(3)) < 0.52
    with pytest.raises(MorphError, match="overlap_depth"):
        _field(0, overlap_depth=(0.9, 0.4))


@pytest.mark.parametrize("label", ["teardrop", "schistocyte", "sickle_cell", "normal"])
def test_crop_cell_is_centred_on_its_mass(label: str) -> None:
    st = dataclasses.replace(RenderStyle.random(4), noise=0.0, vignetting=0.0, blur_um=0.0)
    for seed in range(4):
        crop = render_cell_crop(seed, label, size=96, um_per_px=0.16, context_cells=False, style=st)
        cell = (np.asarray(st.background) - crop.astype(float)).sum(axis=2) > 20  # darker than glass
        ys, xs = np.nonzero(cell)
        assert abs(xs.mean() + 0.5 - 48) < 3 and abs(ys.mean() + 0.5 - 48) < 3


# -- disease presets (whole cases) -----------------------------------------------------------
def test_render_case_is_deterministic_and_one_slide() -> None:
    from morph.synth import render_case

    a = render_case("hereditary_elliptocytosis", 7, 2, height=120, width=160, um_per_px=UM)
    b = render_case("hereditary_elliptocytosis", 7, 2, height=120, width=160, um_per_px=UM)
    assert len(a) == 2 and all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, a[1].image)  # two fields, not one twice
    assert a[0].style == a[1].style                      # of one slide (one stain look)


@pytest.mark.parametrize("preset", ["normal", "myelofibrosis", "b12_deficiency", "mds", "parvovirus_crisis",
                                    "beta_thalassaemia_major", "iron_deficiency", "hereditary_spherocytosis",
                                    "hereditary_elliptocytosis"])
def test_every_issue_preset_renders_with_vocabulary_labels(preset: str) -> None:
    from morph.synth import CASE_PRESETS, render_case

    spec = CASE_PRESETS[preset]
    assert spec.morphology and spec.source
    (f,) = render_case(preset, 1, 1, height=160, width=200, um_per_px=UM)
    assert f.field_type == spec.field_type and f.cells
    assert all(c.label in ALL_LABELS or c.label == PLATELET for c in f.cells)


def test_pencil_cells_are_long_thin_small_elliptocytes() -> None:
    from morph.synth import RENDER_VARIANTS

    assert RENDER_VARIANTS["pencil_cell"] == "elliptocyte"
    f = _field(5, label_weights={"pencil_cell": 1.0}, n_cells=30)
    assert {c.label for c in f.cells} == {"elliptocyte"}
    full = [c for c in f.cells if not c.touches_border]
    assert full and all(c.diameter_px * UM < 7.0 for c in full)
    with pytest.raises(MorphError):
        _field(5, field_type="marrow", label_weights={"pencil_cell": 1.0})


def test_unknown_preset_and_bad_field_count_are_refused() -> None:
    from morph.synth import render_case

    with pytest.raises(MorphError) as e:
        render_case("scurvy", 1)
    assert "known:" in e.value.message
    with pytest.raises(MorphError):
        render_case("normal", 1, 0)


def test_ring_fields_hold_ring_cells_and_sparse_ones_few_cells() -> None:
    from morph.synth import RENDER_VARIANTS, SPARSE_CELLS, render_ring_field

    assert RENDER_VARIANTS["ring_cell"] == "hypochromic"
    f = render_ring_field(3, height=240, width=320, um_per_px=UM)
    assert np.array_equal(f.image, render_ring_field(3, height=240, width=320, um_per_px=UM).image)
    assert f.counts().get("hypochromic", 0) >= 0.4 * len(f.cells)
    for seed in range(4):
        n = len(render_ring_field(seed, sparse=True, height=480, width=640).cells)
        assert n <= SPARSE_CELLS[1] and n >= SPARSE_CELLS[0] - 2  # a cell may find no room


def test_ring_cells_have_a_wide_pale_centre_and_a_dark_rim() -> None:
    f = _field(4, label_weights={"ring_cell": 1.0}, n_cells=12, overlap=0.0)
    grey = f.image.astype(np.float32).mean(axis=2)
    checked = 0
    for c in f.cells:
        if c.touches_border or c.label != "hypochromic":
            continue
        x0, y0, x1, y1 = c.bbox
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(xx + 0.5 - c.x, yy + 0.5 - c.y) / (c.diameter_px / 2)
        patch = grey[y0:y1, x0:x1]
        centre = patch[(d < 0.25) & c.mask].mean()
        half = patch[(d > 0.45) & (d < 0.5) & c.mask].mean()  # still pale at half the diameter
        rim = patch[(d > 0.7) & (d < 0.9) & c.mask].mean()
        assert centre - rim > 25 and half - rim > 10
        checked += 1
    assert checked >= 5
