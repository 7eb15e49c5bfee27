"""Build the agent's .deb through the installer's own command line (its public contract)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from defender_tools.errors import UserError


def _installer() -> str:
    beside = Path(sys.executable).with_name("defender-installer")
    if beside.is_file():
        return str(beside)
    found = shutil.which("defender-installer")
    if found is None:
        raise UserError("defender-installer not found (pip install -e installer/)")
    return found


def build_agent_deb(out_dir: Path, collectors: str | None = None) -> Path:
    """`defender-installer build --format deb --json`; returns the package path it reports."""
    cmd = [_installer(), "build", "--format", "deb", "--out", str(out_dir), "--json"]
    if collectors:
        cmd += ["--collectors", collectors]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise UserError(f"building the agent package failed: {last}")
    try:
        path = Path(json.loads(proc.stdout)["path"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"defender-installer printed no JSON with a 'path': {exc}") from exc
    if not path.is_file():
        raise UserError(f"{path}: defender-installer reported a package that does not exist")
    return path
