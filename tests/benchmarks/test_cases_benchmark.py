"""benchmarks/cases.py renders the same cases whichever presets are selected."""

from __future__ import annotations

from benchmarks import cases as bench


def test_a_case_seed_does_not_depend_on_the_selection() -> None:
    # --presets iron_deficiency must reproduce the iron-deficiency cases of the full run
    seeds = {(c.preset, i): bench._seed(c.preset, i) for c in bench.CASES for i in range(10)}
    assert len(set(seeds.values())) == len(seeds)
    assert bench._seed("iron_deficiency", 3) == seeds[("iron_deficiency", 3)]
    assert bench._seed("normal", 0) == 13_000
