"""Read and write Yocto's `*.qemuboot.conf` and turn one into a QEMU command line.

The format is what poky's `qemuboot.bbclass` writes (configparser, section
`[config_bsp]`, lower-case `qb_*` keys, paths relative to `deploy_dir_image`)
and what `scripts/runqemu` reads. One parser serves Yocto images and the quick
Debian images alike, so both are booted the same way.
"""

from __future__ import annotations

import configparser
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from defender_tools.errors import UserError

SECTION = "config_bsp"
# Filesystem types that boot as an initramfs (runqemu: `-initrd`).
INITRD_FSTYPES = ("cpio.gz", "cpio", "cpio.zst", "cpio.xz", "cpio.lzma")
# Filesystem types that boot as a raw disk image on a virtio block device.
DISK_FSTYPES = ("ext2", "ext3", "ext4", "btrfs", "squashfs", "erofs", "wic", "wic.qcow2")
# runqemu's slirp MAC prefix; the last byte is fixed because we run one NIC per guest.
SLIRP_MAC = "52:54:00:12:35:02"
DEFAULT_NETWORK_DEVICE = "-device virtio-net-pci,netdev=net0,mac=@MAC@"


@dataclass(frozen=True)
class BootConfig:
    """The parts of a qemuboot.conf the runner needs, with paths made absolute."""

    conf: Path
    values: dict[str, str]
    deploy_dir: Path
    kernel: Path
    rootfs: Path
    fstype: str

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key.lower(), default)

    @property
    def image_link_name(self) -> str:
        return self.get("image_link_name") or self.get("image_name") or self.conf.name.split(".")[0]

    @property
    def system_name(self) -> str:
        return self.get("qb_system_name", "qemu-system-x86_64")


def read_conf(conf: Path) -> BootConfig:
    """Parse CONF and check that the kernel and rootfs it names exist."""
    if not conf.is_file():
        raise UserError(f"{conf}: qemuboot.conf not found")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(conf, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{conf}: not a qemuboot.conf: {str(exc).splitlines()[0]}") from exc
    if not parser.has_section(SECTION):
        raise UserError(f"{conf}: missing section [{SECTION}]")
    values = {k.lower(): v.strip() for k, v in parser.items(SECTION)}

    base = conf.resolve().parent
    deploy_raw = values.get("deploy_dir_image", ".") or "."
    deploy_dir = Path(deploy_raw)
    if not deploy_dir.is_absolute():
        deploy_dir = (base / deploy_dir).resolve()

    kernel_name = values.get("qb_default_kernel", "")
    if not kernel_name:
        raise UserError(f"{conf}: qb_default_kernel: not set")
    kernel = _resolve(deploy_dir, kernel_name)
    if not kernel.is_file():
        raise UserError(f"{conf}: qb_default_kernel: kernel file {kernel} not found")

    fstype = values.get("qb_default_fstype", "")
    if not fstype:
        raise UserError(f"{conf}: qb_default_fstype: not set")
    if fstype not in INITRD_FSTYPES and fstype not in DISK_FSTYPES:
        raise UserError(
            f"{conf}: qb_default_fstype: {fstype!r} is not bootable here "
            f"(use one of {', '.join(INITRD_FSTYPES + DISK_FSTYPES)})"
        )
    rootfs = _find_rootfs(deploy_dir, values, fstype, conf)
    return BootConfig(conf, values, deploy_dir, kernel, rootfs, fstype)


def _resolve(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path


def _find_rootfs(deploy_dir: Path, values: dict[str, str], fstype: str, conf: Path) -> Path:
    """Find `<image_link_name>.<fstype>` like runqemu does, falling back to image_name."""
    names = [values.get("image_link_name", ""), values.get("image_name", "")]
    candidates = [deploy_dir / f"{n}.{fstype}" for n in names if n]
    if not candidates:
        stem = conf.name.removesuffix(".qemuboot.conf")
        candidates = [deploy_dir / f"{stem}.{fstype}"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"{conf}: image_link_name: rootfs file {candidates[0]} not found")


def write_conf(path: Path, values: dict[str, str]) -> None:
    """Write VALUES the way qemuboot.bbclass does: sorted lower-case keys in [config_bsp]."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.add_section(SECTION)
    for key in sorted(values):
        parser.set(SECTION, key.lower(), values[key])
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    tmp.replace(path)


@dataclass
class LaunchOptions:
    """Run-time choices that are not in the conf file."""

    ssh_port: int
    accel: str  # "kvm" or "tcg"
    serial_log: Path
    qmp_socket: Path
    mem: str | None = None  # e.g. "1024" (MiB); None keeps qb_mem
    extra_append: list[str] = field(default_factory=list)
    # guest address, guest port, host loopback port: a TCP connection the guest opens to
    # the first two reaches 127.0.0.1:PORT on the host (a collector the test runs there)
    guest_forwards: list[tuple[str, int, int]] = field(default_factory=list)


def _split(value: str) -> list[str]:
    return shlex.split(value) if value else []


def _without_option(args: list[str], option: str) -> list[str]:
    """Drop OPTION and its argument (Yocto sometimes folds `-machine` into qb_cpu)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        out.append(arg)
    return out


def _has_option(args: list[str], *options: str) -> bool:
    return any(a in options for a in args)


def netdev_arg(ssh_port: int, guest_forwards: list[tuple[str, int, int]] | None = None) -> str:
    """The only network QEMU gets: isolated user networking, SSH on host loopback, and
    the guest forwards asked for, each to a port on the host's loopback through relay.py
    (QEMU starts it per connection; `restrict=on` leaves explicit forwards working)."""
    arg = f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    if guest_forwards:
        relay = Path(__file__).with_name("relay.py")
        if "," in f"{sys.executable}{relay}":
            raise UserError(f"{relay}: a path with a comma cannot be a QEMU guest forward")
        for address, port, host_port in guest_forwards:
            arg += (
                f",guestfwd=tcp:{address}:{port}-cmd:{sys.executable} {relay} 127.0.0.1 {host_port}"
            )
    return arg


def kernel_cmdline(cfg: BootConfig, extra: list[str] | None = None) -> str:
    """Console first, root for disk images, then the image's own additions."""
    parts: list[str] = []
    consoles = cfg.get("serial_consoles")
    tty = "ttyS0"
    if consoles:
        first = consoles.split()[0]
        tty = first.split(";")[-1] or tty
    parts.append(f"console={tty}")
    if cfg.fstype in DISK_FSTYPES:
        root = cfg.get("qb_kernel_root", "/dev/vda")
        if not ({"ro", "rw"} & set(root.split())):
            root += " rw"
        parts.append(f"root={root}")
    parts.extend(_split(cfg.get("qb_kernel_cmdline_append")))
    parts.extend(extra or [])
    return " ".join(parts)


def build_command(cfg: BootConfig, opts: LaunchOptions) -> list[str]:
    """Assemble the QEMU argument vector for CFG (pure: easy to test)."""
    cmd = [cfg.system_name, "-accel", opts.accel]

    machine = _split(cfg.get("qb_machine"))
    cpu_key = "qb_cpu_kvm" if opts.accel == "kvm" and cfg.get("qb_cpu_kvm") else "qb_cpu"
    cpu = _split(cfg.get(cpu_key))
    # Yocto writes "-cpu X -machine Y" in qb_cpu; keep the machine, choose the CPU ourselves.
    cpu_machine = _without_option(cpu, "-cpu")
    if not _has_option(machine, "-machine", "-M") and _has_option(cpu_machine, "-machine", "-M"):
        machine = cpu_machine
    if not machine and cfg.system_name.endswith("x86_64"):
        machine = ["-machine", "q35"]
    cmd += machine
    if opts.accel == "tcg":
        cmd += ["-cpu", "max"]
    elif opts.accel == "kvm":
        cmd += ["-cpu", "host"]

    cmd += _split(cfg.get("qb_smp")) or ["-smp", "2"]
    if opts.mem:
        cmd += ["-m", opts.mem]
    else:
        cmd += _split(cfg.get("qb_mem")) or ["-m", "1024"]

    cmd += ["-kernel", str(cfg.kernel)]
    cmd += ["-append", kernel_cmdline(cfg, opts.extra_append)]

    if cfg.fstype in INITRD_FSTYPES:
        cmd += ["-initrd", str(cfg.rootfs)]
    else:
        rootfs_opt = cfg.get("qb_rootfs_opt")
        if rootfs_opt:
            cmd += _split(rootfs_opt.replace("@ROOTFS@", str(cfg.rootfs)))
        else:
            cmd += ["-drive", f"file={cfg.rootfs},if=virtio,format=raw"]
        # Never write into the image under test.
        cmd += ["-snapshot"]

    cmd += ["-netdev", netdev_arg(opts.ssh_port, opts.guest_forwards)]
    device = cfg.get("qb_network_device") or DEFAULT_NETWORK_DEVICE
    cmd += _split(device.replace("@MAC@", SLIRP_MAC))
    cmd += _split(cfg.get("qb_rng"))
    cmd += _split(cfg.get("qb_opt_append").replace("@DEPLOY_DIR_IMAGE@", str(cfg.deploy_dir)))

    cmd += ["-display", "none", "-nodefaults", "-no-reboot"]
    cmd += ["-chardev", f"file,id=serial0,path={opts.serial_log}", "-serial", "chardev:serial0"]
    cmd += ["-qmp", f"unix:{opts.qmp_socket},server=on,wait=off"]
    return cmd
