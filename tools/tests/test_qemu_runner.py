"""Runner pieces that need no guest: accelerator choice and port selection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from defender_tools import qemu_runner
from defender_tools.errors import UserError


def test_free_port_is_bindable_on_loopback() -> None:
    port = qemu_runner.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_accel_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(qemu_runner.ACCEL_ENV, "tcg")
    assert qemu_runner.choose_accel("qemu-system-x86_64") == "tcg"
    monkeypatch.setenv(qemu_runner.ACCEL_ENV, "warp")
    with pytest.raises(UserError, match="use 'kvm' or 'tcg'"):
        qemu_runner.choose_accel("qemu-system-x86_64")


def test_kvm_probe_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(qemu_runner.ACCEL_ENV, raising=False)
    first = qemu_runner.choose_accel("qemu-system-x86_64")
    assert first in ("kvm", "tcg")
    cache = tmp_path / "defender-tools" / "kvm-probe.json"
    if cache.exists():  # only written when /dev/kvm is usable enough to probe
        calls: list[object] = []
        monkeypatch.setattr(qemu_runner.subprocess, "Popen", lambda *a, **k: calls.append(a))
        assert qemu_runner.choose_accel("qemu-system-x86_64") == first
        assert calls == []
