"""Job ids (sorted by submission, unique across restarts) and tokens (hashed, checked)."""

from __future__ import annotations

import threading

import pytest

from tidal.control.ids import JobIdMint, is_job_id
from tidal.control.tokens import hash_secret, new_token, secret_matches, split_token


def test_ids_increase_within_a_millisecond_and_when_the_clock_steps_back() -> None:
    readings = iter([1_800_000_000.0] * 3 + [1_700_000_000.0, 1_800_000_000.5])
    mint = JobIdMint(clock=lambda: next(readings))
    ids = [mint.next() for _ in range(5)]
    assert all(is_job_id(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_a_new_mint_continues_after_the_last_id() -> None:
    late = JobIdMint(clock=lambda: 1_900_000_000.0).next()
    restarted = JobIdMint(after=late, clock=lambda: 1_800_000_000.0)
    assert restarted.next() > late
    with pytest.raises(ValueError, match="not a job id"):
        JobIdMint(after="job-1")


def test_ids_from_many_threads_are_unique() -> None:
    mint = JobIdMint()
    seen: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [mint.next() for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2_000


def test_tokens_are_random_and_checked_against_their_hash() -> None:
    one, two = new_token(), new_token()
    assert one.token != two.token and one.token_id != two.token_id
    parts = split_token(one.token)
    assert parts is not None and parts[0] == one.token_id
    assert one.secret_hash == hash_secret(parts[1]) and parts[1] not in one.secret_hash
    assert secret_matches(parts[1], one.secret_hash)
    assert not secret_matches(parts[1] + "x", one.secret_hash)
    for bad in ("", "Bearer x", "tidal_xyz_abc", one.token + "!", one.token.replace("_", "-")):
        assert split_token(bad) is None
