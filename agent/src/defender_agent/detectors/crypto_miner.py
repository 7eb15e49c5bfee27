"""Crypto-miner detector: miners by name and arguments, by pool connection, and by
behaviour so that a renamed one is still caught.

Evidence is scored per process (pid and start time). A stratum pool URL in the command
line (`stratum+tcp://...`: the mining protocol itself, Falco's rule) scores 2; the
executable's (or argv[0]'s) basename equal to a miner's name scores 1; a miner option
(`--donate-level`, `--coin`, `-a rx/0`, ...) scores 1; an outbound connection to a pool
port scores 1, and for a process that carries a miner's name any outbound connection
does (a pool may listen on 443). Two points raise `CryptoMiner`. So a name alone (an
`xmrig` binary that does nothing, a `xmrig-docs-viewer` that is not even the name), an
option alone, or a pool port alone (3333, 4444 and 5555 are common development ports)
never raises it.

Behaviour: a process with an outbound TCP connection whose program lies in a writable
place (/tmp, /dev/shm, /var/tmp, a home) or was deleted after it started becomes a
candidate. Its CPU time (utime + stime of /proc/PID/stat) is sampled every
`sample_interval` seconds of the runtime clock; when it held at least `cpu_percent` of
one CPU on average over the last `cpu_window` seconds, the connection is at least
`min_connection_age` old and still established (the process's own net table), the alert
is raised whatever the program's name. At most `max_candidates` are sampled at once, and
the timer runs only while there are some. A compiler at 100 % CPU with no connection is
never a candidate.

The stratum JSON-RPC methods (`mining.subscribe`, `login`) are not looked for: no event
carries a connection's payload.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict, deque

from defender_agent.detectors.incidents import Incidents
from defender_agent.linux import inet, proc_net, proc_pid
from defender_agent.plugins import Timed

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.loop import Timer
    from defender_agent.model import Record
    from defender_agent.plugins import Context

NAME = "crypto_miner"
ALERT = "CryptoMiner"
SEVERITY = "high"
MAX_CMDLINE = 4096  # characters of a command line looked at (the collector's own cap)
MAX_TOKENS = 256  # arguments of one command line looked at
MAX_SHOWN = 512  # characters of a command line or path written in an alert
MAX_OPTIONS = 8  # miner options listed in one alert
MAX_ROWS = 4096  # rows of a process's net table read to find its connection
TCP_ESTABLISHED = 1  # include/net/tcp_states.h
DELETED = " (deleted)"
MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses
REMEDIATION = (
    "Kill the process, remove its executable and whatever restarts it (cron, init scripts, "
    "systemd units, ~/.profile), block the pool address, and find how it got in: a miner "
    "is usually what an attacker runs after a weak password or an exposed service."
)


def _basename(path: str) -> str:
    return path.rpartition("/")[2].lower()


def _split_exe(exe: Any, deleted: Any) -> tuple[str | None, bool]:
    """(path without the kernel's " (deleted)" mark, deleted)."""
    if not isinstance(exe, str) or not exe:
        return None, bool(deleted)
    exe = exe[:MAX_CMDLINE]
    if exe.endswith(DELETED):
        return exe[: -len(DELETED)], True
    return exe, bool(deleted) or exe.startswith("/memfd:")


class _Proc:
    """What is known of one process that has some evidence (or a writable program)."""

    __slots__ = ("cmdline", "deleted", "exe", "name", "options", "pid", "start", "url")

    def __init__(self, pid: int, start: Any, exe: str | None, deleted: bool) -> None:
        self.pid = pid
        self.start = start if isinstance(start, (int, float)) else None
        self.exe = exe
        self.deleted = deleted
        self.cmdline: str | None = None
        self.name = False
        self.url: str | None = None
        self.options: list[str] = []

    def key(self) -> str:
        return f"{self.pid} {self.start if self.start is not None else self.exe}"


class _Candidate:
    """A process sampled for CPU: its connection and its recent CPU times."""

    __slots__ = ("conn", "conn_time", "proc", "samples", "starttime")

    def __init__(self, proc: _Proc, conn: tuple[str, int, str, int], conn_time: float) -> None:
        self.proc = proc
        self.conn = conn  # local address, local port, remote address, remote port
        self.conn_time = conn_time  # event time the connection was seen
        self.starttime: int | None = None  # /proc/PID/stat field 22: tells pid reuse
        self.samples: deque[tuple[float, int]] = deque()  # (monotonic, utime + stime ticks)


def read_cpu(proc: str, pid: int) -> tuple[int, int]:
    """(starttime, utime + stime) in clock ticks from /proc/<pid>/stat (proc(5) fields 22,
    14 and 15), counted from the last ")" as the name may hold anything."""
    data = proc_pid.read(f"{proc}/{pid}/stat", 4096)
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        raise ValueError(f"{proc}/{pid}/stat: {len(fields)} fields after the name")
    return int(fields[19]), int(fields[11]) + int(fields[12])


class CryptoMinerDetector(Timed):
    name = NAME

    def __init__(
        self,
        ctx: Context,
        names: list[str] | tuple[str, ...],
        pool_urls: list[str] | tuple[str, ...],
        options: list[str] | tuple[str, ...],
        pool_ports: list[str] | tuple[str, ...],
        writable_paths: list[str] | tuple[str, ...],
        cpu_percent: float = 80.0,
        cpu_window: float = 120.0,
        sample_interval: float = 10.0,
        min_connection_age: float = 180.0,
        max_candidates: int = 16,
        max_processes: int = 256,
        proc: str = "/proc",
    ) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.names = {n.lower() for n in names if n}
        self.pool_urls = tuple(u.lower() for u in pool_urls if u)
        self.single_options = {o.lower() for o in options if o and " " not in o}
        self.pair_options = {" ".join(o.lower().split()) for o in options if o and " " in o}
        self.pool_ports = {_port(p) for p in pool_ports}
        self.writable = tuple(p if p.endswith("/") else p + "/" for p in writable_paths if p)
        self.cpu_fraction = cpu_percent / 100.0
        self.cpu_window = cpu_window
        self.sample_interval = sample_interval
        self.min_connection_age = min_connection_age
        self.max_candidates = max_candidates
        self.max_processes = max_processes
        self.proc = proc
        # a miner runs for days: its incident is written again at most every 10 minutes
        self.incidents = Incidents(quiet=900.0, update_every=600.0)
        self._procs: OrderedDict[int, _Proc] = OrderedDict()
        self._candidates: OrderedDict[int, _Candidate] = OrderedDict()
        self._timer: Timer | None = None
        self._ticks = float(_clock_ticks())
        self.counts = {
            "processes-evicted": 0,
            "candidates-evicted": 0,
            "candidates-gone": 0,
            "samples": 0,
            "sample-errors": 0,
            "pool-port-only": 0,
            "name-only": 0,
            "connection-closed": 0,
            "connection-check-unavailable": 0,
            "no-pid": 0,
        }

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        pass  # the sampler runs only while there are candidates

    def statistics(self) -> dict[str, int]:
        return {
            **self.counts,
            **self.incidents.counts,
            "tracked": len(self._procs),
            "candidates": len(self._candidates),
        }

    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        event = payload.get("event")
        if event == "process-exec":
            return self._exec(payload, record.time)
        if event == "connection" and payload.get("direction") == "out":
            return self._connection(payload, record.time)
        return []

    def _exec(self, payload: dict[str, Any], when: float | None) -> list[Record]:
        pid = payload.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            self.counts["no-pid"] += 1
            return []
        self._procs.pop(pid, None)  # an exec replaces what the pid ran before
        self._candidates.pop(pid, None)
        exe, deleted = _split_exe(payload.get("executable"), payload.get("deleted"))
        proc = _Proc(pid, payload.get("start_time"), exe, deleted)
        cmdline = payload.get("cmdline")
        tokens: list[str] = []
        if isinstance(cmdline, str) and cmdline:
            proc.cmdline = cmdline[:MAX_SHOWN]
            tokens = cmdline[:MAX_CMDLINE].split(None, MAX_TOKENS)[:MAX_TOKENS]
        proc.name = bool(exe and _basename(exe) in self.names) or bool(
            tokens and _basename(tokens[0]) in self.names
        )
        self._arguments(proc, cmdline if isinstance(cmdline, str) else "", tokens)
        if not (proc.name or proc.url or proc.options or self._writable(proc)):
            return []
        self._remember(proc)
        if self._score(proc, False) >= 2:
            return self._alert(proc, when, None)
        if proc.name and not proc.url and not proc.options:
            self.counts["name-only"] += 1
        return []

    def _arguments(self, proc: _Proc, cmdline: str, tokens: list[str]) -> None:
        lowered = cmdline[:MAX_CMDLINE].lower()
        for marker in self.pool_urls:
            if marker in lowered:
                proc.url = marker
                break
        found: list[str] = []
        for i, token in enumerate(tokens[1:], 1):
            low = token.lower()
            option = low.partition("=")[0]
            if option in self.single_options and option not in found:
                found.append(option)
            if i + 1 < len(tokens) and self.pair_options:
                pair = f"{low} {tokens[i + 1].lower()}"
                if pair in self.pair_options and pair not in found:
                    found.append(pair)
            if len(found) >= MAX_OPTIONS:
                break
        proc.options = found

    def _connection(self, payload: dict[str, Any], when: float | None) -> list[Record]:
        pid = payload.get("pid")
        port = payload.get("remote_port")
        pool_port = isinstance(port, int) and port in self.pool_ports
        if not isinstance(pid, int) or isinstance(pid, bool):
            self.counts["no-pid"] += 1
            if pool_port:
                self.counts["pool-port-only"] += 1
            return []
        exe, deleted = _split_exe(payload.get("executable"), False)
        proc = self._procs.get(pid)
        if proc is not None and exe is not None and proc.exe is not None and proc.exe != exe:
            self._procs.pop(pid, None)  # the pid now runs another program
            self._candidates.pop(pid, None)
            proc = None
        if proc is None:
            proc = _Proc(pid, None, exe, deleted)
            proc.name = bool(exe and _basename(exe) in self.names)
        else:
            proc.deleted = proc.deleted or deleted
            self._procs.move_to_end(pid)
        out: list[Record] = []
        network = pool_port or proc.name
        if network and self._score(proc, True) >= 2:
            remote = (str(payload.get("remote_address"))[:64], port)
            out = self._alert(proc, when, remote)
        elif pool_port:
            self.counts["pool-port-only"] += 1
        if self._writable(proc) and payload.get("protocol", "tcp") == "tcp":
            self._remember(proc)
            self._candidate(proc, payload, when)
        elif proc.name or proc.options or proc.url:
            self._remember(proc)
        return out

    # --- scoring and alerts ---------------------------------------------------------
    def _score(self, proc: _Proc, network: bool) -> int:
        return 2 * bool(proc.url) + proc.name + bool(proc.options) + network

    def _writable(self, proc: _Proc) -> bool:
        return proc.deleted or bool(proc.exe and proc.exe.startswith(self.writable))

    def _evidence(self, proc: _Proc, remote: tuple[str, Any] | None) -> list[str]:
        found = []
        if proc.name:
            found.append("miner-name")
        if proc.url:
            found.append(f"pool-url:{proc.url}")
        found += [f"miner-option:{o}" for o in proc.options]
        if remote is not None:
            kind = "pool-port" if remote[1] in self.pool_ports else "connection"
            found.append(f"{kind}:{remote[1]}")
        return found

    def _alert(
        self,
        proc: _Proc,
        when: float | None,
        remote: tuple[str, Any] | None,
        evidence: list[str] | None = None,
        cpu: float | None = None,
    ) -> list[Record]:
        when = self.clock.time() if when is None else when
        found = evidence if evidence is not None else self._evidence(proc, remote)
        exe = proc.exe[:MAX_SHOWN] if proc.exe else None
        what = exe or f"pid {proc.pid}"
        if cpu is not None:
            text = (
                f"{what} held {cpu:.0f} % of a CPU for {self.cpu_window:g} s with a "
                f"long-lived outbound connection to {remote[0] if remote else '?'}:"
                f"{remote[1] if remote else '?'}, from a "
                f"{'deleted' if proc.deleted else 'writable'} program: a miner's behaviour"
            )
        else:
            text = f"{what} looks like a crypto miner ({', '.join(found)})"
        detail: dict[str, Any] = {
            "pid": proc.pid,
            "executable": exe,
            "deleted": proc.deleted,
            "cmdline": proc.cmdline,
            "evidence": found,
            "remote_address": remote[0] if remote else None,
            "remote_port": remote[1] if remote else None,
        }
        if cpu is not None:
            detail["cpu_percent"] = round(cpu, 1)
        return self.incidents.found(ALERT, proc.key(), when, SEVERITY, text, REMEDIATION, detail)

    # --- tables -----------------------------------------------------------------------
    def _remember(self, proc: _Proc) -> None:
        self._procs[proc.pid] = proc
        self._procs.move_to_end(proc.pid)
        while len(self._procs) > self.max_processes:
            pid, _old = self._procs.popitem(last=False)
            self._candidates.pop(pid, None)
            self.counts["processes-evicted"] += 1

    def _candidate(self, proc: _Proc, payload: dict[str, Any], when: float | None) -> None:
        lport, rport = payload.get("local_port"), payload.get("remote_port")
        conn = (
            str(payload.get("local_address"))[:64],
            lport if isinstance(lport, int) else -1,
            str(payload.get("remote_address"))[:64],
            rport if isinstance(rport, int) else -1,
        )
        seen = self.clock.time() if when is None else when
        cand = self._candidates.get(proc.pid)
        if cand is not None:
            cand.conn, cand.conn_time, cand.proc = conn, seen, proc  # its newest connection
            return
        self._candidates[proc.pid] = _Candidate(proc, conn, seen)
        while len(self._candidates) > self.max_candidates:
            self._candidates.popitem(last=False)
            self.counts["candidates-evicted"] += 1
        if self._timer is None:
            self._timer = self.ctx.call_every(self.sample_interval, self._sample, first=0.0)

    # --- behaviour: CPU sampling on the runtime clock -------------------------------
    def _sample(self) -> None:
        now = self.clock.monotonic()
        for pid in list(self._candidates):
            cand = self._candidates[pid]
            try:
                starttime, ticks = read_cpu(self.proc, pid)
            except (FileNotFoundError, ProcessLookupError):
                del self._candidates[pid]  # it ended: nothing left to watch
                self.counts["candidates-gone"] += 1
                continue
            except (OSError, ValueError):
                del self._candidates[pid]  # unreadable (hidepid, a bad file): cannot judge
                self.counts["sample-errors"] += 1
                continue
            self.counts["samples"] += 1
            if cand.starttime is None:
                cand.starttime = starttime
            elif cand.starttime != starttime:
                del self._candidates[pid]  # the pid was reused
                self.counts["candidates-gone"] += 1
                continue
            samples = cand.samples
            samples.append((now, ticks))
            while len(samples) > 2 and now - samples[1][0] >= self.cpu_window:
                samples.popleft()
            for alert in self._judge(cand, now):
                self.ctx.emit(alert)
        if not self._candidates and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _judge(self, cand: _Candidate, now: float) -> list[Record]:
        first_time, first_ticks = cand.samples[0]
        elapsed = now - first_time
        if elapsed < self.cpu_window or elapsed <= 0:
            return []
        cpu = (cand.samples[-1][1] - first_ticks) / self._ticks / elapsed
        if cpu < self.cpu_fraction:
            return []
        wall = self.clock.time()
        if wall - cand.conn_time < self.min_connection_age:
            return []
        if not self._established(cand):
            self.counts["connection-closed"] += 1
            return []
        proc = cand.proc
        remote = (cand.conn[2], cand.conn[3])
        found = ["cpu", "deleted-executable" if proc.deleted else "writable-path"]
        found += self._evidence(proc, remote)
        cand.samples.clear()  # the next finding of this incident needs a new window
        return self._alert(proc, wall, remote, found, cpu * 100)

    def _established(self, cand: _Candidate) -> bool:
        """Whether the candidate's connection is still established in its own net table;
        True (and counted) when that cannot be read."""
        _local, lport, remote, rport = cand.conn
        try:
            want = inet.pton(remote)
        except ValueError:
            self.counts["connection-check-unavailable"] += 1
            return True
        mapped = MAPPED + want if len(want) == 4 else want  # an IPv4 peer of an IPv6 socket
        readable = False
        for table in ("tcp", "tcp6"):
            try:
                rows, _garbage, _complete = proc_net.read_table(
                    f"{self.proc}/{cand.proc.pid}/net/{table}", MAX_ROWS, sys.byteorder
                )
            except OSError:
                continue
            readable = True
            for row in rows:
                same = row[1] == TCP_ESTABLISHED and row[3] == lport and row[5] == rport
                if same and row[4] in (want, mapped):
                    return True
        if not readable:
            self.counts["connection-check-unavailable"] += 1
            return True
        return False


def _port(text: Any) -> int:
    value = str(text).strip()
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"pool_ports: {text!r} is not a port number")
    return int(value)


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK") or 100
    except (ValueError, OSError, AttributeError):
        return 100


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> CryptoMinerDetector:
    return CryptoMinerDetector(
        ctx,
        names=list(section["names"]),
        pool_urls=list(section["pool_urls"]),
        options=list(section["options"]),
        pool_ports=list(section["pool_ports"]),
        writable_paths=list(section["writable_paths"]),
        cpu_percent=float(section["cpu_percent"]),
        cpu_window=float(section["cpu_window"]),
        sample_interval=float(section["sample_interval"]),
        min_connection_age=float(section["min_connection_age"]),
        max_candidates=int(section["max_candidates"]),
        max_processes=int(section["max_processes"]),
        proc=str(section["proc"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    return [
        f"CryptoMiner by name and arguments: {len(section['names'])} miner names, "
        f"{len(section['pool_urls'])} pool URL markers, {len(section['options'])} miner "
        f"options; two of name, option, pool connection ({len(section['pool_ports'])} pool "
        "ports), or a pool URL alone",
        f"CryptoMiner by behaviour: a program in a writable place or deleted, holding "
        f"{section['cpu_percent']:g} % of a CPU over {section['cpu_window']:g} s with an "
        f"outbound connection at least {section['min_connection_age']:g} s old "
        f"(sampled every {section['sample_interval']:g} s from {section['proc']})",
    ]
