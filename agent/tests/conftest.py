"""Shared helpers for the agent tests: temp configs, the real agent on virtual time, and
children that meet the real kernel.

Tests build the real agent (agent.build) with a ManualClock: files, inotify and the event
loop are real, but no test sleeps to cross a window. `advance(agent, seconds)` moves the
clock and fires every timer on its deadline; the loop never waits on a virtual clock.

Test modules cannot import each other (pytest's importlib mode), so what several share is
here, as a fixture, or as the hypothesis profile `fuzz`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings

from defender_agent import agent as agent_mod
from defender_agent import config
from defender_agent.clock import ManualClock
from defender_agent.collectors.common import timestamps
from defender_agent.linux import inet
from defender_agent.model import Record
from defender_agent.plugins import QuietOutput

# "Nov 27 08:00:00" in the tests' auth logs, in the year the clock below puts them in
T0 = timestamps.local(2026, 11, 27, 8, 0, 0) or 0.0
SRC = str(Path(agent_mod.__file__).resolve().parents[1])  # the directory above defender_agent

# The fuzz targets (`fuzz = settings.get_profile("fuzz")`): bounded for `make test`; run
# longer on demand with DEFENDER_FUZZ_EXAMPLES=20000.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("DEFENDER_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> config.Config:
    """A validated config whose files all live under tmp_path (sysinfo, process, network
    off; their events unaggregated when a test turns them on).

    Keyword names are sections with `__` for the dot: collectors__login={...}.
    """
    data: dict[str, Any] = {
        "agent": {"state_dir": str(tmp_path / "state"), "device_id": "test-device"},
        "collectors": {
            "login": {
                "auth_logs": [str(tmp_path / "auth.log")],
                "wtmp": str(tmp_path / "wtmp"),
                "btmp": str(tmp_path / "btmp"),
            },
            "sysinfo": {"enabled": False},
            # the host's processes and sockets: test_process.py and test_network.py turn
            # them on; their events are written at once (test_aggregate.py covers periods).
            # The network collector polls only: test_network_events.py opens its event
            # sources (conntrack, packet sockets) in network namespaces of its own.
            "process": {"enabled": False, "priority": "none"},
            "network": {
                "enabled": False,
                "priority": "none",
                "conntrack": "off",
                "connection_attempts": "off",
            },
        },
    }
    for name, values in sections.items():
        top, _, sub = name.partition("__")
        target = data.setdefault(top, {})
        if sub:
            target = target.setdefault(sub, {})
        target.update(values)
    return config.validate(data, str(tmp_path / "agent.toml"))


def advance_until(
    agent: agent_mod.Agent, until: Callable[[], bool], seconds: float, step: float = 0.05
) -> bool:
    """Move virtual time in steps of `step` until `until()` holds (True) or `seconds` pass."""
    if until():
        return True
    moved = 0.0
    while moved < seconds:
        agent.advance(step)
        moved += step
        if until():
            return True
    return False


@pytest.fixture(name="advance_until")
def advance_until_fixture() -> Callable[..., bool]:
    return advance_until


@pytest.fixture
def t0() -> float:
    """Epoch of the tests' "Nov 27 08:00:00" log stamps."""
    return T0


@pytest.fixture
def clock() -> ManualClock:
    """Virtual time, a few seconds after the tests' log stamps."""
    return ManualClock(T0 + 5)


@pytest.fixture
def cfg_factory(tmp_path: Path) -> Callable[..., config.Config]:
    def factory(**sections: dict[str, Any]) -> config.Config:
        return make_config(tmp_path, **sections)

    return factory


@pytest.fixture
def start_agent(clock: ManualClock) -> Iterator[Callable[[config.Config], agent_mod.Agent]]:
    """Build and start agents on the test's clock; every one is shut down at the end."""
    started: list[agent_mod.Agent] = []

    def start(cfg: config.Config) -> agent_mod.Agent:
        agent = agent_mod.build(cfg, clock=clock)
        agent.start(heartbeat_interval=3600, statistics_interval=3600)
        agent.run_once(0)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if not agent.loop.stopping:
            agent.stop()
            agent.shutdown()


def run_child(code: str, *wrapper: str, timeout: float = 60) -> str:
    """`code` in a fresh interpreter (optionally under `unshare ...`) that imports this
    checkout's agent; its stdout. A child that fails fails the test, with its stderr."""
    res = subprocess.run(
        [*wrapper, sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {SRC!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(name="run_child")
def run_child_fixture() -> Callable[..., str]:
    return run_child


def proc_line(local: str, lport: int, remote: str, rport: int, state: int, inode: int) -> str:
    """A /proc/net/{tcp,udp}[6] line as a little-endian kernel prints it."""

    def hexed(address: str) -> str:
        raw = inet.pton(address)
        return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)).hex().upper()

    return (
        f"0: {hexed(local)}:{lport:04X} {hexed(remote)}:{rport:04X} {state:02X} "
        f"0:0 0:0 0 0 0 {inode}\n"
    )


@pytest.fixture(name="proc_line")
def proc_line_fixture() -> Callable[..., str]:
    return proc_line


@pytest.fixture
def detector_section() -> Callable[..., dict[str, Any]]:
    """`detector_section(name, **overrides)`: the section `detectors.<name>` as create()
    gets it from a config without that table (config.defaults(): the schema's defaults,
    lists fresh), with `overrides` over it. The schema is the one copy of the defaults."""

    def section(name: str, **overrides: Any) -> dict[str, Any]:
        return {**config.defaults()[f"detectors.{name}"], **overrides}

    return section


class Collect(QuietOutput):
    """An output that keeps the payloads of the alerts written to it."""

    name = "collect"

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    def write(self, record: Record, line: str) -> None:
        if record.type == "alert":
            self.alerts.append(record.payload)


@pytest.fixture
def collecting_agent() -> Callable[..., tuple[agent_mod.Agent, Any, Collect]]:
    """`collecting_agent(t0, module, section)`: a started agent on a ManualClock at `t0`
    with the one detector `module.create()` builds from `section`, and a Collect output
    (`out.alerts`) that keeps the alerts it raises."""

    def start(
        t0: float, module: ModuleType, section: dict[str, Any]
    ) -> tuple[agent_mod.Agent, Any, Collect]:
        agent = agent_mod.Agent("t", ManualClock(t0))
        out = Collect()
        agent.add("outputs", out)
        name = module.__name__.rpartition(".")[2]
        det = module.create(agent.context("detectors", name), section, {})
        agent.add("detectors", det)
        agent.start(heartbeat_interval=86400, statistics_interval=86400)
        return agent, det, out

    return start
