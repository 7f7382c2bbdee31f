"""Throughput and memory of ``morph score`` (the local process-pool engine).

Renders synthetic 640x480 Wright fields (``morph.synth.render_field``), then runs the real
command line as a subprocess:

1. **throughput**: ``--n`` fields (one-image cases), once per ``--workers`` value, with
   ``--force`` into a fresh output folder; images/s and cells/s are those ``run.json``
   reports for the scoring itself (after the CLI has imported torch), and the speed-up
   is relative to the first workers value;
2. **memory**: the same command with ``--workers 2`` on folders of each ``--rss`` size;
   peak resident memory (VmHWM) of the driver and of the largest worker, and the peak of
   the whole process tree's summed RSS, sampled every 50 ms from /proc.

    python benchmarks/batch_throughput.py                     # 200 fields, workers 1 vs 2, RSS 50 vs 500
    python benchmarks/batch_throughput.py --repeat 3 --skip-rss   # best of 3, on a shared machine
    python benchmarks/batch_throughput.py --n 40 --rss 20,80  # a quick look

``--model`` defaults to the shipped default model when there is one, else an untrained
``morphnet`` (same architecture, so the same compute per cell) saved to the work folder.
Linux only (reads /proc). Prints a table; nothing is timed inside the unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="fields for the throughput runs (default 200)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--rss", default="50,500", help="comma-separated folder sizes for peak memory (default 50,500)")
    p.add_argument("--rss-workers", type=int, default=2, help="workers for the memory runs (default 2)")
    p.add_argument("--repeat", type=int, default=1,
                   help="throughput runs per workers value, interleaved; the best is reported (default 1)")
    p.add_argument("--skip-rss", action="store_true", help="throughput only")
    p.add_argument("--model", default=None, help="model folder (default: shipped default, else untrained morphnet)")
    p.add_argument("--work", default="/tmp/morph-batch-bench", help="work folder (fields are cached there)")
    return p


def _render(args: tuple[int, str]) -> int:
    from morph.io import write_image
    from morph.synth import render_field

    seed, path = args
    if not Path(path).is_file():
        write_image(path, render_field(seed, height=480, width=640).image)
    return seed


def make_fields(pool: Path, n: int) -> list[Path]:
    pool.mkdir(parents=True, exist_ok=True)
    paths = [pool / f"field_{i:04d}.png" for i in range(n)]
    todo = [(i, str(p)) for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        t = time.perf_counter()
        with ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
            list(ex.map(_render, todo, chunksize=8))
        print(f"rendered {len(todo)} fields in {time.perf_counter() - t:.0f} s", flush=True)
    return paths


def folder_of(work: Path, fields: list[Path], n: int) -> Path:
    """A folder holding the first ``n`` fields (hard links: no copy)."""
    d = work / f"in{n}"
    if not d.is_dir() or len(list(d.iterdir())) != n:
        d.mkdir(parents=True, exist_ok=True)
        for f in fields[:n]:
            target = d / f.name
            if not target.exists():
                os.link(f, target)
    return d


def resolve_model(arg: str | None, work: Path) -> str | None:
    """The --model to pass (None: the shipped default)."""
    if arg:
        return arg
    from morph.classify import build_untrained, load_model

    try:
        load_model(None)
        return None
    except Exception:  # no shipped default: untrained weights of the real architecture
        return str(build_untrained("morphnet", seed=0).save(work / "morphnet-untrained"))


def _proc_tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [pid], {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier}
        out.extend(frontier)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_score(input_dir: Path, out: Path, workers: int, model: str | None) -> dict:
    """Run ``morph score`` as a subprocess, sampling the memory of its process tree."""
    cmd = [sys.executable, "-m", "morph_cli", "score", str(input_dir), "--out", str(out),
           "--workers", str(workers), "--force"] + (["--model", model] if model else [])
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    err_path = out.with_name(out.name + ".stderr.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(err_path, "w") as err_fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err_fh)
    peak = {"driver": 0, "worker": 0, "tree": 0}
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            tree = _proc_tree(proc.pid)
            for p in tree[1:]:  # the forkserver, the resource tracker and the workers
                peak["worker"] = max(peak["worker"], _status_kb(p, "VmHWM"))
                cpu[p] = max(cpu.get(p, 0.0), _cpu_s(p))
            peak["tree"] = max(peak["tree"], sum(_status_kb(p, "VmRSS") for p in tree))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak["driver"] = usage.ru_maxrss  # KB on Linux: the driver's own peak, exactly
    cpu_total = usage.ru_utime + usage.ru_stime + sum(cpu.values())
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or not (out / "run.json").is_file():
        raise SystemExit(f"morph score failed ({proc.returncode}):\n{err_path.read_text()}")
    run = json.loads((out / "run.json").read_text())
    counts = run["counts"]
    return {
        "workers": workers, "images": counts["images_ok"], "cells": counts["cells"],
        "seconds": run["run"]["seconds"], "wall": wall,
        "images_per_s": run["run"]["images_per_s"], "cells_per_s": run["run"]["cells_per_s"],
        "rss_driver_mb": peak["driver"] / 1024, "rss_worker_mb": peak["worker"] / 1024,
        "rss_tree_mb": peak["tree"] / 1024,
        "cpu_s": cpu_total, "images_per_cpu_s": counts["images_ok"] / max(cpu_total, 1e-9),
    }


def main(args: argparse.Namespace) -> None:
    work = Path(args.work)
    workers = [int(w) for w in args.workers.split(",") if w]
    sizes = [int(s) for s in args.rss.split(",") if s]
    fields = make_fields(work / "pool", max([args.n, *sizes]))
    model = resolve_model(args.model, work)
    print(f"model: {model or 'the shipped default'}; cores: {os.cpu_count()}", flush=True)

    load0 = os.getloadavg()[0]
    best: dict[int, dict] = {}
    src = folder_of(work, fields, args.n)
    for rep in range(args.repeat):
        for w in workers:  # interleaved, so a burst of background load hits every setting alike
            r = run_score(src, work / f"out_w{w}", w, model)
            print(f"  run {rep + 1}, workers {w}: {r['images_per_s']:.2f} images/s ({r['seconds']:.1f} s), "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            if w not in best or r["images_per_s"] > best[w]["images_per_s"]:
                best[w] = r
    rows = [best[w] for w in workers]
    base = rows[0]["images_per_s"] or 1e-9
    print(f"\nthroughput: {args.n} fields of 640x480 (one-image cases), best of {args.repeat}; "
          f"1-min load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'workers':>7} {'images':>7} {'cells':>7} {'score s':>8} {'wall s':>7} {'images/s':>9} "
          f"{'cells/s':>8} {'speed-up':>8} {'CPU s':>7} {'img/CPU-s':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['images']:>7} {r['cells']:>7} {r['seconds']:>8.1f} {r['wall']:>7.1f} "
              f"{r['images_per_s']:>9.2f} {r['cells_per_s']:>8.0f} {r['images_per_s'] / base:>7.2f}x "
              f"{r['cpu_s']:>7.1f} {r['images_per_cpu_s']:>9.2f}")
    print("(CPU s: user+system seconds of the whole process tree, imports included; img/CPU-s shows "
          "what parallel overhead costs, whatever else runs on the machine)")

    if args.skip_rss:
        return
    mem = []
    for n in sizes:
        r = run_score(folder_of(work, fields, n), work / f"out_rss{n}", args.rss_workers, model)
        r["n"] = n
        mem.append(r)
        print(f"  {n} images: driver {r['rss_driver_mb']:.0f} MB", flush=True)
    print(f"\npeak memory, --workers {args.rss_workers} (MB; VmHWM per process, summed RSS of the tree)")
    print(f"{'images':>7} {'driver':>8} {'worker':>8} {'tree':>8} {'images/s':>9}")
    for r in mem:
        print(f"{r['n']:>7} {r['rss_driver_mb']:>8.0f} {r['rss_worker_mb']:>8.0f} {r['rss_tree_mb']:>8.0f} "
              f"{r['images_per_s']:>9.2f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
