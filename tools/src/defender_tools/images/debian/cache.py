"""The cache key: a hash of every input of a build, the builder itself included."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from defender_tools import qemuboot
from defender_tools.images.debian.kernel import MODULES
from defender_tools.images.debian.profiles import DEFAULT_PROFILE, get_profile

# The whole builder: every file of this package (code and overlay files) and the conf writer.
PACKAGE_DIR = Path(__file__).resolve().parent
GENERATED_DIRS = {"__pycache__"}
GENERATED_SUFFIXES = (".pyc", ".pyo")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def builder_files(package_dir: Path | None = None) -> list[Path]:
    """Every file of the builder package (no bytecode), sorted, then qemuboot.py."""
    root = package_dir or PACKAGE_DIR
    found = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not p.name.endswith(GENERATED_SUFFIXES)
        and not GENERATED_DIRS & set(p.relative_to(root).parts)
    ]
    return [*sorted(found), Path(qemuboot.__file__).resolve()]


def builder_source_hash(package_dir: Path | None = None) -> str:
    """Changing any file of the builder (or the conf writer) invalidates cached images.

    Each file counts with its path in the package, its executable bit and its content,
    so a renamed, added, removed or chmod'ed overlay file changes the hash too.
    """
    root = package_dir or PACKAGE_DIR
    digest = hashlib.sha256()
    for path in builder_files(root):
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        executable = path.stat().st_mode & 0o111 != 0
        digest.update(f"{rel.as_posix()}\0{int(executable)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def cache_key(
    name: str,
    suite: str,
    packages: Iterable[Path],
    mirrors: list[str],
    profile: str = DEFAULT_PROFILE,
) -> str:
    """Hash of every input that changes the image; equal key means reuse the last build."""
    inputs = {
        "name": name,
        "suite": suite,
        "profile": profile,
        "include": list(get_profile(profile).include),
        "modules": list(MODULES),
        "packages": sorted((p.name, sha256_file(p)) for p in packages),
        "mirrors": mirrors,
        "builder": builder_source_hash(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
