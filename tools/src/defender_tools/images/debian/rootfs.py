"""The root filesystem: mmdebstrap, then the tree configured for the profile, users, manifest."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from defender_tools.errors import UserError
from defender_tools.images.debian import overlay_files
from defender_tools.images.debian.kernel import DOWNLOAD_HOOK, KERNEL_DEB_ENV
from defender_tools.images.debian.profiles import OPERATOR_PASSWORD, OPERATOR_USER, Profile
from defender_tools.images.debian.steps import run, run_in_group

# Docs, man pages and translations are dead weight in a RAM-backed root.
DPKG_OPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# Sets up merged /usr itself, so init-system-helpers does not pull usrmerge and perl (~50 MB).
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
DEBS_IN_CHROOT = "/tmp/defender-debs"
# No binfmt_misc module in the image: these units would only fail and mark boot degraded.
MASKED_UNITS = (
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-binfmt.service",
)
# The hardware database is ~10 MB of RAM in an initramfs and useless in a VM.
DROPPED_FILES = ("usr/lib/udev/hwdb.bin", "etc/udev/hwdb.bin")
DROPPED_TREES = ("var/cache/apt/archives", "var/lib/apt/lists")
MANIFEST_FORMAT = "${Package}\t${Version}\t${Architecture}\n"


# --- mmdebstrap ----------------------------------------------------------------------------


def _package_hooks(packages: list[Path]) -> list[str]:
    """Copy the .deb files in and install them; their postinst enables the service, and
    mmdebstrap's policy-rc.d keeps it from starting in the chroot."""
    if not packages:
        return []
    return [
        f'--customize-hook=mkdir -p "$1{DEBS_IN_CHROOT}"',
        "--customize-hook=copy-in " + " ".join(str(p) for p in packages) + f" {DEBS_IN_CHROOT}",
        f'--customize-hook=chroot "$1" sh -c "dpkg -i {DEBS_IN_CHROOT}/*.deb"',
        f'--customize-hook=rm -rf "$1{DEBS_IN_CHROOT}"',
    ]


def mmdebstrap_command(
    rootfs: Path, suite: str, mirrors: list[str], packages: list[Path], profile: Profile
) -> list[str]:
    """The mmdebstrap command line for PROFILE, the agent packages and the kernel download."""
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--include=" + ",".join(profile.include),
        *[f"--dpkgopt={opt}" for opt in DPKG_OPTS],
        f"--customize-hook={DOWNLOAD_HOOK}",
    ]
    if MERGED_USR_HOOKS.is_dir():
        cmd.insert(2, f"--hook-dir={MERGED_USR_HOOKS}")
    return [*cmd, *_package_hooks(packages), suite, str(rootfs), *mirrors]


def mmdebstrap(
    rootfs: Path,
    suite: str,
    mirrors: list[str],
    packages: list[Path],
    kernel_dir: Path,
    profile: Profile,
) -> None:
    """Bootstrap ROOTFS; the kernel package is downloaded into KERNEL_DIR on the way."""
    cmd = mmdebstrap_command(rootfs, suite, mirrors, packages, profile)
    env = dict(os.environ, **{KERNEL_DEB_ENV: str(kernel_dir)})
    # mmdebstrap itself finishes the install on SIGINT; its group is stopped instead
    run_in_group(cmd, "mmdebstrap", env)


# --- configuring the tree ------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _root_key(rootfs: Path, pubkey: str) -> None:
    """Root logs in with the image's key only (Dropbear reads the same file)."""
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    _write(ssh_dir / "authorized_keys", pubkey, 0o600)


def _configure_systemd(rootfs: Path) -> None:
    chroot = ["chroot", str(rootfs)]
    run([*chroot, "systemctl", "enable", "systemd-networkd.service"], "enabling systemd-networkd")
    run([*chroot, "systemctl", "mask", *MASKED_UNITS], "masking units")


def _check_sysvinit_agent(rootfs: Path) -> None:
    """The package's postinst ran update-rc.d; a missing link means the agent never starts."""
    if (
        not list((rootfs / "etc/rc2.d").glob("S*defender-agent"))
        and (rootfs / "etc/init.d/defender-agent").exists()
    ):
        raise UserError("the agent package did not enable /etc/init.d/defender-agent")


def add_operator(rootfs: Path) -> None:
    """The user the tests log in as with a password (a test image: the password is known)."""
    chroot = ["chroot", str(rootfs)]
    useradd = ["useradd", "--create-home", "--gid", "users", "--shell", "/bin/bash"]
    run([*chroot, *useradd, OPERATOR_USER], "useradd")
    run(
        [*chroot, "chpasswd"],
        "setting the operator password",
        stdin=f"{OPERATOR_USER}:{OPERATOR_PASSWORD}\n",
    )


def _slim(rootfs: Path) -> None:
    for path in DROPPED_FILES:
        (rootfs / path).unlink(missing_ok=True)
    for tree in DROPPED_TREES:
        shutil.rmtree(rootfs / tree, ignore_errors=True)


def configure(rootfs: Path, key: str, pubkey: str, profile: Profile) -> None:
    """Overlay files (host name, network, SSH server, /init), machine-id, root key, users."""
    overlay_files.install(rootfs, profile.overlays)
    # Stable per build inputs, unique per image.
    _write(rootfs / "etc/machine-id", hashlib.sha256(key.encode()).hexdigest()[:32] + "\n", 0o444)
    _root_key(rootfs, pubkey)
    if profile.init == "systemd":
        _configure_systemd(rootfs)
    else:
        _check_sysvinit_agent(rootfs)
    add_operator(rootfs)
    _slim(rootfs)


def manifest(rootfs: Path, out: Path) -> None:
    """Installed packages: name, version, architecture, sorted."""
    proc = run(
        ["chroot", str(rootfs), "dpkg-query", "-W", "-f", MANIFEST_FORMAT],
        "listing installed packages",
    )
    out.write_text("".join(sorted(proc.stdout.splitlines(keepends=True))), encoding="utf-8")
