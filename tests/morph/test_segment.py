"""Cell localization: drawn test fields with known answers, rendered smears, bad input, real data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from morph.errors import MorphError
from morph.labels import PLATELET, UNCLASSIFIED
from morph.segment import DEFAULT_UM_PER_PX, Segmentation, SegmentConfig, segment_field
from morph.segment.warnings import warning_code

GLASS = (200, 214, 228)  # the pale-blue Chula glass
PINK = (188, 118, 146)  # a Wright-stained red cell
VIOLET = (95, 45, 140)  # nucleus / platelet


def _field(h: int = 240, w: int = 320, glass: tuple[int, int, int] = GLASS) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = np.empty((h, w, 3), dtype=np.float64)
    img[:] = glass
    img += rng.normal(0, 1.5, size=img.shape)
    return img


def _disc(img: np.ndarray, cx: float, cy: float, r: float, color=PINK, pallor: bool = True) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    d = np.hypot(xx - cx, yy - cy)
    m = d <= r
    img[m] = color
    if pallor:  # lighter centre, as in a discocyte
        c = d <= 0.4 * r
        img[c] = 0.5 * (np.array(color, dtype=float) + np.array(GLASS, dtype=float))


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def _grid_field(r: float = 20.0, n_x: int = 5, n_y: int = 3) -> tuple[np.ndarray, list[tuple[float, float]]]:
    img = _field()
    centres = []
    for j in range(n_y):
        for i in range(n_x):
            cx, cy = 40 + i * 60, 50 + j * 70
            _disc(img, cx, cy, r)
            centres.append((cx, cy))
    return _u8(img), centres


def _rbcs(seg: Segmentation) -> list:
    return [c for c in seg.cells if c.kind == "rbc"]


def test_isolated_discs_found_with_size_and_centre() -> None:
    img, centres = _grid_field()
    seg = segment_field(img, um_per_px=0.2)
    rbcs = _rbcs(seg)
    assert len(rbcs) == len(centres)
    for cx, cy in centres:
        best = min(rbcs, key=lambda c: np.hypot(c.x - cx, c.y - cy))
        assert np.hypot(best.x - cx, best.y - cy) < 3.0
        assert best.diameter_px == pytest.approx(40.0, rel=0.12)
        assert best.diameter_um == pytest.approx(best.diameter_px * 0.2)
        assert best.eccentricity < 0.4
        assert best.label == UNCLASSIFIED and not best.touches_border
    assert seg.median_rbc_diameter_px == pytest.approx(40.0, rel=0.12)
    assert not seg.warnings


def test_cell_fields_are_consistent() -> None:
    img, _ = _grid_field()
    seg = segment_field(img)
    for i, c in enumerate(seg.cells):
        x0, y0, x1, y1 = c.bbox
        assert c.id == i
        assert c.mask is not None and c.mask.dtype == bool and c.mask.shape == (y1 - y0, x1 - x0)
        assert c.area_px == pytest.approx(float(c.mask.sum()))
        assert c.diameter_px == pytest.approx(np.sqrt(4 * c.area_px / np.pi))
        assert x0 <= c.x < x1 and y0 <= c.y < y1
        assert c.to_dict()["kind"] in ("rbc", "nucleated", "platelet")


def test_adapts_to_magnification() -> None:
    """The same layout drawn at 2x scale gives the same cells (sizes scale, counts don't)."""
    small = _field(240, 320)
    big = _field(480, 640)
    for cx, cy in [(60, 60), (140, 70), (230, 90), (100, 170), (220, 180)]:
        _disc(small, cx, cy, 16)
        _disc(big, 2 * cx, 2 * cy, 32)
    s1, s2 = segment_field(_u8(small)), segment_field(_u8(big))
    assert len(_rbcs(s1)) == len(_rbcs(s2)) == 5
    assert s2.median_rbc_diameter_px == pytest.approx(2 * s1.median_rbc_diameter_px, rel=0.15)


def test_touching_and_overlapping_cells_are_split() -> None:
    img = _field()
    _disc(img, 100, 120, 22)
    _disc(img, 138, 120, 22)  # overlapping (centre distance 1.7 r)
    _disc(img, 230, 100, 22)
    _disc(img, 230, 144, 22)  # touching
    seg = segment_field(_u8(img))
    rbcs = _rbcs(seg)
    assert len(rbcs) == 4
    for cx, cy in [(100, 120), (138, 120), (230, 100), (230, 144)]:
        assert min(np.hypot(c.x - cx, c.y - cy) for c in rbcs) < 8


def test_border_cells_are_flagged_not_dropped() -> None:
    img, _ = _grid_field()
    img = _field().copy()
    _disc(img, 8, 120, 20)  # cut by the left edge
    _disc(img, 160, 120, 20)
    _disc(img, 250, 60, 20)
    seg = segment_field(_u8(img))
    rbcs = _rbcs(seg)
    assert len(rbcs) == 3
    cut = [c for c in rbcs if c.touches_border]
    assert len(cut) == 1 and cut[0].x < 20 and cut[0].bbox[0] == 0
    # the cut cell does not enter the median diameter
    assert seg.median_rbc_diameter_px == pytest.approx(40.0, rel=0.12)


def test_platelets_and_nucleated_cells_get_their_kind() -> None:
    img = _field()
    for cx, cy in [(50, 60), (120, 60), (50, 180), (270, 190)]:
        _disc(img, cx, cy, 20)
    _disc(img, 200, 60, 5, color=VIOLET, pallor=False)  # a platelet
    # a neutrophil: pale cytoplasm with three dark-violet lobes
    _disc(img, 170, 160, 30, color=(215, 190, 205), pallor=False)
    for lx, ly in [(158, 152), (172, 168), (184, 152)]:
        _disc(img, lx, ly, 8, color=VIOLET, pallor=False)
    seg = segment_field(_u8(img))
    kinds = sorted(c.kind for c in seg.cells)
    assert kinds.count("rbc") == 4, kinds
    nuc = [c for c in seg.cells if c.kind == "nucleated"]
    assert len(nuc) == 1  # one white cell, not one per lobe
    assert abs(nuc[0].x - 171) < 8 and abs(nuc[0].y - 158) < 8
    plt = [c for c in seg.cells if c.kind == "platelet"]
    assert len(plt) == 1 and plt[0].label == PLATELET
    assert abs(plt[0].x - 200) < 4 and abs(plt[0].y - 60) < 4
    # its cytoplasm is not also reported as a red cell
    assert not [c for c in _rbcs(seg) if np.hypot(c.x - 170, c.y - 160) < 30]


@pytest.mark.parametrize(
    "image",
    [
        np.full((480, 640, 3), 230, np.uint8),  # blank glass
        np.zeros((480, 640, 3), np.uint8),  # black
        np.full((480, 640, 3), 255, np.uint8),  # saturated
        np.full((200, 200), 128, np.uint8),  # grey, 2-D
        np.zeros((64, 64, 4), np.uint8),  # RGBA
        np.zeros((5, 5, 3), np.uint8),  # tiny
        np.zeros((0, 0, 3), np.uint8),  # empty
        np.full((100, 100, 3), 0.5, np.float32),  # float
        np.full((100, 100, 3), 40000, np.uint16),  # 16-bit
    ],
)
def test_blank_uniform_tiny_images_give_no_cells_and_a_warning(image: np.ndarray) -> None:
    seg = segment_field(image)
    assert seg.cells == []
    assert seg.median_rbc_diameter_px is None
    assert any("no cells" in w for w in seg.warnings)


def test_not_an_image_array_is_a_clear_error() -> None:
    with pytest.raises(MorphError) as e:
        segment_field(np.zeros((4, 4, 4, 4), np.uint8))
    assert e.value.code == "unsupported_image"
    with pytest.raises(MorphError) as e:
        segment_field(_grid_field()[0], um_per_px=0)
    assert e.value.code == "bad_request"


def test_implausible_scale_warns_but_never_rescales() -> None:
    img, _ = _grid_field()
    ok = segment_field(img, um_per_px=0.19)  # 40 px -> 7.6 um
    assert not any("um_per_px" in w for w in ok.warnings)
    big = segment_field(img, um_per_px=0.5)  # 40 px -> 20 um
    assert any("check um_per_px" in w and "macro" in w for w in big.warnings)
    assert big.median_rbc_diameter_px == pytest.approx(ok.median_rbc_diameter_px)
    assert _rbcs(big)[0].diameter_um == pytest.approx(_rbcs(big)[0].diameter_px * 0.5)


def test_default_scale_that_makes_cells_impossible_is_estimated_from_them() -> None:
    img, _ = _grid_field()  # 40 px cells: 7.1 um at the default scale, 20 um at 0.5 um/px
    plausible = segment_field(img, scale_stated=False)
    assert plausible.scale_source == "default" and plausible.um_per_px == DEFAULT_UM_PER_PX
    stated = segment_field(img, um_per_px=0.5)  # a lab's own scale is never replaced
    assert stated.scale_source == "stated" and stated.um_per_px == 0.5
    guessed = segment_field(img, um_per_px=0.5, scale_stated=False)
    assert guessed.scale_source == "estimated"
    med_um = guessed.median_rbc_diameter_px * guessed.um_per_px
    assert med_um == pytest.approx(SegmentConfig().normal_rbc_um)
    assert _rbcs(guessed)[0].diameter_um == pytest.approx(_rbcs(guessed)[0].diameter_px * guessed.um_per_px)
    assert any("estimated from the cells" in w and "give um_per_px" in w for w in guessed.warnings)
    assert not any("check um_per_px" in w for w in guessed.warnings)


def test_scale_is_not_estimated_from_too_few_cells() -> None:
    from morph.segment.calibration import field_scale

    cfg = SegmentConfig()
    assert field_scale(80.0, cfg.scale_min_cells - 1, 0.178, False, cfg).source == "default"
    est = field_scale(80.0, cfg.scale_min_cells, 0.178, False, cfg)
    assert est.source == "estimated" and est.um_per_px == pytest.approx(cfg.normal_rbc_um / 80.0)
    assert field_scale(None, 0, 0.178, False, cfg).source == "default"


def test_out_of_focus_field_warns() -> None:
    from scipy import ndimage as ndi

    img, _ = _grid_field()
    blurred = np.stack([ndi.gaussian_filter(img[..., c].astype(float), 6) for c in range(3)], 2)
    seg = segment_field(_u8(blurred))
    assert "out_of_focus" in {warning_code(w) for w in seg.warnings}
    assert "out_of_focus" not in {warning_code(w) for w in segment_field(img).warnings}


def test_dense_field_warns() -> None:
    img = _field()
    rng = np.random.default_rng(3)
    for _ in range(160):
        _disc(img, rng.uniform(0, 320), rng.uniform(0, 240), 20)
    seg = segment_field(_u8(img))
    assert any("dense" in w for w in seg.warnings)
    assert seg.cells  # a report, not a crash


def test_config_is_frozen_and_default_scale_is_chula() -> None:
    cfg = SegmentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.work_radius_px = 3.0  # type: ignore[misc]
    # a normal Chula red cell (~45 px) at the default scale is ~7.5 um
    assert 0.12 < DEFAULT_UM_PER_PX < 0.22


def _match_count(dets: list[tuple[float, float]], boxes: list[tuple[int, int, int, int]]) -> int:
    from scipy.optimize import linear_sum_assignment

    if not dets or not boxes:
        return 0
    d = np.array(dets, dtype=float)
    b = np.array(boxes, dtype=float)
    inside = (d[:, :1] >= b[:, 0]) & (d[:, :1] < b[:, 2]) & (d[:, 1:] >= b[:, 1]) & (d[:, 1:] < b[:, 3])
    ri, ci = linear_sum_assignment(np.where(inside, 0.0, 1.0))
    return int(inside[ri, ci].sum())


def test_rendered_fields_recall_and_precision() -> None:
    synth = pytest.importorskip("morph.synth")
    tp = n_det = n_gt = 0
    for seed in (0, 3, 5):
        f = synth.render_field(seed, field_type="blood")
        seg = segment_field(f.image, um_per_px=f.um_per_px)
        tp += _match_count([(c.x, c.y) for c in seg.cells], [c.bbox for c in f.cells])
        n_det += len(seg.cells)
        n_gt += len(f.cells)
    assert tp / n_gt >= 0.9
    assert tp / n_det >= 0.85


@pytest.mark.data
def test_chula_fields_recall(chula_dir: Path) -> None:
    from morph.io import read_image

    found = total = 0
    # the first fields by number (the set has gaps: there is no 1.jpg or 50.jpg)
    for p in sorted((chula_dir / "images").glob("*.jpg"), key=lambda q: int(q.stem))[:4]:
        name = p.stem
        img = read_image(p)
        seg = segment_field(img)
        owner = np.zeros(img.shape[:2], dtype=np.int32)
        for i, c in enumerate(_rbcs(seg)):
            x0, y0, x1, y1 = c.bbox
            owner[y0:y1, x0:x1][c.mask] = i + 1
        for line in (chula_dir / "labels" / f"{name}.txt").read_text().split("\n"):
            if line.strip():
                x, y, _ = (float(v) for v in line.split())
                total += 1
                found += owner[min(int(y), img.shape[0] - 1), min(int(x), img.shape[1] - 1)] > 0
        assert seg.median_rbc_diameter_px is not None
        assert 5.0 <= seg.median_rbc_diameter_px * DEFAULT_UM_PER_PX <= 10.0
    if total == 0:
        pytest.skip("no Chula fields")
    assert found / total >= 0.95


def test_vignetted_corners_are_glass_not_cells() -> None:
    """Darkened corners (vignetting) must read as glass, not grow irregular 'cells'."""
    img, centres = _grid_field()
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx / (w - 1) - 0.5) ** 2 + (yy / (h - 1) - 0.5) ** 2) / 0.5
    seg = segment_field(_u8(img * (1.0 - 0.18 * r2)[:, :, None]))  # the renderer's worst
    rbcs = _rbcs(seg)
    assert len(rbcs) == len(centres)
    for c in rbcs:
        assert min(np.hypot(c.x - x, c.y - y) for x, y in centres) < 5


def test_a_low_peak_behind_a_neck_stands_alone_a_shoulder_does_not() -> None:
    """Small-object seeds: a low distance peak separated from a cell by a saddle (a platelet
    pressed against it) qualifies; the same height on the cell's slope (a tail) does not."""
    from morph.segment.seeds import _stands_alone

    x = np.arange(60, dtype=float)
    cell = np.clip(10.0 - np.abs(x - 20), 0, None)  # a cell's distance peak of 10 at x=20
    bump = np.clip(3.0 - np.abs(x - 33), 0, None)  # a small peak of 3 at x=33
    ridge = np.maximum(cell, bump)  # saddle of 1.5 between them
    dts = np.tile(ridge, (9, 1)) * np.clip(1.0 - np.abs(np.arange(9) - 4) / 5, 0, 1)[:, None]
    assert _stands_alone(dts, 4, 33, h=1.0, win=12)
    shoulder = np.tile(cell, (9, 1)) * np.clip(1.0 - np.abs(np.arange(9) - 4) / 5, 0, 1)[:, None]
    assert not _stands_alone(shoulder, 4, 27, h=1.0, win=12)


def test_violet_rim_fringes_and_a_white_cell_do_not_shrink_the_radius() -> None:
    """Thin violet fringes on red-cell rims (chromatic aberration) are not nuclei, and a white
    cell's clump does not drag the typical radius down to its outline bumps."""
    img = _field()
    centres = [(45, 50), (110, 50), (275, 50), (45, 190), (110, 190), (275, 190)]
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    for cx, cy in centres:
        _disc(img, cx, cy, 22)
        d = np.hypot(xx - cx, yy - cy)
        img[(d > 19.5) & (d <= 22)] = VIOLET
    # a white cell touching two red cells
    _disc(img, 190, 120, 34, color=(215, 190, 205), pallor=False)
    _disc(img, 190, 120, 18, color=VIOLET, pallor=False)
    _disc(img, 190 - 50, 120, 22)
    _disc(img, 190 + 50, 120, 22)
    seg = segment_field(_u8(img))
    assert seg.typical_radius_px == pytest.approx(22.0, rel=0.2)
    assert len(_rbcs(seg)) == 8


def test_a_fragment_cut_from_a_cell_is_joined_a_touching_small_cell_is_not() -> None:
    """Two seeds in one oval cell leave a square notch (a false 'schistocyte'): it is joined
    back; a small cell meeting a neighbour at a neck stays a cell of its own."""
    from morph.segment.regions import merge_fragments as _merge_fragments

    yy, xx = np.mgrid[0:120, 0:200]
    ws = np.zeros((120, 200), np.int32)
    ws[((xx - 40) / 14.0) ** 2 + ((yy - 40) / 10.0) ** 2 <= 1] = 1  # an oval cell...
    ws[(ws == 1) & (xx < 36) & (yy < 42)] = 2  # ...with a square notch cut out of it
    for lab, (cx, cy) in enumerate([(100, 40), (160, 40), (40, 95), (160, 95)], start=3):
        ws[np.hypot(xx - cx, yy - cy) <= 10] = lab
    ws[np.hypot(xx - 100, yy - 55) <= 5.5] = 7  # a small cell touching cell 3 at a neck
    out = _merge_fragments(ws, 7, 0, 10.0, SegmentConfig())
    assert out[35, 30] == out[45, 45]  # notch joined to its cell
    assert len(np.unique(out[out > 0])) == 6
    assert out[57, 100] == 7 and out[45, 100] == 3  # the small touching cell stays apart


def _nucleated_in(cells: list, bbox: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = bbox
    return any(c.kind == "nucleated" and x0 <= c.x < x1 and y0 <= c.y < y1 for c in cells)


@pytest.mark.parametrize("seed", [0, 2])
def test_ring_cell_rims_are_not_nuclei(seed: int) -> None:
    synth = pytest.importorskip("morph.synth")
    f = synth.render_ring_field(seed, height=240, width=320)
    assert not any(c.kind == "nucleated" for c in f.cells)
    seg = segment_field(f.image, um_per_px=f.um_per_px)
    assert sum(c.kind == "nucleated" for c in seg.cells) == 0
    rbc = [c.bbox for c in f.cells if c.kind == "rbc"]
    found = _match_count([(c.x, c.y) for c in seg.cells if c.kind == "rbc"], rbc)
    assert found / len(rbc) >= 0.9
    # without the rules (rim shape; thin groups' violet margin) the dark violet rims are read
    # as nuclei (what the rules are for)
    old = segment_field(f.image, um_per_px=f.um_per_px,
                        config=SegmentConfig(nucleus_rim_thickness=0.0, nucleus_thin_share_margin=0.0))
    assert sum(c.kind == "nucleated" for c in old.cells) >= 2


def test_a_white_cell_beside_a_chain_of_ring_cells_keeps_only_its_own_nucleus() -> None:
    """Ring field 34: a lymphocyte a few pixels from a chain of touching ring cells. The closing
    that groups a neutrophil's lobes bridged the gap and took three rims into the lymphocyte's
    nucleus (its cell 138 px across, centre outside its box). Rims that are rims on their own
    leave before that closing."""
    synth = pytest.importorskip("morph.synth")
    f = synth.render_ring_field(34)
    seg = segment_field(f.image, um_per_px=f.um_per_px)
    truth = [c for c in f.cells if c.kind == "nucleated"]
    found = [c for c in seg.cells if c.kind == "nucleated"]
    assert len(found) == len(truth) == 2
    assert all(_nucleated_in(found, c.bbox) for c in truth)
    for t in truth:  # no chain of ring cells taken along (the lymphocyte's cell was 2.8x its box)
        x0, y0, x1, y1 = t.bbox
        c = next(c for c in found if x0 <= c.x < x1 and y0 <= c.y < y1)
        assert max(c.bbox[2] - c.bbox[0], c.bbox[3] - c.bbox[1]) < 1.6 * max(x1 - x0, y1 - y0)


@pytest.mark.parametrize("seed", [1, 5])
def test_overlapping_red_cells_are_not_nuclei(seed: int) -> None:
    # where two red cells of an iron-deficiency film overlap, the stacked haemoglobin passes the
    # violet threshold; its hue is the red cells' own, so it is no nucleus (it made "nucleated
    # red cells" and a thalassaemia first answer); the one white cell of seed 4 stays
    synth = pytest.importorskip("morph.synth")
    f = synth.render_case("iron_deficiency", seed, 1, height=240, width=320)[0]
    assert not any(c.kind == "nucleated" for c in f.cells)
    seg = segment_field(f.image, um_per_px=f.um_per_px)
    assert sum(c.kind == "nucleated" for c in seg.cells) == 0
    old = segment_field(f.image, um_per_px=f.um_per_px, config=SegmentConfig(nucleus_share_margin=0.0))
    assert sum(c.kind == "nucleated" for c in old.cells) >= 2
    white = synth.render_case("iron_deficiency", 4, 1, height=240, width=320)[0]
    cells = segment_field(white.image, um_per_px=white.um_per_px).cells
    assert all(_nucleated_in(cells, c.bbox) for c in white.cells if c.kind == "nucleated")


def test_rendered_white_cells_and_erythroblasts_stay_nucleated() -> None:
    # crowded white cells: hypersegmented neutrophils' thin lobe chains, lymphocytes, normoblasts
    # and megaloblasts; the rim and hue rules must lose none of those found without them
    synth = pytest.importorskip("morph.synth")
    blood = {"normal": 0.6, "neutrophil": 0.15, "hypersegmented_neutrophil": 0.15, "lymphocyte": 0.1}
    marrow = {"normal": 0.5, "normoblast": 0.2, "megaloblast": 0.2, "neutrophil": 0.1}
    for field_type, weights, seed in (("blood", blood, 6), ("blood", blood, 7), ("marrow", marrow, 6)):
        f = synth.render_field(seed, field_type=field_type, height=240, width=320, n_cells=24, label_weights=weights)
        white = [c for c in f.cells if c.kind == "nucleated" and not c.touches_border]
        found = {}
        rules_off = SegmentConfig(nucleus_rim_thickness=0.0, nucleus_share_margin=0.0)
        for rule, cfg in (("off", rules_off), ("on", SegmentConfig())):
            cells = segment_field(f.image, um_per_px=f.um_per_px, config=cfg).cells
            found[rule] = [c.label for c in white if _nucleated_in(cells, c.bbox)]
        assert found["on"] == found["off"], (field_type, seed)
        assert len(found["on"]) >= 4
        if field_type == "blood":
            assert {"neutrophil", "hypersegmented_neutrophil"} <= set(found["on"])


def test_every_stain_has_its_settings_and_wright_keeps_the_defaults() -> None:
    from morph.context import STAINS
    from morph.segment import STAIN_SETTINGS
    from morph.segment.nuclei import chromatin_density

    assert set(STAIN_SETTINGS) == set(STAINS)
    cfg = SegmentConfig()
    assert cfg.for_stain("wright") == cfg
    nmb = cfg.for_stain("nmb")
    assert nmb.chromatin_od != cfg.chromatin_od and nmb.for_stain("nmb") == nmb
    od = np.random.default_rng(0).uniform(0, 1.5, (8, 8, 3)).astype(np.float32)
    # Wright's chromatin density is exactly the violet one (green minus blue) it always was
    assert np.array_equal(chromatin_density(od, cfg), od[:, :, 1] - od[:, :, 2])
    assert np.allclose(chromatin_density(od, nmb), od[:, :, 0] - od[:, :, 2])


@pytest.mark.parametrize("seed", [17, 34])
def test_nmb_white_cells_are_nucleated_cells_not_red_cells(seed: int) -> None:
    """On new methylene blue the chromatin is dark blue: read as violet (Wright's measure) the
    nuclei of paler slides stay under the floor and their cells become red cells (a lymphocyte
    then reads as a reticulocyte). The pipeline reads chromatin with the stain's settings."""
    synth = pytest.importorskip("morph.synth")
    from morph.pipeline import AnalysisOptions, Analyzer

    weights = {"normal": 0.6, "reticulocyte": 0.2, "lymphocyte": 0.1, "neutrophil": 0.1}
    f = synth.render_field(seed, field_type="nmb", height=240, width=320, n_cells=24, label_weights=weights)
    white = [c for c in f.cells if c.kind == "nucleated" and not c.touches_border]
    assert ("lymphocyte" if seed == 17 else "neutrophil") in {c.label for c in white}
    as_wright = segment_field(f.image, um_per_px=f.um_per_px).cells
    assert not all(_nucleated_in(as_wright, c.bbox) for c in white)  # what the NMB settings are for
    report = Analyzer(classifier=None, localizer=None).analyze_case(
        [("nmb.png", f.image)], AnalysisOptions(um_per_px=f.um_per_px, stain="nmb"))
    cells = report.images[0].cells
    assert all(_nucleated_in(cells, c.bbox) for c in white)
    # and none of the cell's parts is left over as a red cell
    for c in white:
        x0, y0, x1, y1 = c.bbox
        assert not any(d.kind == "rbc" and abs(d.x - c.x) < 0.3 * (x1 - x0) and abs(d.y - c.y) < 0.3 * (y1 - y0)
                       for d in cells)
    # the reticulocytes stay red cells
    rbc = [c.bbox for c in f.cells if c.kind == "rbc" and c.label == "reticulocyte" and not c.touches_border]
    assert rbc and _match_count([(d.x, d.y) for d in cells if d.kind == "rbc"], rbc) == len(rbc)


def test_radius_of_crowded_overlapping_cells_on_a_small_field() -> None:
    """bcd-256-like fields (256x256, red cells ~48 px across overlapping their neighbours):
    block averaging fuses the field into one or two clumps at the working scale, whose
    thickness is no cell's radius; the re-measure leaves such clumps out (one of these fields
    read 56 px for 24 px cells)."""
    from morph.segment.scale import working_scale
    from morph.synth import render_field

    for seed in range(8):
        f = render_field(seed, height=256, width=256, um_per_px=0.15, n_cells=24, overlap=0.4,
                         label_weights={"normal": 1.0})
        true_r = float(np.median([(c.bbox[2] - c.bbox[0] + c.bbox[3] - c.bbox[1]) / 4 for c in f.cells]))
        wv = working_scale(f.image, SegmentConfig())
        assert not isinstance(wv, str)
        assert 0.9 * true_r < wv.r_full < 1.3 * true_r, (seed, wv.r_full, true_r)


def test_radius_of_real_bcd256_fields(bcd_dir) -> None:
    """bcd-256 red cells are ~50 px across (boxes): the typical radius of every test-part field
    is 18-35 px (it read 60-83 px on four of them)."""
    from morph.evaluation import bcd256_is_test
    from morph.io import read_image
    from morph.segment.scale import working_scale

    radii = []
    for path in sorted((bcd_dir / "images").glob("image-*.png")):
        if bcd256_is_test(int(path.stem.split("-")[1])):
            wv = working_scale(read_image(path), SegmentConfig())
            assert not isinstance(wv, str)
            radii.append(wv.r_full)
    assert radii and 18 <= min(radii) and max(radii) <= 35, radii


def test_white_cells_of_a_stain_whose_red_cells_absorb_no_red_are_found(bcd_dir) -> None:
    """bcd-256's red cells absorb almost no red light (red share 0.00-0.05 of their absorbance),
    its white-cell nuclei much (0.29-0.40), while their violet share sits only 0.02-0.07 above
    the red cells'. On violet alone 12 of the 22 white cells of the test part were read as red
    cells, among them the neutrophil of field 21 and the lymphocyte of field 108."""
    from morph.evaluation import box_matches
    from morph.io import read_image
    from morph.localize import load_localizer
    from morph.readers import read_bcd256_boxes

    fields = {f.number: f for f in read_bcd256_boxes(bcd_dir)[0]}
    loc = load_localizer(None)
    for number in (21, 45, 108):
        f = fields[number]
        seg = segment_field(read_image(f.image_path), centres=loc)
        matched, _, n = box_matches(seg.cells, f.boxes["wbc"], ("nucleated",))
        assert matched == n == 1, number


def test_the_working_scale_rounds_toward_the_finer_block_but_not_to_full_resolution() -> None:
    """Blocks of 2 keep a 28.6 px cell at 14 working px (blocks of 3 would leave 9.5, where the
    centre maps lose overlapping cells); past 0.75 of the way the coarser block is taken; full
    resolution only where plain rounding gives it (four times the work of blocks of 2)."""
    from morph.segment.scale import block_size

    cfg = SegmentConfig()
    assert [block_size(r, cfg) for r in (28.6, 30.0, 30.5, 41.0, 44.0, 18.0, 16.0, 5.0)] == [2, 2, 3, 3, 4, 2, 1, 1]
    plain = SegmentConfig(work_scale_round_up=0.5)
    assert [block_size(r, plain) for r in (28.6, 30.5, 41.0, 18.0, 16.0)] == [3, 3, 4, 2, 1]


def test_a_radius_read_a_little_high_does_not_coarsen_a_crowded_field(bcd_dir) -> None:
    """bcd-256 field 78 (cells ~26 px in radius, overlapping): a 10-degree hue turn reads the
    radius at 28.6 px; rounded plainly that meant blocks of 3 instead of 2 and 5 of its 23 found
    cells lost. Now either way its cells are read at 12.5 working px or more: blocks of 2, or
    blocks of 3 (9.5 px) and then again finer, as overlapping cells read small are."""
    from morph.evaluation import box_matches
    from morph.io import read_image
    from morph.localize import load_localizer
    from morph.readers import read_bcd256_boxes
    from morph.shifts import rotate_stain_hue

    f = {f.number: f for f in read_bcd256_boxes(bcd_dir)[0]}[78]
    loc = load_localizer(None)
    image = rotate_stain_hue(read_image(f.image_path), 10)
    found = {ru: box_matches(segment_field(image, config=SegmentConfig(work_scale_round_up=ru), centres=loc).cells,
                             f.boxes["rbc"])[0] for ru in (0.5, 0.75)}
    assert found[0.75] >= 22 and found[0.5] >= 21, found


def test_white_cells_stay_found_when_another_dye_mix_turns_the_red_term_off(bcd_dir) -> None:
    """bcd-256 turned 20 degrees in hue (or at saturation x0.6) puts its red cells' red share at
    0.10-0.15, past the switch of the red term: on violet alone all 22 white cells of the test part
    were lost (11 at saturation x0.6) and read as red cells. The learned nucleated-cell centres
    still see them; their nuclei are sought again with the red term."""
    from morph.evaluation import box_matches
    from morph.io import read_image
    from morph.localize import load_localizer
    from morph.readers import read_bcd256_boxes
    from morph.shifts import adjust_saturation, rotate_stain_hue

    fields = {f.number: f for f in read_bcd256_boxes(bcd_dir)[0]}
    loc = load_localizer(None)
    for number, shift in ((18, lambda im: rotate_stain_hue(im, -20)), (69, lambda im: rotate_stain_hue(im, -20)),
                          (45, lambda im: adjust_saturation(im, 0.6))):
        f = fields[number]
        seg = segment_field(shift(read_image(f.image_path)), centres=loc)
        matched, found, n = box_matches(seg.cells, f.boxes["wbc"], ("nucleated",))
        assert matched == found == n == 1, number


def test_a_nucleus_only_the_red_absorbance_shows_joins_where_a_learned_centre_vouches() -> None:
    """With the red term off, a pale nucleus (violet share as the red cells', red share 0.45
    against 0.12) is no nucleus; a learned nucleated-cell centre within reach has it sought
    again with the red term. Stacked red cells (red share as the red cells') stay out, and
    nothing joins without a learned centre."""
    from morph.segment.nuclei import nuclei_seen_in_red

    cfg, r = SegmentConfig(), 10.0
    fg = np.ones((40, 80), bool)
    od = np.broadcast_to(np.array([0.06, 0.30, 0.14], np.float32), fg.shape + (3,)).copy()  # red share 0.12
    od[10:20, 10:20] = np.array([0.50, 0.44, 0.17], np.float32)  # a nucleus: red share 0.45
    od[10:20, 50:60] *= 3.0                                       # stacked red cells: red share 0.12
    none = np.zeros(fg.shape, np.int32)
    learned = np.zeros_like(fg)
    learned[22, 15] = learned[15, 55] = True  # the white cell's centre ~0.7 r from its nucleus
    groups, n = nuclei_seen_in_red(none, 0, learned, od, fg, r, math.pi * r * r, cfg, red_weight=0.0)
    assert n == 1 and groups[15, 15] == 1 and groups[15, 55] == 0
    assert nuclei_seen_in_red(none, 0, np.zeros_like(fg), od, fg, r, math.pi * r * r, cfg, 0.0)[1] == 0
    assert nuclei_seen_in_red(none, 0, learned, od, fg, r, math.pi * r * r, cfg, red_weight=1.0)[1] == 0
    # a nucleus found already is neither found twice nor renumbered
    found = np.zeros(fg.shape, np.int32)
    found[10:20, 10:20] = 1
    groups, n = nuclei_seen_in_red(found, 1, learned, od, fg, r, math.pi * r * r, cfg, red_weight=0.0)
    assert n == 1 and np.array_equal(groups, found)


def test_a_red_cell_lying_over_a_white_cell_keeps_its_body(bcd_dir) -> None:
    """bcd-256 field 51: a red cell lies over the neutrophil's cytoplasm, its learned centre a few
    pixels from a lobe. The zone's halfway boundary left it a sliver, read as a platelet (21 of
    25 red cells found); with the disc round its centre it stays a red cell (23)."""
    from morph.evaluation import box_matches
    from morph.io import read_image
    from morph.localize import load_localizer
    from morph.readers import read_bcd256_boxes

    f = {f.number: f for f in read_bcd256_boxes(bcd_dir)[0]}[51]
    seg = segment_field(read_image(f.image_path), centres=load_localizer(None))
    assert box_matches(seg.cells, f.boxes["rbc"])[0] >= 23
    assert box_matches(seg.cells, f.boxes["wbc"], ("nucleated",))[:2] == (1, 1)
    assert not [c for c in seg.cells if c.kind == "platelet"]


def test_a_red_cell_cut_by_the_edge_sits_at_its_learned_centre() -> None:
    """A region cut by the image edge is placed at the learned centre that seeded it (its
    centroid may lie in the neighbour it took in); an inner one keeps its centroid, which is
    finer than the working pixel; a region without a learned seed keeps its centroid."""
    from morph.segment.regions import build_cells, learned_centres, measure_regions
    from morph.segment.seeds import Seeds

    labels = np.zeros((20, 30), np.int32)
    labels[2:10, 0:12] = 1  # cut by the left edge; its seed near the edge
    labels[8:18, 15:25] = 2  # inside
    labels[12:16, 0:6] = 3  # cut, seeded by no learned centre
    labels[17:20, 26:30] = 4  # cut by the bottom edge, seeded on the last working row
    markers = np.zeros_like(labels)
    markers[5, 2], markers[12, 18], markers[19, 28] = 1, 2, 4
    seeds = Seeds(markers=markers, count=4, rbc_ids=np.array([1, 2, 4]), platelet_ids=np.zeros(0, np.int64),
                  mask=labels > 0, height=np.zeros(labels.shape))
    regions = measure_regions(labels, 4)
    centres = learned_centres(regions, seeds)
    assert centres == {1: (5.0, 2.0), 2: (12.0, 18.0), 4: (19.0, 28.0)}
    # 39 rows: the last working row's block of 2 px hangs one row over the image's edge
    cells = build_cells(regions, dict.fromkeys(range(1, 5), "rbc"), 2, (39, 60), 0.1, 10.0, centres=centres)
    at = {(round(c.x, 1), round(c.y, 1)): c.touches_border for c in cells}
    # working (y, x) -> full resolution: (v + 0.5) * k - 0.5, on the image
    assert at == {(4.5, 10.5): True, (39.5, 25.5): False, (5.5, 27.5): True, (56.5, 38.0): True}


def test_slivers_of_cells_at_the_field_edge_are_placed_on_them(bcd_dir) -> None:
    """bcd-256 test fields 72 and 96: slivers of red cells at the edge, 10-31 px deep. Their
    regions took in some of the cell each overlaps, and their centroids fell 1-5 px outside the
    sliver's box; placed at their learned centres, each is found."""
    from morph.evaluation import box_matches
    from morph.io import read_image
    from morph.localize import load_localizer
    from morph.readers import read_bcd256_boxes

    fields = {f.number: f for f in read_bcd256_boxes(bcd_dir)[0]}
    for number, sliver in ((72, (0, 6, 31, 63)), (96, (212, 0, 256, 10))):
        seg = segment_field(read_image(fields[number].image_path), centres=load_localizer(None))
        red = [c for c in seg.cells if c.kind == "rbc"]
        assert box_matches(red, np.array([sliver], float))[0] == 1, number
        assert any(c.touches_border for c in red if _match_count([(c.x, c.y)], [sliver]))


def test_red_absorbance_joins_chromatin_only_where_red_cells_absorb_no_red() -> None:
    """The red term's weight follows the red cells' red share: full under 0.05, none over 0.07
    (TXL-PBC and rendered red cells sit at 0.14-0.37, most Chula RBC-12 fields over 0.07), and
    never on NMB."""
    from morph.segment.nuclei import chromatin_density, red_chromatin_weight

    fg = np.ones((8, 8), bool)
    pink = np.broadcast_to(np.array([0.02, 0.66, 0.32], np.float32), (8, 8, 3)).copy()  # bcd-like
    lilac = np.broadcast_to(np.array([0.25, 0.45, 0.30], np.float32), (8, 8, 3)).copy()  # TXL-like
    cfg = SegmentConfig()
    assert red_chromatin_weight(pink, fg, cfg) == pytest.approx(1.0)
    assert red_chromatin_weight(lilac, fg, cfg) == 0.0
    assert red_chromatin_weight(pink, fg, SegmentConfig().for_stain("nmb")) == 0.0
    np.testing.assert_allclose(chromatin_density(pink, cfg, 1.0), chromatin_density(pink, cfg) + 0.02)


def test_stacked_red_cells_of_a_red_free_stain_stay_red_cells_even_when_vouched() -> None:
    """Where the red term is on, a nuclear group needs a red share 0.12 above the red cells':
    bcd-256 turned 20 degrees in hue read overlapping red cells as white cells (a learned
    nucleated centre vouched for them); its nuclei sit 0.25-0.37 above."""
    from morph.segment.nuclei import drop_red_cell_hue

    fg = np.ones((20, 40), bool)
    nuclear = np.zeros_like(fg)
    nuclear[5:10, 5:10] = nuclear[5:10, 25:30] = True
    groups = np.zeros(fg.shape, np.int32)
    groups[5:10, 5:10], groups[5:10, 25:30] = 1, 2
    od = np.broadcast_to(np.array([0.02, 0.66, 0.32], np.float32), fg.shape + (3,)).copy()
    od[5:10, 5:10] *= 2.0                                   # two red cells stacked: red-free
    od[5:10, 25:30] = np.array([0.8, 1.2, 0.3], np.float32)  # a nucleus: red share 0.35
    chrom = od[:, :, 0] + od[:, :, 1] - od[:, :, 2]
    vouched = np.zeros_like(fg)
    vouched[7, 7] = vouched[7, 27] = True
    kept, n = drop_red_cell_hue(groups, 2, nuclear, chrom, od, fg, 10.0, SegmentConfig(), vouched=vouched,
                                red_weight=1.0)
    assert n == 1 and kept[7, 27] == 1 and kept[7, 7] == 0


def test_a_learned_nucleated_centre_vouches_for_a_pale_nucleus() -> None:
    """bcd-256's white-cell nuclei are only 0.02-0.07 bluer than its red cells: the hue rule alone
    drops them as overlapping red cells; a learned nucleated-cell centre in the group keeps it."""
    from morph.segment.nuclei import drop_red_cell_hue

    fg = np.ones((20, 40), bool)
    nuclear = np.zeros_like(fg)
    nuclear[5:10, 5:10] = nuclear[5:10, 25:30] = True
    groups = np.zeros(fg.shape, np.int32)
    groups[5:10, 5:10], groups[5:10, 25:30] = 1, 2
    od = np.full(fg.shape + (3,), 0.3, np.float32)
    viol = np.where(nuclear, 0.33, 0.30).astype(np.float32)  # shares 0.367 vs 0.333: +0.03
    vouched = np.zeros_like(fg)
    vouched[7, 27] = True
    _, n = drop_red_cell_hue(groups, 2, nuclear, viol, od, fg, 10.0, SegmentConfig())
    assert n == 0
    kept, n = drop_red_cell_hue(groups, 2, nuclear, viol, od, fg, 10.0, SegmentConfig(), vouched=vouched)
    assert n == 1 and kept[7, 27] == 1 and kept[7, 7] == 0


def test_a_thin_crescent_needs_more_violet_than_a_compact_nucleus() -> None:
    """Two ring-cell rims overlapping make a dark crescent ~0.2 r thick whose violet share sits
    0.05-0.08 above the red cells' (rendered iron-deficiency fields: 24 false nuclei in 40): a
    thin group needs nucleus_thin_share_margin (0.10); a compact one keeps the 0.05 margin."""
    from morph.segment.nuclei import drop_red_cell_hue

    r = 10.0
    fg = np.ones((40, 60), bool)
    nuclear = np.zeros_like(fg)
    nuclear[10:13, 5:25] = True   # crescent: 3 px thick (half-width ~0.15 r)
    nuclear[10:22, 35:47] = True  # compact body: 12 px (half-width ~0.6 r)
    groups = np.zeros(fg.shape, np.int32)
    groups[10:13, 5:25], groups[10:22, 35:47] = 1, 2
    od = np.full(fg.shape + (3,), 0.3, np.float32)
    for extra, kept_labels in ((0.07, {2}), (0.12, {1, 2})):
        share = 1 / 3 + extra  # the red cells' share is 1/3
        viol = np.where(nuclear, 0.9 * share, 0.3).astype(np.float32)
        kept, n = drop_red_cell_hue(groups, 2, nuclear, viol, od, fg, r, SegmentConfig())
        assert n == len(kept_labels)
        assert bool(kept[11, 10]) == (1 in kept_labels) and bool(kept[15, 40])


def test_shared_scale_pools_the_fields_that_agree() -> None:
    """A case's scale comes from the red cells of the fields that agree, pooled; a field ~30% off
    (another objective) neither shares it nor pulls it; one with too few cells shares it."""
    from morph.segment.calibration import shared_scale

    cfg = SegmentConfig()
    fields = [[60.0] * 10, [56.0] * 10, [80.0] * 10, [61.0, 59.0]]
    scale, shares = shared_scale(fields, 0.178, cfg)
    assert shares == [True, True, False, True]
    pooled = np.median([60.0] * 10 + [56.0] * 10 + [61.0, 59.0])
    assert scale.source == "estimated" and scale.um_per_px == pytest.approx(7.5 / pooled)
    assert "the case's 3 fields" in (scale.note or "")
    plausible, shares = shared_scale([[45.0] * 10, [47.0] * 10], 0.178, cfg)
    assert plausible.source == "default" and plausible.note is None and shares == [True, True]
    assert shared_scale([], 0.178, cfg)[0].source == "default"


def test_sharing_a_case_scale_leaves_each_field_result_consistent() -> None:
    """share_case_scale returns new fields at the shared scale; the fields it was given keep
    sizes that match their own scale (their cells are not rewritten)."""
    from morph.segment import share_case_scale

    # 40 and 44 px cells (within the sharing tolerance): 20-22 um at 0.5 um/px, so each field
    # estimates a scale of its own and the case shares one between them
    own = segment_field(_grid_field(r=20.0)[0], um_per_px=0.5, scale_stated=False)
    big = segment_field(_grid_field(r=22.0)[0], um_per_px=0.5, scale_stated=False)
    shared = share_case_scale([own, big], um_per_px=0.5)
    assert shared[0].um_per_px != own.um_per_px and shared[1].um_per_px != big.um_per_px
    for before, after in zip([own, big], shared, strict=True):
        for c in _rbcs(before):
            assert c.diameter_um == pytest.approx(c.diameter_px * before.um_per_px)
        for c in _rbcs(after):
            assert c.diameter_um == pytest.approx(c.diameter_px * after.um_per_px)
    assert shared[0].scale_source == "estimated"


def test_every_field_warning_the_segmenter_writes_has_a_code() -> None:
    # callers (the robustness benchmark, a lab's scripts) count warnings by code, not by text
    from morph.segment.warnings import field_warnings, size_warning

    cfg = SegmentConfig()
    written = field_warnings([], 0.0, 0.99, cfg, blank=0.9) + [size_warning(20.0, 1.0, cfg) or ""]
    blurred = field_warnings([object()], 0.0, 0.1, cfg)  # type: ignore[list-item]
    codes = [warning_code(w) for w in written + blurred]
    assert codes == ["mostly_blank", "no_cells", "very_dense", "implausible_size", "out_of_focus"]
    assert warning_code("no cells found: the field is black (no light reached the camera)") == "no_cells"
    assert warning_code("scale estimated from the cells") is None
