"""Two service processes writing reviews to one SQLite store at once lose no correction."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from svc_helpers import encode, field_image, start_server, stop_server, wait_ready

from morph.store import CaseInput, CaseStore

REPO = Path(__file__).resolve().parents[2]
N_CELLS, N_PATCHES, N_CLIENTS = 12, 100, 8
LABELS = ("normal", "teardrop", "macrocyte", "spherocyte", "target_cell")


def _report(n_cells: int) -> dict[str, Any]:
    cells = [{
        "id": i, "x": 20.0 + 20 * i, "y": 40.0, "bbox": [10 + 20 * i, 30, 30 + 20 * i, 50], "kind": "rbc",
        "label": "normal", "confidence": 0.9, "area_px": 300.0, "diameter_px": 19.5, "diameter_um": 3.5,
        "eccentricity": 0.2, "touches_border": False,
    } for i in range(n_cells)]
    image = {"path": "f.png", "width": 320, "height": 240, "um_per_px": 0.178, "median_rbc_diameter_um": 3.5,
             "warnings": [], "cells": cells}
    return {"model": {"name": "test"}, "images": [image], "counts": {"normal": n_cells}, "findings": {},
            "differentials": [], "warnings": [], "disclaimer": ""}


def _patch(url: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PATCH",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return int(r.status)


def test_two_processes_writing_one_sqlite_store_lose_no_correction(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = CaseStore(store_dir)
    case_id = store.add_case(CaseInput(_report(N_CELLS), [encode(field_image(0))]))
    store.close()
    env = {"MORPH_MODEL": "none", "MORPH_LOCALIZER": "none", "MORPH_STORE_DIR": str(store_dir),
           "MORPH_MAX_CONCURRENCY": "1"}  # no model, one analysis worker: quick start
    servers = [start_server(env, REPO) for _ in range(2)]
    try:
        for proc, url in servers:
            wait_ready(proc, url)
        jobs = []
        for n in range(N_PATCHES):  # every cell is corrected several times, from both servers
            url = servers[n % 2][1]
            cell = n % N_CELLS
            jobs.append((f"{url}/v1/cases/{case_id}/cells/0/{cell}",
                         {"label": LABELS[n % len(LABELS)], "reviewer": f"reviewer-{n}"}))
        with ThreadPoolExecutor(N_CLIENTS) as pool:
            statuses = list(pool.map(lambda job: _patch(*job), jobs))
        assert statuses == [200] * N_PATCHES
        with urllib.request.urlopen(f"{servers[0][1]}/v1/cases/{case_id}", timeout=30) as r:
            case = json.load(r)
    finally:
        for proc, _ in servers:
            stop_server(proc)
    audit = case["audit"]
    assert sorted(a["reviewer"] for a in audit) == sorted(f"reviewer-{n}" for n in range(N_PATCHES))
    chains: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in audit:
        assert a["new_label"] == LABELS[int(a["reviewer"].split("-")[1]) % len(LABELS)]
        chains[a["cell_id"]].append(a)
    cells = {c["id"]: c for c in case["report"]["images"][0]["cells"]}
    for cell_id, entries in chains.items():
        # each change starts from the label the previous one left: none was lost in between
        assert entries[0]["old_label"] == "normal"
        for before, after in zip(entries, entries[1:], strict=False):
            assert after["old_label"] == before["new_label"]
        assert cells[cell_id]["review"]["label"] == entries[-1]["new_label"]
