"""defender-agent: run, check, alerts, replay, version (and config reference/defaults)."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from defender_agent import __version__, config
from defender_agent import log as _log
from defender_agent.model import rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

log = _log.get("defender_agent")

EXIT_OK, EXIT_NOTHING_RUNS, EXIT_USAGE = 0, 1, 2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2, no traceback."""


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if m is None:
        raise UserError(f"--since: {text!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _load(path: str | None) -> config.Config:
    cfg = config.load(path)
    if not cfg.from_file:
        log.info("no %s; using defaults", cfg.path)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from defender_agent import agent as agent_mod

    cfg = _load(args.config)  # as started: a root-only configuration stays root-only
    if args.user:
        from defender_agent import privileges

        try:
            privileges.drop_to(args.user)
        except privileges.PrivilegeError as exc:
            raise UserError(str(exc)) from None
    _log.configure(cfg.section("agent")["log_level"])
    try:
        agent = agent_mod.build(cfg, stdout=args.stdout)
    except OSError as exc:
        where = exc.filename or cfg.state_dir
        raise UserError(f"{where}: cannot use it: {exc.strerror or exc}") from None
    if not agent.collectors:
        log.warning("no collector is enabled; only heartbeats will be written")
    settings = cfg.section("agent")
    agent.loop.install_signals()
    agent.start(settings["heartbeat_interval"], settings["statistics_interval"])
    log.info(
        "started (version %s, collectors: %s)",
        __version__,
        ", ".join(c.name for c in agent.collectors) or "none",
    )
    agent.run(args.duration)
    log.info("stopped")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from defender_agent.loop import new_poller  # the probe `run` itself makes
    from defender_agent.plugins import registries

    cfg = _load(args.config)
    print(f"config: {cfg.path} ({'ok' if cfg.from_file else 'not found, defaults'})")
    poller, takes_ms = new_poller()
    print(f"event loop: {'poll(2), no epoll in this kernel' if takes_ms else 'epoll'}")
    if not takes_ms:
        poller.close()
    collectors_on = 0
    for kind, registry in registries().items():
        available = registry.available()
        for name in registry.names:
            in_build = name in available
            enabled = cfg.enabled(kind, name, available)
            print(
                f"{kind[:-1]} {name}: in build: {'yes' if in_build else 'no'}, "
                f"enabled: {'yes' if enabled else 'no'}"
            )
            if enabled:
                collectors_on += kind == "collectors"
                for line in registry.load(name).describe(cfg.section(f"{kind}.{name}")):
                    print(f"  {line}")
    state_dir = cfg.state_dir
    probe = state_dir
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    writable = os.access(probe, os.W_OK)
    print(f"state dir: {state_dir} ({'writable' if writable else 'NOT writable'})")
    print(f"events: {cfg.events_path}")
    if collectors_on == 0:
        print("nothing can run: no collector is enabled in this build", file=sys.stderr)
        return EXIT_NOTHING_RUNS
    return EXIT_OK


def _event_files(path: str) -> list[str]:
    """The rotated backups oldest first, then the live file."""
    files = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        files.append(f"{path}.{n}")
        n += 1
    return [*reversed(files), path]


def read_alerts(path: str, since: float | None = None) -> list[dict[str, Any]]:
    """Alerts in the file and its backups, oldest first; `since` (seconds) keeps those
    whose `time` (when the attack happened, not when it was read) is that recent."""
    start = time.time() - since if since is not None else 0.0
    cutoff = rfc3339(start) if start > 0 else ""  # before 1970: everything
    alerts = []
    for name in _event_files(path):
        try:
            fh = open(name, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UserError(f"{name}: cannot read: {exc.strerror}") from None
        with fh:
            for line in fh:
                if '"alert"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn or foreign line must not hide the others
                if (
                    isinstance(rec, dict)
                    and rec.get("type") == "alert"
                    and (str(rec.get("time", "")) >= cutoff)
                ):
                    alerts.append(rec)
    return alerts


def cmd_alerts(args: argparse.Namespace) -> int:
    since = parse_duration(args.since) if args.since is not None else None
    cfg = _load(args.config)
    alerts = read_alerts(cfg.events_path, since)
    if args.json:
        for rec in alerts:
            print(json.dumps(rec, separators=(",", ":")))
        return EXIT_OK
    if not alerts:
        print("no alerts")
        return EXIT_OK
    rows = [["TIME", "SEVERITY", "NAME", "SOURCE", "SUMMARY"]]
    for rec in alerts:
        p = rec.get("payload") or {}
        fields = (rec.get("time", ""), p.get("severity", ""), p.get("name", ""))
        rest = (p.get("source") or "-", p.get("description", ""))
        rows.append([printable(str(cell)) for cell in (*fields, *rest)])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
    return EXIT_OK


def printable(text: str, limit: int = 200) -> str:
    """Attacker-chosen text (user names) for a terminal: control characters, escape
    sequences included, are shown as \\xNN instead of being sent to the terminal."""
    out = []
    for ch in text[:limit]:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out) + ("..." if len(text) > limit else "")


def _since(text: str) -> float:
    """--since: a duration back from now (30m, 2d) or an RFC 3339 / ISO 8601 time."""
    from defender_agent.collectors.common import timestamps

    if _DURATION.match(text.strip()):
        return time.time() - parse_duration(text)
    stamp = timestamps.iso(text.strip()) or timestamps.iso(text.strip() + "T00:00:00")
    if stamp is None:
        raise UserError(f"--since: {text!r} is neither a duration (10m, 2d) nor a date-time")
    return stamp


def cmd_replay(args: argparse.Namespace) -> int:
    from defender_agent import replay

    cfg = _load(args.config)
    _log.configure("warning")  # the report is the output; the agent's own chatter is not
    since = _since(args.since) if args.since else None
    try:
        session = replay.Replay(cfg, since, print if args.json else None)
        for path in args.files:
            session.file(path, args.format)
    except replay.ReplayError as exc:
        raise UserError(str(exc)) from None
    result = session.finish()
    if args.json:
        return EXIT_OK
    print(f"replayed {session.lines} entries from {len(args.files)} file(s)")
    events = result.events
    print("events: " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none"))
    print(f"alerts: {len(result.alerts)}")
    for record in result.alerts:
        payload = record.payload
        fields = (rfc3339(record.time or 0.0), payload.get("severity"), payload.get("name"))
        line = "  ".join(str(x) for x in fields)
        print(f"  {line}  {printable(str(payload.get('description', '')))}")
    unknown = sum(session.unknown.values())
    if unknown:
        print(f"not understood: {unknown} line(s) in {len(session.unknown)} form(s)")
        for form, count in session.unknown.most_common():
            print(f"  {count:6d}  {printable(form)}")
            if form in session.examples:
                print(f"          e.g. {printable(session.examples[form])}")
    other = {k: v for k, v in session.skipped.items() if k != "unknown-message"}
    if other:
        print("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(other.items())))
    return EXIT_OK


def cmd_version(_args: argparse.Namespace) -> int:
    print(f"defender-agent {__version__}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    if args.what in ("reference", "defaults"):
        from defender_agent import reference

        render = reference.render_markdown if args.what == "reference" else reference.render_toml
        sys.stdout.write(render())
    else:
        cfg = _load(args.config)
        print(f"{cfg.path}: ok")
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # one line, exit 2, as for other user errors
            raise UserError(message)

    parser = _Parser(prog="defender-agent", description="Defender on-device security agent")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    conf_help = f"configuration file (default {config.DEFAULT_PATH})"

    p = sub.add_parser("run", help="run the agent (the service)")
    p.add_argument("--config", metavar="PATH", help=conf_help)
    p.add_argument("--stdout", action="store_true", help="also write records to stdout")
    p.add_argument(
        "--user", metavar="NAME", help="switch to this user first (when started as root)"
    )
    p.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate config; show what would run and how")
    p.add_argument("--config", metavar="PATH", help=conf_help)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("alerts", help="show recorded alerts")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.add_argument("--since", metavar="DURATION", help="only alerts newer than 30s/10m/2h/1d")
    p.add_argument("--config", metavar="PATH", help=conf_help)
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("replay", help="run the parsers and detectors over existing logs")
    p.add_argument("files", nargs="+", metavar="FILE", help="auth logs, journal exports, utmp")
    p.add_argument("--format", choices=("auto", "syslog", "journal-json", "utmp"), default="auto")
    p.add_argument("--since", metavar="T", help="only entries after T (10m, 2d, or a date)")
    p.add_argument("--json", action="store_true", help="events and alerts as JSON lines")
    p.add_argument("--config", metavar="PATH", help=conf_help)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("config", help="print the configuration reference or defaults")
    p.add_argument("what", choices=("reference", "defaults", "validate"))
    p.add_argument("--config", metavar="PATH", help=conf_help)
    p.set_defaults(func=cmd_config)
    return parser


def _parse_run_fast(argv: Sequence[str]) -> Any:
    """`run` as the service starts it, parsed without argparse (its import costs ~0.4 MiB
    of RSS for the agent's whole life). Anything unusual goes to argparse."""
    if not argv or argv[0] != "run":
        return None
    values: dict[str, Any] = {"config": None, "stdout": False, "duration": None, "user": None}
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg == "--stdout":
            values["stdout"] = True
        elif arg.startswith("--config=") and len(arg) > 9:
            values["config"] = arg[9:]
        elif arg == "--config" and rest and not rest[0].startswith("-"):
            values["config"] = rest.pop(0)
        elif arg.startswith("--user=") and len(arg) > 7:
            values["user"] = arg[7:]
        elif arg == "--user" and rest and not rest[0].startswith("-"):
            values["user"] = rest.pop(0)
        else:
            return None
    return _Namespace(func=cmd_run, **values)


class _Namespace:
    """The tiny stand-in for argparse.Namespace used by the fast path."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    _log.configure("info")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parse_run_fast(argv)
        if args is None:
            args = make_parser().parse_args(argv)
        result: int = args.func(args)
        return result
    except (UserError, config.ConfigError) as exc:
        print(f"defender-agent: {exc}" if isinstance(exc, UserError) else str(exc), file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
