"""Load test of the web service on loopback, against the in-process engine.

1. **in-process**: the same :class:`morph.pipeline.Analyzer` the server loads
   (``morph.pipeline.build_analyzer``), decoding the same uploaded bytes and analysing one
   field per case, with as many threads as the server runs analyses at once
   (``--max-concurrency``), for ``--inproc-seconds`` split before and after the load run
   (background load on a shared machine drifts); the better of the two is the bar;
2. **service**: ``uvicorn service.app:app`` started by this script on 127.0.0.1 (a free
   port) and stopped at the end; ``--clients`` threads (default 16) each post 640x480
   fields to ``POST /v1/analyze`` in a loop for ``--seconds`` (default 60). Reports
   p50/p95/p99 latency, throughput, errors, and the server's RSS at the start, its peak
   and at the end (no growth = no leak), and the ratio to the in-process throughput
   (target >= 80 %);
3. **oversized uploads**: a request declaring a 200 MB body (Content-Length), and a
   200 MB chunked body (no length) are both refused with 413; reports how many bytes the
   client got to send before the answer and the server's RSS change.

    python benchmarks/service_load.py                 # 60 s, 16 clients
    python benchmarks/service_load.py --seconds 10    # a quick look

``--model`` defaults to the shipped default model when there is one, else an untrained
``morphnet`` (same architecture, so the same compute per cell) saved to ``--work``.
Loopback only; every loop is bounded by time and count. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the load run (default 60)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--inproc-seconds", type=float, default=None,
                   help="length of the in-process run (default: min(--seconds, 30))")
    p.add_argument("--max-concurrency", type=int, default=None,
                   help="MORPH_MAX_CONCURRENCY for the server and threads in-process (default: CPU count)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--fields", type=int, default=8, help="distinct synthetic fields to rotate (default 8)")
    p.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="upload format (default jpeg)")
    p.add_argument("--model", default=None,
                   help="model folder or name (default: shipped default, else untrained morphnet)")
    p.add_argument("--work", default="/tmp/morph-service-bench", help="work folder for the untrained model")
    p.add_argument("--slices", type=int, default=1,
                   help="alternate in-process and service runs in this many slices each, so that the "
                   "host's drift hits both alike (default 1: in-process before and after one load run)")
    p.add_argument("--inproc-torch-threads", type=int, default=None,
                   help="torch threads of the in-process analyzer (default: as each server worker has, "
                   "CPUs // max-concurrency, so that both sides run the same configuration; 0 = torch's default)")
    p.add_argument("--skip-413", action="store_true", help="skip the oversized-upload checks")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    return p


# ---- inputs ----------------------------------------------------------------------------------
def resolve_model(arg: str | None, work: Path) -> str:
    """The MORPH_MODEL value: the argument, the shipped default, or an untrained morphnet folder."""
    if arg:
        return arg
    from morph.classify import build_untrained, load_model

    try:
        load_model(None)
        return ""
    except Exception:  # no shipped default: untrained weights of the real architecture
        folder = work / "morphnet-untrained"
        if not (folder / "weights.pt").is_file():
            build_untrained("morphnet", seed=0).save(folder)
        return str(folder)


def make_uploads(n: int, fmt: str) -> list[tuple[str, bytes]]:
    from PIL import Image

    from morph.synth import render_field

    out = []
    for seed in range(n):
        img = render_field(seed, height=480, width=640).image
        buf = io.BytesIO()
        if fmt == "jpeg":
            Image.fromarray(img).save(buf, format="JPEG", quality=92)
        else:
            Image.fromarray(img).save(buf, format="PNG")
        out.append((f"field_{seed:02d}.{'jpg' if fmt == 'jpeg' else 'png'}", buf.getvalue()))
    return out


# ---- helpers ---------------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn workers, the analysis forkserver and its workers)."""
    children: dict[int, list[int]] = {}
    try:
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
    except OSError:
        pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MB (shared pages counted in each)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _run_threads(target: Any, n: int) -> float:
    """Run ``target(k)`` for k in 0..n-1 on n threads; return the wall time in seconds."""
    t0 = time.perf_counter()
    ts = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 1. in-process ---------------------------------------------------------------------------
_TORCH_THREADS: int | None = None  # --inproc-torch-threads, set by main


def _inproc_torch_threads(analyses: int) -> int:
    """The server gives each of its ``analyses`` worker processes CPUs // analyses torch threads
    (service.workers.WorkerPool): the in-process bar runs the same unless told otherwise."""
    if _TORCH_THREADS is not None:
        return _TORCH_THREADS
    return max(1, (os.cpu_count() or 1) // analyses)


def run_inprocess(model: str, uploads: list[tuple[str, bytes]], seconds: float, threads: int,
                  analyzer: Any = None) -> dict[str, Any]:
    from morph.pipeline import AnalysisOptions, build_analyzer

    analyzer = analyzer or build_analyzer(model)
    options = AnalysisOptions()
    torch_threads = _inproc_torch_threads(threads)
    analyzer.run_case(uploads[:1], options)  # warm-up
    done = [0] * threads
    deadline = time.perf_counter() + seconds

    def _loop(k: int) -> None:
        i = k
        while time.perf_counter() < deadline and done[k] < 1_000_000:
            name, data = uploads[i % len(uploads)]
            analyzer.run_case([(name, data)], options).report.to_dict()
            done[k] += 1
            i += threads

    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or default_threads)
    try:
        wall = _run_threads(_loop, threads)
    finally:
        torch.set_num_threads(default_threads)
    return {"threads": threads, "torch_threads": torch_threads or default_threads, "images": sum(done), "seconds": round(wall, 2),
            "images_per_s": sum(done) / wall, "model": analyzer.model_info().get("name")}


# ---- 2. the service under load ---------------------------------------------------------------
class Server:
    """uvicorn on a free loopback port, started and stopped by the benchmark."""

    def __init__(self, model: str, workers: int, max_concurrency: int, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MORPH_MODEL": model, "MORPH_MAX_CONCURRENCY": str(max_concurrency), **(env or {})}
        env.pop("MORPH_API_KEYS", None)
        if not model:
            env.pop("MORPH_MODEL")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers), "--log-level", "warning"],
            cwd=REPO, env=env,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not become ready")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        return _rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_load(server: Server, uploads: list[tuple[str, bytes]], clients: int, seconds: float,
             warm: bool = True) -> dict[str, Any]:
    import httpx

    mime = "image/jpeg" if uploads[0][0].endswith(".jpg") else "image/png"

    def _post(c: httpx.Client, i: int) -> int:
        name, data = uploads[i % len(uploads)]
        r = c.post(server.url + "/v1/analyze", files=[("files", (name, data, mime))])
        if r.status_code == 200:
            r.json()  # parse the whole report, as a client would
        return r.status_code

    if warm:
        with httpx.Client(timeout=120) as c:  # warm-up: every field once
            for i in range(len(uploads)):
                _post(c, i)
    rss_start = server.rss_mb()
    peak = [rss_start]
    timeline: list[tuple[float, float]] = []
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    stop = threading.Event()
    t_end = time.perf_counter() + seconds

    def _client(k: int) -> None:
        with httpx.Client(timeout=300) as c:
            i = k
            while time.perf_counter() < t_end and len(latencies[k]) < 1_000_000:
                t = time.perf_counter()
                try:
                    status = _post(c, i)
                    if status != 200:
                        errors[k].append(f"HTTP {status}")
                except httpx.HTTPError as exc:
                    errors[k].append(type(exc).__name__)
                latencies[k].append(time.perf_counter() - t)
                i += clients

    def _sampler() -> None:
        while not stop.wait(0.5):
            rss = server.rss_mb()
            peak[0] = max(peak[0], rss)
            timeline.append((time.perf_counter() - t0, rss))

    sampler = threading.Thread(target=_sampler, daemon=True)
    sampler.start()
    t0 = time.perf_counter()  # the sampler's timeline starts here too
    wall = _run_threads(_client, clients)
    stop.set()
    sampler.join()
    lat = [x for xs in latencies for x in xs]

    def _rss_at(frac: float) -> float:
        pts = [r for t, r in timeline if t <= frac * seconds]
        return round(pts[-1] if pts else rss_start, 1)

    errs = [e for es in errors for e in es]
    ok = len(lat) - len(errs)
    return {
        "clients": clients, "seconds": round(wall, 2), "requests": len(lat), "ok": ok,
        "errors": len(errs), "error_kinds": sorted(set(errs)),
        "images_per_s": ok / wall,
        "p50_s": _pct(lat, 50), "p95_s": _pct(lat, 95), "p99_s": _pct(lat, 99),
        "mean_s": statistics.fmean(lat) if lat else float("nan"),
        "rss_start_mb": round(rss_start, 1), "rss_peak_mb": round(peak[0], 1),
        "rss_25_mb": _rss_at(0.25), "rss_50_mb": _rss_at(0.5), "rss_75_mb": _rss_at(0.75),
        "rss_end_mb": round(server.rss_mb(), 1),
        "latencies": lat,
    }


def _merge_loads(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One load result from alternating slices: throughput over their summed wall time."""
    lat = [x for p in parts for x in p["latencies"]]
    wall = sum(p["seconds"] for p in parts)
    ok = sum(p["ok"] for p in parts)
    return {
        **parts[-1], "seconds": round(wall, 2), "requests": len(lat), "ok": ok,
        "errors": sum(p["errors"] for p in parts),
        "error_kinds": sorted({k for p in parts for k in p["error_kinds"]}),
        "images_per_s": ok / wall, "p50_s": _pct(lat, 50), "p95_s": _pct(lat, 95), "p99_s": _pct(lat, 99),
        "mean_s": statistics.fmean(lat) if lat else float("nan"),
        "rss_start_mb": parts[0]["rss_start_mb"], "rss_peak_mb": max(p["rss_peak_mb"] for p in parts),
        "latencies": lat,
    }


def _merge_inprocess(parts: list[dict[str, Any]]) -> dict[str, Any]:
    images, wall = sum(p["images"] for p in parts), sum(p["seconds"] for p in parts)
    return {**parts[0], "images": images, "seconds": round(wall, 2), "images_per_s": images / wall}


def run_alternating(
    model: str, uploads: list[tuple[str, bytes]], server: Server, args: argparse.Namespace, conc: int,
    inproc_s: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """In-process and service runs in alternating slices (each side idle while the other runs)."""
    from morph.pipeline import build_analyzer

    analyzer = build_analyzer(model)
    inproc_parts, load_parts = [], []
    for k in range(args.slices):
        inproc_parts.append(run_inprocess(model, uploads, inproc_s / args.slices, conc, analyzer))
        load_parts.append(run_load(server, uploads, args.clients, args.seconds / args.slices, warm=k == 0))
        print(f"slice {k + 1}/{args.slices}: in-process {inproc_parts[-1]['images_per_s']:.2f}, service "
              f"{load_parts[-1]['images_per_s']:.2f} images/s, load avg {os.getloadavg()[0]:.1f}", flush=True)
    return _merge_inprocess(inproc_parts), _merge_loads(load_parts)


# ---- 3. oversized uploads --------------------------------------------------------------------
def oversized(server: Server, chunked: bool, total: int = 200 * MB) -> dict[str, Any]:
    """Send a 200 MB body slowly enough to notice when the server answers; stop at the answer."""
    rss0 = server.rss_mb()
    head = (
        f"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n")
        + "\r\n"
    ).encode()
    part = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="huge.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    chunk = b"\xff" * MB
    sent = 0
    response = b""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        first = True
        while sent < total and time.perf_counter() - t0 < 120:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            body = (part + chunk[len(part):]) if first else chunk
            first = False
            data = (f"{len(body):x}\r\n".encode() + body + b"\r\n") if chunked else body
            try:
                s.sendall(data)
            except OSError:  # the server answered and closed: stop sending
                break
            sent += len(body)
        s.settimeout(30)
        try:
            while b"\r\n\r\n" not in response and len(response) < 65536:
                got = s.recv(65536)
                if not got:
                    break
                response += got
            head_end = response.find(b"\r\n\r\n")
            rest = response[head_end + 4:]
            while len(rest) < 200:
                got = s.recv(65536)
                if not got:
                    break
                rest += got
            response = response[:head_end + 4] + rest
        except OSError:
            pass
    status_line = response.split(b"\r\n", 1)[0].decode(errors="replace")
    return {
        "mode": "chunked" if chunked else "content-length",
        "status": status_line, "body": response.split(b"\r\n\r\n", 1)[-1][:160].decode(errors="replace"),
        "client_sent_mb": round(sent / MB, 1), "seconds": round(time.perf_counter() - t0, 2),
        "server_rss_before_mb": round(rss0, 1), "server_rss_after_mb": round(server.rss_mb(), 1),
    }


# ---- main ------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    conc = args.max_concurrency or max(1, os.cpu_count() or 1)
    model = resolve_model(args.model, work)
    uploads = make_uploads(args.fields, args.format)
    print(f"model: {model or 'shipped default'}; {len(uploads)} distinct 640x480 {args.format} fields "
          f"({statistics.fmean(len(d) for _, d in uploads) / 1024:.0f} KB each); "
          f"analyses at once: {conc}; CPUs: {os.cpu_count()}", flush=True)

    global _TORCH_THREADS
    _TORCH_THREADS = args.inproc_torch_threads
    inproc_s = args.inproc_seconds if args.inproc_seconds is not None else min(args.seconds, 30.0)
    if args.slices > 1:
        return _main_alternating(args, model, uploads, conc, inproc_s)
    # in-process before AND after the load run: on a shared machine, background load drifts
    before = run_inprocess(model, uploads, inproc_s / 2, conc)
    print(f"in-process (before): {before['images']} images in {before['seconds']} s = "
          f"{before['images_per_s']:.2f} images/s ({conc} threads), load avg {os.getloadavg()[0]:.1f}", flush=True)

    server = Server(model, args.workers, conc)
    try:
        load = run_load(server, uploads, args.clients, args.seconds)
        load_avg, big, alive_after = _after_load(server, args)
    finally:
        server.stop()
    after = run_inprocess(model, uploads, inproc_s / 2, conc)
    print(f"in-process (after): {after['images']} images in {after['seconds']} s = "
          f"{after['images_per_s']:.2f} images/s, load avg {os.getloadavg()[0]:.1f}", flush=True)
    # compare with the better of the two in-process runs (the stricter bar)
    inproc = max(before, after, key=lambda r: r["images_per_s"])

    ratio = load["images_per_s"] / inproc["images_per_s"] if inproc["images_per_s"] else float("nan")
    inproc_row = ("in-process before/after (images/s)", f"{before['images_per_s']:.2f}/{after['images_per_s']:.2f}")
    _print_table(load, inproc_row, ratio, "service / best in-process", load_avg)
    return _finish(args, load, ratio, big, alive_after,
                   {"inprocess_before": before, "inprocess_after": after})


def _after_load(server: Server, args: argparse.Namespace) -> tuple[float, list[dict[str, Any]], bool]:
    """Right after the load run: the host's load, the 413 checks (unless skipped), still alive?"""
    load_avg = os.getloadavg()[0]
    big = [] if args.skip_413 else [oversized(server, chunked=False), oversized(server, chunked=True)]
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as r:
        alive_after = r.status == 200
    return load_avg, big, alive_after


def _main_alternating(args: argparse.Namespace, model: str, uploads: list[tuple[str, bytes]], conc: int,
                      inproc_s: float) -> int:
    server = Server(model, args.workers, conc)
    try:
        inproc, load = run_alternating(model, uploads, server, args, conc, inproc_s)
        load_avg, big, alive_after = _after_load(server, args)
    finally:
        server.stop()
    ratio = load["images_per_s"] / inproc["images_per_s"] if inproc["images_per_s"] else float("nan")
    inproc_row = (f"in-process ({args.slices} slices, {inproc['torch_threads']} torch thr)", f"{inproc['images_per_s']:.2f}")
    _print_table(load, inproc_row, ratio, "service / in-process", load_avg)
    return _finish(args, load, ratio, big, alive_after, {"inprocess": inproc})


def _print_table(load: dict[str, Any], inproc_row: tuple[str, str], ratio: float, ratio_name: str,
                 load_avg: float) -> None:
    print()
    print(f"{'service load':<34}{'value':>14}")
    rows = [
        ("clients", f"{load['clients']}"),
        ("duration (s)", f"{load['seconds']:.1f}"),
        ("requests", f"{load['requests']}"),
        ("errors", f"{load['errors']}" + (f" {load['error_kinds']}" if load["errors"] else "")),
        ("throughput (images/s)", f"{load['images_per_s']:.2f}"),
        inproc_row,
        (ratio_name, f"{100 * ratio:.0f} %"),
        ("load average (1 min) at the end", f"{load_avg:.1f}"),
        ("latency p50 (s)", f"{load['p50_s']:.3f}"),
        ("latency p95 (s)", f"{load['p95_s']:.3f}"),
        ("latency p99 (s)", f"{load['p99_s']:.3f}"),
        ("server RSS start (MB)", f"{load['rss_start_mb']:.0f}"),
        ("server RSS at 25/50/75 % (MB)", f"{load['rss_25_mb']:.0f}/{load['rss_50_mb']:.0f}/{load['rss_75_mb']:.0f}"),
        ("server RSS peak (MB)", f"{load['rss_peak_mb']:.0f}"),
        ("server RSS end (MB)", f"{load['rss_end_mb']:.0f}"),
    ]
    for k, v in rows:
        print(f"{k:<34}{v:>14}")


def _finish(args: argparse.Namespace, load: dict[str, Any], ratio: float, big: list[dict[str, Any]],
            alive_after: bool, inproc: dict[str, Any]) -> int:
    for b in big:
        print(f"200 MB upload ({b['mode']}): {b['status']!r}; client had sent {b['client_sent_mb']} MB "
              f"when refused; server RSS {b['server_rss_before_mb']:.0f} -> {b['server_rss_after_mb']:.0f} MB")
    print(f"server alive after the oversized uploads: {alive_after}")
    verdict = load["errors"] == 0 and ratio >= 0.8 and all(b["status"].split(" ")[1:2] == ["413"] for b in big)
    print(f"targets (0 errors, >= 80 % of in-process, 413s): {'met' if verdict else 'NOT met'}")
    if args.json:
        load = {k: v for k, v in load.items() if k != "latencies"}
        Path(args.json).write_text(json.dumps({**inproc, "load": load, "oversized": big, "ratio": ratio},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
