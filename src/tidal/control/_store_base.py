"""The store's engine, transactions and migrations (internal; see :mod:`tidal.control.store`)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from tidal.control.errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """Database URL with the driver Tidal uses: ``postgresql://`` and ``postgres://`` mean
    psycopg 3 (``postgresql+psycopg://``)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite (a file; WAL, foreign keys on) or PostgreSQL."""
    try:
        parsed = sa.engine.make_url(normalize_url(url))
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r} ({exc})") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreError(f"SQLite store needs a file, got {url!r}")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": 30.0}
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return sa.create_engine(parsed, pool_size=8, max_overflow=24, pool_pre_ping=True)
    raise StoreError(f"unsupported database {backend!r} in {url!r}: use sqlite or postgresql")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (``alembic upgrade head``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"migrating the store at {engine.url!r} failed: {exc}") from exc


class StoreBase:
    """Engine and transactions. SQLite allows one writer at a time: this process's writes
    take turns on a lock, so no two of its transactions deadlock upgrading to write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else contextlib.nullcontext()
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_lock, self._engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self._engine.dispose()
