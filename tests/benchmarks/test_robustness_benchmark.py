"""benchmarks/robustness.py's table: each row names the precision or recall that fell most from
the clean row, so a reader sees which set a shift hurts without reading every column."""

from __future__ import annotations

import pytest

from benchmarks import robustness as bench


def test_each_row_names_its_worst_fall(capsys: pytest.CaptureFixture[str]) -> None:
    clean = {"chula": {"R": 0.99, "merge": 0.003, "warn": 0.0},
             "bcd": {"P": 0.95, "R": 0.90, "warn": 0.0, "wbc R": 1.0}}
    blurred = {"chula": {"R": 0.98, "merge": 0.01, "warn": 1.0, "blur": 4.0},
               "bcd": {"P": 0.94, "R": 0.85, "warn": 2.0, "blur": 5.0, "wbc R": 0.5}}
    bench.print_table([("clean", clean), ("defocus sigma 2 px", blurred)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["worst", "of"]
    assert lines[1].split()[-2:] == ["0.000", "-"]  # the clean row: nothing fell
    row = lines[2].split()
    # merges are no precision or recall: the worst fall is bcd recall's 0.05, not chula's 0.01;
    # white-cell recall (a few cells per set) is shown but not taken for the worst
    assert row[-3:] == ["0.050", "bcd", "R"]
    assert "bcd wbc R" in lines[0] and "0.500" in row
    assert row[-5] == "3"  # warned fields summed over the sets
    assert row[-4] == "9"  # ...and those warned out of focus
