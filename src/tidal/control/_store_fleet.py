"""The store's nodes and tenants (internal; see :mod:`tidal.control.store`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tidal.control import _rows
from tidal.control._store_base import StoreBase
from tidal.control.errors import ConflictError, NotFoundError
from tidal.control.records import Holding, NodeRecord, TenantRecord
from tidal.control.schema import jobs, nodes, tenants, tokens
from tidal.control.tokens import NewToken
from tidal.core import JobState

_HOLDING = tuple(s.value for s in JobState if s.holds_devices)


class FleetMixin(StoreBase):
    # --- nodes ----------------------------------------------------------------------------

    def upsert_node(
        self, name: str, device_type: str, devices: int, alive: bool, at: float
    ) -> NodeRecord:
        """Record a node as discovered (or seen gone: ``alive=False``); keeps ``drained``."""
        insert: Any = (postgresql.insert if not self._sqlite else sqlite.insert)(nodes)
        values = {"device_type": device_type, "devices": devices, "alive": alive, "updated_at": at}
        statement = insert.values(name=name, drained=False, **values).on_conflict_do_update(
            index_elements=[nodes.c.name], set_=values
        )
        with self._write() as conn:
            conn.execute(statement)
            row = conn.execute(nodes.select().where(nodes.c.name == name)).mappings().one()
        return _rows.node_of(row)

    def set_drained(self, name: str, drained: bool) -> NodeRecord:
        with self._write() as conn:
            done = conn.execute(nodes.update().where(nodes.c.name == name).values(drained=drained))
            if done.rowcount != 1:
                raise NotFoundError(f"no node {name!r}")
            row = conn.execute(nodes.select().where(nodes.c.name == name)).mappings().one()
        return _rows.node_of(row)

    def drained_nodes(self) -> frozenset[str]:
        """Names of the nodes an admin drained: no job may be placed there."""
        with self._read() as conn:
            names = conn.execute(sa.select(nodes.c.name).where(nodes.c.drained)).scalars()
            return frozenset(names)

    def nodes(self) -> list[NodeRecord]:
        """Every node, by name, with the jobs holding its devices."""
        with self._read() as conn:
            node_rows = conn.execute(nodes.select().order_by(nodes.c.name)).mappings().all()
            holders = conn.execute(
                sa.select(jobs.c.id, jobs.c.placement, tenants.c.name)
                .join_from(jobs, tenants, jobs.c.tenant_id == tenants.c.id)
                .where(jobs.c.state.in_(_HOLDING))
                .order_by(jobs.c.id)
            ).all()
        held: dict[str, list[Holding]] = defaultdict(list)
        for job_id, placement, tenant in holders:
            for node, count in (placement or {}).items():
                held[node].append(Holding(job_id, tenant, int(count)))
        out = []
        for row in node_rows:
            node = _rows.node_of(row)
            out.append(
                NodeRecord(
                    node.name,
                    node.device_type,
                    node.devices,
                    node.alive,
                    node.drained,
                    node.updated_at,
                    tuple(held.get(node.name, ())),
                )
            )
        return out

    # --- tenants and tokens ---------------------------------------------------------------

    def create_tenant(self, name: str, is_admin: bool, at: float) -> TenantRecord:
        with self._write() as conn:
            try:
                conn.execute(tenants.insert().values(name=name, is_admin=is_admin, created_at=at))
            except sa.exc.IntegrityError:
                raise ConflictError(f"tenant {name!r} exists") from None
        return TenantRecord(name, is_admin, at)

    def tenants(self) -> list[TenantRecord]:
        with self._read() as conn:
            rows = conn.execute(tenants.select().order_by(tenants.c.name)).mappings().all()
        return [_rows.tenant_of(r) for r in rows]

    def get_tenant(self, name: str) -> TenantRecord:
        with self._read() as conn:
            row = conn.execute(tenants.select().where(tenants.c.name == name)).mappings().first()
        if row is None:
            raise NotFoundError(f"no tenant {name!r}")
        return _rows.tenant_of(row)

    def add_token(self, tenant: str, token: NewToken, at: float) -> None:
        """Store a token's id and hash for ``tenant`` (never the token itself)."""
        with self._write() as conn:
            tenant_id = conn.execute(
                sa.select(tenants.c.id).where(tenants.c.name == tenant)
            ).scalar()
            if tenant_id is None:
                raise NotFoundError(f"no tenant {tenant!r}")
            conn.execute(
                tokens.insert().values(
                    id=token.token_id,
                    tenant_id=tenant_id,
                    secret_hash=token.secret_hash,
                    created_at=at,
                )
            )

    def token_owner(self, token_id: str) -> tuple[str, TenantRecord] | None:
        """The stored hash of token ``token_id`` and its tenant, or ``None``."""
        with self._read() as conn:
            row = (
                conn.execute(
                    sa.select(tokens.c.secret_hash, *tenants.c)
                    .join_from(tokens, tenants, tokens.c.tenant_id == tenants.c.id)
                    .where(tokens.c.id == token_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return str(row["secret_hash"]), _rows.tenant_of(row)


__all__ = ["FleetMixin"]
