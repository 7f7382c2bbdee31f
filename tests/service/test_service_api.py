"""Every endpoint and every error path of the API, with the tiny model swapped in."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image
from svc_helpers import assert_error, encode

from morph import labels as L
from service.errors import MORPH_STATUS


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


# ---- analyze ---------------------------------------------------------------------------------
def test_analyze_one_image_returns_the_case_report(client, png_bytes, analyzer):
    r = client.post("/v1/analyze", files=_files(("field1.png", png_bytes)))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert set(rep) == {"model", "images", "counts", "findings", "differentials", "warnings", "disclaimer"}
    assert rep["model"]["name"] == analyzer.model_info()["name"]
    (im,) = rep["images"]
    assert im["path"] == "field1.png" and (im["width"], im["height"]) == (320, 240)
    assert im["cells"], "the synthetic field has cells"
    assert "overlay_png" not in im
    counted = sum(1 for c in im["cells"] if not c["touches_border"])
    assert sum(rep["counts"].values()) == counted
    assert "not a diagnosis" in rep["disclaimer"].lower()


def test_analyze_matches_the_library_report(client, png_bytes, analyzer):
    """The service adds nothing to the report: it is CaseReport.to_dict() of the same input."""
    from morph.io import decode_image
    from morph.pipeline import AnalysisOptions

    r = client.post("/v1/analyze", files=_files(("a.png", png_bytes)), data={"stain": "wright"})
    lib = analyzer.analyze_case([("a.png", decode_image(png_bytes, "a.png"))], AnalysisOptions()).to_dict()
    assert r.json() == json.loads(json.dumps(lib))


def test_analyze_overlay_is_a_png_of_the_image_size(client, png_bytes):
    r = client.post("/v1/analyze", files=_files(("a.png", png_bytes)), data={"overlay": "true"})
    im = r.json()["images"][0]
    png = base64.b64decode(im["overlay_png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == (im["width"], im["height"])


def test_analyze_options_are_passed_through(client, png_bytes):
    r = client.post(
        "/v1/analyze", files=_files(("a.png", png_bytes)),
        data={"um_per_px": "0.2", "stain": "nmb", "context": json.dumps({"age_years": 40, "hb_g_dl": 9.5})},
    )
    assert r.status_code == 200, r.text
    assert r.json()["images"][0]["um_per_px"] == pytest.approx(0.2)


def test_several_images_form_one_case(client, png_bytes, jpg_bytes):
    r = client.post("/v1/analyze", files=_files(("a.png", png_bytes), ("b.jpg", jpg_bytes)))
    assert r.status_code == 200
    rep = r.json()
    assert [im["path"] for im in rep["images"]] == ["a.png", "b.jpg"]
    counted = sum(1 for im in rep["images"] for c in im["cells"] if not c["touches_border"])
    assert sum(rep["counts"].values()) == counted


def test_a_bad_image_fails_only_itself(client, png_bytes):
    r = client.post("/v1/analyze", files=_files(("good.png", png_bytes), ("notes.jpg", b"shopping list\n")))
    assert r.status_code == 200, r.text
    good, bad = r.json()["images"]
    assert good.get("error") is None and good["cells"]
    assert bad["error"]["code"] == "not_an_image" and bad["path"] == "notes.jpg"
    assert any("notes.jpg" in w for w in r.json()["warnings"])


def test_non_image_alone_is_422_naming_the_file(client):
    err = assert_error(client.post("/v1/analyze", files=_files(("notes.jpg", b"not an image"))), 422, "not_an_image")
    assert "notes.jpg" in err["message"]
    assert err["detail"]["file"] == "notes.jpg"


@pytest.mark.parametrize("kind, code", [("empty", "empty_file"), ("truncated", "truncated_image"), ("tiny", "image_too_small")])
def test_unreadable_images_are_422_naming_the_file(client, jpg_bytes, kind, code):
    data = {"empty": b"", "truncated": jpg_bytes[: len(jpg_bytes) // 2],
            "tiny": encode(np.zeros((8, 8, 3), np.uint8))}[kind]
    err = assert_error(client.post("/v1/analyze", files=_files(("x.png", data))), MORPH_STATUS[code], code)
    assert err["detail"]["file"] == "x.png" and "x.png" in err["message"]


def test_all_bad_images_list_every_file(client):
    r = client.post("/v1/analyze", files=_files(("a.txt", b"aaa"), ("b.txt", b"bbb")))
    err = assert_error(r, 422, "not_an_image")
    assert [e["file"] for e in err["detail"]["errors"]] == ["a.txt", "b.txt"]


def test_client_paths_are_reduced_to_the_file_name(client, png_bytes):
    r = client.post("/v1/analyze", files=_files(("C:\\fakepath\\field.png", png_bytes)))
    assert r.json()["images"][0]["path"] == "field.png"


@pytest.mark.parametrize(
    "context, field",
    [("{not json", "context"), ("[1, 2]", "context"), ('{"hb_g_dl": -3}', "hb_g_dl"),
     ('{"shoe_size": 42}', "shoe_size"), ('{"splenomegaly": "yes"}', "splenomegaly")],
)
def test_bad_context_is_422_naming_the_field(client, png_bytes, context, field):
    r = client.post("/v1/analyze", files=_files(("a.png", png_bytes)), data={"context": context})
    err = assert_error(r, 422, "bad_context")
    assert err["detail"]["field"] == field
    assert field in err["message"]


@pytest.mark.parametrize("form", [{"stain": "giemsa"}, {"um_per_px": "-1"}, {"um_per_px": "abc"}, {"overlay": "maybe"}])
def test_bad_form_fields_are_422_naming_the_field(client, png_bytes, form):
    err = assert_error(client.post("/v1/analyze", files=_files(("a.png", png_bytes)), data=form), 422, "validation_error")
    (name,) = form
    assert name in err["message"]


def test_missing_files_is_422(client):
    r = client.post("/v1/analyze", data={"stain": "wright"}, files={"other": ("x", b"x")})
    err = assert_error(r, 422, "validation_error")
    assert "files" in err["message"]


@pytest.mark.parametrize(
    "kwargs", [{"json": {"files": []}}, {"content": b"abc", "headers": {"content-type": "text/plain"}},
               {"data": {"stain": "wright"}}, {"content": b"", "headers": {}}],
)
def test_wrong_content_type_is_415(client, kwargs):
    err = assert_error(client.post("/v1/analyze", **kwargs), 415, "unsupported_media_type")
    assert err["detail"]["accepted"] == ["multipart/form-data"]


# ---- diagnose --------------------------------------------------------------------------------
def _has_differentials() -> bool:
    try:
        import morph.differentials  # noqa: F401
    except ImportError:
        return False
    return True


needs_dx = pytest.mark.skipif(not _has_differentials(), reason="morph.differentials not there yet")


@needs_dx
def test_diagnose_returns_findings_and_differentials(client):
    body = {"counts": {"normal": 180, "teardrop": 25, "macrocyte": 30}, "um_per_px": 0.1,
            "context": {"age_years": 70, "hb_g_dl": 8.1}}
    r = client.post("/v1/diagnose", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"findings", "differentials", "disclaimer"}
    from morph.differentials import diagnose

    findings, diffs = diagnose(body["counts"], um_per_px=0.1, context=body["context"])
    assert out["findings"] == json.loads(json.dumps(findings))
    assert [d["id"] for d in out["differentials"]] == [d["id"] for d in diffs]


def test_diagnose_unknown_label_is_422_naming_it(client):
    err = assert_error(client.post("/v1/diagnose", json={"counts": {"unicorn": 3}}), 422, "bad_label")
    assert "unicorn" in err["message"] and err["detail"]["field"] == "counts.unicorn"


def test_diagnose_bad_context_is_422_naming_the_field(client):
    r = client.post("/v1/diagnose", json={"counts": {"normal": 3}, "context": {"mcv_fl": "high"}})
    err = assert_error(r, 422, "bad_context")
    assert err["detail"]["field"] == "mcv_fl"


@pytest.mark.parametrize(
    "body", [{"counts": {"normal": -1}}, {}, {"counts": {"normal": 1}, "um_per_px": 0}, {"counts": [1]},
             {"counts": {"normal": 1}, "extra": 1}],
)
def test_diagnose_validation_errors_use_the_error_schema(client, body):
    err = assert_error(client.post("/v1/diagnose", json=body), 422, "validation_error")
    assert isinstance(err["detail"], list) and all("input" not in d for d in err["detail"])


def test_diagnose_needs_json(client):
    assert_error(client.post("/v1/diagnose", data={"counts": "x"}), 415, "unsupported_media_type")


def test_diagnose_malformed_json_is_422(client):
    r = client.post("/v1/diagnose", content=b'{"counts": ', headers={"content-type": "application/json"})
    assert_error(r, 422, "validation_error")


# ---- model, labels, differentials, health ------------------------------------------------------
def test_model_info(client, analyzer):
    r = client.get("/v1/model")
    assert r.status_code == 200
    assert r.json()["name"] == analyzer.model_info()["name"]


def test_labels_are_the_library_vocabulary(client):
    out = client.get("/v1/labels").json()
    assert out["labels"] == list(L.ALL_LABELS)
    assert out["rbc"] == list(L.RBC_LABELS) and out["nucleated"] == list(L.NUCLEATED_LABELS)
    assert set(out["special"]) == {L.UNIDENTIFIED, L.UNCLASSIFIED, L.PLATELET}
    assert all(c.startswith("#") and len(c) == 7 for c in out["colors"].values())


@needs_dx
def test_differentials_vocabulary(client):
    from morph.differentials import list_differentials

    out = client.get("/v1/differentials").json()
    assert out["differentials"] == json.loads(json.dumps(list_differentials()))
    assert all({"id", "name"} <= set(d) for d in out["differentials"])


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"


def test_readyz_is_503_until_the_model_is_loaded(png_bytes):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(model="none"))  # lifespan not run: nothing loaded
    c = TestClient(app, raise_server_exceptions=False)
    assert_error(c.get("/readyz"), 503, "not_ready")
    assert_error(c.post("/v1/analyze", files=_files(("a.png", png_bytes))), 503, "not_ready")
    assert c.get("/healthz").status_code == 200


def test_lifespan_loads_the_model_named_in_settings():
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(model="tiny"))) as c:
        name = c.get("/readyz").json()["model"]
        assert name and "tiny" in name
        assert c.get("/v1/model").json()["name"] == name


def test_unknown_model_in_settings_fails_at_startup():
    from fastapi.testclient import TestClient

    from morph.errors import MorphError
    from service.app import create_app
    from service.settings import Settings

    with pytest.raises(MorphError):
        with TestClient(create_app(Settings(model="/no/such/model/folder"))):
            pass


# ---- errors everywhere -------------------------------------------------------------------------
def test_404_and_405_use_the_error_schema(client):
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.get("/v1/analyze"), 405, "method_not_allowed")
    assert_error(client.get("/static/nope.js"), 404, "not_found")


def test_an_unexpected_error_is_500_without_traceback(make_client, png_bytes):
    from service.deps import get_analyzer

    c = make_client()

    class Broken:
        def analyze_case(self, *a, **k):
            raise RuntimeError("secret internal state /etc/passwd")

    c.app.dependency_overrides[get_analyzer] = lambda: Broken()
    r = c.post("/v1/analyze", files=_files(("a.png", png_bytes)))
    err = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "passwd" not in r.text
    assert err["detail"] is None


def test_openapi_documents_endpoints_and_examples(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ("/v1/analyze", "/v1/diagnose", "/v1/model", "/v1/labels", "/v1/differentials",
              "/healthz", "/readyz", "/metrics"):
        assert p in paths, p
    assert "examples" in json.dumps(spec["components"]["schemas"]["DiagnoseRequest"])
    assert "ErrorResponse" in spec["components"]["schemas"]
    assert "422" in paths["/v1/analyze"]["post"]["responses"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    # the docs page works offline: its script and style come from this server, not a CDN
    assert "cdn" not in docs.text.lower()
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs.text
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset


# ---- the review page ---------------------------------------------------------------------------
def test_review_page_and_assets_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'src="/static/app.js"' in r.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# ---- patient data ------------------------------------------------------------------------------
def test_uploads_stay_in_memory_and_out_of_the_logs(client, caplog, monkeypatch):
    """A multi-MB upload is never spooled to a temporary file, and no log line names it."""
    import tempfile

    def _no_disk(self, *a, **k):
        raise AssertionError("upload spooled to disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", _no_disk)
    noisy = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)
    data = encode(noisy)  # ~4 MB PNG, far over Starlette's 1 MB spooling threshold
    assert len(data) > 2 * 1024 * 1024
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/analyze", files=_files(("patient-0421-smear.png", data)))
    assert r.status_code in (200, 422), r.text
    assert not any("patient-0421" in rec.getMessage() for rec in caplog.records)


def test_save_uploads_only_when_asked(make_client, png_bytes, tmp_path):
    c = make_client(save_uploads_dir=str(tmp_path / "kept"))
    assert c.post("/v1/analyze", files=_files(("a.png", png_bytes))).status_code == 200
    import hashlib

    kept = tmp_path / "kept" / f"{hashlib.sha256(png_bytes).hexdigest()}.png"
    assert kept.read_bytes() == png_bytes


def test_cors_closed_by_default_and_opened_by_setting(make_client):
    origin = {"Origin": "https://lab.example.org"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.get("/v1/labels", headers=origin).headers
    opened = make_client(cors_origins="https://lab.example.org")
    r = opened.get("/v1/labels", headers=origin)
    assert r.headers["access-control-allow-origin"] == "https://lab.example.org"


def test_scale_outside_the_library_range_is_422_naming_it(client, png_bytes):
    err = assert_error(client.post("/v1/analyze", files=_files(("a.png", png_bytes)), data={"um_per_px": "5.5"}),
                       422, "validation_error")
    assert "um_per_px" in err["message"] and "0.01-5" in err["message"]
    err = assert_error(client.post("/v1/diagnose", json={"counts": {"normal": 1}, "um_per_px": 0.001}),
                       422, "validation_error")
    assert "um_per_px" in err["message"]


def test_localizer_setting_uses_the_model_vocabulary():
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(model="none", localizer="none"))) as c:
        info = c.get("/v1/model").json()
        assert info["localizer"] == {"name": "hand-made seeds"} and info["name"] is None


@needs_dx
def test_diagnose_takes_stain_and_cells_like_the_cli(client):
    from morph.differentials import diagnose

    cells = [{"label": "normal", "kind": "rbc", "diameter_um": 7.2 + 0.01 * i, "eccentricity": 0.3}
             for i in range(150)] + [{"label": "macrocyte", "kind": "rbc", "diameter_um": 10.5, "eccentricity": 0.7}
                                     for _ in range(30)]
    body = {"counts": {"normal": 150, "macrocyte": 30, "reticulocyte": 0}, "um_per_px": 0.1,
            "stain": "nmb", "cells": cells}
    r = client.post("/v1/diagnose", json=body)
    assert r.status_code == 200, r.text
    findings, diffs = diagnose(body["counts"], um_per_px=0.1, cells=cells, stain="nmb")
    assert r.json()["findings"] == json.loads(json.dumps(findings))
    assert r.json()["findings"]["stain"] == "nmb"
    assert [d["id"] for d in r.json()["differentials"]] == [d["id"] for d in diffs]
    for bad in ({"stain": "giemsa"}, {"cells": [{"kind": "rbc"}]}, {"cells": [{"label": "normal", "eccentricity": 2}]}):
        err = assert_error(client.post("/v1/diagnose", json={"counts": {"normal": 1}, **bad}), 422, "validation_error")
        assert next(iter(bad)) in err["message"]


def test_report_json_is_what_jsonresponse_sends_with_nan_as_null():
    from fastapi.responses import JSONResponse

    from service.routers.analyze import report_response

    report = {"images": [{"path": "a.png", "cells": [{"x": 1.5, "eccentricity": 0.25}], "note": "é"}]}
    assert report_response(report).body == JSONResponse(report).body
    bad = {"images": [{"median_rbc_diameter_um": float("nan"), "x": [float("inf"), 1.0]}]}
    assert json.loads(report_response(bad).body) == {"images": [{"median_rbc_diameter_um": None, "x": [None, 1.0]}]}
