"""find_json_hazard names the first hostile spot of JSON text by its path, before any parsing."""

from __future__ import annotations

import json

import pytest

from morph.json_bounds import find_json_hazard


@pytest.mark.parametrize(("text", "where", "kind"), [
    ('{"counts": {"normal": ' + "9" * 5000 + "}}", "counts.normal", "number_too_long"),
    ('{"a": [1, 2, {"b": 1e400}]}', "a.2.b", "number_not_finite"),
    ('{"a": NaN}', "a", "number_not_finite"),
    ('{"a": [-Infinity]}', "a.0", "number_not_finite"),
    ('{"a": 1, "b": {"c": 1, "c": 2}}', "b.c", "duplicate_key"),
    ("[" * 100_000 + "]" * 100_000, "", "too_deep"),
    ('{"x": {"y": ' + "[" * 50 + "]" * 50 + "}}", "x.y", "too_deep"),
])
def test_hazards_are_named_by_their_path(text, where, kind):
    hazard = find_json_hazard(text, max_depth=32)
    assert hazard is not None and (hazard.where, hazard.kind) == (where, kind)
    assert len(hazard.message) < 100


def test_ordinary_json_and_lookalikes_inside_strings_pass():
    text = json.dumps({"s": '[[[[ {"a": NaN, "a": 1e400} ' + "9" * 100, "n": [1.5e3, -2, True, None],
                       "nested": [{"k": 1}, {"k": 2}]})
    assert find_json_hazard(text, max_depth=3) is None
    assert find_json_hazard('{"a": 1}', max_depth=0).kind == "too_deep"
