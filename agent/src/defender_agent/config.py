"""agent.toml: load and validate against the schema (schema.py), one error per line.

The renderers of the schema (docs/configuration.md, packaging/agent.toml) live in
reference.py, off the service's run path.
"""

from __future__ import annotations

import os

from defender_agent.schema import DEFAULT_PATH, DEFAULT_STATE_DIR, SCHEMA, SECTIONS, Key

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

MAX_CONFIG_BYTES = 1 << 20  # agent.toml is a few KiB; /dev/zero or a FIFO must not hang us

__all__ = ["DEFAULT_PATH", "DEFAULT_STATE_DIR", "Config", "ConfigError", "load", "validate"]


class ConfigError(Exception):
    """A user mistake in agent.toml; str() is the one line `PATH: KEY: problem`."""


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
        return str(self._values["outputs.file"]["path"])

    def enabled(self, kind: str, name: str, available: tuple[str, ...]) -> bool:
        """Unset means "on if in this build"; validation already rejected true-but-absent."""
        enabled = self._values[f"{kind}.{name}"]["enabled"]
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
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value
    elif kind == "enum":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or value not in key.choices:
            raise ValueError(f"expected one of {', '.join(key.choices)}, got {_show(value)}")
        return value
    elif kind == "rules":  # custom alert rules: their own checks, one line per problem
        from defender_agent import rules

        return rules.parse(value)
    elif kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {_show(value)}")
        if any("\0" in v for v in value):
            raise ValueError("must not contain a NUL character")
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


def _key(word: str) -> str:
    """A name from the file, fit for a one-line message: quoted when it is not plain."""
    plain = word and all(c.isalnum() or c in "_-" for c in word) and word.isascii()
    return word if plain else repr(word[:60])


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
            raise ConfigError(f"{path}: {_key(top)}: unknown section{_suggest(top, known_tops)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {top}: expected a table, got {_show(table)}")
        if top in SECTIONS:  # a section of its own ([agent], [aggregation])
            out[top] = table
            continue
        subs = sorted(s.split(".", 1)[1] for s in SECTIONS if s.startswith(top + "."))
        for sub, subtable in table.items():
            name = f"{top}.{sub}"
            if sub not in subs:
                kind = top.rstrip("s")
                raise ConfigError(
                    f"{path}: {top}.{_key(sub)}: unknown {kind}{_suggest(sub, subs)}"
                    f" (known: {', '.join(subs)})"
                )
            if not isinstance(subtable, dict):
                raise ConfigError(f"{path}: {name}: expected a table, got {_show(subtable)}")
            out[name] = subtable
    return out


def validate(
    data: dict[str, Any],
    path: str,
    available: dict[str, tuple[str, ...]] | None = None,
    from_file: bool = True,
) -> Config:
    """Check parsed TOML against SCHEMA; the first problem raises ConfigError.

    `available` maps each plugin kind to the names this build ships (default: ask the
    registries); enabling a plugin that is not in the build is an error.
    """
    if available is None:
        available = available_plugins()
    values = defaults()
    by_section: dict[str, dict[str, Key]] = {s: {} for s in SECTIONS}
    for key in SCHEMA:
        by_section[key.section][key.name] = key
    for section, table in _flatten(data, path).items():
        keys = by_section[section]
        for name, raw in table.items():
            if name not in keys:
                raise ConfigError(
                    f"{path}: {section}.{_key(name)}: unknown key{_suggest(name, sorted(keys))}"
                )
            try:
                values[section][name] = _check_value(keys[name], raw)
            except ValueError as exc:
                raise ConfigError(f"{path}: {section}.{name}: {exc}") from None
    for section in SECTIONS:
        kind, _, name = section.partition(".")
        if kind not in available or values[section].get("enabled") is not True:
            continue
        if name not in available[kind]:
            in_build = ", ".join(available[kind]) or "none"
            raise ConfigError(
                f"{path}: {section}.enabled: {kind[:-1]} {name!r} is not in this build"
                f" (in this build: {in_build})"
            )
    if not values["agent"]["state_dir"]:
        raise ConfigError(f"{path}: agent.state_dir: must not be empty")
    syslog = values["outputs.syslog"]
    if syslog["transport"] != "unix" and (not syslog["address"] or "/" in syslog["address"]):
        raise ConfigError(
            f"{path}: outputs.syslog.address: transport {syslog['transport']} needs the "
            f"collector's address or host name, got {_show(syslog['address'])}"
        )
    if not values["outputs.file"]["path"]:
        values["outputs.file"]["path"] = os.path.join(values["agent"]["state_dir"], "events.jsonl")
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


def available_plugins() -> dict[str, tuple[str, ...]]:
    """{kind: names in this build} for every plugin kind."""
    from defender_agent.plugins import registries

    return {kind: registry.available() for kind, registry in registries().items()}


def load(path: str | None, available: dict[str, tuple[str, ...]] | None = None) -> Config:
    """Load PATH (explicit: must exist) or the default path (missing: defaults)."""
    explicit = path is not None
    target = path if path is not None else DEFAULT_PATH
    from defender_agent import safefs

    try:
        raw = safefs.read_small(target, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{target}: file not found") from None
        return validate({}, target, available, from_file=False)
    except safefs.UnsafePathError as exc:
        raise ConfigError(f"{target}: {exc.strerror}") from None
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
