"""`morph score` end to end: exit codes, progress and summary, and a SIGKILL followed by a rerun."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from morph.batch import BatchProgress
from morph.classify import build_untrained
from morph.io import write_image
from morph_cli.main import main
from morph_cli.score import _Progress
from tests.helpers import REPO, assert_same_outputs, draw_disc_field


def _field(seed: int, **kw):
    img, _ = draw_disc_field(seed=seed, **{"n": 4, "h": 120, "w": 160, "radius": 12, **kw})
    return img


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_untrained("morphnet_tiny", seed=0).save(tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    write_image(root / "caseA" / "f1.png", _field(1))
    write_image(root / "caseA" / "f2.png", _field(2))
    write_image(root / "caseB" / "f1.png", _field(3))
    return root


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["score", "--help"])
    assert ei.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--case-mode", "--um-per-px", "--stain", "--context-file", "--overlays", "--workers",
                "--batch-size", "--model", "--force", "--engine", "--ray-address"):
        assert opt in text


def test_all_scored_exits_0_with_log_lines_and_summary(
    good_dir: Path, tmp_path: Path, tiny: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = main(["score", str(good_dir), "--out", str(out), "--workers", "0", "--model", tiny])
    assert rc == 0
    cap = capsys.readouterr()
    # not a terminal: plain log lines, no progress bar
    assert "morph score: 2 case(s) found; 0 already up to date; scoring 2 case(s), 3 image(s)" in cap.err
    assert "scored 2/2 cases, 3/3 images (100%)" in cap.err and "images/s" in cap.err and "cells/s" in cap.err
    assert "\r" not in cap.err
    assert "summary" in cap.out and "cases             2  (ok 2, partial 0, failed 0)" in cap.out
    assert sorted(p.name for p in out.iterdir()) == ["cases", "cases.csv", "cells.csv", "errors.csv", "run.json"]

    rc = main(["score", str(good_dir), "--out", str(out), "--workers", "0", "--model", tiny])
    assert rc == 0
    assert "2 already up to date; scoring 0 case(s)" in capsys.readouterr().err
    rc = main(["score", str(good_dir), "--out", str(out), "--workers", "0", "--model", tiny, "--force"])
    assert rc == 0
    assert "0 already up to date; scoring 2 case(s)" in capsys.readouterr().err


def test_some_inputs_failed_exits_1(good_dir: Path, tmp_path: Path, tiny: str, capsys) -> None:
    (good_dir / "caseB" / "empty.png").write_bytes(b"")
    (good_dir / "readme.md").write_text("x")
    out = tmp_path / "out"
    rc = main(["score", str(good_dir), "--out", str(out), "--workers", "0", "--model", tiny,
               "--case-mode", "image", "--overlays"])
    assert rc == 1
    assert "2 input(s) not scored or failed" in capsys.readouterr().err
    lines = (out / "errors.csv").read_text().splitlines()
    assert len(lines) == 3 and "empty_file" in lines[1] and "not_an_image" in lines[2]
    assert (out / "cases" / "caseA" / "f1.png.json").is_file()
    assert (out / "overlays" / "caseA" / "f2.png.png").is_file()


def test_usage_errors_exit_2(good_dir: Path, tmp_path: Path, tiny: str, capsys) -> None:
    out = str(tmp_path / "out")
    assert main(["score", str(tmp_path / "nope"), "--out", out, "--workers", "0", "--model", tiny]) == 2
    assert "does not exist" in capsys.readouterr().err
    ctx = tmp_path / "ctx.csv"
    ctx.write_text("patient,hb_g_dl\ncaseA,9\n")
    assert main(["score", str(good_dir), "--out", out, "--workers", "0", "--context-file", str(ctx)]) == 2
    assert "'case' column" in capsys.readouterr().err
    assert main(["score", str(good_dir), "--out", out, "--context-file", str(tmp_path / "missing.csv")]) == 2
    for bad in (["--workers", "-1"], ["--batch-size", "0"], ["--case-mode", "bogus"], ["--engine", "spark"],
                ["--um-per-px", "-2"]):
        with pytest.raises(SystemExit) as ei:
            main(["score", str(good_dir), "--out", out, *bad])
        assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        main(["score", str(good_dir)])  # --out is required
    assert ei.value.code == 2


def test_progress_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    p = _Progress(stream)
    p(BatchProgress("start", cases_total=3, cases_todo=2, images_todo=4))
    p(BatchProgress("case", case_id="a", images=3, cells=40))
    p(BatchProgress("case", case_id="b", images=1, cells=10, failed=True))
    p(BatchProgress("finish", cases_total=3))
    text = stream.getvalue()
    assert "1 already up to date" in text
    assert "4/4" in text and "img/s" in text and "cells/s" in text and "1 with errors" in text


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(d.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find worker processes")
def test_sigkill_mid_run_then_rerun_equals_clean_run(tmp_path: Path, tiny: str) -> None:
    root = tmp_path / "in"
    n = 16
    for i in range(n):
        write_image(root / f"case{i:02d}" / "f.png", _field(i, n=6, h=160, w=200, radius=14))
    write_image(root / "case03" / "g.png", _field(99, n=6, h=160, w=200, radius=14))
    (root / "case05" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "morph_cli", "score", str(root), "--out", str(out), "--workers", "2",
           "--model", tiny, "--overlays"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers |= _descendants(proc.pid)
        done = len(list((out / "cases").glob("*.json"))) if (out / "cases").is_dir() else 0
        if done >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= done < n
    # the workers do not outlive the killed driver
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert workers and not any(_alive(p) for p in workers)

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr  # the broken JPEG
    finished_before = int(rerun.stderr.split(" already up to date")[0].rsplit(" ", 1)[1])
    assert finished_before >= 3

    clean = tmp_path / "clean"
    assert main(["score", str(root), "--out", str(clean), "--workers", "0", "--model", tiny, "--overlays"]) == 1
    assert_same_outputs(clean, out)  # a killed + resumed 2-worker run == an uninterrupted in-process run
    assert json.loads((out / "run.json").read_text())["run"]["skipped"] == finished_before


def test_localizer_choice_shapes_the_fingerprint(good_dir: Path, tmp_path: Path, tiny: str, capsys) -> None:
    out = tmp_path / "out"
    base = ["score", str(good_dir), "--out", str(out), "--workers", "0", "--model", tiny]
    assert main(base + ["--localizer", "none"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["localizer"]["name"] is None  # the hand-made seeds
    capsys.readouterr()
    assert main(base) == 0  # the shipped localizer: another fingerprint, every case scored again
    assert "0 already up to date; scoring 2 case(s)" in capsys.readouterr().err
