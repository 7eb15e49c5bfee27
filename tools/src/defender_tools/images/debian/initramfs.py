"""The root as an initramfs: /init, the module list it reads, and the gzip'd newc cpio.

/init itself is an overlay file (overlay/common/init); it is not templated. What it
loads comes from MODULE_LIST, which the builder writes from kernel.MODULES.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from defender_tools.errors import UserError
from defender_tools.images.debian.kernel import MODULES

INIT = "init"  # the kernel runs /init from an initramfs
MODULE_LIST = "etc/defender-image/modules"  # read by /init, one module name a line


def write_module_list(rootfs: Path, modules: Iterable[str] = MODULES) -> Path:
    """The modules /init loads, in order, one name a line."""
    path = rootfs / MODULE_LIST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in modules), encoding="utf-8")
    path.chmod(0o644)
    return path


def prepare_init(rootfs: Path) -> None:
    """Write the module list; the overlay must have installed an executable /init."""
    init = rootfs / INIT
    if not (init.is_file() and os.access(init, os.X_OK)):
        raise UserError(f"{init}: missing or not executable (the image overlay installs it)")
    write_module_list(rootfs)


def _pipeline(rootfs: Path, handle: BinaryIO) -> tuple[int, int, int]:
    """find | cpio | gzip > HANDLE; the three exit statuses (gzip, cpio, find)."""
    find = subprocess.Popen(
        ["find", ".", "-mindepth", "1", "-print0"], cwd=rootfs, stdout=subprocess.PIPE
    )
    cpio = subprocess.Popen(
        ["cpio", "--null", "--create", "--format=newc", "--quiet"],
        cwd=rootfs,
        stdin=find.stdout,
        stdout=subprocess.PIPE,
    )
    assert find.stdout is not None
    find.stdout.close()
    gzip = subprocess.Popen(["gzip", "-6", "-n"], stdin=cpio.stdout, stdout=handle)
    assert cpio.stdout is not None
    cpio.stdout.close()
    return gzip.wait(), cpio.wait(), find.wait()


def cpio(rootfs: Path, out: Path) -> None:
    """newc archive of the whole root, gzip-compressed (runqemu's `cpio.gz` type)."""
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as handle:
        codes = _pipeline(rootfs, handle)
    if any(codes):
        tmp.unlink(missing_ok=True)
        raise UserError(f"writing {out} failed (gzip, cpio, find exit {codes})")
    tmp.replace(out)
