"""Boot a qemuboot.conf image and talk to it over SSH.

`Guest` is the one object tests and the demo use: a context manager that
boots the image, waits until root can log in with the image's key, keeps that
ONE admin SSH connection open (so reading alerts later is not a new login from
10.0.2.2), and shuts the guest down cleanly through QMP.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import paramiko
from qemu.qmp.legacy import QEMUMonitorProtocol

from defender_tools import qemuboot
from defender_tools.errors import UserError

KVM_PROBE_SECONDS = 8.0
ACCEL_ENV = "DEFENDER_QEMU_ACCEL"


class GuestError(UserError):
    """The guest did not boot, answer SSH or shut down: one line plus the serial log path."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "defender-tools"


def kvm_works(qemu_bin: str, kernel: Path | None = None) -> bool:
    """Whether KVM really runs a guest here: nested setups can fail in two ways, and the
    answer (TCG then) is cached per QEMU binary, host kernel and guest kernel, since the
    probe costs seconds.

    QEMU may refuse at once (setting MSRs fails), or start and spin: on some nested hosts
    the firmware runs under KVM but a Linux kernel never prints a line (it resets or hangs
    as it enters long mode). So with a guest kernel the probe boots it, without an initrd,
    and KVM works only if the kernel's banner reaches the serial port within
    KVM_PROBE_SECONDS (well under a second where KVM works). Without one, a paused machine
    that stays up is all that can be checked.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    binary = shutil.which(qemu_bin)
    if binary is None:
        raise UserError(f"{qemu_bin}: QEMU binary not found on PATH")
    ident = f"{binary}:{os.stat(binary).st_mtime_ns}:{platform.release()}"
    if kernel is not None:
        info = kernel.stat()
        ident += f":{kernel.name}:{info.st_size}:{info.st_mtime_ns}"
    cache = _cache_dir() / "kvm-probe.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(ident), bool):
        return bool(known[ident])
    works = _probe_kernel(binary, kernel) if kernel is not None else _probe_paused(binary)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[ident] = works
        cache.write_text(json.dumps(known, indent=1))
    return works


_KVM_BASE = ["-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none"]


def _probe_paused(binary: str) -> bool:
    """A paused KVM machine that stays up (one that exits was refused before it ran)."""
    probe = [binary, *_KVM_BASE, "-monitor", "none", "-m", "64", "-S"]
    proc = subprocess.Popen(
        probe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(timeout=KVM_PROBE_SECONDS)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def _probe_kernel(binary: str, kernel: Path) -> bool:
    """Boot KERNEL under KVM (no initrd, no reboot) until its banner is on the serial port."""
    with tempfile.TemporaryDirectory(prefix="defender-kvm-probe-") as tmp:
        serial = Path(tmp) / "serial"
        serial.write_bytes(b"")
        probe = [
            binary,
            *_KVM_BASE,
            "-monitor",
            "none",
            "-m",
            "256",
            "-no-reboot",
            "-serial",
            f"file:{serial}",
            "-kernel",
            str(kernel),
            "-append",
            "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1",
        ]
        proc = subprocess.Popen(
            probe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + KVM_PROBE_SECONDS
        try:
            while time.monotonic() < deadline:
                if b"Linux version" in serial.read_bytes():
                    return True
                if proc.poll() is not None:
                    return b"Linux version" in serial.read_bytes()
                time.sleep(0.05)
            return False
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def choose_accel(qemu_bin: str, kernel: Path | None = None) -> str:
    """KVM when it really works, else TCG; DEFENDER_QEMU_ACCEL=tcg|kvm overrides."""
    forced = os.environ.get(ACCEL_ENV, "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    if forced:
        raise UserError(f"{ACCEL_ENV}={forced!r}: use 'kvm' or 'tcg'")
    return "kvm" if kvm_works(qemu_bin, kernel) else "tcg"


def default_key(cfg: qemuboot.BootConfig) -> Path:
    """The image's root key lives beside the conf: NAME.id_ed25519."""
    return cfg.deploy_dir / f"{cfg.image_link_name}.id_ed25519"


def ssh_banner(port: int, timeout: float = 2.0) -> bool:
    """True when sshd (not just QEMU's forwarder) answers on PORT."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class Guest:
    """One QEMU guest booted from a qemuboot.conf, with one long-lived root SSH session."""

    def __init__(
        self,
        conf: Path,
        *,
        ssh_port: int | None = None,
        mem: str | None = None,
        serial_log: Path | None = None,
        key: Path | None = None,
        accel: str | None = None,
        boot_timeout: float = 300.0,
        guest_forwards: list[tuple[str, int, int]] | None = None,
    ) -> None:
        self.cfg = qemuboot.read_conf(conf)
        self.ssh_port = ssh_port or free_port()
        self.mem = mem
        self.key = key or default_key(self.cfg)
        if not self.key.is_file():
            raise UserError(f"{self.key}: SSH key for root not found (give one with --key)")
        self.serial_log = serial_log or self._default_log()
        self.accel = accel or choose_accel(self.cfg.system_name, self.cfg.kernel)
        self.boot_timeout = boot_timeout
        self.guest_forwards = list(guest_forwards or [])
        self.boot_seconds: float | None = None
        # Created by start(): a Guest only asked for its command line leaves nothing behind.
        self._tmp = Path(tempfile.gettempdir()) / f"defender-qemu-{os.getpid()}-{self.ssh_port}"
        self._qmp_socket = self._tmp / "qmp.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: paramiko.SSHClient | None = None
        self._started = 0.0

    def _default_log(self) -> Path:
        log = self.cfg.conf.resolve().parent / f"{self.cfg.image_link_name}.serial.log"
        if os.access(log.parent, os.W_OK):
            return log
        return Path(tempfile.gettempdir()) / log.name

    @property
    def command(self) -> list[str]:
        opts = qemuboot.LaunchOptions(
            ssh_port=self.ssh_port,
            accel=self.accel,
            serial_log=self.serial_log,
            qmp_socket=self._qmp_socket,
            mem=self.mem,
            guest_forwards=self.guest_forwards,
        )
        return qemuboot.build_command(self.cfg, opts)

    @property
    def ssh_command(self) -> str:
        """What a person types to get the same root shell."""
        return (
            f"ssh -i {self.key} -p {self.ssh_port} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null root@127.0.0.1"
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Launch QEMU in the background; returns at once."""
        if shutil.which(self.cfg.system_name) is None:
            raise UserError(f"{self.cfg.system_name}: QEMU binary not found on PATH")
        self.serial_log.parent.mkdir(parents=True, exist_ok=True)
        self.serial_log.write_bytes(b"")
        self._tmp.mkdir(mode=0o700, exist_ok=True)
        stderr_log = self._tmp / "qemu.stderr"
        self._started = time.monotonic()
        with stderr_log.open("wb") as err:
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT
            )

    def check_alive(self) -> None:
        """Raise GuestError with QEMU's last words if it has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            err = (self._tmp / "qemu.stderr").read_text(errors="replace").strip()
            last = err.splitlines()[-1] if err else "no message"
            raise GuestError(
                f"QEMU exited with status {self._proc.returncode}: {last} "
                f"(serial log: {self.serial_log})"
            )

    def wait_for_ssh(self) -> float:
        """Block until root logs in with the key; return seconds since start()."""
        deadline = self._started + self.boot_timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if ssh_banner(self.ssh_port):
                try:
                    self._client = self.connect()
                except (paramiko.SSHException, OSError, EOFError):
                    time.sleep(1.0)
                    continue
                self.boot_seconds = round(time.monotonic() - self._started, 2)
                return self.boot_seconds
            # Slow on purpose: QEMU replays queued probes to sshd once it starts, as log noise.
            time.sleep(2.0)
        raise GuestError(
            f"no SSH login on 127.0.0.1:{self.ssh_port} within {self.boot_timeout:.0f} s "
            f"(serial log: {self.serial_log})"
        )

    def connect(self) -> paramiko.SSHClient:
        """A new root SSH session with the image's key (each one is a login the guest
        records); `ssh()` keeps one of these open."""
        client = paramiko.SSHClient()
        # A throwaway test guest on loopback: its host key is new on every build.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            "127.0.0.1",
            port=self.ssh_port,
            username="root",
            pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key)),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            banner_timeout=30,
            auth_timeout=30,
        )
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def ssh(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        """Run COMMAND as root over the one admin connection: (exit status, stdout, stderr)."""
        if self._client is None:
            raise GuestError("no SSH session: call wait_for_ssh() first")
        _stdin, stdout, stderr = self._client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out, err

    def run(self, command: str, timeout: float = 60.0) -> str:
        """Like ssh(), but a non-zero exit is an error naming the command."""
        rc, out, err = self.ssh(command, timeout)
        if rc != 0:
            raise GuestError(f"guest command failed ({rc}): {command}: {err.strip() or out}")
        return out

    def shutdown(self, timeout: float = 60.0) -> None:
        """Ask the guest to power off (ACPI), then quit QEMU if it does not in time."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._qmp(["system_powerdown"])
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._qmp(["quit"])
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _qmp(self, commands: list[str]) -> None:
        if not self._qmp_socket.exists():
            return
        qmp = QEMUMonitorProtocol(str(self._qmp_socket))
        try:
            qmp.connect(negotiate=True)
            for command in commands:
                qmp.cmd(command)
        except Exception:  # QEMU may be gone already; shutdown falls back to kill
            pass
        finally:
            with contextlib.suppress(Exception):
                qmp.close()

    def __enter__(self) -> Guest:
        self.start()
        try:
            self.wait_for_ssh()
        except BaseException:
            self.shutdown(timeout=5)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
