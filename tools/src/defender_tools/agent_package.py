"""Build the agent's .deb through the installer's own command line (its public contract)."""

from __future__ import annotations

import json
import os
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


def _agent_tree() -> Path | None:
    """The agent source the installer will package: ./agent, else the checkout we live in."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "agent" / "pyproject.toml").is_file():
            return root / "agent"
    return None


def source_date_epoch() -> str | None:
    """Newest agent source mtime: unchanged sources give a byte-identical .deb (cache hit)."""
    tree = _agent_tree()
    if tree is None:
        return None
    newest = 0
    for sub in ("src", "packaging", "pyproject.toml"):
        base = tree / sub
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for path in files:
            generated = any(p == "__pycache__" or p.endswith(".egg-info") for p in path.parts)
            if not generated:
                newest = max(newest, int(path.stat().st_mtime))
    return str(newest) if newest else None


def build_agent_deb(out_dir: Path, collectors: str | None = None) -> Path:
    """`defender-installer build --format deb --json`; returns the package path it reports."""
    cmd = [_installer(), "build", "--format", "deb", "--out", str(out_dir), "--json"]
    if collectors:
        cmd += ["--collectors", collectors]
    env = dict(os.environ)
    if not env.get("SOURCE_DATE_EPOCH"):
        epoch = source_date_epoch()
        if epoch:
            env["SOURCE_DATE_EPOCH"] = epoch
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
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
