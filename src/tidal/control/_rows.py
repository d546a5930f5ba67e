"""Rows of the store's tables to records and back (internal to the store)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidal.control.records import (
    CheckpointSettings,
    EventRecord,
    JobRecord,
    NodeRecord,
    TenantRecord,
)
from tidal.core import JobState, Placement, Tier


def placement_json(placement: Placement) -> dict[str, int]:
    return placement.as_dict()


def placement_of(value: Mapping[str, int] | None) -> Placement:
    return Placement.of(value) if value else Placement()


def checkpoint_json(ckpt: CheckpointSettings) -> dict[str, Any]:
    return {"every_steps": ckpt.every_steps, "every_s": ckpt.every_s, "keep": ckpt.keep}


def checkpoint_of(value: Mapping[Any, Any]) -> CheckpointSettings:
    return CheckpointSettings(value.get("every_steps"), value.get("every_s"), value.get("keep"))


def job_of(row: Mapping[Any, Any], tenant: str) -> JobRecord:
    return JobRecord(
        id=row["id"],
        tenant=tenant,
        name=row["name"],
        tier=Tier(row["tier"]),
        world=row["world"],
        min_devices=row["min_devices"],
        max_devices=row["max_devices"],
        device_type=row["device_type"],
        command=tuple(row["command"]),
        workdir=row["workdir"],
        env=dict(row["env"]),
        declared_steps=row["declared_steps"],
        declared_hours=row["declared_hours"],
        checkpoint=checkpoint_of(row["checkpoint"]),
        max_restarts=row["max_restarts"],
        state=JobState(row["state"]),
        placement=placement_of(row["placement"]),
        generation=row["generation"],
        step=row["step"],
        samples_per_s=row["samples_per_s"],
        progress_at=row["progress_at"],
        restarts=row["restarts"],
        reason=row["reason"],
        cancel_requested=bool(row["cancel_requested"]),
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        plan_reason=row["plan_reason"],
        attained=float(row["attained"]),
    )


def job_values(job: JobRecord, tenant_id: int) -> dict[str, Any]:
    """The columns of a new job's row."""
    return {
        "id": job.id,
        "tenant_id": tenant_id,
        "name": job.name,
        "tier": job.tier.value,
        "world": job.world,
        "min_devices": job.min_devices,
        "max_devices": job.max_devices,
        "device_type": job.device_type,
        "command": list(job.command),
        "workdir": job.workdir,
        "env": dict(job.env),
        "declared_steps": job.declared_steps,
        "declared_hours": job.declared_hours,
        "checkpoint": checkpoint_json(job.checkpoint),
        "max_restarts": job.max_restarts,
        "state": job.state.value,
        "placement": placement_json(job.placement),
        "devices": job.placement.size,
        "generation": job.generation,
        "step": job.step,
        "samples_per_s": job.samples_per_s,
        "progress_at": job.progress_at,
        "restarts": job.restarts,
        "reason": job.reason,
        "cancel_requested": job.cancel_requested,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def event_of(row: Mapping[Any, Any]) -> EventRecord:
    old = row["old"]
    return EventRecord(
        job_id=row["job_id"],
        seq=row["id"],
        at=row["at"],
        old=None if old is None else JobState(old),
        new=JobState(row["new"]),
        reason=row["reason"],
        generation=row["generation"],
        placement=placement_of(row["placement"]),
    )


def node_of(row: Mapping[Any, Any]) -> NodeRecord:
    return NodeRecord(
        name=row["name"],
        device_type=row["device_type"],
        devices=row["devices"],
        alive=bool(row["alive"]),
        drained=bool(row["drained"]),
        updated_at=row["updated_at"],
    )


def tenant_of(row: Mapping[Any, Any]) -> TenantRecord:
    return TenantRecord(
        name=row["name"], is_admin=bool(row["is_admin"]), created_at=row["created_at"]
    )
