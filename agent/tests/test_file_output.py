"""File output: rotation, mode, and a full disk (ENOSPC injected at os.write)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from defender_agent.model import Record
from defender_agent.outputs import file as file_mod
from defender_agent.outputs.file import FileOutput


def rec(i: int, type: str = "event") -> tuple[Record, str]:
    r = Record(type, {"n": i, "pad": "x" * 200})
    return r, r.to_json("dev")


def test_rotation_keeps_backups_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    out = FileOutput(str(path), max_bytes=4096, backups=2)
    for i in range(60):
        out.write(*rec(i))
    out.stop()
    files = [path.with_name(n) for n in ("events.jsonl.2", "events.jsonl.1", "events.jsonl")]
    assert all(f.exists() for f in files) and not path.with_name("events.jsonl.3").exists()
    assert all(f.stat().st_size <= 4096 for f in files)
    numbers = [
        json.loads(line)["payload"]["n"] for f in files for line in f.read_text().splitlines()
    ]
    assert numbers == list(range(numbers[0], 60))  # oldest first, contiguous, newest kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_no_backups_truncates(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    out = FileOutput(str(path), max_bytes=4096, backups=0)
    for i in range(40):
        out.write(*rec(i))
    out.stop()
    assert not path.with_name("events.jsonl.1").exists()
    assert path.stat().st_size <= 4096


def test_enospc_backlog_then_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    out = FileOutput(str(path), backlog_max=5)
    out.write(*rec(0))
    real_write = os.write
    full = {"on": True}

    def write(fd: int, data: bytes) -> int:
        if full["on"] and fd == out.fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(file_mod.os, "write", write)
    for i in range(1, 9):
        out.write(*rec(i, "alert"))
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "No space left" in ln]
    assert len(errors) == 1 and errors[0].startswith("defender-agent: ERROR: ")  # logged once
    assert out.statistics()["backlog"] == 5 and out.statistics()["dropped"] == 3
    out.retry()  # the timer's retry while still full: nothing lost
    assert out.statistics()["backlog"] == 5
    full["on"] = False
    out.retry()
    out.write(*rec(9))
    out.stop()
    numbers = [json.loads(line)["payload"]["n"] for line in path.read_text().splitlines()]
    assert numbers == [0, 4, 5, 6, 7, 8, 9]  # oldest backlog entries dropped, order kept


def test_partial_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    out = FileOutput(str(path))
    out.write(*rec(0))
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, data[:10])  # the disk fills mid-line
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_mod.os, "write", write)
    out.write(*rec(1))
    monkeypatch.setattr(file_mod.os, "write", real_write)
    out.retry()
    out.stop()
    numbers = [json.loads(line)["payload"]["n"] for line in path.read_text().splitlines()]
    assert numbers == [0, 1]


def test_unwritable_location_keeps_records_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = FileOutput(str(blocker / "events.jsonl"))  # open fails: ENOTDIR, even for root
    out.write(*rec(1, "alert"))
    out.write(*rec(2))
    assert out.statistics()["backlog"] == 2 and out.statistics()["errors"] >= 1
