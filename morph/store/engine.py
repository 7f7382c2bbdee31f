"""Database engines for the case store: embedded SQLite in the store folder, or any URL
(PostgreSQL for several servers), migrated to the newest schema with Alembic.

The code is dialect-neutral (SQLAlchemy expressions only, no SQL of its own); the one
SQLite-specific part is the connection set-up below, which puts the file in WAL mode
with a busy timeout so that several processes can write to one store.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

log = logging.getLogger(__name__)

#: The SQLite file inside a store folder.
DATABASE_FILE = "morph-store.sqlite3"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Seconds a SQLite writer waits for another process's write to finish.
SQLITE_BUSY_TIMEOUT_S = 30.0


def sqlite_url(store_dir: str | Path) -> str:
    return f"sqlite:///{Path(store_dir).resolve() / DATABASE_FILE}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite connections get WAL mode, a busy timeout and foreign keys."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # connection settings of the SQLite driver (not queries): WAL lets readers and one writer
    # work at once across processes; the busy timeout makes a second writer wait, not fail
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: Engine, lock_dir: Path | None = None) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head``).

    With an embedded store, ``lock_dir`` serialises servers starting at the same moment
    (a file lock); PostgreSQL deployments should start one server first (or run
    ``morph store migrate``) before starting the others.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _file_lock(lock_dir), engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


@contextlib.contextmanager
def _file_lock(folder: Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: one server at a time
        yield
        return
    with open(folder / ".migrate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
