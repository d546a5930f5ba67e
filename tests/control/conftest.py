"""Fixtures for the control plane: a store on SQLite and on a real PostgreSQL server (one
per session, started here on loopback and truncated between tests), the service, and the
REST API served by uvicorn on 127.0.0.1 (no reconcile loop)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tidal.control.api import create_app
from tidal.control.credentials import ensure_admin_token, write_credentials
from tidal.control.pgtemp import TempPostgres
from tidal.control.records import TenantRecord
from tidal.control.server import ApiServer
from tidal.control.service import Service
from tidal.control.store import Store, open_store

BACKENDS = ("sqlite", "postgresql")
_TABLES = "events, jobs, tokens, tenants, nodes"


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    server = TempPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_store_url(postgres: TempPostgres) -> str:
    """A database migrated once for the session (tests truncate it)."""
    url = postgres.create_database("tidal_tests")
    open_store(url).close()
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidal.db'}"
    url: str = request.getfixturevalue("pg_store_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = open_store(db_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    return Service(store, tmp_path / "jobs")


@pytest.fixture
def admin(service: Service) -> TenantRecord:
    service.add_tenant(None, "root", admin=True)
    return service.store.get_tenant("root")


@pytest.fixture
def alice(service: Service) -> TenantRecord:
    service.add_tenant(None, "alice")
    return service.store.get_tenant("alice")


@dataclass
class Api:
    """A running API (store + service + uvicorn, no loop) and clients for it."""

    url: str
    service: Service
    data_dir: Path
    admin_token: str

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)

    def tenant(self, name: str) -> str:
        """Add tenant ``name`` through the API; its token."""
        with self.client(self.admin_token) as admin:
            reply = admin.post("/tenants", json={"name": name})
        assert reply.status_code == 201, reply.text
        token: str = reply.json()["token"]
        return token


@pytest.fixture
def api(service: Service, tmp_path: Path) -> Iterator[Api]:
    data_dir = tmp_path / "data"
    token = ensure_admin_token(service, data_dir)
    server = ApiServer(create_app(service))
    url = server.start()
    write_credentials(data_dir, url, token)
    try:
        yield Api(url, service, data_dir, token)
    finally:
        server.stop()
