"""Read job traces (the CSV form of ``shared/traces/README.md``) into :class:`JobSpec` lists.

Columns: ``job_id, submit_time, num_gpus, duration[, vc]`` (seconds). What a trace lacks is
filled in by stated rules:

- tier: a seeded hash of the job id (BLAKE2b of ``"{seed}:{job_id}"``) mapped to premium
  20 %, standard 50 %, basic 30 % (:func:`tier_for`);
- tenant: the ``vc`` column, or ``"default"`` without one;
- logical world size ``W = num_gpus``; work ``= duration × W`` device-seconds;
  standard and basic jobs may run on any ``P`` dividing ``W`` (premium only at ``W``);
- checkpoint size: :func:`default_checkpoint_bytes` (1 GiB per device of ``W``, at most
  32 GiB: bigger jobs train bigger models).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist

from tidal.core import JobSpec, SpecError, Tier
from tidal.sim.errors import TraceError

GIB = 1 << 30
TRACE_DIR_ENV = "TIDAL_TRACE_DIR"
DEFAULT_TIER_SHARES: tuple[tuple[Tier, float], ...] = (
    (Tier.PREMIUM, 0.20),
    (Tier.STANDARD, 0.50),
    (Tier.BASIC, 0.30),
)
REQUIRED_COLUMNS = ("job_id", "submit_time", "num_gpus", "duration")
DEFAULT_TENANT = "default"


def default_checkpoint_bytes(world: int) -> int:
    """1 GiB of checkpoint per device of the job's world size, capped at 32 GiB."""
    return min(world, 32) * GIB


def _hashed(key: str) -> int:
    """A 64-bit BLAKE2b hash of ``key``: stable across runs and machines."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def tier_for(
    job_id: str, seed: int = 0, shares: Iterable[tuple[Tier, float]] = DEFAULT_TIER_SHARES
) -> Tier:
    """The tier a job gets from a seeded hash of its id (stable across runs and machines)."""
    u = _hashed(f"{seed}:{job_id}") / 2.0**64
    acc = 0.0
    last = Tier.BASIC
    for tier, share in shares:
        acc += share
        last = tier
        if u < acc:
            return tier
    return last


def misestimate(jobs: Iterable[JobSpec], sigma: float, seed: int = 0) -> list[JobSpec]:
    """``jobs`` with declared work off by a log-normal factor: each job declares
    ``work × exp(sigma × z)``, ``z`` a standard normal drawn from a seeded hash of its id
    (stable across runs and machines). The job still needs its true ``work``; policies
    that read the declared estimate (``JobSpec.estimate``) are misled by it. With
    ``sigma`` 1, half the jobs are off by more than a factor of 2 (either way)."""
    if not math.isfinite(sigma) or sigma < 0:
        raise TraceError(f"estimate noise sigma must be a finite number >= 0, got {sigma!r}")
    normal = NormalDist()
    out = []
    for spec in jobs:
        # In (0, 1): the float sum can round up to 1 for the top few hashes.
        u = min((_hashed(f"{seed}:estimate:{spec.id}") + 0.5) / 2.0**64, 1.0 - 2.0**-53)
        factor = math.exp(sigma * normal.inv_cdf(u))
        out.append(replace(spec, declared_work=spec.work * factor))
    return out


def resolve_trace(path_or_name: str | os.PathLike[str], trace_dir: str | Path | None) -> Path:
    """A trace file: ``path_or_name`` if it is a file, else ``<trace_dir>/<name>[.csv]``."""
    raw = os.fspath(path_or_name)
    path = Path(raw)
    if path.is_file():
        return path
    looks_like_name = os.sep not in raw and "/" not in raw
    if not looks_like_name:
        raise TraceError(f"trace file {raw!r} does not exist")
    if trace_dir is None:
        raise TraceError(
            f"trace {raw!r} is not a file here, and ${TRACE_DIR_ENV} is not set, so there is "
            f"no trace directory to look in; pass a path or set ${TRACE_DIR_ENV}"
        )
    base = Path(trace_dir)
    candidates = [base / raw] if raw.endswith(".csv") else [base / f"{raw}.csv", base / raw]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise TraceError(f"trace {raw!r} not found: looked for {looked} (${TRACE_DIR_ENV}={base})")


def load_trace(
    path_or_name: str | os.PathLike[str],
    seed: int = 0,
    *,
    trace_dir: str | Path | None = None,
    tier_shares: Iterable[tuple[Tier, float]] = DEFAULT_TIER_SHARES,
    checkpoint_bytes: Callable[[int], int] = default_checkpoint_bytes,
    limit: int | None = None,
) -> list[JobSpec]:
    """Jobs of a trace file or named trace, sorted by submit time (stable).

    ``trace_dir`` defaults to ``$TIDAL_TRACE_DIR`` (read here, at the API boundary).
    ``limit`` keeps only the first ``limit`` jobs.
    """
    if trace_dir is None:
        trace_dir = os.environ.get(TRACE_DIR_ENV) or None
    path = resolve_trace(path_or_name, trace_dir)
    shares = tuple(tier_shares)
    try:
        with path.open(newline="") as handle:
            jobs = _parse(path, csv.reader(handle), seed, shares, checkpoint_bytes, limit)
    except OSError as exc:
        raise TraceError(f"cannot read trace {str(path)!r}: {exc}") from exc
    jobs.sort(key=lambda j: j.submit_time)
    return jobs


def save_trace(jobs: Iterable[JobSpec], path: str | os.PathLike[str]) -> None:
    """Write ``jobs`` in the trace CSV form (tiers and checkpoint sizes are not stored:
    reading the file back applies the rules again)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*REQUIRED_COLUMNS, "vc"])
        for spec in jobs:
            writer.writerow(
                [
                    spec.id,
                    repr(spec.submit_time),
                    spec.world,
                    repr(spec.work / spec.world),
                    spec.tenant,
                ]
            )


def _parse(
    path: Path,
    rows: Iterable[list[str]],
    seed: int,
    shares: tuple[tuple[Tier, float], ...],
    checkpoint_bytes: Callable[[int], int],
    limit: int | None,
) -> list[JobSpec]:
    it = iter(rows)
    try:
        header = [h.strip() for h in next(it)]
    except StopIteration:
        raise TraceError(f"{path}: empty file, expected a header line") from None
    except csv.Error as exc:
        raise TraceError(f"{path} line 1: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise TraceError(
            f"{path} line 1: missing column(s) {', '.join(missing)}; header has "
            f"{', '.join(header) or 'nothing'}"
        )
    col = {name: header.index(name) for name in (*REQUIRED_COLUMNS, "vc") if name in header}
    i_id, i_sub, i_gpu, i_dur = (col[c] for c in REQUIRED_COLUMNS)
    i_vc = col.get("vc")
    width = len(header)
    jobs: list[JobSpec] = []
    seen: set[str] = set()
    line = 1
    try:
        for row in it:
            line += 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if limit is not None and len(jobs) >= limit:
                break
            if len(row) != width:
                raise TraceError(f"{path} line {line}: expected {width} fields, got {len(row)}")
            job_id = row[i_id].strip()
            if not job_id:
                raise TraceError(f"{path} line {line}, column job_id: empty job id")
            if job_id in seen:
                raise TraceError(f"{path} line {line}, column job_id: duplicate id {job_id!r}")
            seen.add(job_id)
            submit = _number(path, line, "submit_time", row[i_sub])
            world = _count(path, line, "num_gpus", row[i_gpu])
            duration = _number(path, line, "duration", row[i_dur])
            tenant = row[i_vc].strip() if i_vc is not None else ""
            try:
                jobs.append(
                    JobSpec(
                        id=job_id,
                        tenant=tenant or DEFAULT_TENANT,
                        tier=tier_for(job_id, seed, shares),
                        world=world,
                        submit_time=submit,
                        work=duration * world,
                        checkpoint_bytes=checkpoint_bytes(world),
                    )
                )
            except SpecError as exc:
                raise TraceError(f"{path} line {line}: {exc}") from None
    except csv.Error as exc:
        raise TraceError(f"{path} line {line}: {exc}") from None
    return jobs


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise TraceError(
            f"{path} line {line}, column {column}: expected a number >= 0, got {text!r}"
        )
    return value


def _count(path: Path, line: int, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise TraceError(
            f"{path} line {line}, column {column}: expected an integer >= 1, got {text!r}"
        )
    return value
