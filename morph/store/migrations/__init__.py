"""Alembic migrations of the case store, shipped inside the package and applied at startup
(:func:`morph.store.engine.migrate`). New revision: ``alembic -c morph/store/migrations/alembic.ini
revision -m "what changes"`` after editing :mod:`morph.store.models`."""
