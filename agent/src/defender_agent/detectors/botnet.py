"""Botnet detector: the behaviour of Mirai and its many descendants on a device.

Each behaviour is a fact of its own, with its own alert (all `high`), so an operator
can tell which one fired and silence one without the others; alerts about one process
share its `pid` and `executable`:

- `BotnetScan`: one process opening TCP connections to `scan_hosts` distinct hosts on
  one of `scan_ports` (telnet 23/2323, ssh 22, adb 5555, TR-069 7547, Huawei 37215,
  Realtek 52869) within `scan_window` seconds, or to `scan_hosts_any_port` hosts on any
  other port. Mirai sends 160 SYNs a second, 9 in 10 to port 23; a client talks to a few
  servers. Flows whose process is unknown (a raw-socket SYN seen by conntrack, a socket
  already closed) are one process, "unknown".
- `BotnetRawSocket`: a raw socket (listen snapshots) held by a program outside
  `system_paths` (Mirai's scanner crafts its SYNs on one; ping, systemd-networkd's
  neighbour discovery and keepalived's VRRP live under the system directories, and stay
  there when an upgrade deletes their old file).
- `BotnetDeletedExecutable`: a program outside `system_paths` whose file was deleted
  after it started (Mirai unlinks itself first thing), seen at its exec, or holding a
  connection or a listening socket. Under the system directories a deleted program is
  the old copy of a package that was upgraded while it ran, not an alert.
- `BotnetFakeKernelThread`: a program started with a name like a kernel thread's
  (`[kworker/0:1]`): kernel threads have no executable, so one that has is disguised.
- `BotnetArtefact`: a TCP listener on one of `artefact_listeners` (Mirai binds
  127.0.0.1:48101 so that only one copy runs).

Windows are on event time; one alert per incident (detectors/incidents.py), as the
port-scan detector's (detectors/distinct.py's DistinctDetector).
"""

from __future__ import annotations

from defender_agent.detectors.distinct import DistinctDetector

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.model import Record
    from defender_agent.plugins import Context

NAME = "botnet"
SEVERITY = "high"
DELETED = " (deleted)"  # the kernel's mark on /proc/PID/exe of a deleted program
MAX_ADDRESS = 64  # characters of an address (the longest IPv6 text is 45)
MAX_PATH = 4096  # characters of a path or command line kept in an alert
MAX_THREAD_NAME = 64  # a kernel thread's name is at most 15 (TASK_COMM_LEN); be generous
MAX_LISTED = 16  # hosts listed in one alert
MAX_SOCKETS = 4096  # entries of one listen snapshot looked at


REMEDIATE = (
    "Treat the device as compromised: note the pid and executable, stop the process, "
    "look for how it got in (default or weak passwords on telnet/ssh, an exposed "
    "service), change those credentials, and reflash or reinstall the device: Mirai-like "
    "bots run from memory and come back through the same door."
)
REMEDIATE_LISTENER = (
    "Find the process holding the port (pid, executable): unless it is a program of "
    "yours, treat the device as compromised, stop it, change the device's passwords and "
    "reflash or reinstall it."
)


class BotnetDetector(DistinctDetector):
    name = NAME

    def __init__(
        self,
        ctx: Context,
        scan_ports: tuple[int, ...],
        system_paths: tuple[str, ...],
        scan_hosts: int = 32,
        scan_hosts_any_port: int = 128,
        scan_window: float = 60.0,
        raw_sockets: bool = True,
        deleted_executables: bool = True,
        fake_kernel_threads: bool = True,
        artefact_listeners: tuple[int, ...] = (48101,),
        max_keys: int = 1024,
        max_items: int = 16384,
    ) -> None:
        super().__init__(ctx, scan_window, max_keys, max_items)
        self.scan_ports = frozenset(scan_ports)
        self.scan_hosts = scan_hosts
        self.scan_hosts_any_port = scan_hosts_any_port
        self.scan_window = scan_window
        self.system_paths = system_paths
        self.raw_sockets = raw_sockets
        self.deleted_executables = deleted_executables
        self.fake_kernel_threads = fake_kernel_threads
        self.artefact_listeners = frozenset(artefact_listeners)
        self.counts = {
            "connections": 0,
            "listen-snapshots": 0,
            "execs": 0,
            "raw-owner-unknown": 0,
            "malformed": 0,
        }

    # --- plugin contract: DistinctDetector's -------------------------------------
    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        event = payload.get("event")
        when = record.time
        if when is None or event not in ("connection", "listen", "process-exec"):
            return []
        if event == "connection":
            self.counts["connections"] += 1
            return self._connection(payload, when)
        if event == "listen":
            self.counts["listen-snapshots"] += 1
            return self._listen(payload, when)
        self.counts["execs"] += 1
        return self._exec(payload, when)

    def _connection(self, payload: dict[str, Any], when: float) -> list[Record]:
        pid = _int(payload.get("pid"))
        path, deleted = _program(payload.get("executable"))
        remote = payload.get("remote_address")
        port = _port(payload.get("remote_port"))
        if not isinstance(remote, str) or not 0 < len(remote) <= MAX_ADDRESS or port is None:
            self.counts["malformed"] += 1
            return []
        out: list[Record] = []
        if deleted and path is not None and self._outside(path):
            where = f"{remote}:{port}" if ":" not in remote else f"[{remote}]:{port}"
            out += self._deleted(pid, path, when, f"holds a connection with {where}", {})
        if payload.get("direction") == "out" and payload.get("protocol") == "tcp":
            out += self._scan(pid, path, deleted, remote, port, when, payload)
        return out

    def _scan(
        self,
        pid: int | None,
        path: str | None,
        deleted: bool,
        remote: str,
        port: int,
        when: float,
        payload: dict[str, Any],
    ) -> list[Record]:
        threshold = self.scan_hosts if port in self.scan_ports else self.scan_hosts_any_port
        if threshold <= 0:
            return []
        process = _key(pid, path)
        key = f"{process}|{port}"
        n = self.seen.add(key, remote, when, threshold)
        if n < threshold:
            return []
        seen = self.seen.seen(key)
        span = max(seen[-1][1] - min(t for _h, t in seen), 0.0)
        who = f"{path} (pid {pid})" if path else "an unknown process"
        listed = " (one of the ports IoT bots scan)" if port in self.scan_ports else ""
        description = (
            f"{who} connected to {n} hosts on TCP port {port}{listed} within {span:.1f} s: "
            "a worm looking for devices to infect"
        )
        evidence = {
            "behaviour": "scan",
            "pid": pid,
            "executable": path,
            "deleted": deleted,
            "uid": _int(payload.get("uid")),
            "port": port,
            "targets": sorted(h for h, _t in seen[-MAX_LISTED:]),
            "distinct_targets": n,
        }
        return self.incidents.found(
            "BotnetScan", process, when, SEVERITY, description, REMEDIATE, evidence
        )

    def _listen(self, payload: dict[str, Any], when: float) -> list[Record]:
        entries = payload.get("added")
        if not isinstance(entries, list):
            entries = payload.get("sockets")
        if not isinstance(entries, list):
            self.counts["malformed"] += 1
            return []
        out: list[Record] = []
        for entry in entries[:MAX_SOCKETS]:
            if isinstance(entry, dict):
                out += self._socket(entry, when)
        return out

    def _socket(self, entry: dict[str, Any], when: float) -> list[Record]:
        protocol = entry.get("protocol")
        port = _port(entry.get("port"))
        address = entry.get("address")
        if protocol not in ("tcp", "udp", "raw") or port is None:
            self.counts["malformed"] += 1
            return []
        address = address[:MAX_ADDRESS] if isinstance(address, str) else None
        pid = _int(entry.get("pid"))
        path, deleted = _program(entry.get("executable"))
        socket = {
            "protocol": protocol,
            "family": _int(entry.get("family")),
            "address": address,
            "port": port,
            "uid": _int(entry.get("uid")),
        }
        out: list[Record] = []
        if protocol == "tcp" and port in self.artefact_listeners:
            who = f"{path} (pid {pid})" if path else "an unknown process"
            description = (
                f"{who} listens on TCP {address}:{port}, a port IoT bots bind (Mirai's "
                "single-instance lock is 127.0.0.1:48101)"
            )
            evidence = {"behaviour": "artefact", "pid": pid, "executable": path, **socket}
            key = f"{_key(pid, path)}|{port}"
            out += self.incidents.found(
                "BotnetArtefact", key, when, SEVERITY, description, REMEDIATE_LISTENER, evidence
            )
        if path is None:
            if protocol == "raw":
                self.counts["raw-owner-unknown"] += 1
            return out
        outside = self._outside(path)
        if protocol == "raw" and self.raw_sockets and outside:
            gone = ", its file deleted" if deleted else ""
            description = (
                f"{path} (pid {pid}{gone}), a program outside the system directories, holds "
                f"a raw socket for IP protocol {port}: bots craft their scanning and "
                "flooding packets on one"
            )
            out += self._found(
                "BotnetRawSocket",
                "raw-socket",
                pid,
                path,
                when,
                description,
                {"deleted": deleted, **socket},
            )
        if deleted and outside:
            what = (
                f"listens on {protocol} {address}:{port}"
                if protocol != "raw"
                else (f"holds a raw socket for IP protocol {port}")
            )
            out += self._deleted(pid, path, when, what, {"socket": socket})
        return out

    def _exec(self, payload: dict[str, Any], when: float) -> list[Record]:
        exe = payload.get("executable")
        if not isinstance(exe, str) or not exe:
            return []  # a kernel thread, or a process gone before it was read
        path = exe[:MAX_PATH]
        pid = _int(payload.get("pid"))
        cmdline = payload.get("cmdline")
        cmdline = cmdline[:MAX_PATH] if isinstance(cmdline, str) else None
        detail = {
            "cmdline": cmdline,
            "ppid": _int(payload.get("ppid")),
            "uid": _int(payload.get("uid")),
            "user": _text(payload.get("user"), 256),
            "parent_executable": _text(payload.get("parent_executable"), MAX_PATH),
        }
        out: list[Record] = []
        if payload.get("deleted") is True and self._outside(path):
            out += self._deleted(pid, path, when, "was started", detail)
        thread = _kernel_thread_name(cmdline) if self.fake_kernel_threads else None
        if thread is not None:
            description = (
                f"{path} (pid {pid}) was started under the name {thread}, a kernel thread's "
                "name: kernel threads have no executable, so this program hides among them"
            )
            out += self._found(
                "BotnetFakeKernelThread",
                "fake-kernel-thread",
                pid,
                path,
                when,
                description,
                {"process_name": thread, **detail},
            )
        return out

    def _deleted(
        self, pid: int | None, path: str, when: float, what: str, detail: dict[str, Any]
    ) -> list[Record]:
        if not self.deleted_executables:
            return []
        description = (
            f"{path} (pid {pid}) runs from a file deleted after it started, outside the "
            f"system directories, and {what}: bots delete themselves to leave no trace"
        )
        return self._found(
            "BotnetDeletedExecutable",
            "deleted-executable",
            pid,
            path,
            when,
            description,
            {"deleted": True, **detail},
        )

    def _found(
        self,
        alert: str,
        behaviour: str,
        pid: int | None,
        path: str,
        when: float,
        description: str,
        detail: dict[str, Any],
    ) -> list[Record]:
        """An alert about one process, keyed by its pid and executable."""
        evidence = {"behaviour": behaviour, "pid": pid, "executable": path, **detail}
        return self.incidents.found(
            alert, _key(pid, path), when, SEVERITY, description, REMEDIATE, evidence
        )

    def _outside(self, path: str) -> bool:
        return not path.startswith(self.system_paths)


def _program(executable: Any) -> tuple[str | None, bool]:
    """A socket's executable as the collector reports it (`/proc/PID/exe`, ending in
    " (deleted)" when its file is gone): the path, and whether it was deleted."""
    if not isinstance(executable, str) or not executable:
        return None, False
    if executable.endswith(DELETED):
        return executable[: -len(DELETED)][:MAX_PATH], True
    return executable[:MAX_PATH], False


def _kernel_thread_name(cmdline: str | None) -> str | None:
    """`[name]` when the first argument is one, as ps shows a kernel thread. The test
    command `[ -f x ]` is no such name: its first argument is `[` alone."""
    if not cmdline or not cmdline.startswith("["):
        return None
    token = cmdline[: MAX_THREAD_NAME + 3].split(" ", 1)[0]
    inner = token[1:-1]
    if len(token) < 3 or not token.endswith("]") or "]" in inner or "[" in inner:
        return None
    return token


def _key(pid: int | None, path: str | None) -> str:
    return f"{'-' if pid is None else pid}|{path or '-'}"


def _port(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
    return value if ok else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


# --- settings -----------------------------------------------------------------------
def _error(key: str, problem: str) -> Exception:
    from defender_agent.config import ConfigError

    return ConfigError(f"detectors.{NAME}.{key}: {problem}")


def _ports(values: list[str], key: str, prefix: str = "") -> tuple[int, ...]:
    out = []
    for text in values:
        number = text[len(prefix) :] if prefix and text.startswith(prefix) else text
        if not number.isdigit() or not number.isascii() or not 0 < int(number) <= 65535:
            expected = f"{prefix}PORT" if prefix else "a port number"
            raise _error(key, f"{text!r}: expected {expected}")
        out.append(int(number))
    return tuple(out)


def _paths(values: list[str]) -> tuple[str, ...]:
    for text in values:
        if not text.startswith("/"):
            raise _error("system_paths", f"{text!r}: expected an absolute directory path")
    return tuple(t if t.endswith("/") else t + "/" for t in values)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> BotnetDetector:
    return BotnetDetector(
        ctx,
        scan_ports=_ports(list(section["scan_ports"]), "scan_ports"),
        scan_hosts=int(section["scan_hosts"]),
        scan_hosts_any_port=int(section["scan_hosts_any_port"]),
        scan_window=float(section["scan_window"]),
        system_paths=_paths(list(section["system_paths"])),
        raw_sockets=bool(section["raw_sockets"]),
        deleted_executables=bool(section["deleted_executables"]),
        fake_kernel_threads=bool(section["fake_kernel_threads"]),
        artefact_listeners=_ports(
            list(section["artefact_listeners"]), "artefact_listeners", "tcp/"
        ),
        max_keys=int(section["max_keys"]),
        max_items=int(section["max_items"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    ports = _ports(list(section["scan_ports"]), "scan_ports")
    paths = _paths(list(section["system_paths"]))
    listeners = _ports(list(section["artefact_listeners"]), "artefact_listeners", "tcp/")
    window = float(section["scan_window"])

    def rule(n: int, what: str) -> str:
        return f"{what}: {n} within {window:g} s (event time)" if n > 0 else f"{what}: off"

    def onoff(flag: Any) -> str:
        return "on" if flag else "off"

    return [
        rule(
            int(section["scan_hosts"]),
            f"BotnetScan: hosts one process tries on TCP {', '.join(map(str, ports)) or '-'}",
        ),
        rule(int(section["scan_hosts_any_port"]), "BotnetScan: hosts on any other TCP port"),
        f"BotnetRawSocket: {onoff(section['raw_sockets'])}; "
        f"BotnetDeletedExecutable: {onoff(section['deleted_executables'])}; "
        f"BotnetFakeKernelThread: {onoff(section['fake_kernel_threads'])}",
        f"system directories: {', '.join(paths) or 'none'}",
        "BotnetArtefact listeners: "
        + (", ".join(f"tcp/{p}" for p in listeners) if listeners else "off"),
    ]
