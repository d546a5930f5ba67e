"""Reading a job's worker logs: whole lines, prefixed by worker, resumable by cursor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.control.logs import LogCursorError, parse_cursor, read_logs


def write(directory: Path, worker: int, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"worker-{worker}.log").open("ab") as handle:
        handle.write(data)


def test_lines_of_every_worker_in_order_then_only_new_ones(tmp_path: Path) -> None:
    assert read_logs(tmp_path / "none").lines == []
    write(tmp_path, 0, b"step 1\nstep 2\n")
    write(tmp_path, 10, b"late worker\n")
    write(tmp_path, 1, b"hello\r\npartial")
    (tmp_path / "notes.txt").write_text("not a log\n")
    first = read_logs(tmp_path)
    assert first.lines == ["[w0] step 1", "[w0] step 2", "[w1] hello", "[w10] late worker"]
    assert not first.more
    assert read_logs(tmp_path, first.cursor).lines == []
    write(tmp_path, 1, b" line\n")
    write(tmp_path, 0, b"step 3\n")
    second = read_logs(tmp_path, first.cursor)
    assert second.lines == ["[w0] step 3", "[w1] partial line"]


def test_the_last_line_without_newline_comes_when_the_job_has_ended(tmp_path: Path) -> None:
    write(tmp_path, 0, b"done\nexit")
    assert read_logs(tmp_path).lines == ["[w0] done"]
    final = read_logs(tmp_path, final=True)
    assert final.lines == ["[w0] done", "[w0] exit"]
    assert read_logs(tmp_path, final.cursor, final=True).lines == []


def test_bytes_that_are_not_utf8_are_replaced(tmp_path: Path) -> None:
    write(tmp_path, 0, b"caf\xc3\xa9 \xff\xfe\n")
    assert read_logs(tmp_path).lines == ["[w0] café \ufffd\ufffd"]


def test_a_large_log_comes_in_bounded_reads(tmp_path: Path) -> None:
    write(tmp_path, 0, b"".join(b"line %05d\n" % i for i in range(5000)))
    write(tmp_path, 1, b"x" * 10_000 + b"\n")
    lines: list[str] = []
    cursor, reads = "", 0
    while True:
        chunk = read_logs(tmp_path, cursor, max_bytes=4096)
        lines += chunk.lines
        cursor, reads = chunk.cursor, reads + 1
        if not chunk.more and not chunk.lines:
            break
    assert lines[:5000] == [f"[w0] line {i:05d}" for i in range(5000)]
    assert "".join(line.removeprefix("[w1] ") for line in lines[5000:]) == "x" * 10_000
    assert reads > 10


def test_a_truncated_log_is_read_again_from_its_start(tmp_path: Path) -> None:
    write(tmp_path, 0, b"old old old\n")
    cursor = read_logs(tmp_path).cursor
    (tmp_path / "worker-0.log").write_bytes(b"new\n")
    assert read_logs(tmp_path, cursor).lines == ["[w0] new"]


@pytest.mark.parametrize("bad", ["x", "0:1,", "0:-1", ":", "0:1;1:2", "1" * 30 + ":1"])
def test_bad_cursors_are_refused(bad: str) -> None:
    with pytest.raises(LogCursorError):
        parse_cursor(bad)
    assert parse_cursor("0:12,3:4") == {0: 12, 3: 4}
