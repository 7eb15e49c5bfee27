"""The built .deb passes lintian, Debian's package checker, without errors or warnings.

What the package carries against lintian's advice is in its overrides file
(templates/deb/lintian-overrides.j2), each tag with its reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

LINTIAN = shutil.which("lintian")

pytestmark = pytest.mark.skipif(
    LINTIAN is None,
    reason="lintian not installed (apt-get install lintian, or scripts/install-system-deps.sh)",
)


def lintian(deb: object) -> subprocess.CompletedProcess[str]:
    assert LINTIAN is not None
    return subprocess.run(
        [LINTIAN, "--fail-on", "error,warning", "--display-info", "--pedantic", str(deb)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("package", ["full_deb", "login_deb"])
def test_lintian_finds_no_error_or_warning(package: str, request: pytest.FixtureRequest) -> None:
    """Every collector and output, and the smallest build: both are clean."""
    result = lintian(request.getfixturevalue(package)["path"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line[:3] in ("E: ", "W: ")]


def test_lintian_accepts_a_version_with_a_debian_revision(
    installer: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """`--version 1.0-1` is not native: its changelog is changelog.Debian.gz."""
    built = installer("build", "--out", str(tmp_path), "--json", "--version", "1.0-1")
    assert built.returncode == 0, built.stderr
    result = lintian(json.loads(built.stdout)["path"])
    assert result.returncode == 0, result.stdout + result.stderr
