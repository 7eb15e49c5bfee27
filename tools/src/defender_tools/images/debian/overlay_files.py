"""The static files of the image, kept as real files under overlay/<tree>/.

overlay/common/ goes into every image, overlay/<profile>/ into that profile's. A file's
path below its tree is its path in the root; it is installed as 0755 when it is
executable in the package (e.g. /init) and 0644 otherwise, owned by the builder (root).
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

OVERLAY_DIR = Path(__file__).resolve().parent / "overlay"


def files(tree: str, base: Path = OVERLAY_DIR) -> list[Path]:
    """Every file of overlay tree TREE, relative to the tree, sorted."""
    root = base / tree
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def install_mode(path: Path) -> int:
    """0755 for a file executable in the package, else 0644 (the checkout's umask aside)."""
    return 0o755 if path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644


def install(rootfs: Path, trees: Iterable[str], base: Path = OVERLAY_DIR) -> list[Path]:
    """Copy each tree into ROOTFS (later trees win); returns the installed paths."""
    installed: list[Path] = []
    for tree in trees:
        for rel in files(tree, base):
            src, dst = base / tree / rel, rootfs / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.unlink(missing_ok=True)  # never write through a link the packages left there
            shutil.copyfile(src, dst)
            dst.chmod(install_mode(src))
            installed.append(dst)
    return installed
