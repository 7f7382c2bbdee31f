"""Schemathesis fuzzes every operation of the OpenAPI schema in-process (ASGI): no 500s."""

from __future__ import annotations

import json
import tempfile

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from svc_helpers import encode, field_image, tiny_analyzer  # noqa: E402

from service.app import create_app  # noqa: E402
from service.deps import get_analyzer  # noqa: E402
from service.settings import Settings  # noqa: E402

# the case store on (in a throw-away folder), so the /v1/cases operations are reached too
_app = create_app(Settings(model="none", max_body_bytes=2 * 1024 * 1024, max_images=4,
                           store_dir=tempfile.mkdtemp(prefix="morph-fuzz-store-")))
_analyzer = tiny_analyzer()
_app.dependency_overrides[get_analyzer] = lambda: _analyzer

schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    body = response.text
    assert "Traceback" not in body
    if response.status_code >= 400:
        err = response.json()["error"]
        assert set(err) == {"code", "message", "detail"}


# -- hostile numbers and nesting in every field -----------------------------------------------------
# Values no JSON encoder writes (schemathesis cannot generate them), spliced as raw text into every
# JSON body field, form field, path and query parameter of every operation of the schema.
HOSTILE_LITERALS = {
    "400-digit-int": "1" + "0" * 400,
    "5000-digit-int": "-" + "9" * 5000,
    "1e400": "1e400",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "deep-array": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a": ' * 100_000 + "1" + "}" * 100_000,
}
_SPEC = _app.openapi()


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = _SPEC["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _operations() -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, item in _SPEC["paths"].items()
            for method, op in item.items() if method in ("get", "post", "patch", "put", "delete", "head")]


def _body_schema(op: dict, media_type: str) -> dict | None:
    content = op.get("requestBody", {}).get("content", {})
    return _resolve(content[media_type]["schema"]) if media_type in content else None


def _valid_json_base(schema: dict, field: str) -> str:
    """The schema's first example without ``field``, as JSON text missing its closing brace."""
    example = dict((schema.get("examples") or [{}])[0])
    example.pop(field, None)
    return json.dumps(example)[:-1] + (", " if example else "")


def _hostile_requests():
    """(id, method, path, request kwargs) for each hostile literal in each field of each operation."""
    png = encode(field_image(2, 96, 128))
    for method, path, op in _operations():
        params = op.get("parameters", [])
        fill = {p["name"]: "1" for p in params if p["in"] == "path"}
        json_schema = _body_schema(op, "application/json")
        form_schema = _body_schema(op, "multipart/form-data")
        for name, text in HOSTILE_LITERALS.items():
            short = text if len(text) < 10_000 else text[:5_000] + text[-5_000:]  # URLs: stay under 10 kB
            for p in params:
                where = {**fill, p["name"]: short} if p["in"] == "path" else fill
                query = {p["name"]: short} if p["in"] == "query" else {}
                yield f"{method} {path} {p['name']}={name}", method, path.format(**where), {"params": query}
            for field in (json_schema or {}).get("properties", {}):
                body = _valid_json_base(json_schema, field) + f'"{field}": {text}}}'
                yield (f"{method} {path} {field}={name}", method, path.format(**fill),
                       {"content": body, "headers": {"content-type": "application/json"}})
            if json_schema is not None:
                yield (f"{method} {path} body={name}", method, path.format(**fill),
                       {"content": text, "headers": {"content-type": "application/json"}})
            for field, prop in (form_schema or {}).get("properties", {}).items():
                if "format" in prop or "items" in prop:  # the uploaded files
                    continue
                yield (f"{method} {path} {field}={name}", method, path.format(**fill),
                       {"data": {field: text}, "files": [("files", ("a.png", png, "image/png"))]})


_HOSTILE = list(_hostile_requests())


def test_hostile_numbers_and_nesting_in_every_field_are_4xx_in_the_error_schema():
    assert any(" counts=" in case[0] for case in _HOSTILE) and any(" context=" in case[0] for case in _HOSTILE)
    with TestClient(_app, raise_server_exceptions=False) as client:
        for name, method, path, kwargs in _HOSTILE:
            response = client.request(method, path, **kwargs)
            assert response.status_code < 500, (name, response.text[:300])
            assert "Traceback" not in response.text, name
            if response.status_code >= 400:
                err = response.json()["error"]
                assert set(err) == {"code", "message", "detail"}, name
                assert len(err["message"]) < 400, name  # the hostile value is never echoed whole
            if "content" in kwargs and response.status_code != 404:
                assert response.status_code == 422, (name, response.text[:300])
