"""``morph serve`` argument handling and the environment settings (no server is started)."""

from __future__ import annotations

import pytest

from morph_cli.main import get_parser, main
from service.settings import Settings


def test_serve_defaults_and_uvicorn_call(monkeypatch):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv("MORPH_MODEL", raising=False)
    assert main(["serve"]) == 0
    app, kw = calls[0]
    assert app == "service.app:app"
    assert (kw["host"], kw["port"], kw["workers"]) == ("127.0.0.1", 8000, 1)


def test_serve_options_and_model_env(monkeypatch):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("MORPH_MODEL", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "9000", "--workers", "3", "--model", "tiny"]) == 0
    assert (calls[0]["host"], calls[0]["port"], calls[0]["workers"]) == ("0.0.0.0", 9000, 3)
    import os

    assert os.environ["MORPH_MODEL"] == "tiny"  # every worker's Settings() reads it
    monkeypatch.delenv("MORPH_MODEL")


@pytest.mark.parametrize("argv", [["serve", "--port", "0"], ["serve", "--port", "x"], ["serve", "--workers", "0"]])
def test_serve_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        get_parser().parse_args(argv)
    assert exc.value.code == 2


def test_settings_come_from_morph_env(monkeypatch):
    monkeypatch.setenv("MORPH_API_KEYS", " k1, k2 ,")
    monkeypatch.setenv("MORPH_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("MORPH_CORS_ORIGINS", "https://a.example")
    monkeypatch.setenv("MORPH_MAX_IMAGES", "3")
    s = Settings()
    assert s.api_key_list == ["k1", "k2"]
    assert s.max_body_bytes == 1000 and s.max_images == 3
    assert s.cors_origin_list == ["https://a.example"]


def test_defaults_are_safe(monkeypatch):
    for k in ("MORPH_API_KEYS", "MORPH_CORS_ORIGINS", "MORPH_SAVE_UPLOADS_DIR", "MORPH_MAX_BODY_BYTES"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert s.max_body_bytes == 25 * 1024 * 1024
    assert s.cors_origin_list == [] and s.save_uploads_dir is None
