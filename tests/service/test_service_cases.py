"""The case store through the API: store a case, review cells, read the verified report.

Also: with the store off, every store route says how to turn it on (409), and an analysis
leaves no file anywhere under the working or temporary folders."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import assert_error

from morph.store import REVIEW_LABELS


def _store_case(client: Any, png: bytes, **form: str) -> dict[str, Any]:
    r = client.post("/v1/analyze", files=[("files", ("field.png", png, "image/png"))],
                    data={"store": "true", **form})
    assert r.status_code == 200, r.text
    return r.json()


def _counted_cells(report: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, c) for i, im in enumerate(report["images"]) for c in im["cells"] if not c["touches_border"]]


def _other_label(cell: dict[str, Any]) -> str:
    wanted = "teardrop" if cell["kind"] == "rbc" else "lymphocyte"
    return wanted if cell["label"] != wanted else "normal"


@pytest.fixture
def store_client(make_client: Any, tmp_path: Path) -> Any:
    return make_client(store_dir=tmp_path / "store")


def test_store_true_keeps_the_case_and_lists_it_newest_first(store_client: Any, png_bytes: bytes, tmp_path: Path) -> None:
    first = _store_case(store_client, png_bytes)
    second = _store_case(store_client, png_bytes, stain="nmb")
    assert first["case_id"] and first["case_id"] != second["case_id"]
    page = store_client.get("/v1/cases", params={"limit": 1}).json()
    assert page["total"] == 2 and [c["case_id"] for c in page["cases"]] == [second["case_id"]]
    page2 = store_client.get("/v1/cases", params={"limit": 1, "offset": 1}).json()
    assert [c["case_id"] for c in page2["cases"]] == [first["case_id"]]
    case = store_client.get(f"/v1/cases/{first['case_id']}").json()
    assert case["status"] == "unreviewed" and case["reviewed_cells"] == 0 and case["audit"] == []
    assert case["report"]["counts"] == first["counts"]
    assert all(c["review"] is None for c in case["report"]["images"][0]["cells"])
    # the image is kept once (content-addressed), readable as the umask allows
    files = [p for p in (tmp_path / "store" / "images").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".png" and files[0].read_bytes() == png_bytes
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o777 & ~umask


def test_reviews_change_the_verified_report_and_stay_in_the_audit_trail(store_client: Any, png_bytes: bytes) -> None:
    case = _store_case(store_client, png_bytes)
    cid = case["case_id"]
    cells = _counted_cells(case)
    assert len(cells) >= 3
    (i0, c0), (i1, c1), (i2, c2) = cells[:3]
    new0 = _other_label(c0)
    r = store_client.patch(f"/v1/cases/{cid}/cells/{i0}/{c0['id']}", json={"label": new0, "reviewer": "ann"})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == new0 and r.json()["model_label"] == c0["label"] and not r.json()["confirmed"]
    r = store_client.patch(f"/v1/cases/{cid}/cells/{i1}/{c1['id']}", json={"confirmed": True, "reviewer": "bob"})
    assert r.status_code == 200 and r.json()["confirmed"] and r.json()["label"] == c1["label"]
    # a second correction of the same cell is added, never overwriting the first
    store_client.patch(f"/v1/cases/{cid}/cells/{i0}/{c0['id']}", json={"label": "spherocyte", "reviewer": "bob"})

    report = store_client.get(f"/v1/cases/{cid}/report").json()
    assert report["reviewed_cells"] == 2 and report["changed_cells"] == 1 and report["status"] == "in_review"
    assert report["model_counts"] == case["counts"]
    assert report["counts"].get("spherocyte", 0) == case["counts"].get("spherocyte", 0) + (c0["label"] != "spherocyte")
    assert sum(report["counts"].values()) == sum(case["counts"].values())
    assert "findings" in report and isinstance(report["differentials"], list)

    stored = store_client.get(f"/v1/cases/{cid}").json()
    audit = stored["audit"]
    assert [(a["reviewer"], a["action"], a["old_label"], a["new_label"]) for a in audit] == [
        ("ann", "relabel", c0["label"], new0),
        ("bob", "confirm", c1["label"], c1["label"]),
        ("bob", "relabel", new0, "spherocyte"),
    ]
    assert all(a["at"] for a in audit)
    by_id = {c["id"]: c for c in stored["report"]["images"][i0]["cells"]}
    assert by_id[c0["id"]]["review"]["label"] == "spherocyte" and by_id[c2["id"]]["review"] is None


def test_every_counted_cell_reviewed_makes_the_case_verified(store_client: Any, png_bytes: bytes) -> None:
    case = _store_case(store_client, png_bytes)
    cid = case["case_id"]
    for i, c in _counted_cells(case):
        body = {"confirmed": True, "reviewer": "ann"} if c["label"] in REVIEW_LABELS else {"label": "normal", "reviewer": "ann"}
        assert store_client.patch(f"/v1/cases/{cid}/cells/{i}/{c['id']}", json=body).status_code == 200
    summary = store_client.get("/v1/cases").json()["cases"][0]
    assert summary["status"] == "verified" and summary["verified"] is True
    assert summary["reviewed_cells"] == summary["counted_cells"] == len(_counted_cells(case))


def test_bad_reviews_are_clear_errors(store_client: Any, png_bytes: bytes) -> None:
    case = _store_case(store_client, png_bytes)
    cid = case["case_id"]
    i, c = _counted_cells(case)[0]
    url = f"/v1/cases/{cid}/cells/{i}/{c['id']}"
    err = assert_error(store_client.patch(url, json={"label": "dragon_cell", "reviewer": "ann"}), 422, "bad_label")
    assert "dragon_cell" in err["message"]
    assert_error(store_client.patch(url, json={"reviewer": "ann"}), 422, "bad_request")
    assert_error(store_client.patch(url, json={"label": "normal"}), 422, "validation_error")
    assert_error(store_client.patch(f"/v1/cases/nope/cells/{i}/{c['id']}", json={"label": "normal", "reviewer": "a"}),
                 404, "not_found")
    assert_error(store_client.patch(f"/v1/cases/{cid}/cells/{i}/999999", json={"label": "normal", "reviewer": "a"}),
                 404, "not_found")
    assert_error(store_client.patch(f"/v1/cases/{cid}/cells/7/{c['id']}", json={"label": "normal", "reviewer": "a"}),
                 404, "not_found")
    assert_error(store_client.get("/v1/cases/nope"), 404, "not_found")
    assert_error(store_client.get("/v1/cases/nope/report"), 404, "not_found")
    assert_error(store_client.patch(url, content=b"label=normal", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")
    assert store_client.get(f"/v1/cases/{cid}").json()["audit"] == []


def test_store_routes_answer_409_with_how_to_enable_it_when_off(client: Any, png_bytes: bytes) -> None:
    err = assert_error(client.post("/v1/analyze", files=[("files", ("f.png", png_bytes, "image/png"))],
                                   data={"store": "true"}), 409, "store_disabled")
    assert "MORPH_STORE_DIR" in err["message"]
    for resp in (client.get("/v1/cases"), client.get("/v1/cases/abc"), client.get("/v1/cases/abc/report"),
                 client.patch("/v1/cases/abc/cells/0/1", json={"label": "normal", "reviewer": "a"})):
        assert "MORPH_STORE_DIR" in assert_error(resp, 409, "store_disabled")["message"]


def test_api_keys_guard_the_case_routes(make_client: Any, tmp_path: Path) -> None:
    c = make_client(store_dir=tmp_path / "s", api_keys="k1")
    assert_error(c.get("/v1/cases"), 401, "unauthorized")
    assert c.get("/v1/cases", headers={"Authorization": "Bearer k1"}).status_code == 200


def _files_under(*folders: Path) -> list[Path]:
    return sorted(p for f in folders for p in f.rglob("*"))


def test_nothing_is_stored_when_the_store_is_off(
    make_client: Any, png_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(var, str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    client = make_client()
    big = png_bytes + b"\0" * (2 * 1024 * 1024)  # over Starlette's 1 MB spooling threshold
    for data in (png_bytes, big):
        r = client.post("/v1/analyze", files=[("files", ("field.png", data, "image/png"))],
                        data={"overlay": "true"})
        assert r.status_code == 200, r.text
        assert "case_id" not in r.json()
    assert _files_under(work, temp) == []


def test_a_stored_image_is_served_back_as_uploaded(store_client: Any, png_bytes: bytes) -> None:
    cid = _store_case(store_client, png_bytes)["case_id"]
    r = store_client.get(f"/v1/cases/{cid}/images/0")
    assert r.status_code == 200 and r.content == png_bytes and r.headers["content-type"] == "image/png"
    assert_error(store_client.get(f"/v1/cases/{cid}/images/3"), 404, "not_found")
