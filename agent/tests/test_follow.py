"""File follower: append, rotation, truncation, missing files, restart resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.collectors.common.follow import FileFollower, Watcher


class Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, lines: list[str]) -> None:
        self.lines.extend(lines)


def new_follower(path: Path) -> tuple[FileFollower, Sink]:
    """A line follower on PATH with no saved state (first start: begins at the end)."""
    sink = Sink()
    follower = FileFollower(str(path), on_lines=sink)
    follower.restore(None)
    return follower, sink


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def test_starts_at_end_then_reads_appends(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("old 1\nold 2\n")
    f, sink = new_follower(log)
    assert f.check() is False
    assert sink.lines == []
    append(log, "new 1\nnew 2\npartial")
    f.check()
    assert sink.lines == ["new 1", "new 2"]
    append(log, " line\n")
    f.check()
    assert sink.lines == ["new 1", "new 2", "partial line"]


def test_rotation_by_rename_and_create(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink = new_follower(log)
    f.check()
    append(log, "a\n")
    os.rename(log, tmp_path / "auth.log.1")
    append(tmp_path / "auth.log.1", "b (written to the old file after the rename)\n")
    f.check()  # new file not there yet: keep reading the old one
    log.write_text("c\n")
    f.check()
    assert sink.lines == ["a", "b (written to the old file after the rename)", "c"]
    assert f.counts["rotations"] == 1


def test_truncation_rereads_from_start(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink = new_follower(log)
    f.check()
    append(log, "one\ntwo\n")
    f.check()
    with open(log, "w") as fh:  # copytruncate-style rotation
        fh.write("x\n")
    f.check()
    assert sink.lines == ["one", "two", "x"]
    assert f.counts["truncations"] == 1


def test_missing_file_is_waited_for_and_read_from_start(tmp_path: Path) -> None:
    log = tmp_path / "secure"
    f, sink = new_follower(log)
    assert f.check() is False and not f.is_open
    log.write_text("first\n")
    f.check()
    assert sink.lines == ["first"]


def test_restart_resumes_from_saved_state(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, _sink = new_follower(log)
    f.check()
    append(log, "seen\n")
    f.check()
    f.close()
    saved = f.position()
    append(log, "while down 1\nwhile down 2\n")
    sink2 = Sink()
    f2 = FileFollower(str(log), on_lines=sink2)
    f2.restore(saved)
    f2.check()
    assert sink2.lines == ["while down 1", "while down 2"]  # nothing lost, nothing twice
    # saved state for a rotated-away inode: the new file is read from its start
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("after rotation\n")
    sink3 = Sink()
    f3 = FileFollower(str(log), on_lines=sink3)
    f3.restore(f2.position())
    f3.check()
    assert sink3.lines == ["after rotation"]


def test_long_lines_truncated_and_bad_bytes_replaced(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    sink = Sink()
    f = FileFollower(str(log), on_lines=sink, max_line=100)
    f.restore(None)
    f.check()
    with open(log, "ab") as fh:
        fh.write(b"x" * 250 + b"\n" + b"ok \xff\xfe\n" + b"y" * 150)
    f.check()
    with open(log, "ab") as fh:
        fh.write(b"y" * 10 + b"\nend\n")
    f.check()
    assert sink.lines == ["x" * 100, "ok \ufffd\ufffd", "y" * 100, "end"]
    assert f.counts["truncated-lines"] == 2


def test_records_wait_for_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "btmp"
    path.write_bytes(b"")
    got: list[bytes] = []
    f = FileFollower(str(path), on_records=got.append, record_size=8)
    f.restore(None)
    f.check()
    with open(path, "ab") as fh:
        fh.write(b"A" * 8 + b"B" * 3)
    f.check()
    with open(path, "ab") as fh:
        fh.write(b"B" * 5)
    f.check()
    assert got == [b"A" * 8, b"B" * 8]


@pytest.mark.parametrize("backend", ["inotify", "poll"])
def test_watcher_drives_followers_through_the_loop(
    tmp_path: Path, backend: str, clock: ManualClock, advance_until: Callable[..., bool]
) -> None:
    log = tmp_path / "auth.log"
    f, sink = new_follower(log)
    rt = Agent("t", clock)
    watcher = Watcher(rt.context("collectors", "t"), [f], backend, poll_interval=0.1)
    watcher.start()
    assert watcher.describe() == backend
    log.write_text("created\n")
    assert advance_until(rt, lambda: sink.lines == ["created"], 1.0)
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("rotated\n")
    assert advance_until(rt, lambda: sink.lines == ["created", "rotated"], 1.0)
    watcher.stop()


def test_falls_back_to_polling_when_inotify_is_missing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: ManualClock,
    advance_until: Callable[..., bool],
) -> None:
    from defender_agent.linux import inotify

    def unavailable() -> None:
        raise inotify.InotifyUnavailableError(38, "inotify_init1: Function not implemented")

    monkeypatch.setattr(inotify, "Inotify", unavailable)
    log = tmp_path / "auth.log"
    f, sink = new_follower(log)
    rt = Agent("t", clock)
    watcher = Watcher(rt.context("collectors", "t"), [f], "auto", poll_interval=0.1)
    watcher.start()
    assert watcher.describe() == "poll" and "polling" in watcher.problem
    log.write_text("seen by polling\n")
    assert advance_until(rt, lambda: sink.lines == ["seen by polling"], 1.0)
    watcher.stop()


def test_corrupt_saved_offset_does_not_stall_the_follower(tmp_path: Path) -> None:
    # A negative offset (a hand-edited or damaged state.json) made every pread fail
    # with EINVAL: the file was never read again. Bad state = no state.
    log = tmp_path / "auth.log"
    log.write_text("old\n")
    sink = Sink()
    f = FileFollower(str(log), on_lines=sink)
    f.restore({"inode": os.stat(log).st_ino, "offset": -5})
    f.check()
    append(log, "new\n")
    f.check()
    assert sink.lines == ["new"]
    assert "read-error" not in f.counts
