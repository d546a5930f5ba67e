"""The service facade: the one object the REST API calls.

Every change is written through to the store first, then announced to the hooks
registered with :meth:`Service.on_change` (the reconcile loop's), so the loop wakes at
once and learns of new jobs without reading SQL: a hook gets the stored
:class:`JobRecord` (a job was submitted, or a cancel was asked of a job holding devices),
the :class:`NodeRecord` (a node was drained or undrained), or ``None``. Hooks run on the
caller's thread and must not block (set an event, put on a queue).

The reconcile loop is the one writer of job state: a cancel marks the job
``cancel_requested`` and wakes the loop, which ends it (stopping its workers first if it has
any). The API never talks to Ray.

Tenants see and change only their own jobs (another tenant's job is "not found"); an admin
sees everything and manages tenants and nodes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tidal.control.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    JobIdTakenError,
    StaleChangeError,
)
from tidal.control.ids import JobIdMint
from tidal.control.logs import LogChunk, log_dir, read_logs
from tidal.control.models import JobSubmission
from tidal.control.records import (
    CheckpointSettings,
    EventRecord,
    JobRecord,
    NodeRecord,
    TenantRecord,
)
from tidal.control.store import Store
from tidal.control.tokens import new_token, secret_matches, split_token
from tidal.core import EMPTY, JobState

__all__ = ["Hook", "Notice", "Service"]

logger = logging.getLogger(__name__)

Notice = JobRecord | NodeRecord | None
Hook = Callable[[Notice], None]

_CANCEL_TRIES = 8
_ID_TRIES = 3


class Service:
    """Jobs, nodes and tenants, as the API sees them (see the module's docstring).

    ``checkpoint_root`` is where each job's directory lives (its checkpoints and
    ``logs/worker-<k>.log``); ``clock`` returns seconds since the epoch.
    """

    def __init__(
        self,
        store: Store,
        checkpoint_root: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.checkpoint_root = checkpoint_root
        self._clock = clock
        self._hooks: list[Hook] = []
        self._mint = JobIdMint(after=store.last_job_id(), clock=clock)
        # Verified tokens by id: their hash and tenant (tokens are never changed in place).
        self._tokens: dict[str, tuple[str, TenantRecord]] = {}
        self._tokens_lock = threading.Lock()

    # --- hooks ----------------------------------------------------------------------------

    def on_change(self, hook: Hook) -> None:
        """Call ``hook`` after every change this facade writes (see the module's docstring)."""
        self._hooks.append(hook)

    def _notify(self, notice: Notice) -> None:
        for hook in self._hooks:
            try:
                hook(notice)
            except Exception:  # the change is stored; a broken hook must not undo the reply
                logger.exception("on_change hook %r failed", hook)

    # --- tenants and tokens ---------------------------------------------------------------

    def authenticate(self, token: str) -> TenantRecord:
        """The tenant whose token this is; :class:`AuthError` if none is."""
        parts = split_token(token)
        if parts is None:
            raise AuthError("malformed token")
        token_id, secret = parts
        with self._tokens_lock:
            known = self._tokens.get(token_id)
        if known is None:
            known = self.store.token_owner(token_id)
            if known is None:
                raise AuthError("unknown token")
            with self._tokens_lock:
                self._tokens[token_id] = known
        secret_hash, tenant = known
        if not secret_matches(secret, secret_hash):
            raise AuthError("unknown token")
        return tenant

    def add_tenant(self, caller: TenantRecord | None, name: str, admin: bool = False) -> str:
        """Create tenant ``name`` and return its first token (shown once, stored hashed).
        ``caller`` must be an admin (``None``: the service itself, at bootstrap)."""
        _require_admin(caller, f"add tenant {name!r}")
        self.store.create_tenant(name, admin, self._clock())
        return self.issue_token(caller, name)

    def issue_token(self, caller: TenantRecord | None, name: str) -> str:
        """A new token for tenant ``name`` (its older tokens stay valid)."""
        _require_admin(caller, f"issue a token for {name!r}")
        token = new_token()
        self.store.add_token(name, token, self._clock())
        return token.token

    def tenants(self, caller: TenantRecord) -> list[TenantRecord]:
        _require_admin(caller, "list tenants")
        return self.store.tenants()

    # --- jobs -----------------------------------------------------------------------------

    def submit(self, caller: TenantRecord, spec: JobSubmission) -> JobRecord:
        """Store a new job (pending) for ``caller`` and announce it."""
        now = self._clock()
        job = JobRecord(
            id="",
            tenant=caller.name,
            name=spec.name or "job",
            tier=spec.tier,
            world=spec.world,
            min_devices=spec.min_devices,
            max_devices=spec.max_devices,
            device_type=spec.device_type,
            command=tuple(spec.command),
            workdir=spec.workdir,
            env=dict(spec.env),
            declared_steps=spec.declared_steps,
            declared_hours=spec.declared_hours,
            checkpoint=CheckpointSettings(
                spec.checkpoint.every_steps, spec.checkpoint.every_s, spec.checkpoint.keep
            ),
            max_restarts=spec.max_restarts,
            state=JobState.PENDING,
            placement=EMPTY,
            generation=0,
            step=None,
            samples_per_s=None,
            progress_at=None,
            restarts=0,
            reason=f"submitted by {caller.name}",
            cancel_requested=False,
            submitted_at=now,
            started_at=None,
            finished_at=None,
        )
        for attempt in range(_ID_TRIES):
            job = replace(job, id=self._mint.next())
            try:
                self.store.insert_job(job)
                break
            except JobIdTakenError:
                # Another process minted ids ahead of ours: continue after its last one.
                last = self.store.last_job_id()
                if last is None or attempt == _ID_TRIES - 1:
                    raise
                self._mint.advance_past(last)
        logger.info(
            "job %s (%s) submitted by %s: %s, W=%d",
            job.id,
            job.name,
            caller.name,
            job.tier.value,
            job.world,
        )
        self._notify(job)
        return job

    def get(self, caller: TenantRecord, job_id: str) -> JobRecord:
        return self.store.get_job(job_id, _scope(caller))

    def list_jobs(
        self,
        caller: TenantRecord,
        *,
        states: Sequence[JobState] | None = None,
        before: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[JobRecord]:
        """A page of the caller's jobs (an admin's: everyone's, or ``tenant``'s), newest
        first, submitted before job ``before``."""
        scope = _scope(caller)
        if scope is None:
            scope = tenant
        elif tenant is not None and tenant != scope:
            return []
        return self.store.list_jobs(scope, states, before, limit)

    def events(
        self, caller: TenantRecord, job_id: str, limit: int = 500
    ) -> tuple[list[EventRecord], int]:
        self.get(caller, job_id)
        return self.store.events(job_id, limit)

    def cancel(self, caller: TenantRecord, job_id: str) -> JobRecord:
        """Ask the reconcile loop to cancel a job (it is the one writer of job state, so a
        cancel never races a start): the job comes back with ``cancel_requested`` set, and
        is CANCELLED once the loop has stopped whatever runs. A job already cancelled, or
        being cancelled, is returned as it is; cancelling a job that has ended otherwise is
        a :class:`ConflictError`."""
        scope = _scope(caller)
        for _ in range(_CANCEL_TRIES):
            job = self.store.get_job(job_id, scope)
            if job.state is JobState.CANCELLED or job.cancel_requested:
                return job  # done, or the loop is on it
            if job.state.is_terminal:
                raise ConflictError(f"job {job_id} has already {job.state.value}")
            try:
                job = self.store.request_cancel(
                    job_id, f"cancel requested by {caller.name}", self._clock()
                )
            except StaleChangeError:
                continue  # the loop changed it meanwhile: look again
            logger.info("job %s: cancel requested by %s (%s)", job_id, caller.name, job.state.value)
            self._notify(job)
            return job
        raise ConflictError(f"job {job_id} kept changing state; try the cancel again")

    def logs(
        self, caller: TenantRecord, job_id: str, cursor: str = "", max_bytes: int = 256 * 1024
    ) -> tuple[LogChunk, JobRecord]:
        """Output written since ``cursor`` (see :mod:`tidal.control.logs`) and the job as
        it was just before the read: when it had ended, the chunk holds every last line."""
        job = self.get(caller, job_id)
        chunk = read_logs(
            log_dir(self.checkpoint_root, job_id),
            cursor,
            max_bytes=max_bytes,
            final=job.state.is_terminal,
        )
        return chunk, job

    # --- nodes ----------------------------------------------------------------------------

    def nodes(self) -> list[NodeRecord]:
        return self.store.nodes()

    def drain(self, caller: TenantRecord, node: str) -> NodeRecord:
        """Move every job off ``node`` and keep it empty (the loop does the moving)."""
        return self._set_drained(caller, node, True)

    def undrain(self, caller: TenantRecord, node: str) -> NodeRecord:
        return self._set_drained(caller, node, False)

    def _set_drained(self, caller: TenantRecord, node: str, drained: bool) -> NodeRecord:
        _require_admin(caller, f"{'drain' if drained else 'undrain'} node {node!r}")
        record = self.store.set_drained(node, drained)
        logger.info("node %s %s by %s", node, "drained" if drained else "undrained", caller.name)
        self._notify(record)
        return record


def _scope(caller: TenantRecord) -> str | None:
    """The tenant whose jobs ``caller`` may see; ``None`` for every tenant's (an admin)."""
    return None if caller.is_admin else caller.name


def _require_admin(caller: TenantRecord | None, what: str) -> None:
    if caller is not None and not caller.is_admin:
        raise ForbiddenError(f"tenant {caller.name!r} may not {what}: it needs an admin token")
