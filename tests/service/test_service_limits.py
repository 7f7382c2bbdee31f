"""Limits: body size (by header and by streamed body), image count, pixels, time; work off the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from svc_helpers import assert_error, encode

from service.app import create_app
from service.settings import Settings

MB = 1024 * 1024


def _files(*items):
    return [("files", (name, data, "image/png")) for name, data in items]


def _asgi_post(app, headers, chunks, max_chunks=10_000):
    """Drive the app directly over ASGI; returns (status, body, chunks the app pulled)."""
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        if pulled >= max_chunks:
            raise AssertionError("the app kept reading a body it should have refused")
        pulled += 1
        more = pulled < len(chunks) if chunks is not None else True
        if chunks is not None:
            body = chunks[pulled - 1]
        elif pulled == 1:  # a well-formed start of a file part, then endless file bytes
            body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                    b"Content-Type: image/png\r\n\r\n")
        else:
            body = b"x" * MB
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/analyze", "raw_path": b"/v1/analyze", "query_string": b"",
        "root_path": "", "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, pulled


def test_200mb_content_length_is_refused_before_reading_the_body():
    app = create_app(Settings(model="none"))
    status, body, pulled = _asgi_post(
        app, {"content-type": "multipart/form-data; boundary=b", "content-length": str(200 * MB)},
        chunks=None, max_chunks=0,
    )
    assert status == 413 and pulled == 0
    assert b'"payload_too_large"' in body


def test_chunked_body_is_counted_and_cut_at_the_limit():
    app = create_app(Settings(model="none", max_body_bytes=3 * MB))
    app.state.analyzer = object()  # never reached
    status, body, pulled = _asgi_post(
        app, {"content-type": "multipart/form-data; boundary=b", "transfer-encoding": "chunked"},
        chunks=None, max_chunks=10,
    )
    assert status == 413 and b'"payload_too_large"' in body
    assert pulled <= 5  # 3 MB limit, 1 MB chunks: refused at the 4th MB, not 200 MB later


def test_413_by_header_through_the_client(make_client):
    c = make_client(max_body_bytes=10_000)
    err = assert_error(c.post("/v1/analyze", files=_files(("a.png", b"x" * 20_000))), 413, "payload_too_large")
    assert err["detail"]["max_bytes"] == 10_000


def test_413_by_streamed_body_through_the_client(make_client):
    c = make_client(max_body_bytes=100_000)

    def gen():
        for _ in range(50):
            yield b"--b\r\n" + b"x" * 10_000

    r = c.post("/v1/analyze", content=gen(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "payload_too_large")


def test_under_the_limit_passes(make_client, png_bytes):
    c = make_client(max_body_bytes=len(png_bytes) + 2000)
    assert c.post("/v1/analyze", files=_files(("a.png", png_bytes))).status_code == 200


def test_too_many_images(make_client, png_bytes):
    c = make_client(max_images=2)
    err = assert_error(c.post("/v1/analyze", files=_files(*[(f"{i}.png", png_bytes) for i in range(3)])),
                       413, "too_many_images")
    assert err["detail"] == {"max_images": 2, "received": 3}


def test_pixel_limit_names_the_file(make_client, png_bytes):
    c = make_client(max_image_pixels=10_000)
    err = assert_error(c.post("/v1/analyze", files=_files(("big.png", png_bytes))), 413, "image_too_large")
    assert err["detail"]["file"] == "big.png"


def test_pixel_limit_in_a_case_fails_that_image_only(make_client, png_bytes):
    c = make_client(max_image_pixels=100_000)
    big = encode(np.full((400, 400, 3), 230, np.uint8))  # 160k px
    r = c.post("/v1/analyze", files=_files(("ok.png", png_bytes), ("big.png", big)))
    assert r.status_code == 200
    assert r.json()["images"][1]["error"]["code"] == "image_too_large"


class _Slow:
    """Stands in for the analyzer: blocks its worker thread like a long inference."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run_case(self, inputs, options, overlays=False, **kwargs):
        time.sleep(self.seconds)
        raise AssertionError("should have been abandoned")


def test_timeout_is_504(make_client, png_bytes):
    from service.deps import get_analyzer

    c = make_client(timeout_s=0.3)
    c.app.dependency_overrides[get_analyzer] = lambda: _Slow(30.0)
    t0 = time.perf_counter()
    err = assert_error(c.post("/v1/analyze", files=_files(("a.png", png_bytes))), 504, "timeout")
    # Far sooner than the 30 s the work would take: the answer did not wait for it (the bound
    # is loose because starting a worker process on a loaded 2-core host takes a while).
    assert time.perf_counter() - t0 < 15
    assert err["detail"]["timeout_s"] == 0.3


def test_inference_runs_off_the_event_loop(make_client, png_bytes):
    """While an analysis blocks its worker thread, other requests are still answered."""
    from service.deps import get_analyzer

    c = make_client()
    c.app.dependency_overrides[get_analyzer] = lambda: _Slow(4.0)
    t = threading.Thread(target=lambda: c.post("/v1/analyze", files=_files(("a.png", png_bytes))))
    t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    assert c.get("/healthz").status_code == 200
    # Answered while the 4 s analysis still runs (loose bound: the host may be busy).
    assert time.perf_counter() - t0 < 3.0
    t.join()
