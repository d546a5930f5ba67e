"""The control plane's API and store under load, on SQLite and on PostgreSQL.

Prints one JSON object; every measured key maps each backend to its value::

    {"submit_per_s": {"sqlite": ..., "postgresql": ...},
     "list_p99_ms": {"sqlite": ..., "postgresql": ...},
     ..., "detail": {"sqlite": {...}, "postgresql": {...}}}

``submit_per_s``: ``POST /api/v1/jobs`` per second, over HTTP keep-alive from
``--clients`` threads at once, each job a small spec (written through: one transaction of
two rows). ``list_p99_ms``: the 99th percentile of ``GET /api/v1/jobs`` (one page of 50,
newest first) with 10,000 jobs in the store, asked by the admin (every tenant's jobs);
``detail`` has the same for one tenant's jobs and for a state filter, medians, and the
time inside the store alone (``*_store_ms``), which says how much of a request is SQL and
how much is HTTP, auth and JSON (``submit_store_ms_p50`` likewise: the service's own
work for one submission, validation included).

The API runs as its own process (uvicorn on 127.0.0.1, no reconcile loop), as under
``tidal up``, so the client's work is not counted in it. PostgreSQL is a throwaway server
started here with its default durability (fsync and synchronous commit on); SQLite runs
in WAL mode with ``synchronous=NORMAL``. To add a measure, add a function to
``MEASURES``: it gets a :class:`Bench` and returns ``{key: value}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tidal.control import _rows
from tidal.control.api import create_app
from tidal.control.credentials import ensure_admin_token, read_credentials, write_credentials
from tidal.control.ids import JobIdMint
from tidal.control.models import JobSubmission
from tidal.control.pgtemp import TempPostgres
from tidal.control.records import CheckpointSettings, JobRecord
from tidal.control.schema import events, jobs, tenants
from tidal.control.server import ApiServer
from tidal.control.service import Service
from tidal.control.store import Store, open_store
from tidal.core import EMPTY, JobState, Placement, Tier

SPEC = {"name": "lm", "tier": "basic", "world": 4, "command": ["python", "train.py"]}
STORE_JOBS = 10_000
TENANTS = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Bench:
    """One backend: its store (in this process), the API (another process) and tokens."""

    backend: str
    url: str
    store: Store
    admin_token: str
    tenant_tokens: dict[str, str] = field(default_factory=dict)
    args: argparse.Namespace | None = None

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


def measure_submit(bench: Bench) -> dict[str, float]:
    assert bench.args is not None
    total, clients = bench.args.submits, bench.args.clients
    latencies: list[float] = []
    lock = threading.Lock()
    tokens = list(bench.tenant_tokens.values())

    def work(k: int) -> None:
        mine = []
        with bench.client(tokens[k % len(tokens)]) as http:
            http.post("/jobs", json=SPEC).raise_for_status()  # warm the connection
            for _ in range(total // clients):
                t0 = time.perf_counter()
                http.post("/jobs", json=SPEC).raise_for_status()
                mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    # One client alone: the latency of a submission with nothing else going on.
    alone = []
    with bench.client(tokens[0]) as http:
        for _ in range(200):
            t0 = time.perf_counter()
            http.post("/jobs", json=SPEC).raise_for_status()
            alone.append(time.perf_counter() - t0)
    # The same submission inside the service alone (validation, id, one transaction).
    service = Service(bench.store, Path(tempfile.gettempdir()))
    tenant = bench.store.get_tenant("t0")
    inside = []
    for _ in range(200):
        t0 = time.perf_counter()
        service.submit(tenant, JobSubmission.model_validate(SPEC))
        inside.append(time.perf_counter() - t0)
    return {
        "submit_per_s": len(latencies) / elapsed,
        "submit_store_ms_p50": 1000 * statistics.median(inside),
        "submit_ms_p50": 1000 * statistics.median(latencies),
        "submit_ms_p99": 1000 * percentile(latencies, 99),
        "submit_alone_ms_p50": 1000 * statistics.median(alone),
    }


def fill(store: Store, count: int) -> None:
    """Bring the store to ``count`` jobs: a mix of tenants, tiers and states (bulk insert)."""
    mint = JobIdMint(after=store.last_job_id())
    with store.engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
        ids = dict(conn.execute(sa.select(tenants.c.name, tenants.c.id)).all())
        rows, evs = [], []
        states = [JobState.SUCCEEDED] * 6 + [JobState.RUNNING, JobState.PENDING] * 2
        for k in range(count - have):
            state = states[k % len(states)]
            placement = Placement.of({f"n{k % 64}": 4}) if state.holds_devices else EMPTY
            job = JobRecord(
                id=mint.next(), tenant=f"t{k % TENANTS}", name=f"job{k}",
                tier=(Tier.PREMIUM, Tier.STANDARD, Tier.BASIC)[k % 3], world=4, min_devices=1,
                max_devices=None, device_type="gpu", command=("python", "train.py", f"--seed={k}"),
                workdir="/data/runs", env={"SEED": str(k)}, declared_steps=1000,
                declared_hours=None, checkpoint=CheckpointSettings(), max_restarts=3,
                state=state, placement=placement, generation=2, step=k, samples_per_s=100.0,
                progress_at=1.8e9, restarts=0, reason="bench", cancel_requested=False,
                submitted_at=1.8e9 + k, started_at=None, finished_at=None,
            )  # fmt: skip
            rows.append(_rows.job_values(job, ids[job.tenant]))
            evs.append(
                {"job_id": job.id, "at": job.submitted_at, "old": None, "new": "pending",
                 "reason": "submitted", "generation": 0, "placement": {}}
            )  # fmt: skip
        for start in range(0, len(rows), 1000):
            conn.execute(jobs.insert(), rows[start : start + 1000])
            conn.execute(events.insert(), evs[start : start + 1000])


def _timed_gets(http: httpx.Client, params: dict[str, Any], n: int) -> list[float]:
    http.get("/jobs", params=params).raise_for_status()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = http.get("/jobs", params=params)
        out.append(time.perf_counter() - t0)
        reply.raise_for_status()
    return out


def measure_list(bench: Bench) -> dict[str, float]:
    assert bench.args is not None
    fill(bench.store, STORE_JOBS)
    n = bench.args.lists
    with bench.client(bench.admin_token) as admin:
        every = _timed_gets(admin, {}, n)
        running = _timed_gets(admin, {"state": "running"}, n)
    with bench.client(bench.tenant_tokens["t3"]) as tenant:
        own = _timed_gets(tenant, {}, n)
        own_running = _timed_gets(tenant, {"state": "running"}, n)
    store_alone = []
    for _ in range(n):
        t0 = time.perf_counter()
        bench.store.list_jobs(None, None, None, 50)
        store_alone.append(time.perf_counter() - t0)
    return {
        "list_p99_ms": 1000 * percentile(every, 99),
        "list_ms_p50": 1000 * statistics.median(every),
        "list_running_ms_p99": 1000 * percentile(running, 99),
        "list_tenant_ms_p99": 1000 * percentile(own, 99),
        "list_tenant_running_ms_p99": 1000 * percentile(own_running, 99),
        "list_store_ms_p50": 1000 * statistics.median(store_alone),
        "jobs_in_store": float(STORE_JOBS),
    }


MEASURES: list[Callable[[Bench], dict[str, float]]] = [measure_submit, measure_list]
HEADLINE = ("submit_per_s", "list_p99_ms")


def serve(db_url: str, data_dir: Path) -> None:
    """The API alone, as its own process (``--serve``): writes server.json when up."""
    store = open_store(db_url)
    service = Service(store, data_dir / "jobs")
    token = ensure_admin_token(service, data_dir)
    server = ApiServer(create_app(service))
    write_credentials(data_dir, server.url, token)
    server.run()


def run_backend(
    backend: str, db_url: str, workdir: Path, args: argparse.Namespace
) -> dict[str, float]:
    data_dir = workdir / backend
    store = open_store(db_url)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", db_url, str(data_dir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (creds := read_credentials(data_dir)) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API for {backend} did not start")
            time.sleep(0.1)
        bench = Bench(backend, creds.url, store, creds.token, args=args)
        with bench.client(creds.token) as admin:
            for k in range(TENANTS):
                reply = admin.post("/tenants", json={"name": f"t{k}"})
                reply.raise_for_status()
                bench.tenant_tokens[f"t{k}"] = reply.json()["token"]
        results: dict[str, float] = {}
        for measure in MEASURES:
            results.update(measure(bench))
            print(f"{backend}: {measure.__name__} done", file=sys.stderr)
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("DB_URL", "DATA_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--submits", type=int, default=2000, help="submissions to time")
    parser.add_argument("--clients", type=int, default=4, help="concurrent submitting clients")
    parser.add_argument("--lists", type=int, default=500, help="list requests to time, per kind")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]))
        return
    backends = args.backend or ["sqlite", "postgresql"]
    detail: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tidal-bench-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            if backend == "sqlite":
                detail[backend] = run_backend(
                    backend, f"sqlite:///{workdir / 'tidal.db'}", workdir, args
                )
            else:
                with TempPostgres(durable=True) as pg:
                    url = pg.create_database("tidal_bench")
                    detail[backend] = run_backend(backend, url, workdir, args)
    result: dict[str, Any] = {
        key: {b: round(detail[b][key], 2) for b in backends} for key in HEADLINE
    }
    result["detail"] = {b: {k: round(v, 3) for k, v in d.items()} for b, d in detail.items()}
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
