"""What the API's routes share: the caller's identity, error responses, record → body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tidal.control.errors import AuthError
from tidal.control.models import (
    CheckpointSpec,
    ErrorOut,
    EventOut,
    HoldingOut,
    JobDetailOut,
    JobOut,
    NodeOut,
    TenantOut,
)
from tidal.control.records import EventRecord, JobRecord, NodeRecord, TenantRecord
from tidal.control.service import Service

_bearer = HTTPBearer(
    auto_error=False,
    description="A tenant's token (`tidal tenant add NAME`), or the admin's (`server.json`).",
)


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantRecord:
    if credentials is None:
        raise AuthError("missing bearer token (Authorization: Bearer TOKEN)")
    return service_of(request).authenticate(credentials.credentials)


Caller = Annotated[TenantRecord, Depends(_caller)]
ServiceDep = Annotated[Service, Depends(service_of)]


Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


UNAUTHORIZED: Final[Responses] = {401: _error("no token, or one that matches no tenant")}
FORBIDDEN: Final[Responses] = {403: _error("an admin token is needed")}
NOT_FOUND: Final[Responses] = {404: _error("no such job, node or tenant visible to the caller")}
CONFLICT: Final[Responses] = {409: _error("the request contradicts the current state")}
BAD_BODY: Final[Responses] = {
    400: _error("the body is not JSON (or not UTF-8)"),
    413: {
        "description": "the body is larger than the service accepts (16 MiB)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def maybe_when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def job_out(job: JobRecord) -> JobOut:
    return JobOut(
        id=job.id,
        name=job.name,
        tenant=job.tenant,
        tier=job.tier,
        state=job.state,
        world=job.world,
        min_devices=job.min_devices,
        max_devices=job.max_size,
        device_type=job.device_type,
        devices=job.devices,
        placement=job.placement.as_dict(),
        step=job.step,
        samples_per_s=job.samples_per_s,
        restarts=job.restarts,
        reason=job.reason,
        plan_reason=job.plan_reason,
        cancel_requested=job.cancel_requested,
        submitted_at=when(job.submitted_at),
        started_at=maybe_when(job.started_at),
        finished_at=maybe_when(job.finished_at),
    )


def event_out(event: EventRecord) -> EventOut:
    return EventOut(
        time=when(event.at),
        state=event.new,
        previous=event.old,
        reason=event.reason,
        generation=event.generation,
        placement=event.placement.as_dict(),
    )


def job_detail_out(job: JobRecord, events: list[EventRecord], total: int) -> JobDetailOut:
    return JobDetailOut(
        **dict(job_out(job)),
        sizes=list(job.sizes),
        command=list(job.command),
        workdir=job.workdir,
        env=dict(job.env),
        declared_steps=job.declared_steps,
        declared_hours=job.declared_hours,
        checkpoint=CheckpointSpec(
            every_steps=job.checkpoint.every_steps,
            every_s=job.checkpoint.every_s,
            keep=job.checkpoint.keep,
        ),
        max_restarts=job.max_restarts,
        generation=job.generation,
        progress_at=maybe_when(job.progress_at),
        events=[event_out(e) for e in events],
        events_total=total,
    )


def node_out(node: NodeRecord, caller: TenantRecord) -> NodeOut:
    """A node as ``caller`` may see it: a tenant sees its own jobs' holdings and the rest
    as one anonymous holding."""
    held: list[HoldingOut] = []
    others = 0
    for h in node.held:
        if caller.is_admin or h.tenant == caller.name:
            held.append(HoldingOut(job=h.job_id, tenant=h.tenant, devices=h.devices))
        else:
            others += h.devices
    if others:
        held.append(HoldingOut(job=None, tenant=None, devices=others))
    return NodeOut(
        name=node.name,
        device_type=node.device_type,
        devices=node.devices,
        free=node.free,
        alive=node.alive,
        drained=node.drained,
        held=held,
        updated_at=when(node.updated_at),
    )


def tenant_out(tenant: TenantRecord) -> TenantOut:
    return TenantOut(name=tenant.name, admin=tenant.is_admin, created_at=when(tenant.created_at))
