"""benchmarks/cases.py renders the same cases whichever presets are selected."""

from __future__ import annotations

from benchmarks import cases as bench


def test_a_case_seed_does_not_depend_on_the_selection() -> None:
    # --presets iron_deficiency must reproduce the iron-deficiency cases of the full run
    seeds = {(c.preset, i): bench._seed(c.preset, i) for c in bench.CASES for i in range(10)}
    assert len(set(seeds.values())) == len(seeds)
    assert bench._seed("iron_deficiency", 3) == seeds[("iron_deficiency", 3)]
    assert bench._seed("normal", 0) == 13_000


def test_a_detection_off_the_drawn_centre_but_inside_its_box_is_that_cell() -> None:
    """A teardrop's outline centre sits on its tail side, past 0.3 diameters from the drawn body
    centre: it belongs to the teardrop, not to "(no drawn cell)"."""
    drawn = bench._drawn([(50.0, 50.0, "teardrop", (30, 35, 90, 65)), (150.0, 50.0, "normal", (130, 30, 170, 70))])
    assert bench._drawn_label(drawn, 72.0, 50.0, radius_px=12.0) == "teardrop"
    assert bench._drawn_label(drawn, 145.0, 52.0, radius_px=12.0) == "normal"
    assert bench._drawn_label(drawn, 110.0, 90.0, radius_px=12.0) == "(no drawn cell)"
