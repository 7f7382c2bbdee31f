"""Cell localization: stain-aware foreground, size-adaptive seeds, watershed.

:func:`segment_field` finds red cells, nucleated cells and platelets in one RGB field
(scikit-image/scipy; torch only inside an optional learned centre map):

0. **Blank areas.** White patches, padding and the transparent part of an image (composited
   on white) are neither glass nor cells: flat bright regions that step down to the glass
   around them; blank margins are cut off (cells at the field's own edge stay border cells),
   other blank areas are painted with the local glass colour and noise, and cells touching
   them count as cut. A mostly blank field is reported; a black one says so.
1. **Glass colour and optical density.** The glass colour is the brightest well-populated
   colour mode (pixels at the sensor's ceiling left out of its measure, unless one channel
   there covers nearly all the glass, which then keeps its noise in the other two), refined
   into a smooth per-pixel map (normalised convolution of the glass
   pixels on a coarse grid, two passes) so vignetting, gradients and the tint of the glass
   (pale blue in Chula, cream in TXL-PBC) cancel out; the second glass mask is taken
   against a quadratic trend fitted to the glass, so it reaches into vignetted corners. On a
   field of several slide areas (a stitched scan, a mosaic of fields imaged apart) the map is
   then corrected, once the typical radius (step 3) is known, by the lowest density within
   two radii of each pixel (the glass between the cells), so it follows steps of the glass
   from one area to the next. Each channel becomes an optical density ``log(glass / pixel)``;
   their sum is the stain signal.
2. **Foreground.** Hysteresis threshold: the high threshold is Otsu's, re-estimated below
   itself while a dark minority (nuclei, a scratch) dominates and paler cells lie between it
   and the glass noise; the low one sits just above the glass noise so pale rims join their
   cell. Small gaps in rims are closed and the central pallor is filled.
3. **Adapting to magnification.** The typical red-cell radius ``r`` is measured per image
   (weighted median of each object's maximum distance to the glass; a clump holding a
   white cell contributes the distance peaks of its red cells instead, pallor holes filled;
   a field of clumps is split nearer the cells' density, and where that split is only
   1.5-2x thinner, blurred overlapping cells and pale cells' arcs alike, a learned centre map
   reads the field at both radii and the one whose peaks it sees more surely stands)
   and the field is block-averaged so ``r`` is ~11 px (10-15 px: the block rounds toward the
   finer scale, where overlapping cells stay apart; a field of under five objects takes its
   whole cells' area-equivalent radius where it is larger). A field whose red cells, read
   with a learned map under 12.5 px, overlap (their discs cover over 1.3 times their regions)
   is read again at 13 px, with a block size that need not be whole; every size rule below is in units
   of ``r`` (seed spacing, hole size, debris, platelets), so fields at 40x-100x are treated
   alike. Sizes reported (px, um) are in the original pixels, and ``um`` uses the stated
   scale (or, none stated, the default one: see step 7).
4. **Nuclei.** Dense chromatin, well above the red-cell level, read per stain
   (``SegmentConfig.for_stain``): dark violet on Wright (green absorbed, blue transmitted),
   dark blue on new methylene blue (red absorbed, blue transmitted). These pixels, grouped
   by a closing of ``0.35 r``, make one nucleated cell each (a neutrophil's lobes are one cell). A nucleus is compact chromatin: a thin group (nowhere thicker than
   ``0.24 r``) shaped as the dark rim of a hypochromic "ring" red cell (enclosing its pale
   centre, or a band bent along the glass, around a red-cell-sized body) is not a nucleus.
   Where the red cells absorb no red light the red absorbance counts as chromatin too; where
   another dye mix turned that term off, a learned nucleated-cell centre with no nucleus near
   it has the nucleus sought again with it.
   Each nucleated cell owns the stained pixels within ``0.9 r`` of its nucleus, and
   red-cell seeds are sought only outside that zone, so red cells touching a white cell keep
   their own seeds instead of being flooded by it; small left-over regions lying almost wholly
   within ``1.4 r`` of a nucleus (cytoplasm crescents) join the nucleated cell.
5. **Seeds and watershed.** With a learned centre map (``centres=``, a
   :class:`morph.localize.CentreDetector`; the shipped pipeline uses ``models/locnet-v6``),
   its red-cell peaks are the seeds, nuclear groups holding two nucleated-cell centres are
   split between them and platelet centres pressed against a red cell get seeds of their
   own; the watershed floods outwards from the seeds (distance from the nearest seed minus
   the distance transform), and a red-cell region no centre seeded (a k-means split piece,
   an object without a seed) must be large to count (``unseeded_min_area``). Without one
   (hand-made seeds), circle centres voted by the outline (radial symmetry) find pale
   ring-like and overlapping cells, distance-transform maxima add the rest, and a watershed
   on the distance transform splits touching cells. A small region cut from a cell by a second
   seed (same convex body, long shared border) is joined back to it. Regions much larger than the typical one
   and clearly non-convex (overlapping cells the seeds missed) are split by k-means.
6. **Kinds.** Small regions that are more violet than the red cells are platelets
   (label ``"platelet"``), as are platelet-sized ones of any colour; smaller specks are
   debris and dropped; regions cut by the
   image edge are kept with ``touches_border=True`` (and left out of the median diameter).
   With a learned centre map that carries a pair rule (:mod:`.pairs`: a logistic rule over
   measures of the pair, or a small network that also looks at it), two touching red-cell
   regions the rule reads as one cell cut in two (two peaks on one cell: the halves round a
   pale centre, an oval's two ends) are joined.
7. **Scale and warnings.** A stated scale is kept; with none stated the default (Chula) one is
   used unless it makes the median red cell implausible (outside 5-10 um: no disease does that,
   another camera does), and then the scale is estimated from the cells (:mod:`.calibration`:
   the median red cell measures what a normal one does at the Chula scale), which the field's
   warnings and ``scale_source`` say: its sizes are then relative. Warnings: no cells (blank
   slide), implausible median red-cell size for a stated scale (never rescaled: a global shift
   may be macro/microcytosis), out-of-focus field
   (Laplacian energy relative to contrast at the working scale), very dense field.

The package, one module per step: :mod:`.config` (settings and the default scale), :mod:`.blank`
(blank areas), :mod:`.glass`
(glass colour, illumination, optical density), :mod:`.foreground` (thresholds, cell mask),
:mod:`.scale` (typical radius, working scale), :mod:`.nuclei` (nucleated cells and their zones),
:mod:`.seeds` (circle votes, distance maxima, learned centre peaks), :mod:`.regions` (watershed,
fragments, splits, kinds, cells), :mod:`.pairs` (cells cut in two), :mod:`.calibration` (the field's scale), :mod:`.warnings` (what a
person should read) and
:mod:`.field`, whose :func:`segment_field` runs them in that order. :mod:`.arrays` holds the
array helpers they share.
"""

from .blank import field_glass
from .config import DEFAULT_UM_PER_PX, STAIN_SETTINGS, SegmentConfig
from .field import (
    FieldPairs,
    Segmentation,
    red_cell_pairs_of_field,
    segment_field,
    share_case_scale,
)
from .scale import WorkingView, working_view
from .seeds import PEAK_SPACING, centre_peaks

__all__ = [
    "DEFAULT_UM_PER_PX",
    "PEAK_SPACING",
    "STAIN_SETTINGS",
    "FieldPairs",
    "SegmentConfig",
    "Segmentation",
    "WorkingView",
    "centre_peaks",
    "field_glass",
    "red_cell_pairs_of_field",
    "segment_field",
    "share_case_scale",
    "working_view",
]
