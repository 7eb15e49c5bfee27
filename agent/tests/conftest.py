"""Shared helpers for the agent tests: temp configs and driving the real runtime."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from defender_agent import collectors, config


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> config.Config:
    """A validated config whose files all live under tmp_path."""
    data: dict[str, Any] = {
        "agent": {"state_dir": str(tmp_path / "state"), "device_id": "test-device"},
        "collectors": {
            "login": {
                "auth_logs": [str(tmp_path / "auth.log")],
                "wtmp": str(tmp_path / "wtmp"),
                "btmp": str(tmp_path / "btmp"),
            },
            "sysinfo": {"enabled": False},
        },
    }
    for name, values in sections.items():
        top, _, sub = name.partition("__")
        target = data.setdefault(top, {})
        if sub:
            target = target.setdefault(sub, {})
        target.update(values)
    return config.validate(data, str(tmp_path / "agent.toml"), collectors.available())


def _drive(rt: Any, until: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Run the loop in short turns until `until()` holds or the timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rt.run_once(0.02)
        if until():
            return True
    return False


@pytest.fixture
def drive() -> Callable[..., bool]:
    return _drive


@pytest.fixture
def cfg_factory(tmp_path: Path) -> Callable[..., config.Config]:
    def factory(**sections: dict[str, Any]) -> config.Config:
        return make_config(tmp_path, **sections)

    return factory
