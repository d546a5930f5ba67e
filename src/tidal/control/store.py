"""The store: jobs, their events, nodes, tenants and tokens, in SQLite or PostgreSQL.

Written through on every change (one transaction per change); the reconcile loop keeps
its own table of live jobs in memory and never rebuilds it from SQL per round. Read-only
API requests (list, show, nodes) read the store. The schema is Alembic's
(:func:`open_store` applies ``upgrade head``).

Methods the reconcile loop calls: :meth:`Store.live_jobs` (once, at start),
:meth:`Store.record_change`, :meth:`Store.record_progress`, :meth:`Store.upsert_node`,
:meth:`Store.drained_nodes`. Every method is safe to call from any thread.
"""

from __future__ import annotations

import logging

from tidal.control._store_base import StoreBase, make_engine, migrate, normalize_url
from tidal.control._store_fleet import FleetMixin
from tidal.control._store_jobs import JobsMixin

__all__ = ["Store", "normalize_url", "open_store"]

logger = logging.getLogger(__name__)


class Store(JobsMixin, FleetMixin, StoreBase):
    """Jobs, events, nodes, tenants and tokens (see the module's docstring)."""


def open_store(url: str, *, upgrade: bool = True) -> Store:
    """Open the store at ``url`` (``sqlite:///PATH`` or ``postgresql+psycopg://...``),
    applying every pending migration first unless ``upgrade`` is false."""
    engine = make_engine(url)
    if upgrade:
        migrate(engine)
    logger.info("store open: %s", engine.url.render_as_string(hide_password=True))
    return Store(engine)
