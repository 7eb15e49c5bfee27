"""Package formats the installer can build, as data.

nfpm builds every format from the same contents list; what differs per format is
the packager name, the file name, the dependency syntax, the maintainer
scripts (each format calls them with different arguments) and the files the
format's conventions add (Debian's copyright, changelog and lintian overrides).
Adding rpm, ipk or apk means adding one entry here plus its scripts under
templates/<format>/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from defender_installer import debian_docs, layout
from defender_installer.debian_docs import PackageDocs
from defender_installer.errors import UserError


@dataclass(frozen=True)
class PackageFormat:
    """How to ask nfpm for one package format."""

    name: str
    packager: str
    arch: str
    depends: tuple[str, ...]
    # nfpm script key (postinstall, preremove, ...) -> template under templates/<name>/.
    scripts: Mapping[str, str]
    filename: Callable[[str, str, str], str]  # (package name, version, arch) -> file name
    version_pattern: re.Pattern[str]
    # Documentation the format wants: file name in layout.DOC_DIR -> content.
    doc_files: Callable[[PackageDocs], Mapping[str, bytes]]
    # Other files the format wants: path on the device -> template under templates/<name>/.
    rendered_files: Mapping[str, str]

    def check_version(self, version: str) -> None:
        """Refuse versions the target package manager would reject or misorder."""
        if not self.version_pattern.match(version):
            raise UserError(
                f"--version {version!r}: not a valid {self.name} version "
                "(start with a digit; letters, digits and . + ~ - only)"
            )


DEB = PackageFormat(
    name="deb",
    packager="deb",
    arch="all",
    # The agent needs Python >= 3.9, and tomllib (3.11) or the tomli backport.
    depends=("python3 (>= 3.9)", "python3 (>= 3.11) | python3-tomli"),
    scripts=MappingProxyType(
        {"postinstall": "postinst.sh.j2", "preremove": "prerm.sh.j2", "postremove": "postrm.sh.j2"}
    ),
    filename=lambda name, version, arch: f"{name}_{version}_{arch}.deb",
    # Debian policy 5.6.12 upstream_version (no epoch; a hyphen makes a revision).
    version_pattern=re.compile(r"^[0-9][A-Za-z0-9.+~-]*$"),
    doc_files=debian_docs.doc_files,
    rendered_files=MappingProxyType({layout.LINTIAN_OVERRIDES_PATH: "lintian-overrides.j2"}),
)

FORMATS: Mapping[str, PackageFormat] = MappingProxyType({DEB.name: DEB})


def get_format(name: str) -> PackageFormat:
    """The format called `name`, or a UserError naming the ones this build supports."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(
            f"--format {name!r}: not supported; supported formats: {', '.join(FORMATS)}"
        ) from None
