"""``/api/v1/nodes``, ``/api/v1/tenants``, ``/api/v1/me``, ``/api/v1/health``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel

from tidal.control._api_common import (
    BAD_BODY,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    UNAUTHORIZED,
    Caller,
    ServiceDep,
    node_out,
    tenant_out,
    when,
)
from tidal.control.models import NodeOut, TenantCreated, TenantIn, TenantOut

router = APIRouter(responses=UNAUTHORIZED)
health_router = APIRouter()

NodeName = Annotated[str, Path(max_length=255)]
TenantName = Annotated[str, Path(max_length=64)]


class Health(BaseModel):
    status: str


class TokenOut(BaseModel):
    tenant: str
    token: str


@health_router.get("/health", tags=["service"], summary="Whether the service answers")
def health() -> Health:
    return Health(status="ok")


@router.get("/me", tags=["service"], summary="The caller's tenant")
def me(caller: Caller) -> TenantOut:
    return tenant_out(caller)


@router.get("/nodes", tags=["nodes"], summary="Nodes, their devices, and who holds them")
def nodes(caller: Caller, service: ServiceDep) -> list[NodeOut]:
    return [node_out(n, caller) for n in service.nodes()]


@router.post(
    "/nodes/{name}/drain",
    tags=["nodes"],
    summary="Move every job off a node and keep it empty",
    responses={**FORBIDDEN, **NOT_FOUND},
)
def drain(name: NodeName, caller: Caller, service: ServiceDep) -> NodeOut:
    return node_out(service.drain(caller, name), caller)


@router.post(
    "/nodes/{name}/undrain",
    tags=["nodes"],
    summary="Let jobs use a drained node again",
    responses={**FORBIDDEN, **NOT_FOUND},
)
def undrain(name: NodeName, caller: Caller, service: ServiceDep) -> NodeOut:
    return node_out(service.undrain(caller, name), caller)


@router.get("/tenants", tags=["tenants"], summary="Tenants", responses=FORBIDDEN)
def tenants(caller: Caller, service: ServiceDep) -> list[TenantOut]:
    return [tenant_out(t) for t in service.tenants(caller)]


@router.post(
    "/tenants",
    tags=["tenants"],
    status_code=status.HTTP_201_CREATED,
    summary="Add a tenant; its token is shown this once",
    responses={**FORBIDDEN, **CONFLICT, **BAD_BODY},
)
def add_tenant(body: TenantIn, caller: Caller, service: ServiceDep) -> TenantCreated:
    token = service.add_tenant(caller, body.name, admin=body.admin)
    tenant = service.store.get_tenant(body.name)
    return TenantCreated(
        name=tenant.name, admin=tenant.is_admin, created_at=when(tenant.created_at), token=token
    )


@router.post(
    "/tenants/{name}/tokens",
    tags=["tenants"],
    status_code=status.HTTP_201_CREATED,
    summary="Issue another token for a tenant (its other tokens stay valid)",
    responses={**FORBIDDEN, **NOT_FOUND},
)
def issue_token(name: TenantName, caller: Caller, service: ServiceDep) -> TokenOut:
    return TokenOut(tenant=name, token=service.issue_token(caller, name))
