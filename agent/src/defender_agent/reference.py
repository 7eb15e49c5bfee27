"""Render the schema for people: docs/configuration.md and the packaged agent.toml.

Only `defender-agent config reference|defaults` (and the build) import this module; the
service never does.
"""

from __future__ import annotations

from defender_agent.schema import DEFAULT_PATH, SCHEMA, SECTIONS, Key

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


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
        "Plugin `enabled` keys (collectors, detectors, outputs) have three states: unset = on",
        "when the plugin is in this build; `false` = off; `true` = on, and an error on a",
        "build without it. (`outputs.stdout` and `outputs.syslog` are off unless set.)",
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
                "rules": "list of rule tables ([docs/alerts.md](alerts.md))",
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
