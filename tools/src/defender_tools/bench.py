"""`defender-tools bench`: the agent's speed and memory, measured, printed, never asserted.

Each benchmark runs the agent from a source tree (default: this checkout's agent/src) as
its own process, the way the service runs (`python3 -I -S`: no site packages), on a
temporary auth log, and prints figures for docs/benchmarks.md:

- `latency`: the time from appending the line that crosses the brute-force threshold to
  the alert record in events.jsonl, over several bursts, each from a new source address;
- `memory`: VmRSS and VmHWM of the running agent at rest, then after a flood of failed
  logins from distinct sources;
- `syslog-memory`: VmRSS at rest without the syslog output and with it on each
  transport (unix, udp, tcp, tls), each to a receiver of the benchmark's own on loopback;
- `replay`: `defender-agent replay` over a generated auth log of realistic mix (failed
  passwords, invalid users, PAM pairs, preauth closes, logins, other programs): lines/s
  and peak RSS;
- `guest-cpu`: the packaged agent's idle CPU share in a booted image, with every
  collector on (and its journalctl child);
- `guest-memory`: the packaged agent in a booted quick image (the packaged configuration,
  the real service), restarted several times: RSS and PSS of each start;
- `guest-load`: an exec storm and a connection storm in a booted image (storm.py, run in
  the guest): what the agent saw of them, what it counted as lost, its peak RSS and its
  CPU share while they ran.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from defender_tools.errors import UserError

if TYPE_CHECKING:
    from defender_tools.qemu_runner import Guest

app = typer.Typer(help="Measure the agent: detection latency, memory.", no_args_is_help=True)

THRESHOLD = 5  # the agent's default max_failures: the 5th failure crosses it
POLL_S = 0.0002


def default_agent_src() -> Path:
    """This checkout's agent sources (tools/src/defender_tools -> repository root)."""
    return Path(__file__).resolve().parents[3] / "agent" / "src"


@dataclass(frozen=True)
class Figures:
    """Samples in milliseconds (latency) or KiB (memory), and how they were taken."""

    name: str
    unit: str
    samples: list[float]

    @property
    def summary(self) -> dict[str, float]:
        return {
            "min": min(self.samples),
            "median": statistics.median(self.samples),
            "max": max(self.samples),
        }


class AgentProcess:
    """`defender-agent run` from SRC on a temporary auth log, as its own process."""

    def __init__(
        self, src: Path, config_lines: list[str] | None = None, extra_lines: tuple[str, ...] = ()
    ) -> None:
        if not (src / "defender_agent" / "__init__.py").is_file():
            raise UserError(f"--agent-src {src}: no defender_agent package there")
        self.dir = Path(tempfile.mkdtemp(prefix="defender-bench-"))
        self.auth = self.dir / "auth.log"
        self.auth.write_text("")
        self.events = self.dir / "state" / "events.jsonl"
        self.config = self.dir / "agent.toml"
        lines = config_lines
        if lines is None:
            lines = [
                "[agent]",
                f'state_dir = "{self.dir / "state"}"',
                "[collectors.login]",
                f'auth_logs = ["{self.auth}"]',
                'wtmp = ""',
                'btmp = ""',
                "[collectors.sysinfo]",
                "enabled = false",
                "[collectors.process]",  # the host's processes and sockets are not
                "enabled = false",  # what these figures are about
                "[collectors.network]",
                "enabled = false",
                "[outputs.file]",
                "max_bytes = 1073741824",
                *extra_lines,
            ]
        self.config.write_text("\n".join(lines) + "\n")
        code = (
            f"import sys; sys.path.insert(0, {str(src)!r}); "
            "from defender_agent.cli import main; sys.exit(main())"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, "run", "--config", str(self.config)],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not (self.events.exists() and self.events.stat().st_size):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise UserError("the agent did not start (try `defender-agent check`)")
            time.sleep(0.01)

    def memory_kib(self) -> dict[str, int]:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        for path in sorted(self.dir.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        self.dir.rmdir()


def _failure(n: int, source: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return (
        f"{stamp}.000000+00:00 bench sshd[{1000 + n}]: "
        f"Failed password for invalid user bench{n} from {source} port {40000 + n} ssh2\n"
    )


def _alerts(events: Path) -> int:
    with open(events, "rb") as fh:
        return sum(b'"type":"alert"' in line for line in fh)


def measure_latency(src: Path, bursts: int) -> Figures:
    """Milliseconds from writing the crossing line to the alert being in events.jsonl."""
    agent = AgentProcess(src)
    samples: list[float] = []
    try:
        for burst in range(bursts):
            source = f"198.51.100.{burst + 1}"
            with open(agent.auth, "a", encoding="utf-8") as log:
                for n in range(THRESHOLD - 1):
                    log.write(_failure(n, source))
            time.sleep(0.2)  # the first four are read and counted
            before = _alerts(agent.events)
            size = agent.events.stat().st_size  # before the line: a fast alert is not missed
            with open(agent.auth, "a", encoding="utf-8") as log:
                log.write(_failure(THRESHOLD, source))
                log.flush()
                start = time.perf_counter()
            deadline = start + 10
            while time.perf_counter() < deadline:
                now_size = agent.events.stat().st_size
                if now_size != size:
                    size = now_size
                    if _alerts(agent.events) > before:
                        break
                time.sleep(POLL_S)
            else:
                raise UserError(f"no alert within 10 s for burst {burst + 1}")
            samples.append(round((time.perf_counter() - start) * 1000, 2))
    finally:
        agent.stop()
    return Figures("latency from the crossing line to the alert on disk", "ms", samples)


def measure_memory(src: Path, flood: int) -> dict[str, dict[str, int]]:
    """RSS at rest, then after FLOOD failed logins from distinct sources.

    The benchmark's configuration sets values, so the agent loads tomllib (about 1 MiB);
    the packaged all-comments configuration does not (qemu-tests measure that one).
    """
    agent = AgentProcess(src)
    try:
        time.sleep(2)
        at_rest = agent.memory_kib()
        with open(agent.auth, "a", encoding="utf-8") as log:
            for n in range(flood):
                log.write(_failure(n, f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with open(agent.events, "rb") as fh:
                if sum(b'"login-failed"' in line for line in fh) >= flood:
                    break
            time.sleep(0.2)
        flooded = agent.memory_kib()
    finally:
        agent.stop()
    return {"at rest": at_rest, f"after {flood} failures": flooded}


class SyslogReceiver:
    """A loopback receiver for the syslog output: a datagram socket (unix, udp) or a TCP
    listener, TLS with a certificate made by the openssl command; it counts bytes."""

    def __init__(self, transport: str, directory: Path) -> None:
        import socket
        import threading

        self.transport = transport
        self.received = 0
        self.lines: list[str] = [f'transport = "{transport}"']
        if transport == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(directory / "log"))
            self.lines.append(f'address = "{directory / "log"}"')
        else:
            kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
            self.sock = socket.socket(socket.AF_INET, kind)
            self.sock.bind(("127.0.0.1", 0))
            self.lines += ['address = "127.0.0.1"', f"port = {self.sock.getsockname()[1]}"]
            if kind == socket.SOCK_STREAM:
                self.sock.listen()
        self.context = None
        if transport == "tls":
            import ssl

            key, cert = directory / "key.pem", directory / "cert.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert, key)
            self.lines.append(f'tls_ca = "{cert}"')
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            if self.transport in ("unix", "udp"):
                while True:
                    self.received += len(self.sock.recv(65536))
            conn, _ = self.sock.accept()
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            while data := conn.recv(65536):
                self.received += len(data)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()


def measure_syslog_memory(src: Path, rounds: int) -> dict[str, list[int]]:
    """VmRSS (KiB) 3 s after the start: without the syslog output, then with it on each
    transport, every record sent (the first heartbeat must have arrived)."""
    results: dict[str, list[int]] = {}
    for mode in ("off", "unix", "udp", "tcp", "tls"):
        for _ in range(rounds):
            directory = Path(tempfile.mkdtemp(prefix="defender-bench-syslog-"))
            receiver = None
            extra: list[str] = []
            if mode != "off":
                receiver = SyslogReceiver(mode, directory)
                extra = ["[outputs.syslog]", "enabled = true", *receiver.lines]
            agent = AgentProcess(src, extra_lines=tuple(extra))
            try:
                deadline = time.monotonic() + 20
                while receiver is not None and not receiver.received:
                    if time.monotonic() > deadline:
                        raise UserError(f"syslog {mode}: nothing arrived from the agent")
                    time.sleep(0.05)
                time.sleep(3)
                results.setdefault(mode, []).append(agent.memory_kib()["VmRSS"])
            finally:
                agent.stop()
                if receiver is not None:
                    receiver.close()
                for path in directory.iterdir():
                    path.unlink()
                directory.rmdir()
    return results


@app.command("syslog-memory")
def syslog_memory_command(
    rounds: Annotated[int, typer.Option(help="Starts per configuration.", min=1)] = 5,
    agent_src: Annotated[
        Path | None, typer.Option("--agent-src", help="The agent's src/ directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """RSS the syslog output adds, per transport, the agent as its own process."""
    result = measure_syslog_memory(agent_src or default_agent_src(), rounds)
    if as_json:
        typer.echo(json.dumps(result))
        return
    base = statistics.median(result["off"])
    table = Table(title=f"syslog output memory (python {sys.version.split()[0]}, {rounds} starts)")
    for column in ("syslog output", "VmRSS MiB median (range)", "added MiB"):
        table.add_column(column)
    for mode, kib in result.items():
        median = statistics.median(kib)
        table.add_row(
            mode,
            f"{median / 1024:.2f} ({min(kib) / 1024:.2f}-{max(kib) / 1024:.2f})",
            f"{(median - base) / 1024:+.2f}",
        )
    Console().print(table)


@app.command("latency")
def latency_command(
    bursts: Annotated[
        int, typer.Option(help="Bursts of 5 failures, each from a new source.", min=1)
    ] = 10,
    agent_src: Annotated[
        Path | None, typer.Option("--agent-src", help="The agent's src/ directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Detection latency: the crossing log line to the alert record, the agent as a process."""
    figures = measure_latency(agent_src or default_agent_src(), bursts)
    _print(figures, as_json)


@app.command("memory")
def memory_command(
    flood: Annotated[int, typer.Option(help="Failed logins from distinct sources.", min=1)] = 20000,
    agent_src: Annotated[
        Path | None, typer.Option("--agent-src", help="The agent's src/ directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """RSS of the agent at rest and after a flood of failed logins."""
    result = measure_memory(agent_src or default_agent_src(), flood)
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(
        title=f"agent memory (python {sys.version.split()[0]}, host {os.uname().release})"
    )
    for column in ("when", "VmRSS MiB", "VmHWM MiB"):
        table.add_column(column)
    for when, kib in result.items():
        table.add_row(when, f"{kib['VmRSS'] / 1024:.1f}", f"{kib['VmHWM'] / 1024:.1f}")
    Console().print(table)


# One connection per pattern: the forms a busy OpenSSH/Dropbear host logs, in proportion
# to a scanner-heavy auth log (each tuple: weight, lines of one connection).
_REPLAY_FORMS = (
    (4, ("Failed password for root from {a} port {p} ssh2",)),
    (
        2,
        (
            "Invalid user {u} from {a} port {p}",
            "pam_unix(sshd:auth): check pass; user unknown",
            "Failed password for invalid user {u} from {a} port {p} ssh2",
            "Connection closed by invalid user {u} {a} port {p} [preauth]",
        ),
    ),
    (
        1,
        (
            "error: PAM: Authentication failure for {u} from {a}",
            "Failed keyboard-interactive/pam for {u} from {a} port {p} ssh2",
        ),
    ),
    (1, ("Accepted publickey for deploy from {a} port {p} ssh2: ED25519 SHA256:abc",)),
)


def generate_auth_log(path: Path, lines: int) -> int:
    """Write about LINES RFC 3339-stamped syslog lines; one in five is another program's.
    Sources cycle through 65,536 addresses. Returns the number of lines written."""
    start = time.time() - 86400
    forms = [form for weight, form in _REPLAY_FORMS for _ in range(weight)]
    written = conn = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < lines:
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + written / 20))
            if written % 5 == 4:
                fh.write(f"{when}.000000+00:00 bench CRON[{conn}]: (root) CMD (run-parts)\n")
                written += 1
                continue
            conn += 1
            addr = f"10.{conn >> 16 & 255}.{conn >> 8 & 255}.{conn & 255}"
            for text in forms[conn % len(forms)]:
                message = text.format(a=addr, p=40000 + conn % 20000, u=f"user{conn % 997}")
                fh.write(f"{when}.000000+00:00 bench sshd[{conn}]: {message}\n")
                written += 1
    return written


def measure_replay(src: Path, lines: int) -> dict[str, float]:
    """`defender-agent replay` of a generated log: wall time, lines/s, peak RSS (VmHWM,
    read by the replaying process itself: getrusage would count the pages it shared
    with this process between fork and exec)."""
    with tempfile.TemporaryDirectory(prefix="defender-bench-replay-") as tmp:
        log = Path(tmp) / "auth.log"
        written = generate_auth_log(log, lines)
        config = Path(tmp) / "agent.toml"
        config.write_text(f'[agent]\nstate_dir = "{tmp}"\n')
        code = (
            f"import sys; sys.path.insert(0, {str(src)!r}); "
            "from defender_agent.cli import main; rc = main(); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]; "
            "sys.stderr.write('bench ' + hwm[0]); sys.exit(rc)"
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, "replay", "--config", str(config), str(log)],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise UserError(f"replay failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    hwm = [line.split() for line in done.stderr.splitlines() if line.startswith("bench VmHWM:")]
    return {
        "lines": written,
        "seconds": round(seconds, 2),
        "lines per second": round(written / seconds),
        "peak RSS MiB": round(int(hwm[0][2]) / 1024, 1) if hwm else 0.0,
    }


@app.command("replay")
def replay_command(
    lines: Annotated[int, typer.Option(help="Lines of generated auth log.", min=1000)] = 1_000_000,
    agent_src: Annotated[
        Path | None, typer.Option("--agent-src", help="The agent's src/ directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Replay throughput: parser, login collector and detectors over a generated log."""
    result = measure_replay(agent_src or default_agent_src(), lines)
    if as_json:
        typer.echo(json.dumps(result))
        return
    Console().print(
        f"replay of {result['lines']:,} lines: {result['seconds']} s, "
        f"{result['lines per second']:,} lines/s, peak RSS {result['peak RSS MiB']} MiB "
        f"(python {sys.version.split()[0]})"
    )


def _print(figures: Figures, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({**asdict(figures), **figures.summary}))
        return
    summary = figures.summary
    Console().print(
        f"{figures.name}: median {summary['median']} {figures.unit} "
        f"(min {summary['min']}, max {summary['max']}, {len(figures.samples)} samples)"
    )


def measure_guest_memory(
    profile: str, restarts: int, settle: float, deb: Path | None = None
) -> list[dict[str, float]]:
    """RSS/PSS (MiB) of the packaged agent in PROFILE's image, once per (re)start."""
    from defender_tools import guest_agent
    from defender_tools.agent_package import build_agent_deb
    from defender_tools.images.debian import build_image, image_dir_name
    from defender_tools.qemu_runner import Guest

    root = Path(__file__).resolve().parents[3]
    package = deb or build_agent_deb(root / "build" / "dist")
    name = image_dir_name(profile) + ("-bench" if deb else "")
    image = build_image(root / "build" / "images" / name, [package], profile=profile)
    samples: list[dict[str, float]] = []
    with Guest(image.conf) as guest:
        guest_agent.wait_for_service(guest)
        for n in range(restarts):
            if n:
                guest_agent.stop_service(guest)
                guest_agent.start_service(guest)
                guest_agent.wait_for_service(guest)
            time.sleep(settle)
            memory = guest_agent.agent_memory(guest)
            samples.append({"rss_mib": memory.rss_mib, "pss_mib": memory.pss_mib})
    return samples


@app.command("guest-memory")
def guest_memory_command(
    profile: Annotated[str, typer.Option(help="Image profile: standard or embedded.")] = "standard",
    restarts: Annotated[int, typer.Option(help="Starts of the agent to measure.", min=1)] = 5,
    settle: Annotated[float, typer.Option(help="Seconds after each start.", min=0)] = 10.0,
    deb: Annotated[
        Path | None, typer.Option("--deb", help="Measure this agent .deb instead of building one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Memory of the packaged agent as the service runs it in a booted image (needs root)."""
    samples = measure_guest_memory(profile, restarts, settle, deb)
    if as_json:
        typer.echo(json.dumps(samples))
        return
    rss = [s["rss_mib"] for s in samples]
    pss = [s["pss_mib"] for s in samples]
    Console().print(
        f"{profile} image, {restarts} starts: VmRSS median {statistics.median(rss)} MiB "
        f"({min(rss)}-{max(rss)}), Pss median {statistics.median(pss)} MiB "
        f"({min(pss)}-{max(pss)})"
    )


def _cpu_ticks(guest: Guest, pid: int) -> tuple[int, float]:
    """(utime + stime of PID and its live children, the guest's uptime in seconds)."""
    script = (
        f"for p in {pid} $(cat /proc/{pid}/task/*/children 2>/dev/null); do "
        "awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null; done; "
        "echo up $(cut -d' ' -f1 /proc/uptime)"
    )
    _rc, out, _err = guest.ssh(script)
    ticks, uptime = 0, 0.0
    for line in out.split("\n"):
        words = line.split()
        if words[:1] == ["up"] and len(words) == 2:
            uptime = float(words[1])
        elif len(words) == 1 and words[0].isdigit():
            ticks += int(words[0])
    return ticks, uptime


def measure_guest_cpu(profile: str, seconds: float, backend: str) -> dict[str, float]:
    """The packaged agent's CPU share of one vCPU, idle, over SECONDS (with its children)."""
    from defender_tools import guest_agent
    from defender_tools.agent_package import build_agent_deb
    from defender_tools.images.debian import build_image, image_dir_name
    from defender_tools.qemu_runner import Guest

    root = Path(__file__).resolve().parents[3]
    package = build_agent_deb(root / "build" / "dist")
    image = build_image(
        root / "build" / "images" / image_dir_name(profile), [package], profile=profile
    )
    with Guest(image.conf) as guest:
        guest_agent.wait_for_service(guest)
        if backend != "auto":
            guest.ssh(
                "printf '[collectors.process]\\nbackend = \"%s\"\\n' "
                f"{backend} > /etc/defender-agent/agent.toml"
            )
            guest_agent.stop_service(guest)
            guest_agent.start_service(guest)
            guest_agent.wait_for_service(guest)
        time.sleep(30)  # past the start's work
        pid = guest_agent.agent_memory(guest).pid
        _rc, hz_text, _err = guest.ssh("getconf CLK_TCK")
        hz = int(hz_text.strip() or 100)
        ticks0, up0 = _cpu_ticks(guest, pid)
        time.sleep(seconds)
        ticks1, up1 = _cpu_ticks(guest, pid)
    wall = up1 - up0
    return {
        "seconds": round(wall, 1),
        "cpu_seconds": round((ticks1 - ticks0) / hz, 3),
        "percent_of_one_vcpu": round(100 * (ticks1 - ticks0) / hz / wall, 3),
    }


@app.command("guest-cpu")
def guest_cpu_command(
    profile: Annotated[str, typer.Option(help="Image profile: standard or embedded.")] = "standard",
    seconds: Annotated[float, typer.Option(help="How long to measure, idle.", min=10)] = 300.0,
    process_backend: Annotated[
        str, typer.Option(help="The process collector's backend: auto, netlink or proc.")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Idle CPU of the packaged agent (every collector on) in a booted image (needs root)."""
    result = measure_guest_cpu(profile, seconds, process_backend)
    if as_json:
        typer.echo(json.dumps(result))
        return
    Console().print(
        f"{profile} image, process backend {process_backend}, idle {result['seconds']} s: "
        f"{result['cpu_seconds']} s of CPU, {result['percent_of_one_vcpu']} % of one vCPU "
        "(agent and its children)"
    )


# A listener in a network namespace of the guest (documentation-range addresses): accepts
# and holds connections, so the client closes first and its end lingers in TIME_WAIT.
_LOAD_SETUP = """set -e
mkdir -p {run}
ip netns add dfn-load 2>/dev/null || true
ip link show dfn-load0 >/dev/null 2>&1 || {{
    ip link add dfn-load0 type veth peer name dfn-load1
    ip link set dfn-load1 netns dfn-load
}}
ip addr replace 192.0.2.1/24 dev dfn-load0
ip link set dfn-load0 up
ip netns exec dfn-load ip addr replace 192.0.2.2/24 dev dfn-load1
ip netns exec dfn-load ip link set dfn-load1 up
ip netns exec dfn-load ip link set lo up
printf '%s' {storm} > {run}/storm.py
printf '%s' {serve} > {run}/serve.py
nohup ip netns exec dfn-load python3 {run}/serve.py {port} >{run}/serve.out 2>&1 </dev/null &
sleep 1
"""
_LOAD_SERVE = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4096)
held = []
while True:
    held.append(s.accept()[0])
    del held[:-500]  # well under the 1024 descriptors a process gets
"""
LOAD_PORT = 8480
STORM_NAME = "dfn-storm"  # argv[0] of every storm process: its command line is "dfn-storm 1"


def _agent_status(guest: Guest, pid: int) -> dict[str, int]:
    _rc, out, _err = guest.ssh(f"grep -E '^(VmRSS|VmHWM):' /proc/{pid}/status")
    figures = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if value.split() and value.split()[0].isdigit():
            figures[key] = int(value.split()[0])
    return figures


def _storm_phase(guest: Guest, pid: int, hz: int, command: str, settle: float) -> dict[str, Any]:
    """Run COMMAND (a storm.py line) in the guest; the agent's CPU from its start to SETTLE
    seconds after it ends (the agent catching up is part of the cost)."""
    ticks0, up0 = _cpu_ticks(guest, pid)
    rc, out, err = guest.ssh(command, timeout=600)
    if rc != 0:
        raise UserError(f"the storm failed in the guest ({rc}): {err.strip() or out.strip()}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    time.sleep(settle)
    ticks1, up1 = _cpu_ticks(guest, pid)
    memory = _agent_status(guest, pid)
    result.update(
        agent_cpu_percent=round(100 * (ticks1 - ticks0) / hz / (up1 - up0), 1),
        agent_rss_mib=round(memory.get("VmRSS", 0) / 1024, 1),
        agent_hwm_mib=round(memory.get("VmHWM", 0) / 1024, 1),
    )
    return result


def _seen(records: list[dict[str, Any]], event: str, match: dict[str, object]) -> int:
    """The events the agent wrote for EVENT matching MATCH, aggregated records by count."""
    total = 0
    for record in records:
        payload = record.get("payload", {})
        if payload.get("event") == event and all(payload.get(k) == v for k, v in match.items()):
            total += int(payload.get("count", 1))
    return total


def measure_guest_load(
    profile: str, exec_rate: float, connect_rate: float, seconds: float, process_backend: str
) -> dict[str, Any]:
    """An exec storm, then a connection storm, against the packaged agent in PROFILE's image."""
    import shlex

    from defender_tools import guest_agent, storm
    from defender_tools.agent_package import build_agent_deb
    from defender_tools.images.debian import build_image, image_dir_name
    from defender_tools.qemu_runner import Guest
    from defender_tools.scenarios import lab

    root = Path(__file__).resolve().parents[3]
    package = build_agent_deb(root / "build" / "dist")
    image = build_image(
        root / "build" / "images" / image_dir_name(profile), [package], profile=profile
    )
    run = lab.RUN_DIR
    with Guest(image.conf) as guest:
        guest_agent.wait_for_service(guest)
        if process_backend != "auto":
            guest.ssh(
                "printf '[collectors.process]\\nbackend = \"%s\"\\n' "
                f"{process_backend} > /etc/defender-agent/agent.toml"
            )
            guest_agent.stop_service(guest)
            guest_agent.start_service(guest)
            guest_agent.wait_for_service(guest)
        setup = _LOAD_SETUP.format(
            run=run,
            storm=shlex.quote(Path(storm.__file__).read_text()),
            serve=shlex.quote(_LOAD_SERVE),
            port=LOAD_PORT,
        )
        guest.run(setup, timeout=120)
        _rc, hz_text, _err = guest.ssh("getconf CLK_TCK")
        hz = int(hz_text.strip() or 100)
        spawn = f"python3 {run}/storm.py exec {exec_rate} {seconds} /bin/sleep {STORM_NAME} 1"
        connect = f"python3 {run}/storm.py connect {connect_rate} {seconds} 192.0.2.2 {LOAD_PORT}"
        execs = _load_phase(guest, hz, spawn, "process", 10)
        connections = _load_phase(guest, hz, connect, "network", 15)
    return {
        "profile": profile,
        "process_backend": process_backend,
        "exec": execs,
        "connect": connections,
    }


def _load_phase(
    guest: Guest, hz: int, command: str, collector: str, settle: float
) -> dict[str, Any]:
    """One storm against a freshly started agent, whose stop then writes what aggregation
    holds and a statistics record with this phase's counts alone."""
    from defender_tools import guest_agent

    guest_agent.stop_service(guest)
    guest.ssh(f"rm -f {guest_agent.EVENTS}*")
    guest_agent.start_service(guest)
    guest_agent.wait_for_service(guest)
    time.sleep(10)  # past the start's work
    pid = guest_agent.agent_memory(guest).pid
    phase = _storm_phase(guest, pid, hz, command, settle)
    guest_agent.stop_service(guest)
    _rc, out, _err = guest.ssh(f"cat {guest_agent.EVENTS} 2>/dev/null")
    records = guest_agent.parse_records(out)
    stats = [r["payload"] for r in records if r.get("type") == "statistics"]
    figures = (stats[-1] if stats else {}).get("collectors", {}).get(collector, {})
    phase["emitted"] = figures.get("emitted", 0)  # every event, complete or not
    phase["counted"] = figures.get("counts", {})
    phase["dropped_in_queue"] = figures.get("dropped", 0)
    if collector == "process":
        phase["complete"] = _seen(records, "process-exec", {"cmdline": f"{STORM_NAME} 1"})
    else:
        match = {"direction": "out", "remote_address": "192.0.2.2", "remote_port": LOAD_PORT}
        phase["complete"] = _seen(records, "connection", match)
    return phase


@app.command("guest-load")
def guest_load_command(
    profile: Annotated[str, typer.Option(help="Image profile: standard or embedded.")] = "standard",
    exec_rate: Annotated[float, typer.Option(help="Processes started per second.", min=1)] = 500,
    connect_rate: Annotated[
        float, typer.Option(help="TCP connections opened per second.", min=1)
    ] = 200,
    seconds: Annotated[float, typer.Option(help="How long each storm lasts.", min=1)] = 60,
    process_backend: Annotated[
        str, typer.Option(help="The process collector's backend: auto, netlink or proc.")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """An exec storm and a connection storm in a booted image: what the agent saw, what it
    counted as lost, its peak RSS and CPU share (needs root)."""
    result = measure_guest_load(profile, exec_rate, connect_rate, seconds, process_backend)
    if as_json:
        typer.echo(json.dumps(result))
        return
    console = Console()
    for name in ("exec", "connect"):
        phase = result[name]
        console.print(
            f"{name} storm: {phase['started']} started in {phase['seconds']} s "
            f"({phase['rate']}/s; {phase['skipped']} skipped, the guest being too slow; "
            f"failed: {phase['failed'] or 'none'}); the agent emitted "
            f"{phase['emitted']} events ({phase['complete']} of them for the storm with every "
            f"detail); it counted {phase['counted']}, queue drops {phase['dropped_in_queue']}; "
            f"agent CPU {phase['agent_cpu_percent']} % of one vCPU, "
            f"RSS {phase['agent_rss_mib']} MiB (peak {phase['agent_hwm_mib']} MiB)"
        )
