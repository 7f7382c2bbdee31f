"""The case store library: schema migrations (SQLite, and the PostgreSQL DDL rendered offline),
queries that compile on both dialects, and a reopened store keeping everything."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.dialects import postgresql, sqlite

from morph.errors import MorphError
from morph.store import CaseInput, CaseStore
from morph.store.engine import MIGRATIONS_DIR
from morph.store.models import Base, CellRow


def _report() -> dict:
    cell = {"id": 3, "x": 50.0, "y": 40.0, "bbox": [40, 30, 60, 50], "kind": "rbc", "label": "normal",
            "confidence": 0.8, "area_px": 300.0, "diameter_px": 19.5, "diameter_um": 3.5, "eccentricity": 0.2,
            "touches_border": False}
    image = {"path": "a.png", "width": 100, "height": 80, "um_per_px": 0.178, "median_rbc_diameter_um": 3.5,
             "warnings": [], "cells": [cell]}
    failed = {"path": "b.txt", "width": 0, "height": 0, "um_per_px": 0.178, "median_rbc_diameter_um": None,
              "warnings": [], "cells": [], "error": {"code": "not_an_image", "message": "no"}}
    return {"model": {"name": "m"}, "images": [image, failed], "counts": {"normal": 1}, "findings": {},
            "differentials": [], "warnings": [], "disclaimer": "d"}


def test_migrations_create_every_table_and_match_the_models(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    tables = set(inspect(store.engine).get_table_names())
    assert {"cases", "images", "cells", "reviews", "alembic_version"} <= tables
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in inspect(store.engine).get_columns(table.name)}
        assert have == {c.name for c in table.columns}, table.name
    store.close()
    CaseStore(tmp_path).close()  # migrating again is a no-op


def test_the_postgresql_schema_renders_from_the_same_migrations() -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", "postgresql://user@host/morph")
    out = io.StringIO()
    with redirect_stdout(out):
        command.upgrade(cfg, "head", sql=True)
    ddl = out.getvalue()
    for table in ("cases", "images", "cells", "reviews"):
        assert f"CREATE TABLE {table}" in ddl
    assert "SERIAL" in ddl and "JSON" in ddl and "TIMESTAMP WITH TIME ZONE" in ddl
    query = select(CellRow).where(CellRow.case_id == "x", CellRow.label.is_not(None))
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        assert "cells.label IS NOT NULL" in str(query.compile(dialect=dialect))


def test_a_reopened_store_keeps_cases_reviews_and_skips_failed_images(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    case_id = store.add_case(CaseInput(_report(), [b"\x89PNG fake", b"not an image"], stain="nmb"))
    store.review_cell(case_id, 0, 3, reviewer="ann", label="spherocyte")
    store.close()
    again = CaseStore(tmp_path)
    case = again.get_case(case_id)
    assert case["stain"] == "nmb" and case["status"] == "verified"
    assert case["report"]["images"][0]["cells"][0]["review"]["label"] == "spherocyte"
    assert [a["new_label"] for a in case["audit"]] == ["spherocyte"]
    assert len(list((tmp_path / "images").rglob("*.png"))) == 1 and not list((tmp_path / "images").rglob("*.img"))
    with pytest.raises(MorphError) as ei:
        again.case_image(case_id, 1)
    assert ei.value.code == "not_found"
    verified = again.verified_report(case_id)
    assert verified["counts"] == {"spherocyte": 1} and verified["model_counts"] == {"normal": 1}
