"""Schemathesis fuzzes every operation of the OpenAPI schema in-process (ASGI): no 500s."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from svc_helpers import tiny_analyzer  # noqa: E402

from service.app import create_app  # noqa: E402
from service.deps import get_analyzer  # noqa: E402
from service.settings import Settings  # noqa: E402

_app = create_app(Settings(model="none", max_body_bytes=2 * 1024 * 1024, max_images=4))
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
