"""The agent core: loop, pipeline and plugins on virtual time; failures are contained."""

from __future__ import annotations

import errno
import json
import os
import select
import time
from pathlib import Path
from typing import Any

import pytest

from defender_agent import agent as agent_mod
from defender_agent import state as state_mod
from defender_agent.agent import Agent
from defender_agent.clock import Clock, ManualClock
from defender_agent.model import Record
from defender_agent.plugins import Context, QuietOutput


class _Broken:
    """A collector whose start, timers and fd callbacks raise (a bug in a collector)."""

    name = "broken"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.r, self.w = os.pipe()

    def start(self) -> None:
        self.ctx.add_reader(self.r, self.on_read)
        self.ctx.call_later(0.0, self.on_timer)
        raise RuntimeError("start failed")

    def on_read(self) -> None:
        os.read(self.r, 100)
        raise ValueError("reader failed")

    def on_timer(self) -> None:
        raise KeyError("timer failed")

    def stop(self) -> None:
        self.ctx.remove_reader(self.r)
        os.close(self.r)
        os.close(self.w)

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return {}


class _ListOutput(QuietOutput):
    name = "list"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: Record, line: str) -> None:
        self.records.append(json.loads(line))

    def statistics(self) -> dict[str, int]:
        return {"written": len(self.records)}


def test_a_raising_collector_is_counted_and_logged_not_fatal(
    capsys: pytest.CaptureFixture[str], clock: ManualClock
) -> None:
    agent = Agent("t", clock)
    broken = _Broken(agent.context("collectors", "broken"))
    agent.add("collectors", broken)
    ticks: list[float] = []
    agent.loop.call_every(1.0, lambda: ticks.append(clock.monotonic()), first=0.0)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    os.write(broken.w, b"x")
    agent.advance(2.0)
    assert len(ticks) == 3  # the loop kept running after the failures: t = 0, 1, 2
    payload = agent.statistics_payload()
    assert payload["collectors"]["broken"]["errors"] == 3
    agent.shutdown()
    err = capsys.readouterr().err
    assert "start failed" in err and "reader failed" in err and "timer failed" in err


def test_timers_fire_on_virtual_time_without_sleeping(clock: ManualClock) -> None:
    agent = Agent("t", clock)
    fired: list[float] = []
    agent.loop.call_later(3600.0, lambda: fired.append(clock.monotonic()))
    agent.loop.call_every(600.0, lambda: fired.append(clock.monotonic()))
    started, real = clock.monotonic(), time.monotonic()
    agent.advance(3600.0)
    assert [t - started for t in fired] == [600, 1200, 1800, 2400, 3000, 3600, 3600]
    assert time.monotonic() - real < 5  # an hour of agent time, not of ours
    agent.shutdown()


def test_records_carry_source_time_and_observed_time(clock: ManualClock) -> None:
    agent = Agent("dev", clock)
    out = _ListOutput()
    agent.add("outputs", out)
    ctx = agent.context("collectors", "x")
    ctx.emit(Record("event", {"event": "a"}, time=clock.time() - 3600))  # from a backlog
    ctx.emit(Record("event", {"event": "b"}))  # a source without time: dated when seen
    agent.run_once(0)
    (a, b) = out.records
    assert a["time"] < a["observed"] and a["observed"] == b["observed"] == b["time"]
    assert a["observed"].endswith("Z") and len(a["observed"]) == len("2026-11-27T08:00:00.000Z")
    agent.shutdown()


def test_state_save_survives_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # write(2) may write less than asked (a full disk, a signal): never rename half a file.
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:7]))

    store = state_mod.StateStore(str(tmp_path))
    data = {"collectors.login": {"files": {"/var/log/auth.log": {"inode": 1, "offset": 678}}}}
    monkeypatch.setattr(state_mod.os, "write", short_write)
    assert store.save(data)
    monkeypatch.undo()
    assert json.loads((tmp_path / "state.json").read_text()) == data


def test_state_of_a_0_1_agent_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"login": {"files": {}}}')
    store = state_mod.StateStore(str(tmp_path))
    store.load()
    assert store.get("collectors.login", "login") == {"files": {}}
    assert store.get("collectors.sysinfo", "sysinfo") == {}


def test_a_burst_larger_than_the_queue_is_not_dropped(clock: ManualClock) -> None:
    # One follower turn reads up to 1 MiB (~10,000 auth lines, e.g. the backlog after a
    # restart): more events than the queue holds. They must reach the outputs, not be lost.
    agent = Agent("t", clock, queue_max=8)
    out = _ListOutput()
    agent.add("outputs", out)
    ctx = agent.context("collectors", "login")

    def burst() -> None:
        for i in range(50):
            ctx.emit(Record("event", {"event": "login-failed", "n": i}))

    agent.loop.call_later(0.0, burst)
    agent.run_once(0)
    assert [r["payload"]["n"] for r in out.records] == list(range(50))
    assert agent.pipeline.count("collectors.login").dropped == 0
    agent.shutdown()


def test_kernels_without_epoll_fall_back_to_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONFIG_EPOLL=n (an embedded kernel option): epoll_create fails with ENOSYS."""

    def no_epoll() -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(select, "epoll", no_epoll)
    agent = Agent("t", Clock())
    assert agent.loop.backend == "poll"
    r, w = os.pipe()
    got: list[bytes] = []
    agent.loop.add_reader(r, lambda: got.append(os.read(r, 100)))
    fired: list[float] = []
    agent.loop.call_later(0.0005, lambda: fired.append(time.monotonic()))
    os.write(w, b"ping")
    for _ in range(3):
        agent.run_once(0.05)
    assert got == [b"ping"]
    assert fired, "a sub-millisecond timer must still fire (rounded up, not spun on)"
    agent.loop.remove_reader(r)
    agent.loop.remove_reader(r)  # twice is harmless, as with epoll
    os.write(w, b"late")
    agent.run_once(0.01)
    assert got == [b"ping"]
    os.close(r)
    os.close(w)
    agent.shutdown()


class _Reader:
    """A collector that reads 'lines' in a reader callback and saves its position."""

    name = "reader"

    def __init__(self, ctx: Context, out: _ListOutput) -> None:
        self.ctx = ctx
        self.out = out
        self.position = 0
        self.written_at_save: list[tuple[int, int]] = []

    def start(self) -> None:
        pass

    def read(self, n: int) -> None:
        for _ in range(n):
            self.position += 1
            self.ctx.emit(Record("event", {"event": "line", "n": self.position}))

    def stop(self) -> None:
        pass

    def save_state(self) -> dict[str, Any]:
        self.written_at_save.append((self.position, len(self.out.records)))
        return {"position": self.position}

    def statistics(self) -> dict[str, int]:
        return {}


def test_a_saved_position_never_runs_ahead_of_what_outputs_took(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The periodic save fires inside a loop turn, possibly right after a reader queued
    records: they are written before the position that covers them is saved (a kill -9
    between the two once lost 162 failed logins in CI)."""
    agent = Agent("t", clock)
    agent.store = state_mod.StateStore(str(tmp_path))
    out = _ListOutput()
    agent.add("outputs", out)
    reader = _Reader(agent.context("collectors", "reader"), out)
    agent.add("collectors", reader)
    # a read and the periodic save due in the same turn, the read first
    agent.loop.call_later(1.0, lambda: reader.read(162))
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    agent.advance(1.0)
    saved = [(pos, written) for pos, written in reader.written_at_save if pos]
    assert saved and all(written >= pos for pos, written in saved), saved
    agent.stop()
    agent.shutdown()


def test_an_idle_agent_does_not_save_every_second_but_a_read_is_saved_within_one(
    tmp_path: Path, clock: ManualClock
) -> None:
    agent = Agent("t", clock)
    agent.store = state_mod.StateStore(str(tmp_path))
    out = _ListOutput()
    agent.add("outputs", out)
    reader = _Reader(agent.context("collectors", "reader"), out)
    agent.add("collectors", reader)
    agent.start(heartbeat_interval=3600, statistics_interval=3600)
    agent.advance(1.5)  # the save after start's own work
    before = len(reader.written_at_save)
    turns = agent.loop.calls
    agent.advance(20.0)  # nothing but the agent's own timers (output retries every 5 s)
    assert len(reader.written_at_save) == before  # not one save
    assert agent.loop.calls - turns == 8  # four output retries (the timer, the output), no more
    agent.loop.call_later(0.1, lambda: reader.read(3))
    agent.advance(0.1 + agent_mod.STATE_SAVE_INTERVAL)
    position, written = reader.written_at_save[-1]
    assert position == 3 and written >= 3  # the read, saved STATE_SAVE_INTERVAL after it
    agent.stop()
    agent.shutdown()
