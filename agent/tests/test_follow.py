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


# --- rotation and restarts as a hostile tester runs them: count what arrived ----------


class Clock:
    """The follower's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def follower_with_clock(
    path: Path, saved: dict[str, object] | None = None
) -> tuple[FileFollower, Sink, Clock]:
    sink, clock = Sink(), Clock()
    f = FileFollower(str(path), on_lines=sink, monotonic=clock)
    f.restore(saved)
    return f, sink, clock


def test_logrotate_create_writer_keeps_writing_the_old_file_until_hup(tmp_path: Path) -> None:
    """mv auth.log auth.log.1; create auth.log; the daemon gets HUP up to 300 ms later and
    writes to the old file until then. Nothing it wrote in between may be lost."""
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink, clock = follower_with_clock(log)
    f.check()
    writer = open(log, "a")  # the syslog daemon's descriptor  # noqa: SIM115
    writer.write("before\n")
    writer.flush()
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("")  # logrotate's `create`
    f.check()  # the agent notices the new file first
    writer.write("after rename, before HUP\n")
    writer.flush()
    clock.now += 0.3
    f.check()
    writer.close()  # HUP: the daemon reopens auth.log
    append(log, "new file\n")
    f.check()
    clock.now += 11  # past the grace period: the old file is closed
    f.check()
    assert sink.lines == ["before", "after rename, before HUP", "new file"]
    assert f.retired == [] and f.counts["rotations"] == 1


def test_delete_and_recreate_drains_the_deleted_file(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink, clock = follower_with_clock(log)
    f.check()
    writer = open(log, "a")  # noqa: SIM115
    os.unlink(log)
    log.write_text("in the new file\n")
    writer.write("written to the deleted file\n")
    writer.close()
    f.check()
    clock.now += 11
    f.check()
    assert sorted(sink.lines) == ["in the new file", "written to the deleted file"]


def test_inode_reused_while_down_is_read_from_the_start(tmp_path: Path) -> None:
    """ext4 hands a deleted log's inode to the next file; a tmpfs /var/log starts over at
    every boot. The saved offset belongs to another file: read this one from byte 0."""
    log = tmp_path / "auth.log"
    log.write_text("old line 1\nold line 2\nold line 3\n")
    f, _sink, _clock = follower_with_clock(log)
    f.check()
    saved = f.position()
    assert saved is not None
    log.write_text("fresh 1\nfresh 2\nfresh 3\nfresh 4\n")  # same inode, new content
    assert os.stat(log).st_ino == saved["inode"]
    f2, sink2, _ = follower_with_clock(log, saved)
    f2.check()
    assert sink2.lines == ["fresh 1", "fresh 2", "fresh 3", "fresh 4"]
    assert f2.counts["replaced-while-down"] == 1


def test_copytruncate_reads_the_unread_tail_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink, _clock = follower_with_clock(log)
    f.check()
    append(log, "one\ntwo\n")
    f.check()
    append(log, "three\nfour\n")  # written, not read yet, when logrotate runs
    (tmp_path / "auth.log.1").write_bytes(log.read_bytes())  # copy
    with open(log, "w") as fh:  # truncate, then the daemon goes on
        fh.write("five\n")
    f.check()
    assert sink.lines == ["one", "two", "three", "four", "five"]
    assert f.counts["recovered-from-copy"] == 1


def test_truncated_and_rewritten_past_the_offset_is_noticed(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink, _clock = follower_with_clock(log)
    f.check()
    append(log, "a1\n")
    f.check()
    with open(log, "w") as fh:  # truncated and refilled beyond 3 bytes before we looked
        fh.write("b1 a longer first line\nb2\n")
    f.check()
    assert sink.lines == ["a1", "b1 a longer first line", "b2"]


def test_rotated_while_down_reads_the_rest_of_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink, _clock = follower_with_clock(log)
    f.check()
    append(log, "seen\n")
    f.check()
    f.close()
    saved = f.position()
    append(log, "written while down\n")
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("in the new file\n")
    f2, sink2, _ = follower_with_clock(log, saved)
    f2.check()
    assert sink.lines == ["seen"]
    assert sink2.lines == ["written while down", "in the new file"]
    assert f2.counts["recovered-from-rotated"] == 1


@pytest.mark.parametrize("mode", ["create", "copytruncate", "delete"])
def test_rotation_storm_loses_and_repeats_nothing(tmp_path: Path, mode: str) -> None:
    """20,000 numbered lines, rotated every 2,000, the follower looking at random moments
    and restarted from its saved position twice: every line arrives exactly once."""
    import random

    rng = random.Random(f"storm-{mode}")
    log = tmp_path / "auth.log"
    log.write_text("")
    f, sink, clock = follower_with_clock(log)
    f.check()
    writer = open(log, "a")  # noqa: SIM115
    lines: list[str] = []
    for n in range(20000):
        writer.write(f"line {n:05d} {'x' * rng.randrange(0, 80)}\n")
        lines.append(f"line {n:05d}")
        if n % 2000 == 1999:
            writer.flush()
            rotated = tmp_path / f"auth.log.{n // 2000}"
            if mode == "create":
                os.rename(log, rotated)
                log.write_text("")
            elif mode == "delete":
                os.unlink(log)
                log.write_text("")
            else:
                f.check() if rng.random() < 0.5 else None
                rotated.write_bytes(log.read_bytes())
                os.rename(rotated, tmp_path / "auth.log.1")
                os.truncate(log, 0)
            if rng.random() < 0.7:
                f.check()  # sometimes the agent looks before the writer is told (HUP)
            writer.write(f"line {n:05d}-late\n")  # the daemon, still on the old file
            lines.append(f"line {n:05d}-late")
            writer.close()
            writer = open(log, "a")  # noqa: SIM115
        if rng.random() < 0.01:
            writer.flush()
            f.check()
            clock.now += rng.random()
        if n in (7000, 15000):  # the agent restarts
            writer.flush()
            f.check()
            f.close()
            f, restarted, clock = follower_with_clock(log, f.position())
            restarted.lines = sink.lines  # one list of everything delivered
            sink = restarted
    writer.close()
    for _ in range(5):
        f.check()
        clock.now += 5
    got = [" ".join(line.split()[:2]) for line in sink.lines]
    assert len(got) == len(lines), f"{len(lines) - len(got)} lines lost or repeated"
    assert sorted(got) == sorted(lines)


@pytest.mark.parametrize("backend", ["inotify", "poll"])
def test_watcher_keeps_looking_at_a_rotated_file_it_does_not_watch_by_name(
    tmp_path: Path, backend: str, clock: ManualClock, advance_until: Callable[..., bool]
) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    rt = Agent("t", clock)
    sink = Sink()
    f = FileFollower(str(log), on_lines=sink, monotonic=clock.monotonic)
    f.restore(None)
    watcher = Watcher(rt.context("collectors", "t"), [f], backend, poll_interval=5.0)
    watcher.start()
    writer = open(log, "a")  # noqa: SIM115
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text("new\n")
    assert advance_until(rt, lambda: sink.lines == ["new"], 6.0)
    writer.write("late, to the old file\n")
    writer.close()
    assert advance_until(rt, lambda: len(sink.lines) == 2, 1.0)  # long before the 5 s poll
    rt.advance(11)
    assert f.retired == []
    watcher.stop()
