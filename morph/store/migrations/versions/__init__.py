"""Alembic revision scripts of the case store, applied in order by morph.store.migrate."""
