"""Service settings, read from the environment (prefix ``MORPH_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a deployment may change, as ``MORPH_<NAME>`` environment variables.

    List-valued settings (``api_keys``, ``cors_origins``) are comma-separated strings
    so that a plain ``export MORPH_API_KEYS=key1,key2`` works.
    """

    model_config = SettingsConfigDict(env_prefix="MORPH_", extra="ignore")

    model: str | None = Field(
        default="shipped",
        description="classifier: a model folder path or name under models/; 'shipped' (or empty) = "
        "the shipped default; 'none' = localization only; 'tiny' = an untrained tiny model (tests, demos)",
    )
    localizer: str | None = Field(
        default="shipped",
        description="centre-map localizer: a folder path or name under models/; 'shipped' (or empty) "
        "= the shipped one (morph.localize.DEFAULT_LOCALIZER_NAME); 'none' = the hand-made seeds",
    )
    api_keys: str = Field(default="", description="comma-separated API keys; empty = no auth")
    cors_origins: str = Field(default="", description="comma-separated allowed origins; empty = CORS closed")
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1, description="request body limit in bytes")
    max_image_pixels: int = Field(default=50_000_000, ge=1, description="pixel limit per decoded image")
    max_images: int = Field(default=16, ge=1, description="most images in one /v1/analyze request")
    timeout_s: float = Field(default=120.0, gt=0, description="time limit for one analysis, seconds")
    max_concurrency: int = Field(default=2, ge=1, description="analyses run at once (worker processes)")
    save_uploads_dir: Path | None = Field(
        default=None, description="if set, uploaded images are ALSO written here (off by default: "
        "patient images are otherwise processed in memory only)",
    )
    store_dir: Path | None = Field(
        default=None, description="folder of the case store (cases, images, reviews; SQLite unless "
        "MORPH_DATABASE_URL): enables POST /v1/analyze store=true and /v1/cases; off by default",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of a shared database (e.g. postgresql+psycopg://...) "
        "for the case store; its images still go to MORPH_STORE_DIR",
    )
    log_level: str = Field(default="info", description="log level of the service's own loggers")

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
