"""Runner pieces that need no guest: accelerator choice and port selection."""

from __future__ import annotations

import os
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


def _fake_qemu(tmp_path: Path, body: str) -> str:
    """A stand-in QEMU: a shell script given the probe's arguments ($serial: its file)."""
    script = tmp_path / "fake-qemu"
    script.write_text(f'#!/bin/sh\nserial=$(printf "%s\\n" "$@" | sed -n "s/^file://p")\n{body}\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("body", "works"),
    [
        # the kernel prints its banner, then keeps running: KVM works
        ('printf "Linux version 6.1.0\\n" > "$serial"; exec sleep 30', True),
        # the firmware prints, the kernel never does (the nested-KVM hang seen here)
        ('printf "SeaBIOS (version 1.16)\\nBooting from ROM\\n" > "$serial"; exec sleep 30', False),
        # QEMU refuses at once (setting MSRs fails)
        ('echo "error: failed to set MSR 0x48f" >&2; exit 1', False),
    ],
)
def test_kvm_probe_boots_the_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str, works: bool
) -> None:
    monkeypatch.setattr(qemu_runner, "KVM_PROBE_SECONDS", 1.5)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"not a kernel")
    assert qemu_runner._probe_kernel(_fake_qemu(tmp_path, body), kernel) is works


def test_kvm_probe_cache_names_the_guest_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each guest kernel is probed once; another kernel is probed again."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is not usable here: the probe is never run")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probed: list[Path] = []

    def probe(_binary: str, kernel: Path) -> bool:
        probed.append(kernel)
        return False

    monkeypatch.setattr(qemu_runner, "_probe_kernel", probe)
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"1")
    second.write_bytes(b"22")
    for kernel in (first, first, second):
        assert qemu_runner.kvm_works("qemu-system-x86_64", kernel) is False
    assert probed == [first, second]
