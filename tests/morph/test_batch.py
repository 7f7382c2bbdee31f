"""The batch engine (morph.batch): case grouping, every output file, resume, bad inputs, engines."""

from __future__ import annotations

import csv
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import morph.io
from morph.batch import (
    CASES_COLUMNS,
    CELLS_COLUMNS,
    COUNT_LABELS,
    BatchOptions,
    BatchProgress,
    case_json_path,
    discover_cases,
    overlay_path,
    run_batch,
)
from morph.classify import build_untrained, load_model
from morph.errors import ERROR_CODES, MorphError
from morph.io import write_image
from tests.helpers import assert_same_outputs, draw_disc_field, output_files

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SMALL = {"n": 4, "h": 120, "w": 160, "radius": 12}


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def make_field(seed: int, **kw: Any) -> np.ndarray:
    img, _ = draw_disc_field(seed=seed, **{**SMALL, **kw})
    return img


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_untrained("morphnet_tiny", seed=0).save(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def loader(tiny_model_dir: Path) -> Any:
    return functools.partial(load_model, str(tiny_model_dir))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """in/P1/{a,b}.png, in/P2/a.png, in/P2/nested/c.png, in/loose.png, a hidden file."""
    root = tmp_path / "in"
    write_image(root / "P1" / "a.png", make_field(1))
    write_image(root / "P1" / "b.png", make_field(2))
    write_image(root / "P2" / "a.png", make_field(3))
    write_image(root / "P2" / "nested" / "c.png", make_field(4))
    write_image(root / "loose.png", make_field(5))
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def run(root: Path, out: Path, loader: Any, events: list | None = None, **kw: Any):
    opts = BatchOptions(workers=kw.pop("workers", 0), **kw)
    return run_batch(str(root), str(out), opts, loader, progress=(events.append if events is not None else None))


# ------------------------------------------------------------------------------------------
# case grouping
# ------------------------------------------------------------------------------------------
def test_subfolder_mode_groups_folders_and_loose_images(tree: Path) -> None:
    d = discover_cases(tree, "subfolder")
    assert [c.case_id for c in d.cases] == ["P1", "P2", "P2/nested", "loose.png"]
    assert [im.rel for im in d.cases[0].images] == ["P1/a.png", "P1/b.png"]
    assert d.cases[0].images[0].path == os.path.join(str(tree), "P1", "a.png")
    assert [im.rel for im in d.cases[2].images] == ["P2/nested/c.png"]
    assert d.errors == []  # the hidden file is ignored


def test_output_folder_inside_the_input_is_not_walked(tree: Path, loader: Any) -> None:
    out = tree / "results"
    run(tree, out, loader)
    s = run(tree, out, loader)  # now out/ holds cases/*.json, CSVs: none is an input
    assert (s.cases, s.skipped, s.errors) == (4, 4, 0)


def test_image_mode_makes_every_image_a_case(tree: Path) -> None:
    d = discover_cases(tree, "image")
    assert [c.case_id for c in d.cases] == ["P1/a.png", "P1/b.png", "P2/a.png", "P2/nested/c.png", "loose.png"]
    assert all(len(c.images) == 1 for c in d.cases)


def test_discovery_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(MorphError) as ei:
        discover_cases(tmp_path / "missing")
    assert ei.value.code == "file_not_found"
    f = tmp_path / "f.png"
    f.write_bytes(b"x")
    with pytest.raises(MorphError):
        discover_cases(f)
    with pytest.raises(MorphError):
        BatchOptions(case_mode="bogus").validate()
    with pytest.raises(MorphError):
        BatchOptions(workers=-1).validate()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(MorphError) as ei:
        run_batch(tmp_path / "empty", tmp_path / "out", BatchOptions(workers=0))  # no image at all
    assert ei.value.code == "bad_request"


# ------------------------------------------------------------------------------------------
# every output file
# ------------------------------------------------------------------------------------------
def test_outputs_content(tree: Path, tmp_path: Path, loader: Any) -> None:
    out = tmp_path / "out"
    events: list[BatchProgress] = []
    s = run(tree, out, loader, events)
    assert (s.cases, s.cases_ok, s.errors, s.scored, s.skipped) == (4, 4, 0, 4, 0)
    assert [e.kind for e in events] == ["start"] + ["case"] * 4 + ["finish"]
    assert events[0].images_todo == 5

    # case files mirror the input tree; image paths are INPUT_DIR joined with the relative path
    assert case_json_path(out, "P2/nested") == out / "cases" / "P2" / "nested.json"
    reports = {cid: json.loads(case_json_path(out, cid).read_text()) for cid in ("P1", "P2", "P2/nested", "loose.png")}
    p1 = reports["P1"]
    assert p1["case"] == "P1"
    assert [im["path"] for im in p1["images"]] == [os.path.join(str(tree), "P1", n) for n in ("a.png", "b.png")]
    assert set(p1) >= {"model", "images", "counts", "findings", "differentials", "disclaimer", "batch"}
    assert p1["model"]["name"] == "morphnet_tiny-untrained"
    assert len(p1["batch"]["fingerprint"]) == 64 and p1["batch"]["inputs"] == ["P1/a.png", "P1/b.png"]
    for rep in reports.values():
        counted = [c for im in rep["images"] for c in im["cells"] if not c["touches_border"]]
        assert counted and sum(rep["counts"].values()) == len(counted)

    # cells.csv: one row per cell of every case, in case order
    cells = read_csv(out / "cells.csv")
    assert tuple(cells[0]) == CELLS_COLUMNS
    expected = [
        (cid, im["path"], str(c["id"]), str(c["x"]), str(c["y"]), c["label"], str(c["confidence"]))
        for cid in sorted(reports)
        for im in reports[cid]["images"]
        for c in im["cells"]
    ]
    assert [(r["case"], r["image"], r["id"], r["x"], r["y"], r["label"], r["confidence"]) for r in cells] == expected

    # cases.csv: counts, key findings, top three differentials
    cases = read_csv(out / "cases.csv")
    assert tuple(cases[0]) == CASES_COLUMNS
    assert [r["case"] for r in cases] == ["P1", "P2", "P2/nested", "loose.png"]
    for row in cases:
        rep = reports[row["case"]]
        assert row["status"] == "ok" and row["images"] == str(len(rep["images"])) and row["images_failed"] == "0"
        assert int(row["cells_counted"]) == sum(rep["counts"].values())
        assert {lab: int(row[f"n_{lab}"]) for lab in COUNT_LABELS if int(row[f"n_{lab}"])} == rep["counts"]
        for i, d in enumerate(rep["differentials"][:3], 1):
            assert row[f"differential_{i}"] == d["id"]
            assert float(row[f"score_{i}"]) == pytest.approx(d["score"], abs=1e-4)
        evidence = rep["findings"].get("evidence") or {}
        if evidence.get("enough") is False:  # too few cells for findings: said so
            assert evidence["message"] in row["key_findings"]

    assert (out / "errors.csv").read_text() == "file,code,message\n"

    rj = json.loads((out / "run.json").read_text())
    assert rj["model"]["name"] == "morphnet_tiny-untrained" and rj["model"]["version"]
    assert rj["options"]["case_mode"] == "subfolder" and rj["options"]["stain"] == "wright"
    assert rj["counts"]["cases"] == 4 and rj["counts"]["images_ok"] == 5 and rj["counts"]["errors"] == 0
    assert rj["counts"]["cells"] == len(cells)
    assert {"started", "finished", "ok", "failed", "skipped"} <= set(rj["run"])
    assert (rj["run"]["ok"], rj["run"]["failed"], rj["run"]["skipped"]) == (4, 0, 0)
    assert not list(out.rglob("*.tmp"))


def test_overlays_written_and_missing_one_is_redone(tree: Path, tmp_path: Path, loader: Any) -> None:
    out = tmp_path / "out"
    run(tree, out, loader, overlays=True)
    ov = overlay_path(out, "P1/b.png")
    assert ov == out / "overlays" / "P1" / "b.png.png"
    from PIL import Image

    assert Image.open(ov).size[0] > 160  # the field plus the legend panel
    assert len(list((out / "overlays").rglob("*.png"))) == 5
    ov.unlink()
    events: list[BatchProgress] = []
    run(tree, out, loader, events, overlays=True)
    assert events[0].cases_todo == 1 and ov.is_file()


# ------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------
def test_resume_skips_unchanged_cases_by_content(tree: Path, tmp_path: Path, loader: Any) -> None:
    out = tmp_path / "out"
    run(tree, out, loader)
    before = output_files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("*.json")}

    events: list[BatchProgress] = []
    s = run(tree, out, loader, events)
    assert events[0].cases_todo == 0 and (s.scored, s.skipped) == (0, 4)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # not rewritten
    after = output_files(out)
    assert {k: v for k, v in after.items() if k != "run.json"} == {k: v for k, v in before.items() if k != "run.json"}
    assert json.loads(after["run.json"])["run"]["skipped"] == 4

    # same name, new content: only that case is scored again
    write_image(tree / "P2" / "a.png", make_field(33))
    events.clear()
    run(tree, out, loader, events)
    assert events[0].cases_todo == 1 and [e.case_id for e in events if e.kind == "case"] == ["P2"]

    # --force redoes everything; a changed option invalidates every case
    events.clear()
    run(tree, out, loader, events, force=True)
    assert events[0].cases_todo == 4
    events.clear()
    run(tree, out, loader, events, stain="nmb")
    assert events[0].cases_todo == 4


class _Killed(Exception):
    pass


def test_interrupted_run_then_rerun_equals_clean_run(tree: Path, tmp_path: Path, loader: Any) -> None:
    clean = tmp_path / "clean"
    run(tree, clean, loader, overlays=True)

    out = tmp_path / "resumed"
    seen = []

    def die_after_two(ev: BatchProgress) -> None:
        if ev.kind == "case":
            seen.append(ev.case_id)
            if len(seen) == 2:
                raise _Killed

    with pytest.raises(_Killed):
        run_batch(str(tree), str(out), BatchOptions(workers=0, overlays=True), loader, progress=die_after_two)
    assert not (out / "cells.csv").exists()
    # what a SIGKILL can leave behind: a temp file of an unfinished atomic write, and a
    # case file from an older run with other content
    (out / "cases" / ".P2.json.abcd1234.tmp").write_text('{"torn": ')
    case_json_path(out, "loose.png").write_text('{"case": "loose.png", "batch": {"fingerprint": "old"}}')

    events: list[BatchProgress] = []
    run(tree, out, loader, events, overlays=True)
    assert events[0].cases_todo == 2  # two were complete; the stale one is redone
    assert_same_outputs(clean, out)


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------
def _truncated_jpeg(path: Path) -> None:
    write_image(path, make_field(9))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_every_bad_input_is_reported_and_the_rest_scored(tmp_path: Path, loader: Any) -> None:
    root = tmp_path / "in"
    good = make_field(1)
    write_image(root / "good" / "a.png", good)
    write_image(root / "good" / "b.png", make_field(2))
    write_image(root / "dup" / "copy.png", good)  # duplicate content: both scored, flagged
    (root / "bad").mkdir()
    (root / "bad" / "empty.png").write_bytes(b"")
    _truncated_jpeg(root / "bad" / "trunc.jpg")
    (root / "bad" / "fake.png").write_text("this is not a picture")
    write_image(root / "bad" / "ok.png", make_field(3))
    (root / "notes.txt").write_text("lab notes")
    (root / "empty" / "nested" / "deeper").mkdir(parents=True)  # nested empty folders: nothing to score
    (root / "folder.png").mkdir()  # a folder named like an image
    os.symlink("..", root / "good" / "up")  # a loop back to an ancestor
    os.symlink("self.png", root / "self.png")  # a link to itself
    os.symlink("missing.png", root / "broken.png")  # a dangling link
    os.symlink(str(root / "good"), root / "alias")  # an alias of a folder already walked

    out = tmp_path / "out"
    s = run(root, out, loader)
    errs = {(Path(r["file"]).relative_to(root).as_posix(), r["code"]) for r in read_csv(out / "errors.csv")}
    assert errs == {
        ("bad/empty.png", "empty_file"),
        ("bad/trunc.jpg", "truncated_image"),
        ("bad/fake.png", "not_an_image"),
        ("notes.txt", "not_an_image"),
        ("folder.png", "unreadable_file"),
        ("good/up", "symlink_loop"),
        ("self.png", "symlink_loop"),
        ("broken.png", "file_not_found"),
        ("alias", "symlink_loop"),
    }
    assert all(r["code"] in ERROR_CODES and r["message"] for r in read_csv(out / "errors.csv"))
    cases = {r["case"]: r for r in read_csv(out / "cases.csv")}
    assert sorted(cases) == ["bad", "dup", "good"]
    assert cases["bad"]["status"] == "partial" and cases["bad"]["images_failed"] == "3"
    assert cases["good"]["status"] == cases["dup"]["status"] == "ok"
    bad = json.loads(case_json_path(out, "bad").read_text())
    assert [im["path"].rsplit("/", 1)[1] for im in bad["images"] if not im.get("error")] == ["ok.png"]
    rj = json.loads((out / "run.json").read_text())
    assert rj["duplicates"] == [sorted([str(root / "dup" / "copy.png"), str(root / "good" / "a.png")])]
    assert s.errors == 9 and s.files_not_scored == 6 and s.images_failed == 3
    assert rj["counts"]["images_ok"] == 4


def test_unreadable_file_is_reported(tree: Path, tmp_path: Path, loader: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission denied, simulated (tests run as root, where chmod 000 does not stop a read)."""
    target = os.path.abspath(tree / "P1" / "b.png")
    real_open = open

    def deny(path: Any, *a: Any, **kw: Any) -> Any:
        if os.path.abspath(str(path)) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(morph.io, "open", deny, raising=False)
    out = tmp_path / "out"
    s = run(tree, out, loader)
    rows = read_csv(out / "errors.csv")
    assert [(r["file"], r["code"]) for r in rows] == [(str(tree / "P1" / "b.png"), "unreadable_file")]
    assert "Permission denied" in rows[0]["message"]
    assert s.cases_partial == 1 and s.cases_ok == 3


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_file_and_folder_are_reported(tree: Path, tmp_path: Path, loader: Any) -> None:
    os.chmod(tree / "P1" / "b.png", 0)
    os.chmod(tree / "P2" / "nested", 0)
    try:
        run(tree, tmp_path / "out", loader)
    finally:
        os.chmod(tree / "P1" / "b.png", 0o644)
        os.chmod(tree / "P2" / "nested", 0o755)
    codes = {Path(r["file"]).name: r["code"] for r in read_csv(tmp_path / "out" / "errors.csv")}
    assert codes == {"b.png": "unreadable_file", "nested": "unreadable_file"}


# ------------------------------------------------------------------------------------------
# clinical context from a CSV
# ------------------------------------------------------------------------------------------
def test_context_file_rows(tree: Path, tmp_path: Path, loader: Any) -> None:
    ctx = tmp_path / "context.csv"
    ctx.write_text(
        "case,hb_g_dl,splenomegaly,mrd\n"
        "P1,9.5,yes,\n"
        "P2,-3,no,\n"  # impossible haemoglobin: an error for this case only
        "ghost,10,,\n"  # not a case of this run
    )
    out = tmp_path / "out"
    s = run(tree, out, loader, context_file=str(ctx))
    p1 = json.loads(case_json_path(out, "P1").read_text())
    assert p1["batch"]["context"] == {"hb_g_dl": 9.5, "splenomegaly": True}
    assert not case_json_path(out, "P2").exists()
    errors = read_csv(out / "errors.csv")
    assert [(r["file"], r["code"]) for r in errors] == [(str(ctx), "bad_context")]
    assert "P2" in errors[0]["message"] and "hb_g_dl" in errors[0]["message"]
    cases = {r["case"]: r for r in read_csv(out / "cases.csv")}
    assert cases["P2"]["status"] == "failed" and "bad_context" in cases["P2"]["error"]
    assert s.cases_failed == 1 and s.cases_ok == 3
    assert json.loads((out / "run.json").read_text())["context_rows_unused"] == ["ghost"]

    # a context change is a new fingerprint: P1 is scored again
    ctx.write_text("case,hb_g_dl\nP1,11\n")
    events: list[BatchProgress] = []
    run(tree, out, loader, events, context_file=str(ctx))
    assert [e.case_id for e in events if e.kind == "case"] == ["P1", "P2"]

    bad = tmp_path / "nocase.csv"
    bad.write_text("patient,hb_g_dl\nP1,9\n")
    with pytest.raises(MorphError) as ei:
        run(tree, out, loader, context_file=str(bad))
    assert ei.value.code == "bad_context"


# ------------------------------------------------------------------------------------------
# engines: results do not depend on the worker count or the engine (the process pool is
# compared with an in-process run in tests/cli/test_score.py, after a SIGKILL and a rerun)
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_engine_matches_local_engine(tree: Path, tmp_path: Path, loader: Any) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'morph[distributed]')")
    run(tree, tmp_path / "local", loader, workers=0, overlays=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run(tree, tmp_path / "ray", loader, engine="ray", workers=2, overlays=True)
    finally:
        ray.shutdown()
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["run"]["engine"] == "ray"


def test_fingerprint_tells_a_stated_default_scale_from_none() -> None:
    # with no scale stated a field may get one estimated from its cells, so the two runs differ
    from morph.batch.fingerprint import case_fingerprint
    from morph.pipeline import AnalysisOptions

    def fp(um: float | None) -> str:
        return case_fingerprint("P1", "in", [("a.png", "0" * 64)], AnalysisOptions(um_per_px=um), {"name": "m"})

    assert fp(None) != fp(0.178)
    assert fp(0.178) == fp(0.178)
