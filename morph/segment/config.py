"""Localization settings and the default scale.

**Default scale.** :data:`DEFAULT_UM_PER_PX` is the scale of the Chula RBC-12 fields,
measured, not taken from the data set's README: over all 528 fields, the median equivalent
diameter of the detected cells holding a point labelled *normal* (class 0) is 42.0 px
(5,293 of the 5,319 normal points fall in a detected cell), and a normal red cell is
~7.5 um across, so 7.5 / 42.04 = 0.178 um/px (with this localizer's own boundaries, so
normal Chula cells read 7.5 um). Measured with::

    python benchmarks/localization.py --sets chula      # row "normal_median_d_px"

The scale bar burnt into many Chula fields ("20.00 um" over 104-105 px, i.e. 0.19 um/px)
agrees within ~7 %. The README's "about 10 px per micrometre" cannot be right: it
would make a 45-50 px normal cell 4.5-5 um across, a microcyte.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: Micrometres per pixel of the Chula RBC-12 fields (see module docstring).
DEFAULT_UM_PER_PX = 0.178


@dataclass(frozen=True)
class SegmentConfig:
    """Localization settings. Sizes are relative to the typical red-cell radius ``r``
    estimated per image, so one config serves every magnification.

    Attributes:
        work_radius_px: red-cell radius (px) the field is resampled to before the watershed.
        work_scale_round_up: the block size is the radius over ``work_radius_px``, rounded up
            only past this fraction (0.5: plain rounding), so a cell is rarely under ~10 working
            px in radius (:func:`.scale.block_size`).
        coarse_max_block: the first (coarse, ~320 px) pass averages blocks of at most this many
            pixels across, so the cells of a very large field stay measurable there (at ~320 px
            a 4000x3000 field's cells shrink to two pixels: its radius, thresholds and working
            scale were wrong).
        blank_min_grey: blank areas (white patches, padding, transparency) are flat regions at
            least this bright (grey level)...
        blank_step: ...whose grey stands this many levels above most pixels just outside them
            (flat, saturated glass fades into the glass around it instead)...
        blank_min_area: ...covering at least this fraction of the field (and 256 px).
        mostly_blank: blank areas over this fraction of the field are reported in a warning.
        black_max_grey: a field whose 99th-percentile grey level is under this is black (no
            light, an empty image) and reported so instead of being searched for cells.
        glass_tolerance: first-pass glass mask: not darker than the glass mode plus this many
            spreads (then 3), so the background map follows vignetting and gradients.
        glass_max_od: ...but never more than this summed optical density above the mode.
        glass_step_reach: on a field of several slide areas (see ``local_threshold_tile``) the
            glass map is corrected by the lowest density within this many typical radii of each
            pixel, so it follows steps of the glass between areas (``glass.follow_glass_steps``;
            4000x3000 mosaic of 40 Chula fields: recall 0.927 -> 0.992). 0 turns it off. Two
            radii reach the glass between crowded cells; at three and five recall was 0.990 and
            0.989.
        min_contrast_od: summed optical density under which a field holds no stained cells.
        min_object_px: ...unless one connected object above it covers at least this many pixels
            of the coarse (~320 px) view: one or two cells on a large field are a few hundred
            of its ~77,000 pixels, too few to lift a percentile, yet they are cells.
        noise_k: the low (hysteresis) foreground threshold sits this many glass-noise standard
            deviations above the glass level.
        seed_noise_k: the high threshold never drops below this many noise deviations...
        glass_spread_k: ...nor below this many spreads of the glass itself about its level (slow
            unevenness the glass map does not follow, which pixel noise does not show).
        local_threshold_tile: a field at least two tiles of this many typical radii across in
            both directions (a stitched scan, a large mosaic) is thresholded tile by tile, the
            tiles' thresholds blended bilinearly: one pair of thresholds for the whole field,
            measured where staining differs from slide area to slide area, shrank the cells of
            the paler areas and grew those of the darker (4000x3000 mosaic of 40 Chula fields:
            median diameter -5.3%). 0 turns it off. (A 640x480 Chula field is ~32 radii wide.)
        local_min_stained: ...a tile keeps the whole field's thresholds unless at least this
            share of it lies above its own high threshold (a tile of glass has no cells to split).
        min_cell_fraction: while the pixels above the high threshold cover less than this
            fraction of the field, it is re-estimated below itself (see ``foreground.hysteresis_thresholds``).
        low_high_ratio: the low threshold is at least this fraction of the high (Otsu) one.
        floor_fallback_ratio: when the next re-split would fall into the glass noise but this
            many times more is stained between the noise floor and the high threshold than
            above it, the high threshold drops to the floor (see ``foreground.hysteresis_thresholds``).
        max_hole_area: holes up to this area (units of cell area) are filled (central pallor).
        ring_close: gaps in pale rims up to this size (units of ``r``) are closed.
        dt_smooth: Gaussian smoothing of the distance transform, in units of ``r``.
        platelet_rel_viol: small regions whose mean chromatin density (``chromatin_od``; violet
            on Wright) exceeds this fraction of the nucleus threshold are platelets (else debris)...
        platelet_share_margin: ...as are small regions whose chromatin share of the absorbance
            exceeds the red cells' by this margin.
        marker_min_distance: minimum distance between watershed seeds, in units of ``r``.
        split_area: red-cell regions larger than this multiple of the typical region...
        split_max_solidity: ...and less convex than this are split into overlapping cells.
        vote_min: circle centres need at least this fraction of a full circle's outline votes.
        vote_min_distance: minimum distance between circle centres (units of ``r``).
        zone_release_disc: with learned centres, a red cell pressed against or lying over a
            white cell keeps this disc (units of ``r``) round its centre out of the white cell's
            zone, besides the pixels nearer its centre than the nucleus.
        vote_fill: a disc of this radius (units of ``r``) around each circle centre is added to
            the foreground (pale interiors, broken rims).
        vote_exclusive: distance-transform seeds closer than this (units of ``r``) to a circle
            centre are dropped.
        marker_min_height: minimum distance-transform height of a seed, in units of ``r``.
        debris_area: regions under this area (units of the typical cell area) are debris.
        border_min_area: border-cut regions under this area (units of cell area) are dropped.
        unseeded_min_area: with learned centres, a red-cell region no centre seeded (a split
            piece, an object without a seed) needs at least this area (units of cell area)...
        unseeded_border_min_area: ...or this much when cut by the border.
        platelet_max_area: violet regions under this area (units of cell area) are platelets.
        platelet_min_area: regions from this area up to ``debris_area`` are platelets whatever
            their colour (pale or grey platelets); smaller ones are dust.
        chromatin_od: weights (R, G, B) of the optical density read as chromatin density, the
            measure nuclei, platelets and the hue rules use. Wright's azure chromatin absorbs
            green and haemoglobin absorbs blue: green minus blue ("violet"). See
            :data:`STAIN_SETTINGS` for the other stains.
        chromatin_red_weight: on a stain whose red cells absorb almost no red light (their red
            share of the absorbance under ``chromatin_red_share[0]``, blended out by
            ``chromatin_red_share[1]``), the red absorbance joins the chromatin density with
            this weight: haemoglobin and eosin absorb little above 600 nm, the azure of
            chromatin much. Where the red cells themselves take up azure (lilac cells, red share
            0.14-0.37 on TXL-PBC and the renders, 0.045-0.26 on Chula RBC-12, 13 of its 528
            fields under 0.07) red is no chromatin sign and the weight is 0. (bcd-256: red cells
            0.00-0.05, white-cell nuclei 0.29-0.40, while their violet share sits only 0.02-0.07
            above the red cells'.)
        nucleus_red_share_margin: where the red term is on, a nuclear group whose red share of
            the absorbance is not this much above the red cells' is stacked red cells (nuclei
            sit 0.25-0.37 above on bcd-256), whatever else vouches for it.
        learned_nucleus_reach: where the red term is off or partly on, a learned nucleated-cell
            centre with no nucleus within this distance (units of ``r``) has its nucleus sought
            again with the full red term (:func:`.nuclei.nuclei_seen_in_red`); 0 disables.
            The centre of a white cell sits up to ~0.6 r from its eccentric nucleus (bcd-256).
        nucleus_rel_od: nuclei are pixels whose chromatin density exceeds this multiple of
            the typical red-cell value.
        nucleus_min_od: absolute floor (optical density) for the nucleus threshold.
        nucleus_min_area: nuclear groups under this area (units of cell area) are not nuclei.
        nucleus_rim_thickness: a nuclear group whose chromatin is nowhere thicker than this
            (half-width, units of ``r``; 0 disables the rule) is the dark rim of a hypochromic
            ring cell, not a nucleus, when what it encloses lies within ``nucleus_rim_host``
            (units of ``r``) of the glass (a red-cell-sized body) and it either encloses a hole
            of at least ``nucleus_rim_hole`` times its own area, or has at least
            ``nucleus_rim_edge_share`` of it within ``nucleus_rim_edge`` (units of ``r``) of the
            glass and a solidity under ``nucleus_rim_solidity`` (a band bent along the edge).
        nucleus_rim_host, nucleus_rim_hole, nucleus_rim_edge, nucleus_rim_edge_share,
        nucleus_rim_solidity: see ``nucleus_rim_thickness``.
        nucleus_share_margin: a nuclear group whose chromatin share of the absorbance is not at
            least this much above the red cells' is overlapping haemoglobin, not chromatin
            (0 disables the rule)...
        nucleus_thin_share_margin: ...and a thin one (chromatin nowhere thicker than
            ``nucleus_thin`` half-widths, units of ``r``) needs this much: two overlapping ring-cell
            rims make a dark crescent 0.2-0.3 r thick whose share sits 0.05-0.08 above the red
            cells' (rendered iron-deficiency fields, 24 false nuclei in 40), where nuclei thick or
            thin sit 0.17-0.24 above (lobes of neutrophils, TXL-PBC white cells 0.16 and more).
        nucleus_thin: see ``nucleus_thin_share_margin``.
        cytoplasm_reach: a nucleated cell owns the stained pixels this far (units of ``r``)
            from its nucleus; red-cell seeds are sought only outside.
        cytoplasm_max_reach: regions smaller than ``cytoplasm_max_area`` (cell areas) lying almost
            wholly within this reach (units of ``r``) of a nucleus are its cytoplasm.
        cytoplasm_max_area: see ``cytoplasm_max_reach``.
        fragment_area: a red-cell region under this fraction of the typical one (0 disables)...
        fragment_solidity: ...forming a region at least this convex with a neighbour...
        fragment_contact: ...whose border it shares over this length (units of ``r``) joins it.
        remeasure_floor: the radius re-measured at the working scale replaces the first estimate
            only when it is at least this fraction of it (touching cells fuse at that scale).
        remeasure_growth: a re-measure over this multiple of the first estimate is taken again
            without the objects larger than ``remeasure_max_cells`` typical cells (clumps: block
            averaging fuses a crowded field of overlapping cells into one or two objects whose
            thickness is no cell's radius); with too few objects left, the first estimate stands.
        remeasure_max_cells: see ``remeasure_growth``.
        clump_area_cells: an object covering more than this many discs of its own thickness
            (a disc 1, two touching cells ~2) is a clump.
        single_cell_area: an object of at most this many discs of its own thickness (the
            field's edge counted as glass, so a cell it cuts is no single one) is a single cell;
            theirs checks the typical radius.
        clump_radius_ratio: a typical radius over this multiple of the single cells' is a
            clump's thickness: theirs is taken (defocused fields of touching cells).
        clump_split_levels: shares of the cells' density (75th percentile) at which clumps are
            split, in turn, when every object is one. A split made of cells (not clumps; its
            single cells and touching pairs, no specks under ``clump_speck_radius`` of the
            clumps' radius, ``clump_split_agree`` times its typical radius)
            whose radius is ``clump_split_ratio`` times smaller replaces the clumps' radius,
            unless the cells then measure whole and far larger at the working scale.
        clump_speck_radius, clump_split_ratio, clump_split_agree: see ``clump_split_levels``.
        clump_split_doubt: a split made of cells this many times under the clumps' radius, but
            less than ``clump_split_ratio``, leaves the radius in doubt: with a learned centre
            map the field is read at both and the split taken when the map's peaks there are
            ``doubt_peak_margin`` more probable (median over the peaks).
        doubt_peak_margin: see ``clump_split_doubt``.
        overlap_discs: red cells whose discs (of the typical radius) cover over this many
            times the area of their regions overlap (Chula RBC-12, side by side: 0.9-1.1;
            bcd-256: 1.1-1.8). Read with a learned centre map under ``overlap_read_below``
            working px of radius, such a field is read again at ``overlap_work_radius`` (a
            block size that need not be whole): the map parts overlapping cells less well small.
        overlap_read_below, overlap_work_radius: see ``overlap_discs``.
        few_cells: a field of fewer objects than this takes the area-equivalent radius of its
            whole ones (clear of the edge, at most ``few_cells_area`` discs of their own
            thickness: an elongated cell 2, two touching cells 2) where it is larger than the
            thickest points': one oval cell or cells the edge cuts would decide those.
        few_cells_area: see ``few_cells``.
        few_cells_nucleus: an object with at least this share of its area compact chromatin is
            a white cell, never one of the ``few_cells`` measured.
        speck_radius: objects under this fraction of the typical radius are specks (platelets,
            debris), never single cells.
        small_seed_dynamic: low distance-transform peaks (small objects touching a cell) become
            seeds when they stand this much (units of ``r``) above the saddle to the cell.
        plausible_rbc_um: median red-cell diameter range (um) considered plausible.
        normal_rbc_um: with no scale stated and the default one implausible, the scale is taken so
            that the median red cell measures this: a normal red cell (7.5 um), which is also how
            the default scale was measured (Chula RBC-12's normal cells, 42 px), so the classifier
            sees the field's median cell at the size it learnt normal cells at.
        scale_min_cells: red cells (not cut by the border) needed to estimate a scale from them.
        scale_share_tolerance: with no scale stated, a case's fields share one scale, from their
            red cells pooled, unless a field's own median diameter is further than this fraction
            from the pooled one (another objective or camera: TXL-PBC's test fields come at two
            magnifications whose cells differ by ~24%; one case's fields at one magnification,
            bcd-256's, by up to 9%).
        min_focus: focus measure under which the field is reported out of focus.
        dense_fraction: foreground fraction above which the field is reported too dense.
    """

    work_radius_px: float = 11.0
    work_scale_round_up: float = 0.75
    coarse_max_block: int = 4
    blank_min_grey: float = 200.0
    blank_step: float = 6.0
    blank_min_area: float = 0.004
    mostly_blank: float = 0.5
    black_max_grey: float = 40.0
    glass_tolerance: float = 6.0
    glass_max_od: float = 0.5
    glass_step_reach: float = 2.0
    min_contrast_od: float = 0.08
    min_object_px: int = 12
    noise_k: float = 4.0
    seed_noise_k: float = 8.0
    glass_spread_k: float = 4.0
    min_cell_fraction: float = 0.2
    local_threshold_tile: float = 24.0
    local_min_stained: float = 0.03
    low_high_ratio: float = 0.5
    floor_fallback_ratio: float = 20.0
    max_hole_area: float = 0.5
    ring_close: float = 0.12
    dt_smooth: float = 0.12
    platelet_rel_viol: float = 0.6
    platelet_share_margin: float = 0.07
    marker_min_distance: float = 0.5
    vote_min: float = 0.3
    split_area: float = 1.4
    split_max_solidity: float = 0.96
    vote_min_distance: float = 0.6
    vote_fill: float = 0.7
    zone_release_disc: float = 0.8
    vote_exclusive: float = 1.0
    marker_min_height: float = 0.35
    debris_area: float = 0.12
    border_min_area: float = 0.15
    unseeded_min_area: float = 0.8
    unseeded_border_min_area: float = 0.3
    platelet_max_area: float = 0.25
    platelet_min_area: float = 0.05
    small_seed_dynamic: float = 0.08
    remeasure_floor: float = 0.85
    remeasure_growth: float = 1.2
    remeasure_max_cells: float = 4.0
    clump_area_cells: float = 2.0
    single_cell_area: float = 1.5
    clump_radius_ratio: float = 1.75
    clump_split_levels: tuple[float, ...] = (0.6, 0.7)
    clump_speck_radius: float = 0.15
    clump_split_ratio: float = 2.0
    clump_split_doubt: float = 1.5
    doubt_peak_margin: float = 0.05
    clump_split_agree: tuple[float, float] = (0.7, 1.1)
    overlap_discs: float = 1.3
    overlap_read_below: float = 12.5
    overlap_work_radius: float = 13.0
    few_cells: int = 5
    few_cells_area: float = 2.5
    few_cells_nucleus: float = 0.2
    speck_radius: float = 0.25
    fragment_area: float = 0.4
    fragment_solidity: float = 0.92
    fragment_contact: float = 0.8
    chromatin_od: tuple[float, float, float] = (0.0, 1.0, -1.0)
    chromatin_red_weight: float = 1.0
    chromatin_red_share: tuple[float, float] = (0.05, 0.07)
    nucleus_red_share_margin: float = 0.12
    learned_nucleus_reach: float = 0.8
    nucleus_rel_od: float = 2.2
    nucleus_min_od: float = 0.35
    nucleus_min_area: float = 0.12
    nucleus_rim_thickness: float = 0.24
    nucleus_rim_edge: float = 0.35
    nucleus_rim_edge_share: float = 0.1
    nucleus_rim_host: float = 1.15
    nucleus_rim_hole: float = 0.75
    nucleus_rim_solidity: float = 0.55
    nucleus_share_margin: float = 0.05
    nucleus_thin_share_margin: float = 0.1
    nucleus_thin: float = 0.35
    cytoplasm_reach: float = 0.9
    cytoplasm_max_reach: float = 1.4
    cytoplasm_max_area: float = 0.8
    plausible_rbc_um: tuple[float, float] = (5.0, 10.0)
    normal_rbc_um: float = 7.5
    scale_min_cells: int = 3
    scale_share_tolerance: float = 0.15
    min_focus: float = 0.04
    dense_fraction: float = 0.75

    def for_stain(self, stain: str) -> SegmentConfig:
        """These settings with the stain's own (:data:`STAIN_SETTINGS`) in place of the
        defaults they replace; a stain without settings of its own keeps these as they are."""
        own = STAIN_SETTINGS.get(stain)
        return replace(self, **own) if own else self


#: Settings that differ by stain (keys are :data:`morph.context.STAINS`), applied by
#: :meth:`SegmentConfig.for_stain`. Wright is the default settings.
#:
#: **NMB** (new methylene blue, supravital): methylene blue stains chromatin (and the
#: reticulum) dark blue, a dye that absorbs red light; haemoglobin absorbs blue. Chromatin
#: is therefore read as red minus blue density. Green minus blue, Wright's measure, leaves
#: NMB nuclei under the absolute floor on paler slides: on rendered NMB fields rich in white
#: cells (``benchmarks/nuclei.py``, set ``nmb white``) a third of the neutrophils and
#: nucleated red cells and a quarter of the lymphocytes became red cells (the lymphocytes were
#: then read as reticulocytes, which keeps "reticulocytes absent" from a parvovirus smear).
#: The red cells' own red-minus-blue density is well above zero, so the threshold relative to
#: it does the work (2.6 times it, a floor of 0.25 for pale slides). The thin groups' violet
#: margin (``nucleus_thin_share_margin``) is Wright's: ring-cell rims are violet there, while
#: on NMB a neutrophil's thin lobes sit under it (rendered NMB neutrophils then went missing).
STAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "wright": {},
    "nmb": {"chromatin_od": (1.0, 0.0, -1.0), "chromatin_red_weight": 0.0, "nucleus_rel_od": 2.6,
            "nucleus_min_od": 0.25, "nucleus_thin_share_margin": 0.0},
}
