"""segment_field: the localization steps of one field, in order (see the package docstring)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import MorphError
from ..types import Cell, CentreMap
from .arrays import as_rgb_float
from .calibration import FieldScale, field_scale, scaled, shared_scale
from .config import DEFAULT_UM_PER_PX, SegmentConfig
from .nuclei import (
    Nuclei,
    chromatin_density,
    find_nuclear_groups,
    join_cytoplasm,
    nucleated_zones,
    nuclei_seen_in_red,
    nucleus_threshold,
    red_chromatin_weight,
    split_nuclear_groups,
)
from .pairs import (
    CROP_CHANNELS,
    CROP_SHAPE,
    PAIR_FEATURES,
    PairJudge,
    PairPictures,
    pair_crops,
    pairs_to_join,
    red_cell_pairs,
    region_centres,
)
from .regions import (
    Regions,
    build_cells,
    cut_flags,
    flood,
    full_span,
    learned_centres,
    measure_regions,
    merge_fragments,
    region_kinds,
    rejoin_pieces,
    split_large,
)
from .scale import Working, read_again, working_scale
from .seeds import PEAK_SPACING, CentreMaps, Seeds, place_seeds, read_centre_maps
from .warnings import field_warnings, focus_measure, size_warning, stained_fraction

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """What :func:`segment_field` found in one field."""

    cells: list[Cell] = field(default_factory=list)
    median_rbc_diameter_px: float | None = None
    #: the warnings about the field itself (density, focus, blank areas, no cells found).
    field_notes: list[str] = field(default_factory=list)
    #: typical red-cell radius (px) the localizer adapted to (diagnostic).
    typical_radius_px: float | None = None
    #: focus measure (normalised Laplacian energy at the working scale; diagnostic).
    focus: float | None = None
    #: the scale of ``diameter_um`` and where it came from (``"stated"``, ``"default"``, ``"estimated"``).
    um_per_px: float = DEFAULT_UM_PER_PX
    scale_source: str = "stated"
    #: the warnings about the scale (the estimate's note, an implausible size), kept apart
    #: because they change when the field takes its case's scale (:func:`share_case_scale`).
    scale_notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Every warning a person should read: the scale's first, then the field's."""
        return self.scale_notes + self.field_notes


def segment_field(
    image: np.ndarray, um_per_px: float = DEFAULT_UM_PER_PX, config: SegmentConfig = SegmentConfig(),
    centres: CentreMap | None = None, *, scale_stated: bool = True,
) -> Segmentation:
    """Locate red cells, nucleated cells and platelets in one RGB field.

    The steps (numbered as in the package docstring): 1-3. the glass map, optical density,
    foreground and typical red-cell radius at the working scale; 4. the nucleated cells and
    their zones; 5. seeds, the watershed, fragments joined back, overlapping cells split and
    white-cell cytoplasm joined to its cell; 6. the kind of each region; 6b. red cells the
    centre map cut in two joined again (when ``centres`` carries a pair rule, :mod:`.pairs`),
    and the cells; 7. the scale (:mod:`.calibration`) and the warnings.

    Args:
        image: (H, W, 3) RGB array (uint8 preferred; grey, RGBA, 16-bit and float are accepted).
        um_per_px: physical scale used for ``diameter_um`` and the size-plausibility warning;
            localization itself adapts to the cell size it measures in the image.
        config: thresholds (see :class:`SegmentConfig`).
        centres: a learned centre map (:class:`morph.localize.CentreDetector`); its peaks
            become the red-cell seeds instead of circle votes and distance maxima, and its
            ``pair_rule`` (if any) joins the red cells it cut in two.
        scale_stated: ``False`` when ``um_per_px`` is the default, not the caller's: a default that
            makes the median red cell implausible is then replaced by one estimated from the cells.

    Returns:
        A :class:`Segmentation`: cells (ids in reading order), the median red-cell diameter
        (px, cells cut by the border excluded) and warnings a person should read.

    Raises:
        MorphError: ``bad_request`` for a non-positive scale, ``unsupported_image`` for an
            array that is not an image.
    """
    cfg = config
    no_cells_scale = field_scale(None, 0, um_per_px, scale_stated, cfg)  # nothing to estimate from
    found = _locate(_checked_rgb(image, um_per_px), cfg, centres)
    if isinstance(found, str):
        return _no_cells(found, no_cells_scale)
    wv, regions, kinds = found.wv, found.regions, found.kinds
    # 6b. a red cell the centre map cut in two is joined again (the localizer's pair rule)
    joined: set[int] = set()
    if found.maps is not None and found.maps.pair_rule is not None:
        regions, kinds, joined = join_split_cells(found, found.maps.pair_rule)
    centres_by_region = None
    if found.maps is not None:  # a joined cell holds two learned centres: it keeps its centroid
        centres_by_region = {i: c for i, c in learned_centres(regions, found.seeds).items() if i not in joined}
    cells = _shifted(build_cells(regions, kinds, wv.k, wv.shape, um_per_px, wv.r_full, edge=wv.blank_edge,
                                 centres=centres_by_region), wv.offset)
    # 7. the scale, then warnings a person should read
    med = _median_rbc_diameter(cells)
    scale = field_scale(med, len(_counted_rbc(cells)), um_per_px, scale_stated, cfg)
    cells = scaled(cells, scale)
    focus = found.focus
    # density of the part that is not blank (blank areas were painted glass)
    stained = stained_fraction(found.seeds.mask, wv.raw, wv.thr) / max(1.0 - wv.blank_in_part, 0.02)
    log.debug("segment: %d cells, r=%.1f px, k=%g, thresholds=%s, focus=%.3f",
              len(cells), wv.r_full, wv.k, wv.thr, focus)
    return Segmentation(
        cells=cells, median_rbc_diameter_px=med,
        field_notes=field_warnings(cells, focus, stained, cfg, blank=wv.blank),
        typical_radius_px=float(wv.r_full), focus=focus, um_per_px=scale.um_per_px, scale_source=scale.source,
        scale_notes=_scale_notes(med, scale, cfg),
    )


@dataclass
class Located:
    """A field's regions before they become cells (steps 0-6): the working view, the centre
    maps read on it, the seeds, the regions and the kind of each kept one."""

    wv: Working
    maps: CentreMaps | None
    seeds: Seeds
    regions: Regions
    kinds: dict[int, str]
    focus: float  # :func:`.warnings.focus_measure` of the field

    @property
    def r(self) -> float:
        """The typical red-cell radius at the working scale."""
        return self.wv.r_full / self.wv.k


def _locate(rgb: np.ndarray, cfg: SegmentConfig, centres: CentreMap | None) -> Located | str:
    """Steps 0-6 on a checked RGB field; a string says why no cell can be found.

    A field of overlapping cells whose working scale leaves them under
    ``overlap_read_below`` px of radius is read again at ``overlap_work_radius`` (a block size
    that need not be whole): the centre map parts overlapping cells less well that small.
    bcd-256's test part at 0.75x (cells ~21 px, blocks of 2: 10.5 working px) read red-cell
    recall 0.874 against 0.910 at full size (blocks of 2: 14 px), and 0.906 read at 13."""
    H, W = rgb.shape[:2]
    if min(H, W) < 8:
        return f"no cells found: image too small to hold a cell ({W}x{H} px)"
    # 0-3. blank areas, glass map, optical density, foreground, typical radius at the working scale
    wv = working_scale(rgb, cfg)
    del rgb  # its coarse pass keeps what a second read needs, until none can follow
    if isinstance(wv, str):
        return wv
    maps = read_centre_maps(centres, wv.od, cfg)
    if maps is not None and wv.doubted_radius is not None:
        wv, maps = _surer_scale(wv, maps, centres, cfg)
    # the field's sharpness, measured at its usual scale even when it is read again finer
    focus = focus_measure(wv.work.mean(axis=2))
    if maps is None or wv.r_full / wv.k >= cfg.overlap_read_below:
        wv = replace(wv, coarse=None)  # a 50-megapixel field is large
        return _cells_at(wv, maps, cfg, focus)
    found = _cells_at(wv, maps, cfg, focus)
    if _overlap(found) > cfg.overlap_discs:
        finer = read_again(wv, cfg, block=wv.r_full / cfg.overlap_work_radius)
        found = _cells_at(finer, read_centre_maps(centres, finer.od, cfg), cfg, focus)
    return replace(found, wv=replace(found.wv, coarse=None))


def _overlap(found: Located) -> float:
    """How many times the red cells' discs (of the typical radius) cover the area of their
    regions: ~1 where cells lie side by side (0.9-1.1 on Chula RBC-12), over it where they
    overlap (bcd-256 1.1-1.8)."""
    red = [i for i, kind in found.kinds.items() if kind == "rbc"]
    area = float(found.regions.stats["n"][red].sum()) if red else 0.0
    return len(red) * math.pi * found.r ** 2 / area if area else 0.0


def _cells_at(wv: Working, maps: CentreMaps | None, cfg: SegmentConfig, focus: float) -> Located:
    """Steps 4-6 at the working scale ``wv`` (``focus``: the field's, carried along)."""
    r = wv.r_full / wv.k
    cell_area = math.pi * r * r
    # 4. nucleated cells and the zones they own
    red_weight = red_chromatin_weight(wv.od, wv.fg, cfg)
    chrom = chromatin_density(wv.od, cfg, red_weight)
    nucleus_od = nucleus_threshold(chrom, wv.fg, cfg)
    nuclei = _nucleated_cells(chrom > nucleus_od, chrom, wv.od, maps, wv.fg, r, cell_area, cfg, red_weight)
    # 5. seeds, watershed, fragments joined back, overlapping cells split, cytoplasm joined
    seeds = place_seeds(wv.fg, nuclei, maps, r, cfg)
    ws = merge_fragments(flood(seeds, learned=maps is not None), seeds.count, nuclei.n, r, cfg)
    ws, nm = split_large(ws, seeds.count, nuclei.n, cell_area, cfg)
    learned_rbc = seeds.rbc_ids if maps is not None else None
    regions = measure_regions(join_cytoplasm(ws, nm, nuclei, r, cell_area, cfg, red_cells=learned_rbc), nm)
    # 6. the kind of each region (those touching a blank area count as cut)
    kinds, pieces = region_kinds(regions, nuclei.n, wv.od, chrom, nucleus_od, seeds, maps is not None, cell_area, cfg,
                                 edge=wv.blank_edge)
    if pieces:
        regions = rejoin_pieces(regions, pieces, kinds, seeds, r, cfg)
    return Located(wv, maps, seeds, regions, kinds, focus)


def _surer_scale(wv: Working, maps: CentreMaps, centres: CentreMap | None,
                 cfg: SegmentConfig) -> tuple[Working, CentreMaps]:
    """Of a field whose typical radius is in doubt (:attr:`Working.doubted_radius`: blurred
    clumps of overlapping cells, or pale-centred cells that split into arcs), the working scale
    at which the centre map sees its red cells more surely. The map was trained on cells of
    ~``work_radius_px``: read at a radius 1.5-2x off, its peaks lose probability (bcd-256 field
    45 under a 3 px defocus: median 0.69 at the clumps' 43 px, 0.79 at the split's 24 px for
    cells of 28; TXL-PBC field 12's arcs under 2 px: 0.54 against 0.60 for the whole cells)."""
    assert wv.doubted_radius is not None
    other = read_again(wv, cfg, coarse_radius=wv.doubted_radius)
    if other.k == wv.k:
        return wv, maps
    other_maps = read_centre_maps(centres, other.od, cfg)
    assert other_maps is not None
    if (other_maps.red_cell_confidence(other.r_full / other.k)
            >= maps.red_cell_confidence(wv.r_full / wv.k) + cfg.doubt_peak_margin):
        return other, other_maps
    return wv, maps


def _red_cell_pairs(found: Located) -> tuple[np.ndarray, np.ndarray, PairPictures]:
    """The touching red-cell regions ``(n, 2)`` of a located field, their measures and a reader
    of their pictures."""
    assert found.maps is not None
    heat, stain = found.maps.heats["rbc"], found.wv.od.sum(axis=2)
    centres = region_centres(found.regions, learned_centres(found.regions, found.seeds))
    pairs, feats = red_cell_pairs(found.regions, found.kinds, heat, stain, centres,
                                  cut_flags(found.regions, found.wv.blank_edge), found.r)

    def pictures(which: np.ndarray) -> np.ndarray:
        return pair_crops(stain, found.regions.labels, pairs[which], centres, heat, found.r)

    return pairs, feats, pictures


def join_split_cells(found: Located, rule: PairJudge) -> tuple[Regions, dict[int, str], set[int]]:
    """Join the touching red-cell regions the pair rule reads as one cell cut in two. Returns
    the regions, their kinds and the labels that took in a neighbour."""
    pairs, feats, pictures = _red_cell_pairs(found)
    joins = pairs_to_join(pairs, rule.probability(feats, pictures), rule.threshold) if len(pairs) else []
    if not joins:
        return found.regions, found.kinds, set()
    lut = np.arange(found.regions.count + 1, dtype=np.int32)
    for i, j in joins:
        lut[j] = i
    kinds = {i: kind for i, kind in found.kinds.items() if lut[i] == i}
    return measure_regions(lut[found.regions.labels], found.regions.count), kinds, {i for i, _ in joins}


@dataclass
class FieldPairs:
    """The touching red-cell regions of one field as the pair rule sees them before joining
    (what :mod:`training.train_pair_rule` learns from): the region ids ``(n, 2)`` (working
    scale), the measures of each pair (:data:`.pairs.PAIR_FEATURES`), its picture
    (:func:`.pairs.pair_crops`, when asked for) and the full-resolution boxes ``(x0, y0, x1, y1)``
    of its two regions (its label comes from boxes)."""

    pairs: np.ndarray
    features: np.ndarray
    crops: np.ndarray | None
    boxes_a: np.ndarray
    boxes_b: np.ndarray


def red_cell_pairs_of_field(image: np.ndarray, centres: CentreMap, config: SegmentConfig = SegmentConfig(),
                            with_crops: bool = False) -> FieldPairs:
    """The :class:`FieldPairs` of a field, located with the learned centre map ``centres``
    (its pair rule is not applied)."""
    found = _locate(_checked_rgb(image, DEFAULT_UM_PER_PX), config, centres)
    if isinstance(found, str) or found.maps is None:
        crops = np.zeros((0, len(CROP_CHANNELS), *CROP_SHAPE), dtype=np.float32) if with_crops else None
        return FieldPairs(np.zeros((0, 2), dtype=np.int64), np.zeros((0, len(PAIR_FEATURES))), crops,
                          np.zeros((0, 4)), np.zeros((0, 4)))
    pairs, feats, pictures = _red_cell_pairs(found)
    k, (dy, dx) = found.wv.k, found.wv.offset
    H, W = found.wv.shape

    def full_boxes(labels: np.ndarray) -> np.ndarray:  # clipped to the part analysed, as the cells' boxes are
        out = np.zeros((len(labels), 4))
        for n, label in enumerate(labels.tolist()):
            sl = found.regions.boxes[label - 1]
            assert sl is not None
            (y0, y1), (x0, x1) = full_span(sl[0].start, sl[0].stop, k), full_span(sl[1].start, sl[1].stop, k)
            out[n] = [x0 + dx, y0 + dy, min(x1, W) + dx, min(y1, H) + dy]
        return out

    return FieldPairs(pairs, feats, pictures(np.arange(len(pairs))) if with_crops else None,
                      full_boxes(pairs[:, 0]), full_boxes(pairs[:, 1]))


def share_case_scale(segs: list[Segmentation], um_per_px: float = DEFAULT_UM_PER_PX,
                     config: SegmentConfig = SegmentConfig()) -> list[Segmentation]:
    """The fields of one case, with no scale stated (each segmented with ``scale_stated=False``),
    measured at the one scale they share (:func:`.calibration.shared_scale`: their red cells
    pooled); a field far from the others keeps its own."""
    scale, shares = shared_scale([[c.diameter_px for c in _counted_rbc(s.cells)] for s in segs], um_per_px, config)
    return [_with_scale(s, scale, config) if share else s for s, share in zip(segs, shares, strict=True)]


def _with_scale(seg: Segmentation, scale: FieldScale, cfg: SegmentConfig) -> Segmentation:
    """``seg`` with its sizes at ``scale``, and the scale's warnings in place of its own."""
    if (seg.um_per_px, seg.scale_source) == (scale.um_per_px, scale.source):
        return seg
    return replace(seg, cells=scaled(seg.cells, scale), um_per_px=scale.um_per_px, scale_source=scale.source,
                   scale_notes=_scale_notes(seg.median_rbc_diameter_px, scale, cfg))


def _scale_notes(med: float | None, scale: FieldScale, cfg: SegmentConfig) -> list[str]:
    """Why the scale is what it is (an estimate's note), and whether the median size at it is
    implausible."""
    implausible = size_warning(med, scale.um_per_px, cfg)
    return [w for w in (scale.note, implausible) if w]


def _checked_rgb(image: np.ndarray, um_per_px: float) -> np.ndarray:
    """The image as (H, W, 3) RGB, after checking the scale and the array: a uint8 RGB image as
    it is (the working scale needs no float copy of it: 588 MB for 49 MP), anything else as
    float32."""
    if not (isinstance(um_per_px, int | float) and math.isfinite(um_per_px) and um_per_px > 0):
        raise MorphError("bad_request", f"um_per_px must be a positive number, got {um_per_px!r}")
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    rgb = as_rgb_float(image)
    if rgb is None:
        shape = getattr(image, "shape", None)
        raise MorphError("unsupported_image", f"expected an (H, W, 3) image array, got shape {shape}")
    return rgb


def _no_cells(reason: str, scale: FieldScale) -> Segmentation:
    return Segmentation(cells=[], median_rbc_diameter_px=None, field_notes=[reason], um_per_px=scale.um_per_px,
                        scale_source=scale.source)


def _nucleated_cells(nuclear: np.ndarray, chrom: np.ndarray, od: np.ndarray, maps: CentreMaps | None,
                     fg: np.ndarray, r: float, cell_area: float, cfg: SegmentConfig,
                     red_weight: float = 0.0) -> Nuclei:
    """Nuclear groups (not ring-cell rims, not overlapping red cells; those only the red absorbance
    shows where a learned centre vouches for them), split between the learned nucleated-cell
    centres when a group holds two or more, and the zone each one owns."""
    learned = maps.peaks("nucleated", PEAK_SPACING["nucleated"] * r) if maps and "nucleated" in maps.heats else None
    groups, n = find_nuclear_groups(nuclear, chrom, od, fg, r, cell_area, cfg, vouched=learned, red_weight=red_weight)
    groups, n = nuclei_seen_in_red(groups, n, learned, od, fg, r, cell_area, cfg, red_weight)
    if n and learned is not None:
        groups, n = split_nuclear_groups(groups, n, learned)
    return nucleated_zones(groups, n, fg, r, cfg)


def _shifted(cells: list[Cell], offset: tuple[int, int]) -> list[Cell]:
    """Cells found in a part of the field (blank margins cut off), in the field's coordinates."""
    dy, dx = offset
    if dy or dx:
        for c in cells:
            c.x, c.y = c.x + dx, c.y + dy
            x0, y0, x1, y1 = c.bbox
            c.bbox = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    return cells


def _counted_rbc(cells: list[Cell]) -> list[Cell]:
    """The red cells not cut by the border (those whose size is whole)."""
    return [cl for cl in cells if cl.kind == "rbc" and not cl.touches_border]


def _median_rbc_diameter(cells: list[Cell]) -> float | None:
    """Median diameter (px) of the red cells not cut by the border."""
    diam = [cl.diameter_px for cl in _counted_rbc(cells)]
    return float(np.median(diam)) if diam else None
