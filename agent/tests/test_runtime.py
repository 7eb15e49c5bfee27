"""The event loop survives a failing collector callback; state.json is written whole."""

from __future__ import annotations

import errno
import json
import os
import select
import time
from pathlib import Path

import pytest

from defender_agent import state as state_mod
from defender_agent.model import Record
from defender_agent.runtime import Runtime


class _Broken:
    """A collector whose start, timers and fd callbacks raise (a bug in a collector)."""

    name = "broken"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.r, self.w = os.pipe()

    def start(self) -> None:
        self.rt.add_reader(self.r, self.on_read)
        self.rt.call_later(0.0, self.on_timer)
        raise RuntimeError("start failed")

    def on_read(self) -> None:
        os.read(self.r, 100)
        raise ValueError("reader failed")

    def on_timer(self) -> None:
        raise KeyError("timer failed")

    def stop(self) -> None:
        os.close(self.r)
        os.close(self.w)

    def save_state(self) -> dict[str, int]:
        return {}

    def skipped(self) -> dict[str, int]:
        return {}


def test_a_raising_collector_is_counted_and_logged_not_fatal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt = Runtime("t")
    broken = _Broken(rt)
    rt.collectors.append(broken)
    ticks: list[int] = []
    rt.call_every(0.01, lambda: ticks.append(1), first=0.0)
    rt.start(heartbeat_interval=3600, statistics_interval=3600)
    os.write(broken.w, b"x")
    for _ in range(5):
        rt.run_once(0.02)
    assert len(ticks) >= 2  # the loop kept running after the failures
    payload = rt.statistics_payload()
    assert payload["collectors"]["broken"]["errors"] == 3
    rt.shutdown()
    err = capsys.readouterr().err
    assert "start failed" in err and "reader failed" in err and "timer failed" in err


def test_state_save_survives_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # write(2) may write less than asked (a full disk, a signal): never rename half a file.
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:7]))

    store = state_mod.StateStore(str(tmp_path))
    data = {"login": {"files": {"/var/log/auth.log": {"inode": 12345, "offset": 67890}}}}
    monkeypatch.setattr(state_mod.os, "write", short_write)
    assert store.save(data)
    monkeypatch.undo()
    assert json.loads((tmp_path / "state.json").read_text()) == data


class _ListOutput:
    name = "list"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, record: Record, line: str) -> None:
        self.lines.append(line)

    def retry(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass

    def statistics(self) -> dict[str, int]:
        return {}


def test_a_burst_larger_than_the_queue_is_not_dropped() -> None:
    # One follower turn reads up to 1 MiB (~10,000 auth lines, e.g. the backlog after a
    # restart): more events than the queue holds. They must reach the outputs, not be lost.
    rt = Runtime("t", queue_max=8)
    out = _ListOutput()
    rt.outputs.append(out)

    def burst() -> None:
        for i in range(50):
            rt.emit("login", Record("event", {"event": "login-failed", "n": i}))

    rt.call_later(0.0, burst)
    rt.run_once(0.05)
    assert [json.loads(x)["payload"]["n"] for x in out.lines] == list(range(50))
    assert rt._counts["login"].dropped == 0
    rt.shutdown()


def test_kernels_without_epoll_fall_back_to_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONFIG_EPOLL=n (an embedded kernel option): epoll_create fails with ENOSYS."""

    def no_epoll() -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(select, "epoll", no_epoll)
    rt = Runtime("t")
    r, w = os.pipe()
    got: list[bytes] = []
    rt.add_reader(r, lambda: got.append(os.read(r, 100)))
    fired: list[float] = []
    rt.call_later(0.0005, lambda: fired.append(time.monotonic()))
    os.write(w, b"ping")
    started = time.monotonic()
    for _ in range(3):
        rt.run_once(0.05)
    assert got == [b"ping"]
    assert fired, "a sub-millisecond timer must still fire (rounded up, not spun on)"
    rt.remove_reader(r)
    rt.remove_reader(r)  # twice is harmless, as with epoll
    os.write(w, b"late")
    rt.run_once(0.01)
    assert got == [b"ping"] and time.monotonic() - started < 1.0
    os.close(r)
    os.close(w)
