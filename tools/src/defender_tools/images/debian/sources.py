"""The Debian mirror: read from the host's apt sources at run time (no host names in the repo)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from defender_tools.errors import UserError


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str


def _deb822_fields(para: str) -> dict[str, str]:
    """The fields of one deb822 paragraph (keys lower-cased, continuation lines joined)."""
    fields: dict[str, str] = {}
    last = ""
    for line in para.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and last:
            fields[last] += " " + line.strip()
            continue
        key, _, value = line.partition(":")
        last = key.strip().lower()
        fields[last] = value.strip()
    return fields


def _deb822_sources(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for para in re.split(r"\n\s*\n", text):
        fields = _deb822_fields(para)
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri, suite))
    return out


def _one_line_sources(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = re.sub(r"\[[^]]*\]", " ", line).split()
        if len(words) >= 3:
            out.append(AptSource(words[1], words[2]))
    return out


def host_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    """The host's configured Debian sources (read at run time: no host names in the repo)."""
    found: list[AptSource] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        found += _deb822_sources(path.read_text(encoding="utf-8", errors="replace"))
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            found += _one_line_sources(path.read_text(encoding="utf-8", errors="replace"))
    return found


def mirror_lines(suite: str, sources: Iterable[AptSource]) -> list[str]:
    """One-line `deb` entries for SUITE (+ -updates, -security) on the host's mirrors."""
    sources = list(sources)
    codenames = {s.suite for s in sources if "-" not in s.suite and "/" not in s.suite}
    lines: list[str] = []
    for src in sources:
        base, dash, suffix = src.suite.partition("-")
        if base not in codenames or suffix not in ("", "updates", "security"):
            continue
        line = f"deb {src.uri} {suite}{dash}{suffix} main"
        if line not in lines:
            lines.append(line)
    if not any(line.split()[2] == suite for line in lines):
        raise UserError(
            "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources"
        )
    return lines
