"""Debian's /usr/share/doc files: the licence as DEP-5, a reproducible gzip -9n changelog."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from defender_installer import debian_docs
from defender_installer.agent_source import load_agent_source
from defender_installer.debian_docs import PackageDocs
from defender_installer.errors import UserError

DOC = "usr/share/doc/defender-agent"
MakeAgent = Callable[..., Path]


def docs(repo: Path, version: str = "1.2.3", license_file: Path | None = None) -> PackageDocs:
    return PackageDocs(
        package="defender-agent",
        version=version,
        maintainer="Defender maintainers <defender@users.noreply.github.com>",
        license_name="MIT",
        license_file=license_file or repo / "LICENSE",
        date=1700000000,
        builder="defender-installer 9.9",
    )


def test_copyright_is_the_licence_in_dep5(repo: Path) -> None:
    text = debian_docs.copyright_text(docs(repo))
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    )
    files = paragraphs[1].splitlines()
    assert files[:3] == ["Files: *", "Copyright: 2026 The Defender authors", "License: Expat"]
    assert all(line.startswith(" ") for line in files[3:])
    # every line of the licence travels (the title is the License field), blank ones as " ."
    lines = (repo / "LICENSE").read_text().strip().splitlines()
    body = [line for line in lines[1:] if not line.startswith("Copyright")]
    expected = [f" {line}" if line else " ." for line in "\n".join(body).strip().splitlines()]
    assert files[3:] == expected


def test_licence_without_copyright_line_is_a_user_error(tmp_path: Path, repo: Path) -> None:
    (tmp_path / "LICENSE").write_text("Do what you like.\n")
    with pytest.raises(UserError, match="no 'Copyright' line"):
        debian_docs.copyright_text(docs(repo, license_file=tmp_path / "LICENSE"))


def test_agent_checkout_without_a_licence_is_refused(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    (root / "LICENSE").unlink()
    with pytest.raises(UserError, match="no licence text"):
        load_agent_source(root)


@pytest.mark.parametrize(
    ("version", "name"),
    [("1.2.3", "changelog.gz"), ("1.2.3+dev1", "changelog.gz"), ("1.2.3-2", "changelog.Debian.gz")],
)
def test_changelog_name_follows_the_version(repo: Path, version: str, name: str) -> None:
    assert set(debian_docs.doc_files(docs(repo, version))) == {"copyright", name}


def test_changelog_is_gzip_9n_and_one_entry(repo: Path) -> None:
    data = debian_docs.doc_files(docs(repo))["changelog.gz"]
    assert data[:4] == b"\x1f\x8b\x08\x00"  # deflate, no flags: no file name in the header
    assert data[4:8] == b"\0\0\0\0"  # no time
    assert data[8] == 2  # maximum compression
    assert gzip.decompress(data).decode() == (
        "defender-agent (1.2.3) unstable; urgency=medium\n\n"
        "  * Defender agent 1.2.3, packaged by defender-installer 9.9.\n"
        "    The changes are in the project's git history.\n\n"
        " -- Defender maintainers <defender@users.noreply.github.com>"
        "  Tue, 14 Nov 2023 22:13:20 +0000\n"
    )
    assert debian_docs.doc_files(docs(repo))["changelog.gz"] == data


def test_package_carries_copyright_changelog_and_manual(
    full_deb: dict[str, object], dpkg_deb: Callable[..., str], tmp_path: Path, repo: Path
) -> None:
    dpkg_deb("-x", str(full_deb["path"]), str(tmp_path))
    assert (tmp_path / DOC / "copyright").read_text() == debian_docs.copyright_text(
        docs(repo, "0")
    ).replace("defender-installer 9.9", f"defender-installer {full_deb['version']}")
    changelog = gzip.decompress((tmp_path / DOC / "changelog.gz").read_bytes()).decode()
    assert changelog.startswith(f"defender-agent ({full_deb['version']}) unstable;")
    assert "Tue, 14 Nov 2023 22:13:20 +0000" in changelog  # SOURCE_DATE_EPOCH
    manual = gzip.decompress((tmp_path / "usr/share/man/man1/defender-agent.1.gz").read_bytes())
    assert manual == (repo / "agent/packaging/defender-agent.1").read_bytes()
    overrides = (tmp_path / "usr/share/lintian/overrides/defender-agent").read_text()
    tags = [line for line in overrides.splitlines() if line and not line.startswith("#")]
    assert tags and all(line.startswith("defender-agent: ") for line in tags)


def test_changelog_date_without_source_date_epoch_is_the_commit(
    login_deb: dict[str, object], dpkg_deb: Callable[..., str], tmp_path: Path, repo: Path
) -> None:
    commit = subprocess.run(
        ["git", "-C", str(repo / "agent"), "log", "-1", "--format=%ct", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    )
    epoch = commit.stdout.strip()
    if commit.returncode != 0 or not epoch:
        pytest.skip("not a git checkout")
    dpkg_deb("-x", str(login_deb["path"]), str(tmp_path))
    changelog = gzip.decompress((tmp_path / DOC / "changelog.gz").read_bytes()).decode()
    assert format_datetime(datetime.fromtimestamp(int(epoch), UTC)) in changelog
