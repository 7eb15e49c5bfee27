"""What anyone who can write a log line can do to the agent: nothing that blinds it.

Each test is one of the ways a hostile tester broke the agent before, run the same way,
then counting what arrived: no pattern stalls the loop, no field grows memory without
bound, no line is lost or alert raised twice.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python < 3.11
    import sre_parse  # type: ignore[no-redef,unused-ignore]

import pytest

from defender_agent import config, safefs, state
from defender_agent.collectors.common import authlog, syslog
from defender_agent.model import Record
from defender_agent.outputs.file import FileOutput

LINE = 8192  # the follower's cap: no line the patterns see is longer
BUDGET_S = 0.01  # per 8 KiB line; the quadratic Dropbear pattern took ~100 ms here

TABLES = {"sshd": authlog._SSHD, "dropbear": authlog._DROPBEAR, "login": authlog._LOGIN}
PATTERNS = [
    (f"{prog}:{kind}:{n}", pattern)
    for prog, table in TABLES.items()
    for n, (kind, _words, pattern) in enumerate(table)
]
PATTERNS += [
    ("repeat", authlog._REPEAT),
    ("rfc3164", syslog._RFC3164),
    ("rfc5424", syslog._RFC5424),
]


def _literals(pattern: re.Pattern[str]) -> list[str]:
    """The literal pieces of a pattern: what an attacker repeats to make it backtrack."""
    text = re.sub(r"\(\?P<\w+>", "(", pattern.pattern)
    pieces = re.split(r"\\[dDsSwW]|[()?:|*+\[\]^$\\{}]|\d,\d", text)
    return [p for p in dict.fromkeys(pieces) if p.strip()]


def _head(items: object) -> tuple[str, bool]:
    """The literal text a match must start with (first branch of an alternation), and
    whether the walk reached the end of the pattern."""
    out = ""
    for op, arg in items:  # type: ignore[attr-defined]
        name = str(op)
        if name == "LITERAL":
            out += chr(arg)
        elif name == "SUBPATTERN":
            text, done = _head(arg[-1])
            out += text
            if not done:
                return out, False
        elif name == "BRANCH":
            text, done = _head(arg[1][0])
            out += text
            if not done:
                return out, False
        elif name == "AT" or (name in ("MAX_REPEAT", "MIN_REPEAT") and arg[0] == 0):
            continue  # an anchor, or an optional part: a match may leave it out
        else:
            return out, False
    return out, True


def _hostile_lines(pattern: re.Pattern[str]) -> list[str]:
    """Lines that start like a match and then repeat pattern fragments to LINE chars."""
    lits = _literals(pattern)
    head = _head(sre_parse.parse(pattern.pattern))[0]
    units = [*lits, "1", "a", " ", "'", ":", "<", ">", "1:1", " port 1", "' from 1:1 "]
    lines = []
    for a, b in itertools.product(units, repeat=2):
        unit = a + b
        lines.append((head + " " + unit * (LINE // len(unit) + 1))[:LINE])
    return lines


def _worst(pattern: re.Pattern[str], lines: list[str]) -> tuple[float, str]:
    worst, which = 0.0, ""
    for line in lines:
        start = time.perf_counter()
        pattern.match(line)
        took = time.perf_counter() - start
        if took > worst:
            worst, which = took, line
    return worst, which


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[n for n, _ in PATTERNS])
def test_no_pattern_backtracks_on_a_crafted_line(name: str, pattern: re.Pattern[str]) -> None:
    lines = _hostile_lines(pattern)
    worst, line = _worst(pattern, lines)
    if worst > BUDGET_S:  # one retry: a busy CI machine may stall any single match
        worst, line = _worst(pattern, [line])
    assert worst <= BUDGET_S, f"{name}: {worst * 1000:.1f} ms on {line[:80]!r}..."


@pytest.mark.parametrize(
    "message",
    [
        "Pubkey auth succeeded for '" + "' with " * 1100,  # was ~100 ms: nested lazy groups
        "Password auth succeeded for '" + "' with ' from 1:a" * 500,
        "Exit before auth from <" + "1:1>: (user '" * 700,
        "Bad password attempt for '" + "' from 1:" * 900,
    ],
)
def test_known_crafted_dropbear_lines_are_cheap(message: str) -> None:
    line = f"Nov 27 08:00:00 gw dropbear[1]: {message}"[:LINE]
    start = time.perf_counter()
    for _ in range(10):
        authlog.parse_line(line, 0.0)
    assert (time.perf_counter() - start) / 10 <= BUDGET_S


def test_attacker_fields_are_capped_when_parsed() -> None:
    name = "A" * 7000
    fact = authlog.parse_line(
        f"Nov 27 08:00:00 gw sshd[9]: Failed password for invalid user {name} "
        "from 203.0.113.7 port 4242 ssh2",
        0.0,
    )
    assert isinstance(fact, authlog.AuthFact)
    assert fact.user == "A" * authlog.MAX_USER + authlog.TRUNCATED
    assert (fact.source, fact.port) == ("203.0.113.7", 4242)  # still counted, still located


# --- symlinks, permissions and odd files: the agent is not turned against its device --


def _decoy(tmp_path: Path) -> Path:
    decoy = tmp_path / "decoy"
    decoy.write_text("precious\n")
    decoy.chmod(0o4755)
    return decoy


def _untouched(decoy: Path) -> bool:
    return decoy.read_text() == "precious\n" and stat.S_IMODE(decoy.stat().st_mode) == 0o4755


def test_symlink_planted_at_the_events_file_is_not_followed(tmp_path: Path) -> None:
    states = tmp_path / "state"
    states.mkdir(mode=0o700)
    decoy = _decoy(tmp_path)
    (states / "events.jsonl").symlink_to(decoy)
    out = FileOutput(str(states / "events.jsonl"), max_bytes=4096, backups=0)
    out.start()
    for n in range(50):  # enough to rotate (truncate) if it were writing
        out.write(Record("event", {"n": n}), f'{{"n": {n}}}')
    out.retry()
    out.stop()
    assert _untouched(decoy)
    assert out.counts["errors"] > 0 and out.counts["written"] == 0


def test_symlink_planted_at_the_state_temporary_is_not_followed(tmp_path: Path) -> None:
    states = tmp_path / "state"
    states.mkdir(mode=0o700)
    decoy = _decoy(tmp_path)
    (states / "state.json.tmp").symlink_to(decoy)
    store = state.StateStore(str(states))
    assert store.save({"collectors.login": {"files": {}}})
    assert _untouched(decoy)
    assert not (states / "state.json.tmp").exists()
    assert (states / "state.json").read_text() == '{"collectors.login":{"files":{}}}'


def test_an_existing_events_file_keeps_its_mode(tmp_path: Path) -> None:
    states = tmp_path / "state"
    states.mkdir(mode=0o700)
    events = states / "events.jsonl"
    events.write_text("")
    events.chmod(0o600)  # the operator chose this: the agent never chmods what it did not make
    out = FileOutput(str(events))
    out.start()
    out.write(Record("event", {}), "{}")
    out.stop()
    assert stat.S_IMODE(events.stat().st_mode) == 0o600 and events.read_text() == "{}\n"


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_a_state_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    states = tmp_path / "state"
    states.mkdir()
    states.chmod(mode)
    with pytest.raises(safefs.UnsafePathError, match="writable by others"):
        safefs.check_dir(str(states))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(safefs.UnsafePathError, match="symbolic link"):
        safefs.check_dir(str(link))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(safefs.__file__).resolve().parents[1])
    return subprocess.run(
        [sys.executable, "-m", "defender_agent", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=30,
        check=False,
    )


def test_a_config_anyone_can_write_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[outputs.file]\npath = "{tmp_path}/anywhere.jsonl"\n')
    cfg.chmod(0o666)
    res = _cli("check", "--config", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"{cfg}: refusing a file writable by others (mode 0666): it says what the agent writes"
    )


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_a_config_that_is_not_a_file_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    path = {"dev-zero": "/dev/zero", "fifo": str(tmp_path / "fifo"), "directory": str(tmp_path)}
    if kind == "fifo":
        os.mkfifo(path[kind])
    res = _cli("check", "--config", path[kind])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"{path[kind]}: is not a regular file"


def test_a_nul_in_a_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"agent.state_dir: must not contain a NUL"):
        config.validate({"agent": {"state_dir": "/var/lib/x\0y"}}, "agent.toml")


def test_escape_sequences_in_user_names_are_not_sent_to_the_terminal(tmp_path: Path) -> None:
    states = tmp_path / "state"
    states.mkdir(mode=0o700)
    hostile = "root\x1b]0;pwned\x07\x1b[2J\n"
    alert = Record(
        "alert",
        {"name": "BruteForce", "severity": "low", "source": "192.0.2.1", "description": hostile},
        1.0,
        1.0,
    )
    (states / "events.jsonl").write_text(alert.to_json("d") + "\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{states}"\n')
    res = _cli("alerts", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert "root\\x1b]0;pwned\\x07\\x1b[2J\\x0a" in res.stdout


def test_a_deleted_state_directory_is_noticed_and_recreated(tmp_path: Path) -> None:
    states = tmp_path / "state"
    out = FileOutput(str(states / "events.jsonl"))
    out.start()
    out.write(Record("event", {"n": 1}), '{"n": 1}')
    for child in states.iterdir():
        child.unlink()
    states.rmdir()
    out.retry()  # the agent's 5-second timer
    out.write(Record("event", {"n": 2}), '{"n": 2}')
    out.stop()
    assert (states / "events.jsonl").read_text() == '{"n": 2}\n'
    assert out.counts["reopened"] == 1


# --- the whole agent, as a process, under a flood and a kill -9 -----------------------


def _config(tmp_path: Path, **login: object) -> Path:
    cfg = tmp_path / "agent.toml"
    lines = [
        "[agent]",
        f'state_dir = "{tmp_path / "state"}"',
        "[collectors.login]",
        f'auth_logs = ["{tmp_path / "auth.log"}"]',
        'wtmp = ""',
        'btmp = ""',
        *(f"{k} = {v}" for k, v in login.items()),
        "[collectors.sysinfo]",
        "enabled = false",
        "[collectors.process]",  # the host's processes and sockets: not this flood's
        "enabled = false",
        "[collectors.network]",
        "enabled = false",
        "[outputs.file]",
        "max_bytes = 1073741824",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    (tmp_path / "auth.log").write_text("")
    return cfg


def _start(cfg: Path, events: Path) -> subprocess.Popen[str]:
    src = str(Path(safefs.__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "defender_agent", "run", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": src},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not (events.exists() and events.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def _count(events: Path, needle: str) -> int:
    if not events.exists():
        return 0
    with open(events, "rb") as fh:
        return sum(needle.encode() in line for line in fh)


def _wait_for(events: Path, needle: str, n: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    got = _count(events, needle)
    while got < n and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _count(events, needle)
    return got


def _memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


RSS_CEILING_KIB = 32 * 1024


def test_a_flood_of_long_user_names_from_many_sources_stays_small(tmp_path: Path) -> None:
    """20,480 failures from 4,096 sources with 7,000-character user names (it grew the
    agent from 14 to 162 MB once): every failure becomes an event, memory stays small."""
    cfg = _config(tmp_path)
    events = tmp_path / "state" / "events.jsonl"
    proc = _start(cfg, events)
    try:
        with open(tmp_path / "auth.log", "a") as log:
            for n in range(20480):
                user = f"{n:05d}".ljust(7000, "A")
                source = f"198.51.{n % 4096 >> 8}.{n % 256}"
                log.write(
                    f"2026-11-27T08:00:{n % 60:02d}.000000+00:00 gw sshd[{1000 + n}]: "
                    f"Failed password for invalid user {user} from {source} port 4{n % 9999} ssh2\n"
                )
        got = _wait_for(events, '"login-failed"', 20480, 120)
        memory = _memory_kib(proc.pid)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert got == 20480, err[-2000:]
    print(f"\nflood: VmHWM {memory['VmHWM']} KiB, VmRSS {memory['VmRSS']} KiB")
    assert memory["VmHWM"] < RSS_CEILING_KIB, memory


def _failures(first: int, count: int, burst_at: int | None = None) -> str:
    """Failed logins each from its own source (no burst), numbered by pid; at `burst_at`,
    six from one source (one BruteForce)."""
    lines = []
    for n in range(first, first + count):
        source = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        if burst_at is not None and burst_at <= n < burst_at + 6:
            source = "203.0.113.66"
        lines.append(
            f"2026-11-27T08:{n // 1000 % 60:02d}:{n % 60:02d}.000000+00:00 gw sshd[{n}]: "
            f"Failed password for root from {source} port 22 ssh2\n"
        )
    return "".join(lines)


def _pids(events: Path) -> list[int]:
    import json

    out = []
    with open(events) as fh:
        for line in fh:
            if '"login-failed"' in line:
                out.append(json.loads(line)["payload"]["pid"])
    return out


def test_kill_9_mid_read_loses_nothing_and_raises_no_second_alert(tmp_path: Path) -> None:
    """60,000 failures (one burst among them), the agent killed with SIGKILL halfway
    through reading them, then started again: every failure arrives, at most about a
    second of input is read twice, and the burst's alert is raised once."""
    cfg = _config(tmp_path)
    events = tmp_path / "state" / "events.jsonl"
    proc = _start(cfg, events)
    started = time.monotonic()
    (tmp_path / "auth.log").write_text(_failures(0, 60000, burst_at=20000))
    done = _wait_for(events, '"login-failed"', 30000, 60)
    per_second = done / (time.monotonic() - started)
    proc.kill()
    proc.communicate(timeout=30)
    proc = _start(cfg, events)
    try:
        _wait_for(events, '"login-failed"', 60000, 120)
        time.sleep(1.5)  # a duplicate alert, if any, would be written by now
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    pids = _pids(events)
    assert set(pids) == set(range(60000)), "failures lost across the kill"
    replayed = len(pids) - 60000
    print(f"\nkill -9: {replayed} of 60000 events read twice ({per_second:.0f} events/s)")
    assert replayed <= 2 * per_second  # positions are saved every second
    assert _count(events, '"BruteForce"') == 1


def test_kill_9_before_the_first_periodic_save_loses_nothing(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    events = tmp_path / "state" / "events.jsonl"
    proc = _start(cfg, events)
    with open(tmp_path / "auth.log", "a") as log:
        log.write(_failures(0, 200))
    proc.kill()  # within milliseconds of the lines, before any periodic save
    proc.communicate(timeout=30)
    proc = _start(cfg, events)
    try:
        _wait_for(events, '"login-failed"', 200, 30)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert set(_pids(events)) == set(range(200))


def _world_readable(path: str) -> bool:
    """Whether every directory down to PATH lets others in (a pyenv under /root does not)."""
    parts = Path(path).resolve().parts
    return all(
        os.stat(os.path.join(*parts[: n + 1])).st_mode & 0o005 == 0o005 for n in range(len(parts))
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(
    not _world_readable(sys.base_prefix), reason="this Python's files are not readable by others"
)
def test_run_as_root_with_user_gives_up_root_before_reading_anything() -> None:
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    tmp_path = Path(tempfile.mkdtemp(prefix="defender-user-"))  # pytest's is root-only
    tmp_path.chmod(0o755)
    try:
        _run_as_nobody(tmp_path, nobody)
    finally:
        shutil.rmtree(tmp_path)


def _run_as_nobody(tmp_path: Path, nobody: Any) -> None:
    cfg = _config(tmp_path)
    states = tmp_path / "state"
    states.mkdir(mode=0o750)
    os.chown(states, nobody.pw_uid, nobody.pw_gid)
    src = str(Path(safefs.__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "defender_agent", "run", "--user", "nobody", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": src},
        stderr=subprocess.PIPE,
        text=True,
    )
    events = states / "events.jsonl"
    try:
        deadline = time.monotonic() + 20
        while not (events.exists() and events.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(f"/proc/{proc.pid}/status") as fh:
            ids = {k: v.split() for k, v in (ln.split(":", 1) for ln in fh) if k in ("Uid", "Gid")}
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert ids["Uid"] == [str(nobody.pw_uid)] * 4 and ids["Gid"] == [str(nobody.pw_gid)] * 4
    assert events.stat().st_uid == nobody.pw_uid


def test_user_switch_errors_are_one_line(tmp_path: Path) -> None:
    res = _cli("run", "--user", "no-such-user-zq", "--config", str(_config(tmp_path)))
    assert res.returncode == 2
    assert res.stderr.strip() == "defender-agent: --user no-such-user-zq: no such user"
