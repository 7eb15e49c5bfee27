"""Quick x86_64 test image from Debian packages: mmdebstrap rootfs as an initramfs.

Why this shape: a cpio initramfs needs no partitioning, no bootloader and no
root privileges inside QEMU; Debian's own kernel is used, but only the few
modules a QEMU guest needs are copied in (the full package is ~400 MB). The
output directory gets a Yocto-style qemuboot.conf so the same runner boots this
image and Yocto's.

This is a TEST image: root logs in with the generated key only, and the user
`operator` has the documented password `OPERATOR_PASSWORD`.

One module per job: `profiles` (what goes in), `sources` (the mirror), `kernel`,
`rootfs` (mmdebstrap, configuration, users, manifest), `overlay_files` (installing
the static files kept under overlay/), `initramfs` (/init's module list, the cpio),
`cache` (the key), `steps` (running commands). This module assembles them: `build_image`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from defender_tools import qemuboot
from defender_tools.errors import UserError
from defender_tools.images.debian import initramfs, kernel, rootfs
from defender_tools.images.debian.cache import builder_source_hash, cache_key, sha256_file
from defender_tools.images.debian.kernel import MODULES
from defender_tools.images.debian.profiles import (
    DEFAULT_PROFILE,
    DEFAULT_SUITE,
    EMBEDDED_INCLUDE,
    EMBEDDED_KERNEL_CMDLINE,
    INCLUDE,
    KERNEL_CMDLINE,
    OPERATOR_PASSWORD,
    OPERATOR_USER,
    PROFILES,
    Profile,
    get_profile,
    image_dir_name,
)
from defender_tools.images.debian.sources import AptSource, host_sources, mirror_lines
from defender_tools.images.debian.steps import remove_work_dir, run

__all__ = [
    "DEFAULT_PROFILE",
    "DEFAULT_SUITE",
    "EMBEDDED_INCLUDE",
    "EMBEDDED_KERNEL_CMDLINE",
    "INCLUDE",
    "KERNEL_CMDLINE",
    "MODULES",
    "OPERATOR_PASSWORD",
    "OPERATOR_USER",
    "PROFILES",
    "AptSource",
    "ImageResult",
    "Profile",
    "Progress",
    "build_image",
    "builder_source_hash",
    "cache_key",
    "check_packages",
    "get_profile",
    "host_sources",
    "image_dir_name",
    "mirror_lines",
    "output_paths",
    "sha256_file",
]

REQUIRED_TOOLS = ("mmdebstrap", "cpio", "gzip", "ssh-keygen", "depmod", "dpkg-deb")
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageResult:
    """Where the built image is, and whether it came from the cache."""

    name: str
    conf: Path
    kernel: Path
    rootfs: Path
    key: Path
    manifest: Path
    cached: bool
    seconds: float

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def output_paths(out_dir: Path) -> dict[str, Path]:
    """Every file the builder writes; NAME is the output directory's name."""
    name = out_dir.name
    return {
        "conf": out_dir / f"{name}.qemuboot.conf",
        "kernel": out_dir / f"{name}.vmlinuz",
        "rootfs": out_dir / f"{name}.cpio.gz",
        "key": out_dir / f"{name}.id_ed25519",
        "pubkey": out_dir / f"{name}.id_ed25519.pub",
        "manifest": out_dir / f"{name}.manifest",
        "cachekey": out_dir / f"{name}.cachekey",
    }


def check_packages(packages: Iterable[Path]) -> list[Path]:
    """Each --package must be a readable Debian package."""
    checked: list[Path] = []
    for pkg in packages:
        if not pkg.is_file():
            raise UserError(f"{pkg}: package file not found")
        try:
            with pkg.open("rb") as handle:
                magic = handle.read(8)
        except OSError as exc:
            raise UserError(f"{pkg}: cannot read package: {exc.strerror}") from exc
        if magic != b"!<arch>\n" or not pkg.name.endswith(".deb"):
            raise UserError(f"{pkg}: not a Debian package (.deb)")
        checked.append(pkg.resolve())
    return checked


def _conf_values(name: str, profile: Profile = PROFILES[DEFAULT_PROFILE]) -> dict[str, str]:
    """What qemuboot.bbclass would write for an x86_64 initramfs image."""
    return {
        "deploy_dir_image": ".",
        "image_name": name,
        "image_link_name": name,
        "kernel_imagetype": "bzImage",
        "machine": "qemux86-64",
        "tune_arch": "x86_64",
        "serial_consoles": "115200;ttyS0",
        "qb_system_name": "qemu-system-x86_64",
        "qb_default_kernel": f"{name}.vmlinuz",
        "qb_default_fstype": "cpio.gz",
        "qb_mem": "-m 1024",
        "qb_smp": "-smp 2",
        "qb_machine": "-machine q35",
        "qb_cpu": "-cpu max",
        "qb_cpu_kvm": "-cpu host",
        "qb_kernel_cmdline_append": profile.kernel_cmdline,
        "qb_network_device": qemuboot.DEFAULT_NETWORK_DEVICE,
        "qb_rng": "-object rng-random,filename=/dev/urandom,id=rng0 "
        "-device virtio-rng-pci,rng=rng0",
        "qb_serial_opt": "-serial mon:stdio -serial null",
        "qb_tcpserial_opt": "-device virtio-serial-device -chardev "
        "socket,id=virtcon,port=@PORT@,host=127.0.0.1 -device virtconsole,chardev=virtcon",
        "qb_cmdline_ip_slirp": "ip=dhcp",
        "qb_no_pni": "net.ifnames=0",
        "qb_opt_append": "",
        "qb_graphics": "",
    }


def _image_name(out_dir: Path) -> str:
    name = out_dir.name
    if not IMAGE_NAME.fullmatch(name):
        raise UserError(f"{out_dir}: image name {name!r} must be letters, digits, '.', '_', '-'")
    return name


def _is_cached(paths: dict[str, Path], key: str) -> bool:
    stored = paths["cachekey"].read_text().strip() if paths["cachekey"].is_file() else ""
    return stored == key and all(p.is_file() for p in paths.values())


def _check_build_host(out_dir: Path) -> None:
    """Root and the build tools are needed only when something is really built."""
    if os.geteuid() != 0:
        raise UserError("image debian needs root (mmdebstrap --mode=root, chroot, device nodes)")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found on PATH (apt-get install it)")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a directory")


def _ssh_key(paths: dict[str, Path], name: str) -> str:
    """A fresh ed25519 key for root; returns the public half."""
    for stale in (paths["key"], paths["pubkey"]):
        stale.unlink(missing_ok=True)
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}"]
    run([*keygen, "-f", str(paths["key"])], "ssh-keygen")
    return paths["pubkey"].read_text()


@dataclass(frozen=True)
class _Build:
    """One build's inputs, resolved and checked."""

    name: str
    suite: str
    profile: Profile
    packages: list[Path]
    mirrors: list[str]
    key: str
    paths: dict[str, Path]


def _build(build: _Build, work: Path, say: Progress) -> None:
    """Every step, in WORK (a scratch directory inside the output directory)."""
    root = work / "rootfs"
    kernel_dir = work / "kernel-deb"
    kernel_dir.mkdir()
    prof, paths = build.profile, build.paths
    say(f"mmdebstrap {build.suite}, profile {prof.name} ({len(build.packages)} extra package(s))")
    rootfs.mmdebstrap(root, build.suite, build.mirrors, build.packages, kernel_dir, prof)
    say("kernel and modules")
    kernel.install_kernel(kernel_dir, root, work, paths["kernel"])
    say("ssh key, users, network")
    rootfs.configure(root, build.key, _ssh_key(paths, build.name), prof)
    initramfs.prepare_init(root)
    rootfs.manifest(root, paths["manifest"])
    say("cpio initramfs")
    initramfs.cpio(root, paths["rootfs"])
    qemuboot.write_conf(paths["conf"], _conf_values(build.name, prof))
    paths["cachekey"].write_text(build.key + "\n")


def build_image(
    out_dir: Path,
    packages: Iterable[Path] = (),
    suite: str = DEFAULT_SUITE,
    progress: Progress | None = None,
    profile: str = DEFAULT_PROFILE,
) -> ImageResult:
    """Build (or reuse) the image in OUT_DIR; NAME is OUT_DIR's last component."""
    started = time.monotonic()
    prof = get_profile(profile)
    pkgs = check_packages(packages)
    out_dir = out_dir.resolve()
    name = _image_name(out_dir)
    paths = output_paths(out_dir)
    mirrors = mirror_lines(suite, host_sources())
    key = cache_key(name, suite, pkgs, mirrors, prof.name)
    cached = _is_cached(paths, key)
    if not cached:
        _check_build_host(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths["cachekey"].unlink(missing_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
        try:
            build = _Build(name, suite, prof, pkgs, mirrors, key, paths)
            _build(build, work, progress or (lambda _msg: None))
        finally:
            remove_work_dir(work)
    return ImageResult(
        name=name,
        conf=paths["conf"],
        kernel=paths["kernel"],
        rootfs=paths["rootfs"],
        key=paths["key"],
        manifest=paths["manifest"],
        cached=cached,
        seconds=round(time.monotonic() - started, 2),
    )
