"""agent.toml: the one schema (defaults, types, ranges, docs) and its loader.

The schema is data (`SCHEMA`) so the agent, the installer, the Yocto/Buildroot config
generation, `docs/configuration.md` and `packaging/agent.toml` all come from one place.
"""

from __future__ import annotations

import os
from collections import namedtuple

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, NamedTuple

DEFAULT_PATH = "/etc/defender-agent/agent.toml"
DEFAULT_STATE_DIR = "/var/lib/defender-agent"


class ConfigError(Exception):
    """A user mistake in agent.toml; str() is the one line `PATH: KEY: problem`."""


if TYPE_CHECKING:

    class Key(NamedTuple):
        """One configuration key: where it lives, its type, default, allowed values and meaning."""

        section: str
        name: str
        type: str  # "bool" | "int" | "float" | "str" | "list" | "enum" | "optbool"
        default: Any
        doc: str
        min: float | None = None
        max: float | None = None
        choices: tuple[str, ...] = ()
        unit: str = ""

else:
    Key = namedtuple(
        "Key",
        "section name type default doc min max choices unit",
        defaults=(None, None, (), ""),
    )


_ENABLED_COLLECTOR = (
    "On when this collector is in the build; `true` on a build without it is an error."
)

SCHEMA: tuple[Key, ...] = (
    Key(
        "agent",
        "device_id",
        "str",
        "",
        "Device id in every record; empty = /etc/machine-id, else the host name.",
    ),
    Key(
        "agent",
        "state_dir",
        "str",
        DEFAULT_STATE_DIR,
        "Directory for state.json (follower offsets) and, by default, events.jsonl.",
    ),
    Key(
        "agent",
        "log_level",
        "enum",
        "info",
        "Level of the agent's own log on stderr.",
        choices=("debug", "info", "warning", "error"),
    ),
    Key(
        "agent",
        "heartbeat_interval",
        "float",
        300.0,
        "Seconds between heartbeat records.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "agent",
        "statistics_interval",
        "float",
        3600.0,
        "Seconds between statistics records (emitted, dropped, skipped counts).",
        min=1,
        max=604800,
        unit="s",
    ),
    Key("collectors.login", "enabled", "optbool", None, _ENABLED_COLLECTOR),
    Key(
        "collectors.login",
        "auth_logs",
        "list",
        ["/var/log/auth.log", "/var/log/secure", "/var/log/messages"],
        "Syslog files with sshd/dropbear/login messages; missing files are waited for.",
    ),
    Key(
        "collectors.login",
        "wtmp",
        "str",
        "/var/log/wtmp",
        "utmp-format log of logins and logouts; empty = do not follow.",
    ),
    Key(
        "collectors.login",
        "btmp",
        "str",
        "/var/log/btmp",
        "utmp-format log of failed logins; empty = do not follow.",
    ),
    Key(
        "collectors.login",
        "backend",
        "enum",
        "auto",
        "How to notice file changes: inotify, stat polling, or auto (inotify when available).",
        choices=("auto", "inotify", "poll"),
    ),
    Key(
        "collectors.login",
        "poll_interval",
        "float",
        1.0,
        "Seconds between stat polls when polling.",
        min=0.1,
        max=60,
        unit="s",
    ),
    Key(
        "collectors.login",
        "utmp_layout",
        "enum",
        "auto",
        "utmp record size: 384 (x86, x86_64, 32-bit ARM) or 400 (aarch64); auto = by CPU.",
        choices=("auto", "384", "400"),
    ),
    Key(
        "collectors.login",
        "dedup_hold",
        "float",
        2.0,
        "Seconds a btmp/wtmp record waits for the matching auth-log line before it is "
        "emitted alone (one attempt = one event).",
        min=0,
        max=30,
        unit="s",
    ),
    Key("collectors.sysinfo", "enabled", "optbool", None, _ENABLED_COLLECTOR),
    Key(
        "collectors.sysinfo",
        "interval",
        "float",
        86400.0,
        "Seconds between system-information events (one is sent at start).",
        min=60,
        max=2592000,
        unit="s",
    ),
    Key("detectors.brute_force", "enabled", "bool", True, "Raise BruteForce alerts."),
    Key(
        "detectors.brute_force",
        "max_failures",
        "int",
        5,
        "Failed logins from one source within `window` that raise an alert.",
        min=1,
        max=1000,
    ),
    Key(
        "detectors.brute_force",
        "window",
        "float",
        60.0,
        "Seconds the failures must fall within; also the quiet time before a new alert.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.brute_force",
        "success_window",
        "float",
        600.0,
        "A login from a source with `max_failures` failures this many seconds before it "
        "raises BruteForceSuccess.",
        min=1,
        max=86400,
        unit="s",
    ),
    Key(
        "detectors.brute_force",
        "max_sources",
        "int",
        4096,
        "Sources tracked at once; the oldest is evicted (and counted) beyond this.",
        min=16,
        max=1000000,
    ),
    Key("outputs.file", "enabled", "bool", True, "Write records as JSON lines."),
    Key("outputs.file", "path", "str", "", "JSON-lines file; empty = <state_dir>/events.jsonl."),
    Key(
        "outputs.file",
        "max_bytes",
        "int",
        1048576,
        "Rotate the file when it would grow beyond this size.",
        min=4096,
        max=1 << 34,
        unit="bytes",
    ),
    Key(
        "outputs.file",
        "backups",
        "int",
        3,
        "Rotated files kept (events.jsonl.1 ...).",
        min=0,
        max=20,
    ),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in SCHEMA))


class Config:
    """Validated settings: `cfg.section("collectors.login")["poll_interval"]`."""

    def __init__(self, values: dict[str, dict[str, Any]], path: str, from_file: bool) -> None:
        self._values = values
        self.path = path
        self.from_file = from_file

    def section(self, name: str) -> dict[str, Any]:
        return self._values[name]

    @property
    def state_dir(self) -> str:
        return str(self._values["agent"]["state_dir"])

    @property
    def events_path(self) -> str:
        path = str(self._values["outputs.file"]["path"])
        return path or os.path.join(self.state_dir, "events.jsonl")

    def collector_enabled(self, name: str, available: tuple[str, ...]) -> bool:
        """Unset means "on if in this build"; validation already rejected true-but-absent."""
        enabled = self._values[f"collectors.{name}"]["enabled"]
        return name in available and enabled is not False

    def device_id(self) -> str:
        configured = str(self._values["agent"]["device_id"])
        if configured:
            return configured
        try:
            with open("/etc/machine-id", encoding="ascii", errors="replace") as fh:
                machine_id = fh.read().strip()
            if machine_id:
                return machine_id
        except OSError:
            pass
        return os.uname().nodename


def defaults() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key in SCHEMA:
        value = key.default
        out[key.section][key.name] = list(value) if isinstance(value, list) else value
    return out


def _check_value(key: Key, value: Any) -> Any:
    """Return the normalised value or raise ValueError with the problem."""
    kind = key.type
    if kind in ("bool", "optbool"):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_show(value)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_show(value)}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {_show(value)}")
        value = float(value)
        if value != value:  # TOML allows nan; it would pass both range checks
            raise ValueError("expected a number, got nan")
    elif kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_show(value)}")
        return value
    elif kind == "enum":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or value not in key.choices:
            raise ValueError(f"expected one of {', '.join(key.choices)}, got {_show(value)}")
        return value
    elif kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {_show(value)}")
        return list(value)
    if key.min is not None and value < key.min:
        raise ValueError(f"{value} is below the minimum {_num(key.min)}")
    if key.max is not None and value > key.max:
        raise ValueError(f"{value} is above the maximum {_num(key.max)}")
    return value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _suggest(word: str, options: list[str]) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flatten(data: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """Map the nested TOML tables onto dotted section names, rejecting unknown tables."""
    out: dict[str, dict[str, Any]] = {}
    known_tops = sorted({s.split(".")[0] for s in SECTIONS})
    for top, table in data.items():
        if top not in known_tops:
            raise ConfigError(f"{path}: {top}: unknown section{_suggest(top, known_tops)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {top}: expected a table, got {_show(table)}")
        if top == "agent":
            out["agent"] = table
            continue
        subs = sorted(s.split(".", 1)[1] for s in SECTIONS if s.startswith(top + "."))
        for sub, subtable in table.items():
            name = f"{top}.{sub}"
            if sub not in subs:
                kind = top.rstrip("s")
                raise ConfigError(
                    f"{path}: {name}: unknown {kind}{_suggest(sub, subs)}"
                    f" (known: {', '.join(subs)})"
                )
            if not isinstance(subtable, dict):
                raise ConfigError(f"{path}: {name}: expected a table, got {_show(subtable)}")
            out[name] = subtable
    return out


def validate(
    data: dict[str, Any], path: str, available: tuple[str, ...], from_file: bool = True
) -> Config:
    """Check parsed TOML against SCHEMA; the first problem raises ConfigError."""
    values = defaults()
    by_section: dict[str, dict[str, Key]] = {s: {} for s in SECTIONS}
    for key in SCHEMA:
        by_section[key.section][key.name] = key
    for section, table in _flatten(data, path).items():
        keys = by_section[section]
        for name, raw in table.items():
            if name not in keys:
                raise ConfigError(
                    f"{path}: {section}.{name}: unknown key{_suggest(name, sorted(keys))}"
                )
            try:
                values[section][name] = _check_value(keys[name], raw)
            except ValueError as exc:
                raise ConfigError(f"{path}: {section}.{name}: {exc}") from None
    for section in SECTIONS:
        if not section.startswith("collectors."):
            continue
        name = section.split(".", 1)[1]
        if values[section]["enabled"] is True and name not in available:
            in_build = ", ".join(available) or "none"
            raise ConfigError(
                f"{path}: {section}.enabled: collector {name!r} is not in this build"
                f" (in this build: {in_build})"
            )
    if not values["agent"]["state_dir"]:
        raise ConfigError(f"{path}: agent.state_dir: must not be empty")
    return Config(values, path, from_file)


def _only_comments(text: str) -> bool:
    """True when the file sets nothing: blank lines, comments and known empty tables."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]") and line[1:-1].strip() in SECTIONS:
            continue
        return False
    return True


def load(path: str | None, available: tuple[str, ...]) -> Config:
    """Load PATH (explicit: must exist) or the default path (missing: defaults)."""
    explicit = path is not None
    target = path if path is not None else DEFAULT_PATH
    try:
        with open(target, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{target}: file not found") from None
        return validate({}, target, available, from_file=False)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{target}: not UTF-8 text") from None
    if _only_comments(text):
        # The packaged default (headers and comments): skip the TOML parser, ~1 MiB of RSS.
        return validate({}, target, available)
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(
                f"{target}: cannot parse TOML: Python < 3.11 needs the 'tomli' package"
            ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{target}: invalid TOML: {exc}") from None
    return validate(data, target, available)


def _toml_value(value: Any) -> str:
    if value is None:
        return "true"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value) + (".0" if value.is_integer() else "")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range(key: Key) -> str:
    if key.choices:
        return " | ".join(key.choices)
    if key.min is not None and key.max is not None:
        return f"{_num(key.min)} .. {_num(key.max)}"
    return ""


def render_toml() -> str:
    """The default agent.toml: every key, commented out, with its default and meaning."""
    lines = [
        "# Defender agent configuration (/etc/defender-agent/agent.toml).",
        "# Every key is shown commented out with its default; uncomment to change it.",
        "# Reference: docs/configuration.md. Check with: defender-agent check",
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for key in (k for k in SCHEMA if k.section == section):
            rng = _range(key)
            lines.append(f"# {key.doc}" + (f" ({rng})" if rng else ""))
            lines.append(f"# {key.name} = {_toml_value(key.default)}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """docs/configuration.md, generated so the reference never drifts from the code."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from agent/src/defender_agent/config.py by "
        "`defender-agent config reference`; do not edit by hand. -->",
        "",
        f"The agent reads `{DEFAULT_PATH}` (TOML). A missing file at that path means all",
        "defaults; a file given with `--config` must exist. Unknown sections or keys, values of",
        "the wrong type and values out of range are errors reported as one line",
        "`PATH: section.key: problem` (exit status 2), with a suggestion for misspelt keys.",
        "Check a file without starting the agent: `defender-agent check --config FILE`.",
        "",
        "Collector `enabled` keys have three states: unset = on when the collector is in this",
        "build; `false` = off; `true` = on, and an error on a build without that collector.",
    ]
    for section in SECTIONS:
        out += [
            "",
            f"## [{section}]",
            "",
            "| key | type | default | allowed | meaning |",
            "|---|---|---|---|---|",
        ]
        for key in (k for k in SCHEMA if k.section == section):
            kind = {
                "optbool": "bool",
                "list": "list of strings",
                "enum": "string",
                "str": "string",
                "float": "number",
                "int": "integer",
            }.get(key.type, key.type)
            default = "(on if in build)" if key.default is None else _toml_value(key.default)
            rng = _range(key).replace("|", "\\|")
            unit = f" {key.unit}" if key.unit and rng else ""
            out.append(f"| `{key.name}` | {kind} | `{default}` | {rng}{unit} | {key.doc} |")
    return "\n".join(out) + "\n"
