"""Process collector: a `process-exec` event for every program started (and, when asked,
a `process-exit` event for every process that ends).

Source: the kernel's process connector (linux/cn_proc.py), which reports each exec as it
happens; the event carries only a pid, so /proc/<pid>/ is read at once. Where the kernel
refuses the connector (no CONFIG_PROC_EVENTS, EPERM without CAP_NET_ADMIN before Linux
6.6, a container's namespaces) /proc is polled instead: new processes show up at the next
scan, and one that lived less than `poll_interval` is not seen at all.

Races are the normal case, not an error: a process may end before its files are read
(`sh -c true` lives for a millisecond). Its event still goes out with the pid and what
was read, and the reason is counted. Command lines and paths are attacker-chosen: they
are capped and escaped before they leave this module.
"""

from __future__ import annotations

import errno
import os
import time
from collections import OrderedDict

from defender_agent import log as _log
from defender_agent.linux import cn_proc, proc_pid
from defender_agent.model import Record

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

    T = TypeVar("T")

log = _log.get(__name__)

NAME = "process"
MAX_TEXT = 4096  # characters kept of a command line or path; a cut one ends in "…"
CMDLINE_BYTES = 4 * MAX_TEXT  # a UTF-8 character is at most 4 bytes: enough for MAX_TEXT
MAX_USERS = 256  # uid -> user name
MAX_PARENTS = 256  # pid -> (executable, command line) of processes that start others
MAX_FORKS = 4096  # child pid -> the pid that forked it, from the connector's fork events
MAX_PROCESSES = 16384  # processes the /proc poller tracks; more (a fork bomb) are counted
MAX_CPUS = 4096  # per-CPU sequence numbers of the connector
MAX_PER_TURN = 256  # datagrams read per loop turn; the rest wait in the socket's buffer
PASSWD = "/etc/passwd"
PASSWD_CHECK = 10.0  # seconds between looks at /etc/passwd (a changed one empties the cache)
DELETED = b" (deleted)"  # what the kernel appends to the link of an unlinked file
SEQ_MASK = 0xFFFFFFFF
BOOT_REFRESH = 60.0  # seconds a computed boot time is trusted
# An exec in progress shows empty arguments for a moment: 1.4 ms at the median, 16 ms at
# most over 3000 execs of /bin/sleep measured here. Re-reads back off up to this long.
CMDLINE_WAIT = 0.064
SCAN_WAIT = 0.25  # seconds one /proc scan spends waiting for arguments, in all
ZOMBIE_STATES = ("Z", "X")  # ended, not yet (or just) reaped: no memory, no arguments


def text(raw: bytes, more: bool = False) -> tuple[str, bool]:
    """Attacker-chosen bytes as (text, cut): bytes that are not UTF-8 as \\xNN, at most
    MAX_TEXT characters, a cut one ending in "…". `more`: the input was already cut."""
    out = raw.decode("utf-8", "backslashreplace")
    if not more and len(out) <= MAX_TEXT:
        return out, False
    out = out[: MAX_TEXT - 1]
    escape = out.find("\\", len(out) - 3)  # never end on half of a \xNN
    return (out if escape < 0 else out[:escape]) + "…", True


def cmdline_text(raw: bytes, more: bool) -> tuple[str | None, bool]:
    """/proc/<pid>/cmdline's NUL-separated arguments joined by single spaces; None when
    empty (a zombie, or a process that has not exec'd its arguments yet)."""
    if not more:
        raw = raw.rstrip(b"\0")
    if not raw:
        return None, False
    return text(raw.replace(b"\0", b" "), more)


def wait_status(status: int) -> tuple[int | None, int | None, bool]:
    """(exit code, killing signal, core dumped) from a wait(2) status."""
    if status & 0x7F == 0:
        return (status >> 8) & 0xFF, None, False
    return None, status & 0x7F, bool(status & 0x80)


class ProcessCollector:
    name = NAME

    def __init__(self, ctx: Context, section: dict[str, Any]) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.root = section["proc"]
        self.backend_setting = section["backend"]
        self.poll_interval = float(section["poll_interval"])
        self.exits = bool(section["exits"])
        self.counts: dict[str, int] = {}
        self.backend = ""  # "netlink" or "proc" once started; "" when nothing runs
        self.reason = ""  # why that backend
        self.hz = _clock_ticks()
        self.hidden = _hides_others(self.root)
        self._conn: cn_proc.Connector | None = None
        self._timer: Timer | None = None
        self._seq: dict[int, int] = {}  # cpu -> last connector sequence number seen
        self._known: dict[int, tuple[int, int, bool]] = {}  # pid -> (inode, start, user)
        self._scanned = False
        self._scan_wait_left = SCAN_WAIT
        self._parents: OrderedDict[int, tuple[str | None, str | None]] = OrderedDict()
        # who forked each new process: /proc's PPid is 1 (or a subreaper) once the parent
        # has exited, which a shell running `cmd &` does before the child's exec is read
        self._forks: OrderedDict[int, int] = OrderedDict()
        self._users: OrderedDict[int, str | None] = OrderedDict()
        self._passwd: tuple[int, int, int] | None = None
        self._passwd_checked = -PASSWD_CHECK
        self._boot: float | None = None
        self._boot_read = 0.0
        self._boot_offset = 0.0

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        why = ""
        if self.backend_setting != "proc":
            why = self._start_netlink()
            if not why:
                self.backend, self.reason = "netlink", "process connector"
            elif self.backend_setting == "netlink":
                self._count("netlink-unavailable")
                log.error("process collector: netlink unavailable (%s): no process events", why)
                return
        if not self.backend:
            self.backend = "proc"
            self.reason = f"netlink: {why}" if why else "backend = proc"
            self._scan()  # the baseline: what runs already is not news
            self._timer = self.ctx.call_every(self.poll_interval, self._scan)
        log.info("process collector: %s", self.describe_backend())

    def describe_backend(self) -> str:
        if self.backend == "netlink":
            return "netlink process connector"
        if self.backend == "proc":
            return f"/proc polling every {self.poll_interval:g} s ({self.reason})"
        return "not running"

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._conn is not None:
            self.ctx.remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    def save_state(self) -> dict[str, Any]:
        return {}  # a restart re-reads nothing: the processes of the past are gone

    def statistics(self) -> dict[str, int]:
        out = dict(self.counts)
        if self.backend == "proc":
            out["tracked-processes"] = len(self._known)
        elif self._conn is not None:
            out["netlink-buffer-bytes"] = self._conn.rcvbuf  # what a burst may fill
        return out

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    # --- netlink ------------------------------------------------------------------
    def _start_netlink(self) -> str:
        """'' when listening, else why not."""
        conn, why = cn_proc.listen(self.counts)
        if conn is None:
            return why
        self._conn = conn
        self.ctx.add_reader(conn.fileno(), self._on_readable)
        return ""

    def _on_readable(self) -> None:
        """Read what waits, up to MAX_PER_TURN datagrams: the rest stays in the kernel's
        bounded buffer (and overflows there, counted) rather than in the agent's memory."""
        conn = self._conn
        if conn is None:
            return
        for _ in range(MAX_PER_TURN):
            try:
                data = conn.recv()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._count("netlink-overrun")  # the kernel dropped events for us
                self._parents.clear()  # their exits and execs may be among them
                continue
            self.feed(data)
        self._count("netlink-busy-turns")

    def feed(self, data: bytes) -> None:
        """One datagram from the connector (tests feed captured ones)."""
        for event in cn_proc.parse(data, self.counts):
            self._on_event(event)

    def _on_event(self, event: cn_proc.ProcEvent) -> None:
        self._track_sequence(event)
        what = event.what
        if what == cn_proc.PROC_EVENT_EXEC:
            self._parents.pop(event.tgid, None)  # a new program in that process
            self._emit_exec(event.tgid, "netlink")
        elif event.pid != event.tgid:
            return  # a thread starting or ending, not a process
        elif what == cn_proc.PROC_EVENT_FORK:
            self._parents.pop(event.pid, None)  # the pid now names a new process
            self._forks[event.pid] = event.parent
            self._forks.move_to_end(event.pid)
            if len(self._forks) > MAX_FORKS:
                self._forks.popitem(last=False)
        elif what == cn_proc.PROC_EVENT_EXIT:
            self._parents.pop(event.pid, None)
            self._forks.pop(event.pid, None)
            if self.exits:
                self._emit_exit(event.pid, "netlink", event.code)

    def _track_sequence(self, event: cn_proc.ProcEvent) -> None:
        """Count events the kernel dropped: each CPU numbers its messages 0, 1, 2, ...

        Acknowledgements take a number on kernels since 6.6 and carry the requester's on
        older ones, so one only moves the count on when it is the next number.
        """
        last = self._seq.get(event.cpu)
        if event.what == cn_proc.PROC_EVENT_NONE:
            if last is not None and event.seq == (last + 1) & SEQ_MASK:
                self._seq[event.cpu] = event.seq
            return
        if last is not None:
            gap = (event.seq - last - 1) & SEQ_MASK
            if gap >= 0x80000000:
                return  # older than the newest seen: late, not lost
            if gap:
                self._count("netlink-lost", gap)
                self._parents.clear()  # the lost ones may have changed them
                self._forks.clear()
        elif len(self._seq) >= MAX_CPUS:
            return
        self._seq[event.cpu] = event.seq

    # --- /proc polling ------------------------------------------------------------
    def _scan(self) -> None:
        """Diff the pids in /proc against the last scan; (pid, start time) is a process's
        identity, so a reused pid is a new process. The first scan is the baseline."""
        try:
            listed = proc_pid.list_pids(self.root)
        except OSError as exc:
            if not self.counts.get("scan-error"):  # once, not every second
                log.warning("process collector: cannot list %s: %s", self.root, exc)
            self._count("scan-error")
            return
        baseline = not self._scanned
        self._scan_wait_left = SCAN_WAIT
        new: list[tuple[int, tuple[int, int, int] | None]] = []
        for pid, inode in listed.items():
            old = self._known.get(pid)
            if old is not None and old[0] == inode != proc_pid.DIR_INO_UNKNOWN:
                continue  # the same directory entry: the same process, nothing to read
            is_new, stat = self._identify(pid, inode, old)
            if is_new and not baseline:
                new.append((pid, stat))
        for pid in [p for p in self._known if p not in listed]:
            self._ended(pid, self._known.pop(pid))
        self._scanned = True
        for pid, stat in new:
            self._emit_exec(pid, "proc", stat)

    def _identify(
        self, pid: int, inode: int, old: tuple[int, int, bool] | None
    ) -> tuple[bool, tuple[int, int, int] | None]:
        """Read a listed pid whose directory entry is new: (a new user process?, its stat;
        None when it ended between the listing and the read)."""
        try:
            stat = proc_pid.read_stat(self.root, pid)
        except (OSError, ValueError):
            if old is not None:  # it was known: this is its end, not a new process
                self._ended(pid, self._known.pop(pid))
                return False, None
            return True, None  # listed, so it ran: an event with what is known
        if old is not None and old[1] == stat[1]:
            self._known[pid] = (inode, old[1], old[2])  # the same process, entry re-made
            return False, None
        if old is not None:
            self._ended(pid, old)  # the pid was reused
        elif len(self._known) >= MAX_PROCESSES:
            self._count("table-full")
            return False, None
        user = not stat[2] & proc_pid.PF_KTHREAD
        self._known[pid] = (inode, stat[1], user)
        return user, stat

    def _ended(self, pid: int, known: tuple[int, int, bool]) -> None:
        self._parents.pop(pid, None)
        if self.exits and known[2]:
            self._emit_exit(pid, "proc", None)

    # --- events -------------------------------------------------------------------
    def _emit_exec(self, pid: int, backend: str, stat: tuple[int, int, int] | None = None) -> None:
        problems: set[str] = set()
        found = self.read_process(pid, backend, stat, problems)
        for reason in problems:
            self._count(reason)
        if found is not None:
            self.ctx.emit(Record("event", found[0], found[1]))

    def _emit_exit(self, pid: int, backend: str, status: int | None) -> None:
        code, signal, core = wait_status(status) if status is not None else (None, None, None)
        payload = {
            "event": "process-exit",
            "pid": pid,
            "exit_code": code,
            "signal": signal,
            "core_dumped": core,
            "backend": backend,
        }
        self.ctx.emit(Record("event", payload))  # no source time: dated when seen

    def read_process(
        self,
        pid: int,
        backend: str,
        stat: tuple[int, int, int] | None,
        problems: set[str],
    ) -> tuple[dict[str, Any], float | None] | None:
        """The process-exec payload of `pid` from what /proc still shows, and its start time;
        None for a process /proc hides from the agent (hidepid: not its to see).

        The most telling files first (stat, cmdline, exe): a short-lived process may be
        gone before the last read. What could not be read is None, its reason in
        `problems`.
        """
        if stat is None:
            stat = self._read(pid, problems, proc_pid.read_stat, self.root, pid)
            if "hidden-process" in problems:
                return None
        cmdline = self._read_cmdline(pid, problems, backend)
        exe = self._read(pid, problems, proc_pid.read_link, self.root, pid, "exe")
        ids = self._read(pid, problems, proc_pid.read_ids, self.root, pid)
        cwd = self._read(pid, problems, proc_pid.read_link, self.root, pid, "cwd")
        ppid = stat[0] if stat is not None else None
        forker = self._forks.get(pid)
        if forker is not None and stat is not None and forker != ppid:
            ppid = forker  # reparented since the fork: the parent that made it is the lineage
            problems.add("parent-gone-before-exec")
        start = self._start_time(stat[1]) if stat is not None else None
        command, cut = cmdline_text(*cmdline) if cmdline is not None else (None, False)
        if cut:
            problems.add("truncated-cmdline")
        executable, deleted = self._executable(pid, exe) if exe is not None else (None, None)
        parent_exe, parent_cmd = self._parent(ppid) if ppid else (None, None)
        payload = {
            "event": "process-exec",
            "pid": pid,
            "ppid": ppid,
            "uid": ids[0] if ids is not None else None,
            "euid": ids[1] if ids is not None else None,
            "user": self._user(ids[0]) if ids is not None else None,
            "executable": executable,
            "deleted": deleted,
            "cmdline": command,
            "cwd": text(cwd)[0] if cwd is not None else None,
            "parent_executable": parent_exe,
            "parent_cmdline": parent_cmd,
            "start_time": start,
            "backend": backend,
        }
        self._remember_parent(pid, executable, deleted, command)
        return payload, start

    def _read_cmdline(
        self, pid: int, problems: set[str], backend: str
    ) -> tuple[bytes, bool] | None:
        """The raw arguments; a scan waits out an exec in progress.

        An exec replaces the memory first and writes the new arguments into it a moment
        later (while it maps the program and its interpreter): in between, cmdline reads
        empty. A scan meets such a process often (its parent's fork is what made it new);
        the connector never does (it reports the exec once the arguments are in place).
        So for a scan, an empty read of a process that is neither ending (PF_EXITING,
        zombie) nor done is tried again after 0.5, 1, 2, ... ms, at most CMDLINE_WAIT
        seconds per process and SCAN_WAIT per scan (a flood of argument-less programs
        must not stall the agent); what is still empty goes out as null.
        """
        cmdline = self._read(pid, problems, proc_pid.read_cmdline, self.root, pid, CMDLINE_BYTES)
        if backend != "proc" or cmdline is None or cmdline[1] or cmdline[0].rstrip(b"\0"):
            return cmdline
        pause, waited = 0.0005, 0.0
        while waited + pause <= CMDLINE_WAIT:
            try:
                state, flags = proc_pid.read_state(self.root, pid)
            except (OSError, ValueError):
                return cmdline
            if state in ZOMBIE_STATES or flags & proc_pid.PF_EXITING:
                return cmdline  # ending: its memory, and its arguments, are gone for good
            if self._scan_wait_left < pause:
                self._count("cmdline-wait-budget-spent")
                return cmdline
            time.sleep(pause)
            waited += pause
            self._scan_wait_left -= pause
            pause *= 2
            again = self._read(pid, problems, proc_pid.read_cmdline, self.root, pid, CMDLINE_BYTES)
            if again is None:
                return None
            if again[1] or again[0].rstrip(b"\0"):
                self._count("cmdline-read-again")
                return again
        self._count("cmdline-empty")
        return cmdline

    def _read(self, pid: int, problems: set[str], func: Callable[..., T], *args: Any) -> T | None:
        """func(*args), or None with the reason added to `problems`."""
        try:
            return func(*args)
        except (FileNotFoundError, ProcessLookupError):
            problems.add("hidden-process" if self._is_hidden(pid) else "gone-before-read")
        except PermissionError:
            problems.add("access-denied")  # exe and cwd of others need ptrace access
        except OSError:
            problems.add("read-error")
        except ValueError:
            problems.add("unparsable-proc-file")
        return None

    def _is_hidden(self, pid: int) -> bool:
        """Under hidepid=invisible a process of another user looks gone: it is hidden when
        the kernel still knows its pid (signal 0 only checks that it exists)."""
        if not self.hidden:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True  # EPERM: it exists, and belongs to someone else
        return True

    def _executable(self, pid: int, raw: bytes) -> tuple[str, bool]:
        """The path of the running program and whether it was deleted. The kernel marks an
        unlinked file with " (deleted)"; a file really named so is told apart by being
        the very file the process runs."""
        deleted = False
        if raw.endswith(DELETED):
            deleted = not _same_file(f"{self.root}/{pid}/exe", raw)
            if deleted:
                raw = raw[: -len(DELETED)]
        return text(raw)[0], deleted

    def _parent(self, ppid: int) -> tuple[str | None, str | None]:
        """The parent's executable (as the kernel shows it) and command line; cached, since
        one shell or supervisor starts many children."""
        cached = self._parents.get(ppid)
        if cached is not None:
            self._parents.move_to_end(ppid)
            return cached
        problems: set[str] = set()
        exe = self._read(ppid, problems, proc_pid.read_link, self.root, ppid, "exe")
        cmdline = self._read(ppid, problems, proc_pid.read_cmdline, self.root, ppid, CMDLINE_BYTES)
        for reason in problems:
            self._count(f"parent-{reason}")
        found = (
            text(exe)[0] if exe is not None else None,
            cmdline_text(*cmdline)[0] if cmdline is not None else None,
        )
        if "gone-before-read" not in problems:
            self._remember(self._parents, ppid, found, MAX_PARENTS)
        return found

    def _remember_parent(
        self, pid: int, executable: str | None, deleted: bool | None, cmdline: str | None
    ) -> None:
        """Keep a fresh process's image for its own children, as the kernel would show it."""
        if executable is not None or cmdline is not None:
            shown = executable + DELETED.decode() if executable and deleted else executable
            self._remember(self._parents, pid, (shown, cmdline), MAX_PARENTS)

    def _user(self, uid: int) -> str | None:
        """The passwd name of `uid`, cached; the cache empties when /etc/passwd changes."""
        now = self.clock.monotonic()
        if now - self._passwd_checked >= PASSWD_CHECK:
            self._passwd_checked = now
            try:
                st = os.stat(PASSWD)
                version: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                version = None
            if version != self._passwd:
                self._passwd = version
                self._users.clear()
        if uid in self._users:
            self._users.move_to_end(uid)
            return self._users[uid]
        import pwd  # built into the interpreter: costs nothing to import

        try:
            name: str | None = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError):
            name = None
        self._remember(self._users, uid, name, MAX_USERS)
        return name

    def _start_time(self, ticks: int) -> float | None:
        """Epoch seconds: boot time + starttime / CLK_TCK."""
        boot = self._boot_time()
        return None if boot is None else round(boot + ticks / self.hz, 3)

    def _boot_time(self) -> float | None:
        """The wall-clock time of boot: now minus /proc/uptime, to 10 ms (/proc/stat's
        btime is whole seconds, rounded down: up to 1 s early). Computed again when the
        wall clock was stepped (NTP on a device without an RTC) or a minute passed (NTP
        slewing), from btime where /proc/uptime cannot be read."""
        mono = self.clock.monotonic()
        offset = self.clock.time() - mono
        fresh = mono - self._boot_read < BOOT_REFRESH and abs(offset - self._boot_offset) < 0.1
        if self._boot is not None and fresh:
            return self._boot
        self._boot_read, self._boot_offset = mono, offset
        try:
            self._boot = self.clock.time() - proc_pid.uptime(self.root)
        except (OSError, ValueError, IndexError):
            try:
                self._boot = proc_pid.boot_time(self.root)
            except (OSError, ValueError):
                self._count("boot-time-unreadable")
                self._boot = None
        return self._boot

    @staticmethod
    def _remember(table: OrderedDict[int, Any], key: int, value: Any, limit: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)


def _same_file(a: str, b: bytes) -> bool:
    try:
        first, second = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK")) or 100
    except (ValueError, OSError):
        return 100  # USER_HZ on every Linux architecture


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> ProcessCollector:
    return ProcessCollector(ctx, section)


def describe(section: dict[str, Any]) -> list[str]:
    """The backend the collector would use and why (the connector is probed, then closed),
    and what /proc lets this user see."""
    interval = f"/proc polling every {section['poll_interval']:g} s"
    if section["backend"] == "proc":
        lines = [f"backend: {interval} (backend = proc)"]
    else:
        conn, why = cn_proc.listen({})
        if conn is not None:
            conn.close()
            lines = ["backend: netlink process connector"]
        elif section["backend"] == "netlink":
            lines = [f'backend: netlink UNAVAILABLE ({why}): no process events; "auto" polls /proc']
        else:
            lines = [f"backend: {interval} (netlink: {why})"]
    lines.append(f"process-exit events: {'on' if section['exits'] else 'off (exits = false)'}")
    return lines + _visibility(section["proc"])


def _can_ptrace(root: str) -> bool:
    """Whether the agent has CAP_SYS_PTRACE (True when `root` is not this system's procfs:
    nothing to say about it)."""
    try:
        return bool(proc_pid.capabilities(root) >> proc_pid.CAP_SYS_PTRACE & 1)
    except (OSError, ValueError):
        return True


def _hides_others(root: str) -> bool:
    """hidepid hides a process from whoever may not ptrace it: CAP_SYS_PTRACE sees all."""
    return proc_pid.hidepid(root) not in (None, "0", "off") and not _can_ptrace(root)


def _visibility(root: str) -> list[str]:
    """What the agent's user cannot see of other users' processes."""
    lines = []
    if _hides_others(root):
        lines.append(
            "other users' processes are hidden (/proc mounted with hidepid, as systemd's "
            "ProtectProc=invisible does, and no CAP_SYS_PTRACE): they are not reported "
            "(the connector's are counted as hidden-process)"
        )
    if not _can_ptrace(root):
        lines.append(
            "no CAP_SYS_PTRACE: executable and cwd of other users' (and more privileged) "
            "processes are unreadable: null in their events, counted as access-denied"
        )
    return lines
