"""Issue 16: work that a timeout or a disconnect really stops, a killed worker, hostile context
numbers and nesting, saved uploads, metric labels, HEAD probes, file modes, the status list."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import time
from pathlib import Path

import anyio
import pytest
from svc_helpers import assert_error, encode, field_image, start_server, stop_server, wait_ready

from service.deps import get_analyzer
from service.workers import WorkerPool, run_unless_disconnected

REPO = Path(__file__).resolve().parents[2]


def _files(*items):
    return [("files", (name, data, "image/png")) for name, data in items]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class _SlowAndTelling:
    """An analyzer that writes its worker's pid, then works (sleeps) far past any time limit."""

    def __init__(self, pid_file: Path, seconds: float = 60.0) -> None:
        self.pid_file = pid_file
        self.seconds = seconds

    def run_case(self, inputs, options, **kwargs):
        self.pid_file.write_text(str(os.getpid()))
        time.sleep(self.seconds)
        raise AssertionError("should have been stopped")


class _DiesOnce:
    """The tiny analyzer, except that the worker running the first request is killed (SIGKILL)."""

    def __init__(self, inner, flag: Path) -> None:
        self.inner = inner
        self.flag = flag

    def run_case(self, inputs, options, **kwargs):
        if self.flag.exists():
            self.flag.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.run_case(inputs, options, **kwargs)


def _wait_for(path: Path, seconds: float = 30.0) -> int:
    t0 = time.monotonic()
    while not path.exists() or not path.read_text():
        assert time.monotonic() - t0 < seconds, "the worker never started the job"
        time.sleep(0.02)
    return int(path.read_text())


def test_a_timeout_kills_the_analysis_and_frees_its_slot(make_client, png_bytes, tmp_path):
    c = make_client(timeout_s=2.0, max_concurrency=1)
    pid_file = tmp_path / "pid"
    slow = _SlowAndTelling(pid_file)
    c.app.dependency_overrides[get_analyzer] = lambda: slow
    c.portal.call(c.app.state.pool.prestart, slow)  # the first start of the forkserver is slow
    err = assert_error(c.post("/v1/analyze", files=_files(("a.png", png_bytes))), 504, "timeout")
    assert "stopped" in err["message"]
    pid = _wait_for(pid_file)
    assert _gone(pid), "the timed-out analysis is still running"
    # the one slot is free again: the next request gets a fresh worker and its own full time
    pid_file.unlink()
    c.portal.call(c.app.state.pool.prestart, slow)
    assert_error(c.post("/v1/analyze", files=_files(("a.png", png_bytes))), 504, "timeout")
    assert _wait_for(pid_file) != pid


def test_the_limit_counts_running_work_so_queued_requests_time_out(make_client, png_bytes, tmp_path):
    """With one slot busy, a second request waits (its wait counts against its own limit) and
    never runs beside the first."""
    import threading

    c = make_client(timeout_s=1.5, max_concurrency=1)
    slow = _SlowAndTelling(tmp_path / "pid")
    c.app.dependency_overrides[get_analyzer] = lambda: slow
    c.portal.call(c.app.state.pool.prestart, slow)
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(
        c.post("/v1/analyze", files=_files(("a.png", png_bytes))).status_code)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [504, 504]
    assert time.perf_counter() - t0 < 10
    assert c.app.state.pool.started == 1  # the queued request never got a second worker


def test_a_worker_killed_mid_request_gives_a_clean_500_and_the_next_request_succeeds(
    make_client, analyzer, png_bytes, tmp_path
):
    c = make_client()
    flag = tmp_path / "die"
    flag.write_text("x")
    dying = _DiesOnce(analyzer, flag)
    c.app.dependency_overrides[get_analyzer] = lambda: dying
    err = assert_error(c.post("/v1/analyze", files=_files(("a.png", png_bytes))), 500, "worker_failed")
    assert err["detail"]["exit_code"] == -signal.SIGKILL
    r = c.post("/v1/analyze", files=_files(("a.png", png_bytes)))
    assert r.status_code == 200, r.text
    assert r.json()["images"][0].get("error") is None


def test_a_client_disconnect_kills_the_analysis(tmp_path):
    pid_file = tmp_path / "pid"
    pool = WorkerPool(1)

    async def receive():
        while not pid_file.exists():  # the client goes away once the work has started
            await anyio.sleep(0.02)
        return {"type": "http.disconnect"}

    async def scenario():
        from service.errors import ServiceError

        with pytest.raises(ServiceError) as ei:
            await run_unless_disconnected(receive, pool.run, _SlowAndTelling(pid_file), _analyze, [])
        assert ei.value.code == "client_disconnected"

    try:
        anyio.run(scenario)
        assert _gone(_wait_for(pid_file))
    finally:
        pool.close()


def _analyze(analyzer, inputs):
    return analyzer.run_case(inputs, None)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        try:
            children.setdefault(int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], list(children.get(pid, []))
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], []))
    return out


def _has_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc (Linux)")
def test_the_server_process_never_loads_torch_its_workers_build_the_model(png_bytes):
    """The uvicorn process answers /readyz and /v1/model from the model card its first worker
    sent back, and analyses in workers that built the model; torch lives in the workers only."""
    import httpx

    proc, url = start_server({"MORPH_MODEL": "tiny", "MORPH_MAX_CONCURRENCY": "1"}, REPO)
    try:
        wait_ready(proc, url)
        with httpx.Client(base_url=url, timeout=60) as c:
            name = c.get("/readyz").json()["model"]
            info = c.get("/v1/model").json()
            report = c.post("/v1/analyze", files=_files(("a.png", png_bytes))).json()
        assert "tiny" in name and info["name"] == name and info["labels"]
        assert report["model"]["name"] == name and report["images"][0].get("error") is None
        assert not _has_torch(proc.pid), "the server process loaded torch"
        assert any(_has_torch(pid) for pid in _descendants(proc.pid)), "no worker holds the model"
    finally:
        stop_server(proc)


# -- hostile context ------------------------------------------------------------------------------
HOSTILE_CONTEXTS = [
    ('{"hb_g_dl": 1' + "0" * 400 + "}", "hb_g_dl"),
    ('{"hb_g_dl": ' + "7" * 5000 + "}", "hb_g_dl"),
    ('{"hb_g_dl": 1e400}', "hb_g_dl"),
    ('{"hb_g_dl": 9, "hb_g_dl": 10}', "hb_g_dl"),
    ("[" * 100_000 + "]" * 100_000, "context"),
    ('{"hb_g_dl": ' + "[" * 100_000 + "]" * 100_000 + "}", "context"),
]


@pytest.mark.parametrize(("context", "field"), HOSTILE_CONTEXTS, ids=["1e400-int", "5000-digits", "1e400",
                                                                      "duplicate", "deep", "deep-value"])
def test_hostile_context_is_422_naming_the_field(client, png_bytes, context, field):
    r = client.post("/v1/analyze", files=_files(("a.png", png_bytes)), data={"context": context})
    err = assert_error(r, 422, "bad_context")
    assert err["detail"]["field"] == field
    assert len(err["message"]) < 300  # the huge input is never echoed back


@pytest.mark.parametrize("value", [int("1" + "0" * 400), -int("9" * 400)])
def test_diagnose_with_a_400_digit_integer_is_422_naming_the_field(client, value):
    for body, field in ((f'{{"counts": {{"normal": 10}}, "context": {{"hb_g_dl": {value}}}}}', "context.hb_g_dl"),
                        (f'{{"counts": {{"normal": 10}}, "um_per_px": {value}}}', "um_per_px"),
                        (f'{{"counts": {{"normal": {value}}}}}', "counts.normal")):
        r = client.post("/v1/diagnose", content=body, headers={"content-type": "application/json"})
        err = assert_error(r, 422, "validation_error")
        assert err["message"].startswith(f"invalid request: {field}: a number of "), err
        assert err["detail"][0]["loc"] == ["body", *field.split(".")]


HOSTILE_BODIES = [
    ("[" * 100_000 + "]" * 100_000, "body", "nested more than 32 levels"),
    ('{"counts": {"normal": 1}, "context": {"hb_g_dl": ' + "[" * 100_000 + "]" * 100_000 + "}}",
     "context.hb_g_dl", "nested more than"),
    ('{"counts": {"normal": ' + "9" * 5000 + "}}", "counts.normal", "a number of 5000 characters"),
    ('{"counts": {"normal": 1}, "um_per_px": 1e400}', "um_per_px", "1e400 is out of range"),
    ('{"counts": {"normal": NaN}}', "counts.normal", "NaN is not a JSON number"),
    ('{"counts": {"normal": 1}, "um_per_px": -Infinity}', "um_per_px", "-Infinity is not a JSON number"),
    ('{"counts": {"normal": 1}, "cells": [{"label": "normal"}, {"diameter_um": Infinity}]}', "cells.1.diameter_um",
     "Infinity is not"),
    ('{"counts": {"normal": 1, "normal": 2}}', "counts.normal", "given twice"),
]


@pytest.mark.parametrize(("body", "field", "why"), HOSTILE_BODIES,
                         ids=["deep", "deep-field", "5000-digits", "1e400", "nan", "-inf", "inf-in-list", "twice"])
def test_hostile_json_bodies_are_422_naming_the_field(client, body, field, why):
    r = client.post("/v1/diagnose", content=body, headers={"content-type": "application/json"})
    err = assert_error(r, 422, "validation_error")
    assert err["message"].startswith(f"invalid request: {field}: {why}"), err
    assert len(err["message"]) < 300  # the huge input is never echoed back


def test_review_body_is_guarded_too_and_every_api_route_is(make_client, tmp_path):
    from fastapi.routing import APIRoute

    from service.body_guard import GuardedJSONRoute
    from service.routers import analyze, cases, diagnose, health, metrics, model

    c = make_client(store_dir=str(tmp_path / "store"))
    r = c.patch("/v1/cases/c1/cells/0/0", content='{"reviewer": "a", "label": ' + "[" * 5000 + "]" * 5000 + "}",
                headers={"content-type": "application/json"})
    assert assert_error(r, 422, "validation_error")["message"].startswith("invalid request: label: nested")
    api = [route for module in (analyze, cases, diagnose, health, metrics, model) for route in module.router.routes
           if isinstance(route, APIRoute)]
    assert len(api) >= 8 and all(isinstance(route, GuardedJSONRoute) for route in api)


# -- saved uploads, file modes ------------------------------------------------------------------
def test_uploads_are_saved_under_content_names_never_overwritten_and_umask_readable(
    make_client, png_bytes, tmp_path
):
    kept = tmp_path / "kept"
    c = make_client(save_uploads_dir=str(kept))
    other = encode(field_image(7))
    old = os.umask(0o022)
    try:
        for data, name in ((png_bytes, "same.png"), (other, "same.png"), (other, "..")):
            assert c.post("/v1/analyze", files=_files((name, data))).status_code == 200
    finally:
        os.umask(old)
    files = sorted(kept.iterdir())
    assert [f.name for f in files] == sorted(f"{hashlib.sha256(d).hexdigest()}.png" for d in (png_bytes, other))
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files)


def test_atomic_writes_get_the_umask_mode(tmp_path):
    from morph.io import open_atomic_text, write_json

    old = os.umask(0o027)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        with open_atomic_text(tmp_path / "c.csv") as fh:
            fh.write("a\n")
    finally:
        os.umask(old)
    for name in ("r.json", "c.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


# -- metrics, probes, statuses --------------------------------------------------------------------
def test_made_up_methods_share_one_metrics_label(client):
    def made_up(n: int, start: int) -> str:
        for i in range(start, start + n):
            client.request(f"MADEUP{i}", "/healthz")
            client.request(f"X{i}", f"/nowhere/{i}")
        return client.get("/metrics").text

    def series(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}

    client.get("/metrics")  # its own series exist from now on
    first = made_up(20, 0)
    assert 'method="other"' in first and "MADEUP" not in first
    assert series(made_up(200, 20)) == series(first)  # counts change, the label set does not


def test_head_probes_answer(client):
    for path in ("/healthz", "/readyz"):
        r = client.head(path)
        assert r.status_code == 200, path
        assert r.content == b""


def test_malformed_multipart_is_400_in_the_error_schema_and_documented(client):
    r = client.post("/v1/analyze", content=b"--b\r\nnot a part",
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code in (400, 422)
    assert set(r.json()) == {"error"}
    readme = (REPO / "README.md").read_text()
    status_list = readme[readme.index("Every error has one shape"):]
    assert "400 malformed" in status_list and "500" in status_list and "504 timeout" in status_list
