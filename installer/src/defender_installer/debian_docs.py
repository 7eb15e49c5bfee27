"""What a .deb carries in /usr/share/doc/<package>: the licence and a changelog.

Debian policy (12.5, 12.7) wants both in every binary package: `copyright`, here the
agent's LICENSE in the machine-readable format (DEP-5), and a changelog compressed with
`gzip -9n`. The changelog is `changelog.gz` for a native version (no Debian revision,
as this project's own packages are) and `changelog.Debian.gz` for one with a revision
(`--version 1.0-2`), the names lintian expects. Nothing here reads the clock: the
changelog's date is handed in, and the gzip header holds neither a name nor a time, so
a build with SOURCE_DATE_EPOCH stays byte-for-byte reproducible.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from defender_installer.errors import UserError

DEP5_FORMAT = "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
# SPDX identifier -> DEP-5 short name, where they differ ("MIT" is ambiguous in DEP-5).
DEP5_LICENSE_NAMES = {"MIT": "Expat"}
_COPYRIGHT_LINE = re.compile(r"^\s*Copyright\b(?:\s*(?:\(c\)|©))*\s*(?P<holder>.*\S)\s*$", re.I)
_TITLE_LINE = re.compile(r"^\s*\S.*\bLicen[cs]e\s*$", re.I)


@dataclass(frozen=True)
class PackageDocs:
    """What the documentation files are made from."""

    package: str
    version: str
    maintainer: str
    license_name: str  # SPDX, as layout.LICENSE
    license_file: Path
    date: int  # seconds since the epoch: SOURCE_DATE_EPOCH, the version's commit or now
    builder: str  # "defender-installer X.Y"


def doc_files(docs: PackageDocs) -> dict[str, bytes]:
    """File name under /usr/share/doc/<package>/ -> content."""
    return {
        "copyright": copyright_text(docs).encode("utf-8"),
        changelog_name(docs.version): gzip_n(changelog_text(docs).encode("utf-8")),
    }


def _dep5_block(text: str) -> list[str]:
    """Free text as a DEP-5 continuation: one leading space, an empty line as ` .`."""
    return [f" {line.rstrip()}" if line.strip() else " ." for line in text.strip().splitlines()]


def copyright_text(docs: PackageDocs) -> str:
    """The licence file as DEP-5: its `Copyright` lines become the Copyright field."""
    try:
        lines = docs.license_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{docs.license_file}: cannot read the licence: {exc}") from exc
    holders = [m["holder"] for line in lines if (m := _COPYRIGHT_LINE.match(line))]
    if not holders:
        raise UserError(f"{docs.license_file}: no 'Copyright' line naming the holders")
    body = [line for line in lines if not _COPYRIGHT_LINE.match(line)]
    if body and _TITLE_LINE.match(body[0]):  # "MIT License": the field names it already
        body = body[1:]
    name = DEP5_LICENSE_NAMES.get(docs.license_name, docs.license_name)
    out = [
        f"Format: {DEP5_FORMAT}",
        f"Upstream-Name: {docs.package}",
        f"Comment: The licence of the Defender agent ({docs.license_file.name} in its",
        f" repository), packaged by {docs.builder}.",
        "",
        "Files: *",
        "Copyright: " + holders[0],
        *(f" {holder}" for holder in holders[1:]),
        f"License: {name}",
        *_dep5_block("\n".join(body)),
    ]
    return "\n".join(out) + "\n"


def changelog_name(version: str) -> str:
    """`changelog.gz` for a native version, `changelog.Debian.gz` with a Debian revision."""
    return "changelog.Debian.gz" if "-" in version else "changelog.gz"


def changelog_text(docs: PackageDocs) -> str:
    """One Debian changelog entry for the packaged version (deb-changelog(5))."""
    when = format_datetime(datetime.fromtimestamp(docs.date, UTC))  # RFC 5322, +0000
    return (
        f"{docs.package} ({docs.version}) unstable; urgency=medium\n"
        "\n"
        f"  * Defender agent {docs.version}, packaged by {docs.builder}.\n"
        "    The changes are in the project's git history.\n"
        "\n"
        f" -- {docs.maintainer}  {when}\n"
    )


def gzip_n(data: bytes) -> bytes:
    """`gzip -9n`: maximum compression, no file name and a zero time in the header."""
    return gzip.compress(data, compresslevel=9, mtime=0)
