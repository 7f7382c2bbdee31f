"""Issue 16 on the command line: bad output paths, missing inputs and hostile context files fail
with exit 2 and one line before any model is loaded; a closed pipe ends nothing half-done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from morph_cli.main import main
from tests.helpers import REPO, draw_disc_field


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model is an error: every check below must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    import morph.pipeline

    monkeypatch.setattr(morph.pipeline, "load_classifier", refuse)
    monkeypatch.setattr(morph.pipeline, "build_analyzer", refuse)


@pytest.fixture
def image(tmp_path: Path) -> str:
    from morph.io import write_image

    img, _ = draw_disc_field(seed=1, n=4, h=120, w=160, radius=12)
    write_image(tmp_path / "x.png", img)
    return str(tmp_path / "x.png")


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("flag,target", [
    ("--json", "{tmp}"),  # a folder
    ("--json", "/proc/nope/r.json"),
    ("--overlay", "{tmp}/a-file/o.png"),  # a folder that cannot be created
])
def test_analyze_checks_output_paths_before_any_work(
    no_model, image, tmp_path, capsys, flag: str, target: str
) -> None:
    target = target.format(tmp=tmp_path)
    (tmp_path / "a-file").write_text("x")
    assert main(["analyze", image, flag, target]) == 2
    _one_line_error(capsys, flag, target)


def test_analyze_missing_input_fails_before_the_model_loads(no_model, tmp_path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "nope.jpg")]) == 2
    _one_line_error(capsys, "nope.jpg", "no such file")


def test_score_out_an_existing_file_or_a_missing_input_is_exit_2(no_model, tmp_path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "f").write_text("x")
    assert main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "f")]) == 2
    _one_line_error(capsys, "--out", "not a folder")
    assert main(["score", str(tmp_path / "in"), "--out", str(tmp_path / "f" / "sub")]) == 2
    _one_line_error(capsys, "--out", "cannot be created")
    assert main(["score", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "missing", "does not exist")


@pytest.mark.parametrize("text,field", [
    ('{"hb_g_dl": 1' + "0" * 400 + "}", "hb_g_dl"),
    ('{"hb_g_dl": ' + "3" * 5000 + "}", "hb_g_dl"),
    ('{"mcv_fl": 90, "mcv_fl": 91}', "mcv_fl"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_hostile_context_files_are_exit_2_naming_the_field(
    no_model, image, tmp_path, capsys, text: str, field: str
) -> None:
    ctx = tmp_path / "c.json"
    ctx.write_text(text)
    assert main(["analyze", image, "--context", str(ctx)]) == 2
    _one_line_error(capsys, field)
    counts = tmp_path / "case.json"
    counts.write_text('{"counts": {"normal": 100}}')
    assert main(["diagnose", str(counts), "--context", str(ctx)]) == 2
    _one_line_error(capsys, field)


def test_diagnose_case_file_with_huge_numbers_or_deep_nesting_is_exit_2(tmp_path, capsys) -> None:
    for i, text in enumerate(('{"counts": {"normal": 100}, "context": {"hb_g_dl": 1' + "0" * 400 + "}}",
                              '{"counts": {"normal": 100}, "um_per_px": 1' + "0" * 400 + "}",
                              '{"counts": {"normal": ' + "9" * 5000 + "}}",
                              "[" * 100_000 + "]" * 100_000)):
        case = tmp_path / f"case{i}.json"
        case.write_text(text)
        assert main(["diagnose", str(case)]) == 2, text[:80]
        _one_line_error(capsys, str(case))


def _run_into_a_closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``morph ARGS`` with stdout (and stderr when asked) a pipe nobody reads any more,
    like ``morph ... | head`` after head has exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        return subprocess.run([sys.executable, "-m", "morph_cli.main", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, timeout=300)
    finally:
        os.close(write_end)


def test_diagnose_into_a_closed_pipe_finishes_quietly_and_writes_its_file(tmp_path: Path) -> None:
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"counts": {"normal": 180, "teardrop": 22}}))
    proc = _run_into_a_closed_pipe(["diagnose", str(case), "--json", str(tmp_path / "d.json")], tmp_path)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0
    assert json.loads((tmp_path / "d.json").read_text())["differentials"]


def test_score_into_closed_pipes_finishes_the_run(tmp_path: Path) -> None:
    """``morph score ... 2>&1 | head``: the run goes on to the end and writes every output."""
    from morph.classify import build_untrained
    from morph.io import write_image

    tiny = str(build_untrained("morphnet_tiny", seed=0).save(tmp_path / "tiny"))
    for case in ("a", "b"):
        img, _ = draw_disc_field(seed=len(case), n=4, h=120, w=160, radius=12)
        write_image(tmp_path / "in" / case / "f.png", img)
    (tmp_path / "in" / "b" / "bad.png").write_bytes(b"not an image")
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        rc = subprocess.run([sys.executable, "-m", "morph_cli.main", "score", str(tmp_path / "in"), "--out",
                             str(tmp_path / "out"), "--workers", "0", "--model", tiny],
                            stdout=write_end, stderr=write_end, cwd=tmp_path, env=env, timeout=300).returncode
    finally:
        os.close(write_end)
    assert rc == 1  # the bad file, as without a pipe
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run
    assert "bad.png" in (tmp_path / "out" / "errors.csv").read_text()
