"""The deb maintainer scripts, rendered as a real build renders them, pass shellcheck.

The templates (templates/deb/*.sh.j2) are Jinja2, which shellcheck cannot read, so
`make lint` leaves them to this test: each is rendered for a representative package and
the result is checked as the POSIX sh that dpkg will run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from defender_installer import build
from defender_installer.formats import FORMATS

SHELLCHECK = shutil.which("shellcheck")
TEMPLATES = Path(build.__file__).resolve().parent / "templates"


def rendered_scripts(tmp_path: Path) -> list[Path]:
    """Every format's maintainer scripts, rendered as `defender-installer build` does."""
    env = build._templates()
    paths: list[Path] = []
    for fmt in FORMATS.values():
        out = tmp_path / fmt.name
        paths += [Path(p) for p in build._render_scripts(env, fmt, "1.2.3~rc1", out).values()]
    return sorted(paths)


def test_every_script_template_is_rendered(tmp_path: Path) -> None:
    """No template is forgotten: each *.sh.j2 is a script of a format or included by one."""
    rendered = {p.name for p in rendered_scripts(tmp_path)}
    for template in sorted(TEMPLATES.glob("*/*.sh.j2")):
        name = template.name.removesuffix(".j2")
        included = any(
            f'include "{template.parent.name}/{template.name}"' in other.read_text("utf-8")
            for other in template.parent.glob("*.j2")
        )
        assert name in rendered or included, f"{template} is neither rendered nor included"


@pytest.mark.skipif(
    SHELLCHECK is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
def test_rendered_scripts_pass_shellcheck(tmp_path: Path) -> None:
    assert SHELLCHECK is not None
    scripts = rendered_scripts(tmp_path)
    assert scripts, "no maintainer scripts rendered"
    for script in scripts:
        assert script.read_text(encoding="utf-8").startswith("#!/bin/sh\n"), script.name
    result = subprocess.run(
        [SHELLCHECK, "--shell=sh", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
