"""Debian's kernel: downloaded through mmdebstrap's apt, only the needed modules copied in.

The full kernel package is ~400 MB; a QEMU guest needs a handful of modules. `vmlinuz`
goes beside the image, the modules in MODULES and their modules.dep dependencies go into
the root (initramfs.py writes the list for /init to load).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from defender_tools.errors import UserError
from defender_tools.images.debian.steps import run

KERNEL_META = "linux-image-amd64"
# Kernel modules copied into the image (plus their dependencies from modules.dep).
# `button` + `evdev` let QMP system_powerdown reach logind; systemd asks for autofs4 at start.
# The network collector's preferred sources are modules in Debian's kernel, which a full
# system loads on demand (the kernel asks modprobe) and this image only has when listed:
# sock_diag for TCP and UDP (tcp_diag, udp_diag), conntrack events (nf_conntrack_netlink),
# packet sockets (af_packet, where it is not built in).
MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    "button",
    "evdev",
    "autofs4",
    "dummy",
    "veth",
    "tcp_diag",
    "udp_diag",
    "af_packet",
    "nf_conntrack_netlink",
)
KERNEL_DEB_ENV = "DEFENDER_KERNEL_DIR"  # the directory the download hook saves the .deb to

# An mmdebstrap customize hook: download (not install) the kernel the meta package points at.
DOWNLOAD_HOOK = f"""set -e
export APT_CONFIG="$MMDEBSTRAP_APT_CONFIG"
pkg=$(apt-cache depends {KERNEL_META} | awk '/Depends: linux-image-/ {{print $2; exit}}')
test -n "$pkg"
cd "${KERNEL_DEB_ENV}"
apt-get download "$pkg"
"""
MODULE_METADATA = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


def module_closure(modules_dep: Path, wanted: Iterable[str]) -> list[str]:
    """Relative .ko paths for WANTED and everything they depend on (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        base = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[base] = path
    # A name missing from modules.dep is built into the kernel: nothing to copy.
    todo = [by_name[name] for name in wanted if name in by_name]
    seen: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        todo += deps.get(path, [])
    return sorted(seen)


def _extract(kernel_dir: Path, extract: Path) -> str:
    """Unpack the downloaded kernel package into EXTRACT; returns the kernel version."""
    debs = sorted(kernel_dir.glob("linux-image-*.deb"))
    if not debs:
        raise UserError(f"kernel download produced no package in {kernel_dir}")
    run(["dpkg-deb", "-x", str(debs[0]), str(extract)], "extracting the kernel package")
    return sorted(p.name for p in (extract / "lib/modules").iterdir())[0]


def _copy_modules(src_root: Path, dst_root: Path) -> None:
    """MODULES with their dependencies, plus the metadata depmod and modprobe read."""
    for rel in module_closure(src_root / "modules.dep", MODULES):
        (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, dst_root / rel)
    for meta in MODULE_METADATA:
        if (src_root / meta).exists():
            shutil.copy2(src_root / meta, dst_root / meta)


def install_kernel(kernel_dir: Path, rootfs: Path, work: Path, kernel_out: Path) -> str:
    """Extract Debian's kernel, copy vmlinuz out and only the needed modules in."""
    extract = work / "kernel"
    kver = _extract(kernel_dir, extract)
    shutil.copyfile(extract / "boot" / f"vmlinuz-{kver}", kernel_out)
    run(["depmod", "-b", str(extract), kver], "depmod on the kernel package")
    _copy_modules(extract / "lib/modules" / kver, rootfs / "usr/lib/modules" / kver)
    run(["depmod", "-b", str(rootfs), kver], "depmod in the image")
    shutil.rmtree(extract)
    return kver
