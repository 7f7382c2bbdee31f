"""Fixtures for the service tests: an app with the tiny model swapped in, and test images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from svc_helpers import encode, field_image, tiny_analyzer

from morph.pipeline import Analyzer
from service.app import create_app
from service.deps import get_analyzer
from service.settings import Settings


@pytest.fixture(scope="session")
def analyzer() -> Analyzer:
    return tiny_analyzer()


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return encode(field_image(0))


@pytest.fixture(scope="session")
def jpg_bytes() -> bytes:
    return encode(field_image(1), "JPEG")


@pytest.fixture
def make_client(analyzer: Analyzer) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)`` -> a started TestClient whose analyzer is the tiny model."""
    clients: list[TestClient] = []

    def _make(**overrides: Any) -> TestClient:
        settings = Settings(**{"model": "none", **overrides})
        app: FastAPI = create_app(settings)
        app.dependency_overrides[get_analyzer] = lambda: analyzer
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield _make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()




@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, never a downloaded one) for one browser-test module.

    Module scope, not session: Playwright's sync API keeps an asyncio loop running in this
    thread while it is open, which breaks later tests that start their own loop."""
    from svc_helpers import CHROMIUM_ARGS, chromium_path

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
