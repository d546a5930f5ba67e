"""A throwaway PostgreSQL server on loopback, for tests and benchmarks.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free port of 127.0.0.1 (and
a Unix socket in the same directory), ``pg_ctl stop`` and removal at the end. PostgreSQL
refuses to run as root: as root, the server runs as the ``postgres`` user (``runuser``),
which owns the directory. The binaries are found on ``PATH`` or under
``/usr/lib/postgresql/<version>/bin``. Stdlib only; the database is reached with psycopg.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tidal.control.errors import StoreError

__all__ = ["TempPostgres", "find_pg_bin"]

logger = logging.getLogger(__name__)

_USER = "tidal"


def find_pg_bin(name: str) -> str:
    """Path of PostgreSQL's ``name`` (``initdb``, ``pg_ctl``); :class:`StoreError` if
    PostgreSQL is not installed."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if candidates:
        return candidates[-1]
    raise StoreError(f"PostgreSQL's {name!r} is not installed (Debian: apt-get install postgresql)")


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TempPostgres:
    """A PostgreSQL server in a temporary directory, listening on 127.0.0.1 only.

    ``durable=False`` (tests) turns off fsync and synchronous commit; benchmarks keep
    PostgreSQL's defaults.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.port = 0
        self._dir: Path | None = None
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StoreError(
                f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )

    def start(self) -> str:
        """Start the server; returns the URL of its ``postgres`` database."""
        initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
        self._dir = Path(tempfile.mkdtemp(prefix="tidal-pg-"))
        if self._as_postgres:
            shutil.chown(self._dir, "postgres", "postgres")
        data = self._dir / "data"
        self._run(
            initdb, "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        self.port = _free_port()
        options = f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            pg_ctl, "-D", str(data), "-l", str(self._dir / "server.log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
        logger.info("PostgreSQL on 127.0.0.1:%d (%s)", self.port, self._dir)
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create (or re-create, empty) database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={_USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self._dir is None:
            return
        data = self._dir / "data"
        with contextlib.suppress(StoreError):
            self._run(find_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> TempPostgres:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
