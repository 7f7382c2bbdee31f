"""API keys on and off, open health/page endpoints, and the Prometheus metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from svc_helpers import assert_error


def _files(*items):
    return [("files", (name, data, "image/png")) for name, data in items]


def test_no_keys_means_no_auth(client):
    assert client.get("/v1/labels").status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic azE6azE="},
                                     {"Authorization": "Bearer "}, {"Authorization": "k1"}])
def test_keys_set_refuse_missing_or_wrong_keys(make_client, headers):
    c = make_client(api_keys="k1, k2")
    r = c.get("/v1/labels", headers=headers)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


def test_keys_set_accept_any_listed_key(make_client, png_bytes):
    c = make_client(api_keys="k1,k2")
    for key in ("k1", "k2"):
        h = {"Authorization": f"Bearer {key}"}
        assert c.get("/v1/model", headers=h).status_code == 200
        assert c.post("/v1/analyze", files=_files(("a.png", png_bytes)), headers=h).status_code == 200


def test_auth_is_checked_before_anything_else(make_client):
    c = make_client(api_keys="k1")
    assert_error(c.post("/v1/analyze", json={"x": 1}), 401, "unauthorized")  # not 415
    assert_error(c.post("/v1/diagnose", json={"counts": {"zzz": 1}}), 401, "unauthorized")  # not 422


def test_health_metrics_page_and_docs_stay_open(make_client):
    c = make_client(api_keys="k1")
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js", "/static/style.css", "/openapi.json"):
        assert c.get(path).status_code == 200, path


def test_openapi_declares_bearer_auth(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_requests_images_cells_and_errors(make_client, png_bytes):
    c = make_client(max_body_bytes=len(png_bytes) * 3)
    ok = c.post("/v1/analyze", files=_files(("a.png", png_bytes), ("bad.png", b"nope")))
    assert ok.status_code == 200
    n_cells = sum(len(im["cells"]) for im in ok.json()["images"])
    c.post("/v1/analyze", files=_files(("bad.png", b"nope")))
    c.post("/v1/analyze", files=_files(("big.png", b"x" * (len(png_bytes) * 4))))
    c.get("/v1/labels")
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)
    req = "morph_http_requests_total"
    assert s[(req, (("method", "POST"), ("route", "/v1/analyze"), ("status", "200")))] == 1
    assert s[(req, (("method", "POST"), ("route", "/v1/analyze"), ("status", "422")))] == 1
    assert s[(req, (("method", "GET"), ("route", "/v1/labels"), ("status", "200")))] == 1
    assert s[("morph_http_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/analyze")))] == 2
    # refused by its Content-Length before routing, so counted without a route
    assert s[(req, (("method", "POST"), ("route", "<unmatched>"), ("status", "413")))] == 1
    assert s[("morph_images_processed_total", (("outcome", "ok"),))] == 1
    assert s[("morph_images_processed_total", (("outcome", "failed"),))] == 2
    assert s[("morph_cells_processed_total", ())] == n_cells > 0
    assert s[("morph_errors_total", (("code", "not_an_image"),))] == 1
    assert s[("morph_errors_total", (("code", "payload_too_large"),))] == 1


def test_each_app_has_its_own_registry(make_client):
    a, b = make_client(), make_client()
    a.get("/v1/labels")
    assert "/v1/labels" in a.get("/metrics").text
    assert "/v1/labels" not in b.get("/metrics").text


def test_raw_urls_never_become_labels(client):
    for i in range(5):
        client.get(f"/random/{i}")
    text = client.get("/metrics").text
    assert "/random/" not in text and 'route="<unmatched>"' in text
