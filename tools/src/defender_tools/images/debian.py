"""Quick x86_64 test image from Debian packages: mmdebstrap rootfs as an initramfs.

Why this shape: a cpio initramfs needs no partitioning, no bootloader and no
root privileges inside QEMU; Debian's own kernel is used, but only the few
modules a QEMU guest needs are copied in (the full package is ~400 MB). The
output directory gets a Yocto-style qemuboot.conf so the same runner boots this
image and Yocto's.

This is a TEST image: root logs in with the generated key only, and the user
`operator` has the documented password `OPERATOR_PASSWORD`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from defender_tools import qemuboot
from defender_tools.errors import UserError

HOSTNAME = "defender-qemu"
OPERATOR_USER = "operator"
OPERATOR_PASSWORD = "defender-operator"  # test image only; the qemu tests log in with it
DEFAULT_SUITE = "bookworm"
KERNEL_META = "linux-image-amd64"

# Explicit packages on top of --variant=essential (see docs/qemu.md for why each is there).
# The `standard` profile: systemd, OpenSSH, rsyslog.
INCLUDE = (
    "python3",
    "openssh-server",
    "rsyslog",  # writes /var/log/auth.log, which the login collector follows
    "systemd-sysv",
    "udev",  # systemd-networkd waits for udev to initialise links
    "dbus",  # systemd-logind needs it, and logind turns QMP system_powerdown into a poweroff
    "passwd",
    "mount",
    "kmod",
    "iproute2",
    "procps",
)
# The `embedded` profile: what small devices run. sysvinit instead of systemd, Dropbear
# instead of OpenSSH, ifupdown + busybox udhcpc for DHCP, acpid for the power button.
EMBEDDED_INCLUDE = (
    "python3",
    "dropbear-bin",
    "dropbear-run",  # bookworm: pulls `dropbear`, which has /etc/init.d/dropbear
    "rsyslog",  # writes /var/log/auth.log (auth + authpriv), also under sysvinit
    "sysvinit-core",
    "initscripts",
    "orphan-sysvinit-scripts",  # bookworm's rsyslog ships no init script; this has it
    "sysv-rc",
    "ifupdown",
    "udhcpc",
    "acpid",  # turns QMP system_powerdown (ACPI power button) into /sbin/poweroff
    "passwd",
    "mount",
    "kmod",
    "iproute2",
    "procps",
)
# Kernel modules copied into the image (plus their dependencies from modules.dep).
# `button` + `evdev` let QMP system_powerdown reach logind; systemd asks for autofs4 at start.
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
)
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
MASKED_UNITS = (
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-binfmt.service",
)
MMDEBSTRAP_STOP_SECONDS = 30
KERNEL_CMDLINE = "net.ifnames=0 quiet loglevel=4 systemd.show_status=auto"
EMBEDDED_KERNEL_CMDLINE = "net.ifnames=0 quiet loglevel=4"


@dataclass(frozen=True)
class Profile:
    """One flavour of the test image: its packages, init system and SSH server."""

    name: str
    include: tuple[str, ...]
    init: str  # "systemd" or "sysvinit": how the image is configured and services are queried
    ssh_service: str  # the `service` the agent reports for SSH logins in this image
    kernel_cmdline: str
    # OpenSSH logs "Invalid user NAME from IP"; Dropbear 2022.83 logs only "Login attempt for
    # nonexistent user" and an exit line without the name, so no source names such a user.
    logs_unknown_user_names: bool = True


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", INCLUDE, "systemd", "sshd", KERNEL_CMDLINE),
    "embedded": Profile(
        "embedded",
        EMBEDDED_INCLUDE,
        "sysvinit",
        "dropbear",
        EMBEDDED_KERNEL_CMDLINE,
        logs_unknown_user_names=False,
    ),
}
DEFAULT_PROFILE = "standard"


def image_dir_name(profile: str) -> str:
    """Default image directory (= image NAME) per profile; `standard` keeps the old name."""
    get_profile(profile)
    return "defender-debian" if profile == DEFAULT_PROFILE else f"defender-debian-{profile}"


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name is a user mistake."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise UserError(f"--profile {name!r}: unknown profile (choose one of: {known})") from None


INIT_SCRIPT = f"""#!/bin/sh
# Defender quick image: the root filesystem is this initramfs. Mount the kernel
# filesystems, load the virtual hardware drivers, then hand over to init
# (systemd or sysvinit, by profile).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {" ".join(MODULES)}; do modprobe -q "$m" || echo "init: modprobe $m failed"; done
exec /sbin/init "$@"
"""

NETWORK_UNIT = """[Match]
Name=eth0

[Network]
DHCP=ipv4
"""

INTERFACES = """# Defender test image: QEMU user networking hands out 10.0.2.15 by DHCP.
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
"""

# -g: no password login for root (keys only), like sshd's `PermitRootLogin prohibit-password`.
DROPBEAR_DEFAULTS = """# Defender test image: the qemu tests attack password login on purpose.
DROPBEAR_PORT=22
DROPBEAR_EXTRA_ARGS="-g"
DROPBEAR_RECEIVE_WINDOW=65536
"""

ACPI_POWER_EVENT = """# Defender test image: QMP system_powerdown presses the ACPI power button.
event=button/power.*
action=/sbin/poweroff
"""

SSHD_DROPIN = """# Defender test image: the qemu tests attack password login on purpose.
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
MaxStartups 50:30:100
"""

KERNEL_HOOK = f"""set -e
export APT_CONFIG="$MMDEBSTRAP_APT_CONFIG"
pkg=$(apt-cache depends {KERNEL_META} | awk '/Depends: linux-image-/ {{print $2; exit}}')
test -n "$pkg"
cd "$DEFENDER_KERNEL_DIR"
apt-get download "$pkg"
"""

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


# --- mirror --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str


def _deb822_sources(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in para.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and last:
                fields[last] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri, suite))
    return out


def _one_line_sources(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = re.sub(r"\[[^]]*\]", " ", line).split()
        if len(words) >= 3:
            out.append(AptSource(words[1], words[2]))
    return out


def host_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    """The host's configured Debian sources (read at run time: no host names in the repo)."""
    found: list[AptSource] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        found += _deb822_sources(path.read_text(encoding="utf-8", errors="replace"))
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            found += _one_line_sources(path.read_text(encoding="utf-8", errors="replace"))
    return found


def mirror_lines(suite: str, sources: Iterable[AptSource]) -> list[str]:
    """One-line `deb` entries for SUITE (+ -updates, -security) on the host's mirrors."""
    sources = list(sources)
    codenames = {s.suite for s in sources if "-" not in s.suite and "/" not in s.suite}
    lines: list[str] = []
    for src in sources:
        base, dash, suffix = src.suite.partition("-")
        if base not in codenames or suffix not in ("", "updates", "security"):
            continue
        line = f"deb {src.uri} {suite}{dash}{suffix} main"
        if line not in lines:
            lines.append(line)
    if not any(line.split()[2] == suite for line in lines):
        raise UserError(
            "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources"
        )
    return lines


# --- cache ---------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def builder_source_hash() -> str:
    """Changing the builder (or the conf writer) invalidates cached images."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(qemuboot.__file__)):
        digest.update(path.read_bytes())
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


# --- build ---------------------------------------------------------------------------------


def _run(
    cmd: list[str], what: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a build step; a failure names the step and shows the tail of its output."""
    proc = subprocess.run(cmd, text=True, capture_output=True, env=env, input=stdin)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise UserError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the whole process group and wait until none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + MMDEBSTRAP_STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _mmdebstrap(
    rootfs: Path,
    suite: str,
    mirrors: list[str],
    packages: list[Path],
    kernel_dir: Path,
    profile: Profile,
) -> None:
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--include=" + ",".join(profile.include),
        *[f"--dpkgopt={opt}" for opt in DPKG_OPTS],
        f"--customize-hook={KERNEL_HOOK}",
    ]
    if MERGED_USR_HOOKS.is_dir():
        cmd.insert(2, f"--hook-dir={MERGED_USR_HOOKS}")
    if packages:
        cmd += ['--customize-hook=mkdir -p "$1/tmp/defender-debs"']
        cmd += [
            "--customize-hook=copy-in " + " ".join(str(p) for p in packages) + " /tmp/defender-debs"
        ]
        # The packages' postinst enables the service; mmdebstrap's policy-rc.d stops it starting.
        cmd += ['--customize-hook=chroot "$1" sh -c "dpkg -i /tmp/defender-debs/*.deb"']
        cmd += ['--customize-hook=rm -rf "$1/tmp/defender-debs"']
    cmd += [suite, str(rootfs), *mirrors]
    env = dict(os.environ, DEFENDER_KERNEL_DIR=str(kernel_dir))
    # Own process group: on interrupt, mmdebstrap AND its apt/dpkg children must stop before
    # the scratch tree is deleted (mmdebstrap itself finishes the install on SIGINT).
    proc = subprocess.Popen(
        cmd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate()
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise UserError(f"mmdebstrap failed (exit {proc.returncode}):\n{tail}")


def _module_closure(modules_dep: Path, wanted: Iterable[str]) -> list[str]:
    """Relative .ko paths for WANTED and everything they depend on (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        base = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[base] = path
    todo = []
    for name in wanted:
        if name in by_name:
            todo.append(by_name[name])
        # else: built into the kernel (modules.builtin), nothing to copy
    seen: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        todo += deps.get(path, [])
    return sorted(seen)


def _install_kernel(kernel_dir: Path, rootfs: Path, work: Path, kernel_out: Path) -> str:
    """Extract Debian's kernel, copy vmlinuz out and only the needed modules in."""
    debs = sorted(kernel_dir.glob("linux-image-*.deb"))
    if not debs:
        raise UserError(f"kernel download produced no package in {kernel_dir}")
    extract = work / "kernel"
    _run(["dpkg-deb", "-x", str(debs[0]), str(extract)], "extracting the kernel package")
    versions = sorted(p.name for p in (extract / "lib/modules").iterdir())
    kver = versions[0]
    vmlinuz = extract / "boot" / f"vmlinuz-{kver}"
    shutil.copyfile(vmlinuz, kernel_out)
    _run(["depmod", "-b", str(extract), kver], "depmod on the kernel package")
    src_root = extract / "lib/modules" / kver
    dst_root = rootfs / "usr/lib/modules" / kver
    for rel in _module_closure(src_root / "modules.dep", MODULES):
        (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, dst_root / rel)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src_root / meta).exists():
            shutil.copy2(src_root / meta, dst_root / meta)
    _run(["depmod", "-b", str(rootfs), kver], "depmod in the image")
    shutil.rmtree(extract)
    return kver


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _configure(rootfs: Path, key: str, pubkey: str, profile: Profile) -> None:
    """Hostname, network, SSH server, users, machine-id and the initramfs /init."""
    _write(rootfs / "etc/hostname", HOSTNAME + "\n")
    _write(
        rootfs / "etc/hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    # Stable per build inputs, unique per image.
    _write(rootfs / "etc/machine-id", hashlib.sha256(key.encode()).hexdigest()[:32] + "\n", 0o444)
    _write(rootfs / "etc/default/locale", "LANG=C.UTF-8\n")
    _write(rootfs / "etc/fstab", "# root is the initramfs; nothing to mount\n")
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    _write(ssh_dir / "authorized_keys", pubkey, 0o600)
    _write(rootfs / "init", INIT_SCRIPT, 0o755)
    chroot = ["chroot", str(rootfs)]
    if profile.init == "systemd":
        _write(rootfs / "etc/systemd/network/20-eth0.network", NETWORK_UNIT)
        _write(rootfs / "etc/ssh/sshd_config.d/defender-test.conf", SSHD_DROPIN)
        _run(
            [*chroot, "systemctl", "enable", "systemd-networkd.service"],
            "enabling systemd-networkd",
        )
        # No binfmt_misc module in the image: these units would only fail and mark boot degraded.
        _run([*chroot, "systemctl", "mask", *MASKED_UNITS], "masking units")
    else:
        _write(rootfs / "etc/network/interfaces", INTERFACES)
        _write(rootfs / "etc/default/dropbear", DROPBEAR_DEFAULTS)
        _write(rootfs / "etc/acpi/events/defender-powerbtn", ACPI_POWER_EVENT)
        # The package's postinst ran update-rc.d; a missing link means the agent never starts.
        if (
            not list((rootfs / "etc/rc2.d").glob("S*defender-agent"))
            and (rootfs / "etc/init.d/defender-agent").exists()
        ):
            raise UserError("the agent package did not enable /etc/init.d/defender-agent")
    _run(
        [
            *chroot,
            "useradd",
            "--create-home",
            "--gid",
            "users",
            "--shell",
            "/bin/bash",
            OPERATOR_USER,
        ],
        "useradd",
    )
    _run(
        [*chroot, "chpasswd"],
        "setting the operator password",
        stdin=f"{OPERATOR_USER}:{OPERATOR_PASSWORD}\n",
    )
    # The hardware database is ~10 MB of RAM in an initramfs and useless in a VM.
    for hwdb in ("usr/lib/udev/hwdb.bin", "etc/udev/hwdb.bin"):
        (rootfs / hwdb).unlink(missing_ok=True)
    for stale in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / stale, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below PATH (from /proc/self/mountinfo, octal escapes decoded)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _remove_work_dir(work: Path) -> None:
    """Delete the scratch tree, but never through a mount an interrupted mmdebstrap left behind."""
    for point in sorted(_mounts_under(work), reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
    left = _mounts_under(work)
    if left:
        raise UserError(f"{work}: still has mounts ({', '.join(left)}); unmount, then delete it")
    shutil.rmtree(work, ignore_errors=True)


def _manifest(rootfs: Path, out: Path) -> None:
    proc = _run(
        [
            "chroot",
            str(rootfs),
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${Version}\t${Architecture}\n",
        ],
        "listing installed packages",
    )
    out.write_text("".join(sorted(proc.stdout.splitlines(keepends=True))), encoding="utf-8")


def _cpio(rootfs: Path, out: Path) -> None:
    """newc archive of the whole root, gzip-compressed (runqemu's `cpio.gz` type)."""
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as handle:
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
        codes = (gzip.wait(), cpio.wait(), find.wait())
    if any(codes):
        tmp.unlink(missing_ok=True)
        raise UserError(f"writing {out} failed (gzip, cpio, find exit {codes})")
    tmp.replace(out)


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


def build_image(
    out_dir: Path,
    packages: Iterable[Path] = (),
    suite: str = DEFAULT_SUITE,
    progress: Progress | None = None,
    profile: str = DEFAULT_PROFILE,
) -> ImageResult:
    """Build (or reuse) the image in OUT_DIR; NAME is OUT_DIR's last component."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    prof = get_profile(profile)
    pkgs = check_packages(packages)
    out_dir = out_dir.resolve()
    name = out_dir.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"{out_dir}: image name {name!r} must be letters, digits, '.', '_', '-'")
    paths = output_paths(out_dir)
    mirrors = mirror_lines(suite, host_sources())
    key = cache_key(name, suite, pkgs, mirrors, prof.name)

    def result(cached: bool) -> ImageResult:
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

    stored = paths["cachekey"].read_text().strip() if paths["cachekey"].is_file() else ""
    if stored == key and all(p.is_file() for p in paths.values()):
        return result(cached=True)

    if os.geteuid() != 0:
        raise UserError("image debian needs root (mmdebstrap --mode=root, chroot, device nodes)")
    for tool in ("mmdebstrap", "cpio", "gzip", "ssh-keygen", "depmod", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found on PATH (apt-get install it)")

    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths["cachekey"].unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    try:
        rootfs = work / "rootfs"
        kernel_dir = work / "kernel-deb"
        kernel_dir.mkdir()
        say(f"mmdebstrap {suite}, profile {prof.name} ({len(pkgs)} extra package(s))")
        _mmdebstrap(rootfs, suite, mirrors, pkgs, kernel_dir, prof)
        say("kernel and modules")
        _install_kernel(kernel_dir, rootfs, work, paths["kernel"])
        say("ssh key, users, network")
        for stale in (paths["key"], paths["pubkey"]):
            stale.unlink(missing_ok=True)
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"root@{name}",
                "-f",
                str(paths["key"]),
            ],
            "ssh-keygen",
        )
        _configure(rootfs, key, paths["pubkey"].read_text(), prof)
        _manifest(rootfs, paths["manifest"])
        say("cpio initramfs")
        _cpio(rootfs, paths["rootfs"])
        qemuboot.write_conf(paths["conf"], _conf_values(name, prof))
        paths["cachekey"].write_text(key + "\n")
    finally:
        _remove_work_dir(work)
    return result(cached=False)
