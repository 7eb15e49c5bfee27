"""Follow the systemd journal through `journalctl --follow --output=json`.

Many systemd images (Debian's default, most Yocto images) have no syslog daemon: sshd's
lines exist only in the journal. Its files are a binary format the standard library
cannot read, so the agent runs journalctl, the journal's own reader, for the identifiers
it needs, and reads one JSON object per line from a pipe in its event loop:

    journalctl --follow --output=json --output-fields=... [--after-cursor=C | --lines=0]
        SYSLOG_IDENTIFIER=sshd SYSLOG_IDENTIFIER=sshd-session ...

Every entry carries its `__CURSOR`; the newest one handled is kept in state.json, so a
restarted agent asks for the entries after it (nothing lost, nothing twice). A first
start begins at the end of the journal, as a first start of a file follower does. If
journalctl exits (a journal rotated away under it, a killed process), it is started
again from the cursor, after 1 s, doubling to 60 s while it keeps failing.

With a cursor, the entries written since are read first by a journalctl without
--follow, whose exit says the backlog is done (`caught_up`); the following one starts
from where it ended. The login collector holds btmp records while the backlog is read,
so a record and its journal twin pair up however long the catch-up takes.

The child is started with os.posix_spawnp (no `subprocess`: it would import threading
and more for one pipe); it inherits nothing but the pipe's write ends, since Python's
own descriptors are close-on-exec.
"""

from __future__ import annotations

import errno
import json
import os
import signal

from defender_agent import log as _log

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

    OnEntry = Callable[[str, Optional[int], str, Optional[float]], None]

log = _log.get(__name__)

IDENTIFIERS = ("sshd", "sshd-session", "sshd-auth", "dropbear", "login")
FIELDS = "MESSAGE,SYSLOG_IDENTIFIER,_COMM,_PID,SYSLOG_PID,_UID"  # + __CURSOR, __REALTIME_...
# sshd, sshd-session, Dropbear and login(1) log as root (OpenSSH's unprivileged
# pre-auth process hands its messages to the root monitor). journald sets _UID from the
# sender's credentials, so an entry from another user that calls itself "sshd" (`logger
# -t sshd ...`) is a forgery: skipped and counted.
TRUSTED_UIDS = frozenset({"0"})
RECORD_MAX = 1 << 16  # one JSON entry; a longer one is dropped (and counted)
MESSAGE_MAX = 8192  # characters of MESSAGE handed to the parser
CURSOR_MAX = 512
STDERR_KEEP = 400  # bytes of journalctl's complaints kept for the log
RESTART_MIN = 1.0
RESTART_MAX = 60.0
STABLE = 60.0  # a journalctl that ran this long resets the restart delay
JOURNALD_SOCKET = "/run/systemd/journal/socket"  # exists while journald runs


def entry_fields(entry: dict[str, Any]) -> tuple[str, int | None, str, float | None]:
    """(identifier, pid, message, time) of one `journalctl -o json` entry. Never raises.

    journald exports a MESSAGE that is not valid UTF-8 as a list of byte values; it is
    decoded with replacement characters. The pid is the kernel's (_PID) when present: a
    process can write any SYSLOG_PID it likes.
    """
    program = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or ""
    if not isinstance(program, str):
        program = ""
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        try:
            message = bytes(message[:MESSAGE_MAX]).decode("utf-8", "replace")
        except (TypeError, ValueError):
            message = ""
    elif not isinstance(message, str):
        message = ""
    pid_text = str(entry.get("_PID") or entry.get("SYSLOG_PID") or "")
    pid = int(pid_text) if pid_text.isdigit() and len(pid_text) <= 10 else None
    usec = str(entry.get("__REALTIME_TIMESTAMP") or "")
    when = int(usec) / 1e6 if usec.isdigit() and len(usec) <= 20 else None
    return program[:64], pid, message[:MESSAGE_MAX], when


def valid_cursor(cursor: Any) -> bool:
    """A cursor as journalctl writes it (`s=...;i=...;b=...`): printable, no spaces."""
    return (
        isinstance(cursor, str)
        and 0 < len(cursor) <= CURSOR_MAX
        and cursor.isprintable()
        and " " not in cursor
    )


def find_program(command: str) -> str | None:
    """The path `command` runs as (a PATH search when it has no slash), or None."""
    if "/" in command:
        return command if os.access(command, os.X_OK) else None
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        path = os.path.join(folder or ".", command)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def journal_present(directory: str = "") -> bool:
    """Is there a journal to follow: DIRECTORY, or a running journald (a /var/log/journal
    left behind by a system that no longer runs journald receives nothing new)?"""
    if directory:
        return os.path.isdir(directory)
    return os.path.exists(JOURNALD_SOCKET)


class JournalFollower:
    """One journalctl child, restarted from the last cursor whenever it ends."""

    def __init__(
        self,
        ctx: Context,
        on_entry: OnEntry,
        cursor: Any = None,
        command: str = "journalctl",
        directory: str = "",
        identifiers: tuple[str, ...] = IDENTIFIERS,
    ) -> None:
        self.ctx = ctx
        self.on_entry = on_entry
        self.cursor: str | None = cursor if valid_cursor(cursor) else None
        self.command = command
        self.directory = directory
        self.identifiers = identifiers
        self.counts: dict[str, int] = {}
        self.pid: int | None = None
        self._out: int | None = None
        self._err: int | None = None
        self._buffer = b""
        self._discarding = False  # inside an over-long entry: drop up to its newline
        self._stderr = b""
        self._started_at = 0.0
        self._delay = RESTART_MIN
        self._restart: Timer | None = None
        self._stopped = False
        self._following = False  # the running journalctl is the --follow one
        self._backlog_done = False  # the backlog after the cursor has been read

    @property
    def caught_up(self) -> bool:
        """The following journalctl runs: every entry written so far has been handed on
        (or is in the pipe of one that just started at the journal's end)."""
        return self.pid is not None and self._following

    @property
    def running(self) -> bool:
        return self.pid is not None

    def argv(self, follow: bool = True) -> list[str]:
        args = [
            self.command,
            *(["--follow"] if follow else []),
            "--output=json",
            f"--output-fields={FIELDS}",
            "--all",  # fields over 4 KiB too (else null); RECORD_MAX bounds an entry
            "--no-pager",
            "--quiet",
        ]
        if self.directory:
            args.append(f"--directory={self.directory}")
        if self.cursor:
            args.append(f"--after-cursor={self.cursor}")
        elif follow:
            args.append("--lines=0")
        args.extend(f"SYSLOG_IDENTIFIER={name}" for name in self.identifiers)
        return args

    def describe(self) -> str:
        where = self.directory or "the system journal"
        return f"journalctl --follow on {where} ({', '.join(self.identifiers)})"

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    # --- the child ----------------------------------------------------------------
    def start(self) -> None:
        self._stopped = False
        self._spawn()

    def _spawn(self) -> None:
        self._restart = None
        if self._stopped:
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
        self._following = self.cursor is None or self._backlog_done
        try:
            self.pid = os.posix_spawnp(
                self.command,
                self.argv(self._following),
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsigdef=(signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGHUP),
                setsigmask=(),
            )
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            self._count("journalctl-unavailable")
            log.error(
                "cannot run %s: %s; retrying in %.0f s", self.command, exc.strerror, RESTART_MAX
            )
            self._schedule_restart(RESTART_MAX)
            return
        os.close(out_w)
        os.close(err_w)
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        self._out, self._err = out_r, err_r
        self._buffer, self._discarding, self._stderr = b"", False, b""
        self._started_at = self.ctx.clock.monotonic()
        self.ctx.add_reader(out_r, self._on_output)
        self.ctx.add_reader(err_r, self._on_stderr)
        self._count("journalctl-started")
        log.debug("started %s (pid %d)", " ".join(self.argv(self._following)), self.pid)

    def stop(self) -> None:
        self._stopped = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._drain_output()  # what it wrote before the signal is still handled
            self._reap(wait=True)
        self._close()

    def _close(self) -> None:
        for fd in (self._out, self._err):
            if fd is not None:
                self.ctx.remove_reader(fd)
                os.close(fd)
        self._out = self._err = None

    def _reap(self, wait: bool) -> int | None:
        """The child's exit status, once it has exited (waiting for it when `wait`)."""
        if self.pid is None:
            return None
        try:
            pid, status = os.waitpid(self.pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return None
        self.pid = None
        return os.waitstatus_to_exitcode(status)

    def _on_exit(self) -> None:
        """stdout reached its end: the child is ending; start another from the cursor."""
        code = self._reap(wait=False)
        if code is None and self.pid is not None:  # closed its output but lives on
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            code = self._reap(wait=True)
        self._drain_stderr()
        self._close()
        if not self._following and code == 0:  # the backlog is read: now follow
            self._backlog_done = True
            self._spawn()
            return
        self._backlog_done = False  # the next start reads the backlog first again
        ran = self.ctx.clock.monotonic() - self._started_at
        if ran >= STABLE:
            self._delay = RESTART_MIN
        complaint = self._stderr.decode("utf-8", "replace").strip().replace("\n", "; ")
        self._count("journalctl-exited")
        log.warning(
            "%s exited (status %s) after %.0f s%s; restarting in %.0f s",
            self.command,
            code,
            ran,
            f": {complaint[-STDERR_KEEP:]}" if complaint else "",
            self._delay,
        )
        self._schedule_restart(self._delay)
        self._delay = min(self._delay * 2, RESTART_MAX)

    def _schedule_restart(self, delay: float) -> None:
        if not self._stopped:
            self._restart = self.ctx.call_later(delay, self._spawn)

    # --- reading ------------------------------------------------------------------
    def _read(self, fd: int) -> bytes | None:
        """What the pipe has now; b"" at its end; None when nothing is waiting."""
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return None
            raise

    def _on_stderr(self) -> None:
        self._drain_stderr()

    def _drain_stderr(self) -> None:
        while self._err is not None:
            data = self._read(self._err)
            if not data:
                if data == b"":
                    self.ctx.remove_reader(self._err)
                    os.close(self._err)
                    self._err = None
                return
            self._stderr = (self._stderr + data)[-STDERR_KEEP:]

    def _on_output(self) -> None:
        if self._drain_output():
            self._on_exit()

    def _drain_output(self) -> bool:
        """Handle every complete entry waiting in the pipe; True at the pipe's end."""
        for _ in range(64):  # bounded: the loop has other work; epoll calls again
            if self._out is None:
                return False
            data = self._read(self._out)
            if data is None:
                return False
            if data == b"":
                return True
            self._feed(data)
        return False

    def _feed(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for raw in lines:
            if self._discarding:
                self._discarding = False
                continue
            self._entry(raw)
        if len(self._buffer) > RECORD_MAX:
            self._count("journal-entry-too-long")
            self._buffer = b""
            self._discarding = True

    def _entry(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            entry = json.loads(raw)
        except ValueError:
            self._count("journal-entry-unreadable")
            return
        if not isinstance(entry, dict):
            self._count("journal-entry-unreadable")
            return
        uid = entry.get("_UID")
        if uid is not None and str(uid) not in TRUSTED_UIDS:
            self._count("journal-untrusted-sender")
        else:
            self.on_entry(*entry_fields(entry))
        cursor = entry.get("__CURSOR")
        if valid_cursor(cursor):
            self.cursor = cursor
