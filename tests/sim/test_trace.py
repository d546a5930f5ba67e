"""Trace reader, tier rule, name lookup, synthetic generator."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

import pytest

from tidal.core import Tier
from tidal.sim import (
    TraceError,
    default_checkpoint_bytes,
    load_trace,
    misestimate,
    save_trace,
    synthetic_trace,
    tier_for,
)

from .conftest import trace_file

GIB = 1 << 30


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_rows_with_vc_as_tenant(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "job_id,submit_time,num_gpus,duration,vc\nj2,5,4,100,vcA\nj1,0,1,30,vcB\n",
    )
    jobs = load_trace(path)
    assert [j.id for j in jobs] == ["j1", "j2"]  # sorted by submit time
    j1, j2 = jobs
    assert (j2.tenant, j2.world, j2.submit_time, j2.work) == ("vcA", 4, 5.0, 400.0)
    assert j2.full_duration == 100.0
    assert j2.checkpoint_bytes == default_checkpoint_bytes(4) == 4 * GIB
    assert j1.tenant == "vcB"
    for spec in jobs:
        assert spec.tier is tier_for(spec.id, 0)


def test_without_vc_everyone_is_default_tenant(tmp_path: Path) -> None:
    path = write(tmp_path, "job_id,submit_time,num_gpus,duration\nj1,0,2,30\n")
    (spec,) = load_trace(path)
    assert spec.tenant == "default"
    assert spec.sizes == ((2,) if spec.tier is Tier.PREMIUM else (1, 2))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("j1,0,two,30\n", "line 2, column num_gpus"),
        ("j1,0,1,30\nj2,-4,1,30\n", "line 3, column submit_time"),
        ("j1,0,1,\n", "line 2, column duration"),
        ("j1,0,0,30\n", "line 2, column num_gpus"),
        ("j1,0,1,30\nj1,1,1,30\n", "line 3, column job_id: duplicate"),
        ("j1,0,1\n", "line 2: expected 4 fields, got 3"),
    ],
)
def test_bad_rows_name_line_and_column(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, "job_id,submit_time,num_gpus,duration\n" + body)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "job_id,submit_time,duration\nj1,0,30\n")
    with pytest.raises(TraceError, match=r"line 1: missing column.*num_gpus"):
        load_trace(path)


def test_name_lookup_in_trace_dir(tmp_path: Path) -> None:
    write(tmp_path, "job_id,submit_time,num_gpus,duration\nj1,0,1,30\n", name="mini.csv")
    assert [j.id for j in load_trace("mini", trace_dir=tmp_path)] == ["j1"]
    with pytest.raises(TraceError, match=r"looked for .*nope\.csv"):
        load_trace("nope", trace_dir=tmp_path)


def test_name_lookup_without_trace_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDAL_TRACE_DIR", raising=False)
    with pytest.raises(TraceError, match=r"TIDAL_TRACE_DIR is not set"):
        load_trace("philly")
    with pytest.raises(TraceError, match="does not exist"):
        load_trace("/no/such/trace.csv")


def test_tier_hash_is_seeded_and_stable() -> None:
    ids = [f"job-{i}" for i in range(4000)]
    tiers = Counter(tier_for(i, 0) for i in ids)
    assert tiers[Tier.PREMIUM] / 4000 == pytest.approx(0.2, abs=0.03)
    assert tiers[Tier.STANDARD] / 4000 == pytest.approx(0.5, abs=0.03)
    assert [tier_for(i, 0) for i in ids[:50]] == [tier_for(i, 0) for i in ids[:50]]
    assert [tier_for(i, 1) for i in ids[:50]] != [tier_for(i, 0) for i in ids[:50]]


def test_misestimate_is_log_normal_seeded_and_keeps_true_work() -> None:
    jobs = synthetic_trace(4000, seed=3)
    noisy = misestimate(jobs, 1.0)
    assert [j.work for j in noisy] == [j.work for j in jobs]  # what the jobs really need
    logs = [math.log(n.estimate / j.work) for j, n in zip(jobs, noisy, strict=True)]
    assert statistics.mean(logs) == pytest.approx(0.0, abs=0.05)
    assert statistics.stdev(logs) == pytest.approx(1.0, abs=0.05)
    assert [n.estimate for n in misestimate(jobs[:50], 1.0)] == [n.estimate for n in noisy[:50]]
    assert misestimate(jobs[:50], 1.0, seed=1) != noisy[:50]
    assert [n.estimate for n in misestimate(jobs[:50], 0.0)] == [j.work for j in jobs[:50]]
    assert [j.estimate for j in jobs[:50]] == [j.work for j in jobs[:50]]  # nothing declared
    with pytest.raises(TraceError, match="sigma must be a finite number >= 0, got -1"):
        misestimate(jobs, -1)


def test_synthetic_is_deterministic_and_philly_like() -> None:
    a = synthetic_trace(2000, seed=3, capacity=64, load=0.8)
    assert a == synthetic_trace(2000, seed=3, capacity=64, load=0.8)
    assert a != synthetic_trace(2000, seed=4, capacity=64, load=0.8)
    single = sum(1 for j in a if j.world == 1) / len(a)
    assert single == pytest.approx(0.93, abs=0.03)
    span = a[-1].submit_time - a[0].submit_time
    offered = sum(j.work for j in a) / span
    assert offered == pytest.approx(0.8 * 64, rel=0.01)
    assert len({j.tenant for j in a}) == 4


@pytest.mark.trace
def test_philly_tier_shares_and_tenants() -> None:
    jobs = load_trace(trace_file("philly.csv"))
    assert len(jobs) == 82247
    counts = Counter(j.tier for j in jobs)
    assert counts[Tier.PREMIUM] / len(jobs) == pytest.approx(0.20, abs=0.01)
    assert counts[Tier.STANDARD] / len(jobs) == pytest.approx(0.50, abs=0.01)
    assert counts[Tier.BASIC] / len(jobs) == pytest.approx(0.30, abs=0.01)
    assert len({j.tenant for j in jobs}) == 15
    assert all(j.work == j.full_duration * j.world for j in jobs[:100])


@pytest.mark.trace
def test_vc103959_by_name() -> None:
    path = trace_file("philly_vc103959.csv")
    jobs = load_trace("philly_vc103959", trace_dir=path.parent)
    assert len(jobs) == 876
    assert {j.tenant for j in jobs} == {"default"}


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    jobs = synthetic_trace(300, seed=5, capacity=32)
    save_trace(jobs, tmp_path / "syn.csv")
    assert load_trace(tmp_path / "syn.csv", seed=5) == jobs
