"""``/api/v1/jobs``: submit, list, show, events, logs, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from tidal.control._api_common import (
    BAD_BODY,
    CONFLICT,
    NOT_FOUND,
    UNAUTHORIZED,
    Caller,
    ServiceDep,
    event_out,
    job_detail_out,
    job_out,
)
from tidal.control.errors import NotFoundError
from tidal.control.ids import JOB_ID_PATTERN, is_job_id
from tidal.control.models import (
    TENANT_PATTERN,
    EventOut,
    JobDetailOut,
    JobOut,
    JobPage,
    JobSubmission,
    LogChunkOut,
)
from tidal.core import JobState

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=UNAUTHORIZED)

MAX_PAGE: Final = 500
SHOWN_EVENTS: Final = 500
_LOG_POLL_S: Final = 0.2
_CURSOR_PATTERN: Final = r"^(\d{1,6}:\d{1,18}(,\d{1,6}:\d{1,18})*)?$"

JobId = Annotated[str, Path(max_length=64, description="a job id, e.g. j-0rsxk2m8")]


def _known(job_id: str) -> str:
    if not is_job_id(job_id):
        raise NotFoundError(f"no job {job_id!r}")
    return job_id


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Submit a job",
    responses=BAD_BODY,
)
def submit(spec: JobSubmission, caller: Caller, service: ServiceDep) -> JobOut:
    """Store a new job for the caller's tenant; it starts when the scheduler places it."""
    return job_out(service.submit(caller, spec))


@router.get("", summary="List jobs, newest first")
def list_jobs(
    caller: Caller,
    service: ServiceDep,
    state: Annotated[
        list[JobState] | None, Query(description="only jobs in these states", max_length=9)
    ] = None,
    tenant: Annotated[
        str | None,
        Query(pattern=TENANT_PATTERN, max_length=64, description="an admin's filter: one tenant"),
    ] = None,
    before: Annotated[
        str | None,
        Query(pattern=JOB_ID_PATTERN, description="the `next` cursor of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JobPage:
    jobs = service.list_jobs(caller, states=state, before=before, limit=limit, tenant=tenant)
    following = jobs[-1].id if len(jobs) == limit else None
    return JobPage(jobs=[job_out(j) for j in jobs], next=following)


@router.get(
    "/{job_id}", summary="Show a job: spec, state, placement, progress, events", responses=NOT_FOUND
)
def show(job_id: JobId, caller: Caller, service: ServiceDep) -> JobDetailOut:
    job = service.get(caller, _known(job_id))
    events, total = service.store.events(job.id, SHOWN_EVENTS)
    return job_detail_out(job, events, total)


@router.get("/{job_id}/events", summary="A job's history, oldest first", responses=NOT_FOUND)
def events(
    job_id: JobId,
    caller: Caller,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> list[EventOut]:
    found, _ = service.events(caller, _known(job_id), limit)
    return [event_out(e) for e in found]


@router.get("/{job_id}/logs", summary="A job's output, every worker's", responses=NOT_FOUND)
async def logs(
    request: Request,
    job_id: JobId,
    caller: Caller,
    service: ServiceDep,
    cursor: Annotated[
        str,
        Query(
            max_length=32_768,
            pattern=_CURSOR_PATTERN,
            description="where the last read stopped (its `cursor`); empty: the start",
        ),
    ] = "",
    wait: Annotated[
        float,
        Query(ge=0, le=60, description="seconds to wait for new output before answering"),
    ] = 0.0,
    max_bytes: Annotated[int, Query(ge=1_024, le=4 * 1024 * 1024)] = 256 * 1024,
) -> LogChunkOut:
    """Lines written since ``cursor``, each prefixed by its worker (``[w0] ...``). With
    ``wait``, the answer waits up to that long for a line or for the job to end."""
    _known(job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, request.app.state.log_wait_max)
    while True:
        chunk, job = await run_in_threadpool(service.logs, caller, job_id, cursor, max_bytes)
        done = job.state.is_terminal and not chunk.more
        if chunk.lines or done or loop.time() >= deadline:
            return LogChunkOut(lines=chunk.lines, cursor=chunk.cursor, done=done, state=job.state)
        cursor = chunk.cursor
        await asyncio.sleep(_LOG_POLL_S)


@router.delete("/{job_id}", summary="Cancel a job", responses={**NOT_FOUND, **CONFLICT})
def cancel(job_id: JobId, caller: Caller, service: ServiceDep) -> JobOut:
    """Cancel at once a job that holds no devices; ask the scheduler to stop one that
    does (``cancel_requested`` is then true until it has stopped)."""
    return job_out(service.cancel(caller, _known(job_id)))
