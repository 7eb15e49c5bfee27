"""qemuboot.conf parsing and QEMU command-line assembly (no QEMU is started)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from defender_tools import qemuboot
from defender_tools.errors import UserError
from defender_tools.images.debian import _conf_values

YOCTO_SAMPLE = Path(__file__).parent / "data" / "yocto-core-image-minimal-qemux86-64.qemuboot.conf"


def _opts(tmp_path: Path, accel: str = "tcg", port: int = 2222) -> qemuboot.LaunchOptions:
    return qemuboot.LaunchOptions(
        ssh_port=port,
        accel=accel,
        serial_log=tmp_path / "serial.log",
        qmp_socket=tmp_path / "qmp.sock",
    )


@pytest.fixture
def yocto_deploy(tmp_path: Path) -> Path:
    """A Yocto deploy dir: the conf plus (tiny) kernel and rootfs files it names."""
    deploy = tmp_path / "deploy" / "images" / "qemux86-64"
    deploy.mkdir(parents=True)
    shutil.copy(YOCTO_SAMPLE, deploy / "core-image-minimal-qemux86-64.qemuboot.conf")
    (deploy / "bzImage-qemux86-64.bin").write_bytes(b"kernel")
    (deploy / "core-image-minimal-qemux86-64.ext4").write_bytes(b"rootfs")
    return deploy / "core-image-minimal-qemux86-64.qemuboot.conf"


@pytest.fixture
def our_image(tmp_path: Path) -> Path:
    """The files the Debian builder writes, with the conf it really writes."""
    out = tmp_path / "images" / "quick"
    out.mkdir(parents=True)
    qemuboot.write_conf(out / "quick.qemuboot.conf", _conf_values("quick"))
    (out / "quick.vmlinuz").write_bytes(b"kernel")
    (out / "quick.cpio.gz").write_bytes(b"rootfs")
    return out / "quick.qemuboot.conf"


def test_yocto_conf_resolves_paths_relative_to_the_conf(yocto_deploy: Path) -> None:
    cfg = qemuboot.read_conf(yocto_deploy)
    assert cfg.deploy_dir == yocto_deploy.parent.resolve()
    assert cfg.kernel.name == "bzImage-qemux86-64.bin"
    assert cfg.rootfs.name == "core-image-minimal-qemux86-64.ext4"
    assert cfg.fstype == "ext4"
    assert cfg.system_name == "qemu-system-x86_64"


def test_yocto_disk_image_boots_from_a_snapshot_virtio_drive(
    yocto_deploy: Path, tmp_path: Path
) -> None:
    cmd = qemuboot.build_command(qemuboot.read_conf(yocto_deploy), _opts(tmp_path))
    assert cmd[0] == "qemu-system-x86_64"
    drive = cmd[cmd.index("-drive") + 1]
    assert drive.startswith(f"file={yocto_deploy.parent.resolve()}/core-image-minimal")
    assert "-snapshot" in cmd
    append = cmd[cmd.index("-append") + 1]
    assert append.startswith("console=ttyS0 root=/dev/vda rw ")
    assert "tsc=reliable" in append
    # Yocto folds the machine into qb_cpu: the machine survives, the CPU is ours.
    assert cmd[cmd.index("-machine") + 1] == "q35,i8042=off"
    assert "Skylake-Client" not in cmd
    assert cmd[cmd.index("-smp") + 1] == "4"
    assert cmd[cmd.index("-m") + 1] == "256"
    assert "usb-tablet" in cmd


def test_our_conf_boots_as_initramfs(our_image: Path, tmp_path: Path) -> None:
    cfg = qemuboot.read_conf(our_image)
    cmd = qemuboot.build_command(cfg, _opts(tmp_path))
    assert cmd[cmd.index("-initrd") + 1] == str(our_image.parent.resolve() / "quick.cpio.gz")
    assert cmd[cmd.index("-kernel") + 1] == str(our_image.parent.resolve() / "quick.vmlinuz")
    assert "-drive" not in cmd
    assert "root=" not in cmd[cmd.index("-append") + 1]
    assert cmd[cmd.index("-m") + 1] == "1024"


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_network_is_always_restricted_and_loopback_only(
    our_image: Path, yocto_deploy: Path, tmp_path: Path, accel: str
) -> None:
    for conf in (our_image, yocto_deploy):
        cmd = qemuboot.build_command(qemuboot.read_conf(conf), _opts(tmp_path, accel, 40022))
        netdevs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-netdev"]
        assert netdevs == ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]
        device = cmd[cmd.index("-device") + 1]
        assert device == f"virtio-net-pci,netdev=net0,mac={qemuboot.SLIRP_MAC}"


def test_tcg_uses_cpu_max_and_kvm_uses_host(our_image: Path, tmp_path: Path) -> None:
    cfg = qemuboot.read_conf(our_image)
    tcg = qemuboot.build_command(cfg, _opts(tmp_path, "tcg"))
    kvm = qemuboot.build_command(cfg, _opts(tmp_path, "kvm"))
    assert tcg[1:3] == ["-accel", "tcg"] and tcg[tcg.index("-cpu") + 1] == "max"
    assert kvm[1:3] == ["-accel", "kvm"] and kvm[kvm.index("-cpu") + 1] == "host"
    assert tcg.count("-cpu") == 1 and kvm.count("-cpu") == 1


def test_serial_goes_to_the_log_and_qmp_to_a_unix_socket(our_image: Path, tmp_path: Path) -> None:
    cmd = qemuboot.build_command(qemuboot.read_conf(our_image), _opts(tmp_path))
    assert f"file,id=serial0,path={tmp_path / 'serial.log'}" in cmd
    assert f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off" in cmd
    assert "mon:stdio" not in " ".join(cmd)


def test_mem_option_overrides_qb_mem(our_image: Path, tmp_path: Path) -> None:
    opts = _opts(tmp_path)
    opts.mem = "512"
    cmd = qemuboot.build_command(qemuboot.read_conf(our_image), opts)
    assert cmd[cmd.index("-m") + 1] == "512"
    assert cmd.count("-m") == 1


def test_qb_rootfs_opt_and_kernel_root_are_honoured(yocto_deploy: Path, tmp_path: Path) -> None:
    text = yocto_deploy.read_text()
    text += (
        "qb_rootfs_opt = -drive id=disk0,file=@ROOTFS@,if=none,format=raw "
        "-device virtio-blk-pci,drive=disk0\nqb_kernel_root = /dev/vdb ro\n"
    )
    yocto_deploy.write_text(text)
    cmd = qemuboot.build_command(qemuboot.read_conf(yocto_deploy), _opts(tmp_path))
    rootfs = yocto_deploy.parent.resolve() / "core-image-minimal-qemux86-64.ext4"
    assert f"id=disk0,file={rootfs},if=none,format=raw" in cmd
    assert "root=/dev/vdb ro " in cmd[cmd.index("-append") + 1]


def test_missing_kernel_names_the_file_and_key(yocto_deploy: Path) -> None:
    (yocto_deploy.parent / "bzImage-qemux86-64.bin").unlink()
    with pytest.raises(UserError, match=r"qb_default_kernel: kernel file .*bzImage-qemux86-64"):
        qemuboot.read_conf(yocto_deploy)


def test_missing_rootfs_names_the_file(our_image: Path) -> None:
    (our_image.parent / "quick.cpio.gz").unlink()
    with pytest.raises(UserError, match=r"quick\.cpio\.gz not found"):
        qemuboot.read_conf(our_image)


def test_absolute_deploy_dir_is_used_as_is(our_image: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    conf = elsewhere / "quick.qemuboot.conf"
    values = _conf_values("quick")
    values["deploy_dir_image"] = str(our_image.parent)
    qemuboot.write_conf(conf, values)
    assert qemuboot.read_conf(conf).kernel == our_image.parent / "quick.vmlinuz"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not an ini file", "not a qemuboot.conf"),
        ("[other]\nx = 1\n", r"missing section \[config_bsp\]"),
        ("[config_bsp]\nqb_default_fstype = cpio.gz\n", "qb_default_kernel: not set"),
    ],
)
def test_malformed_conf_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.qemuboot.conf"
    conf.write_text(text)
    with pytest.raises(UserError, match=message):
        qemuboot.read_conf(conf)


def test_written_conf_matches_yocto_layout(our_image: Path) -> None:
    lines = our_image.read_text().splitlines()
    assert lines[0] == "[config_bsp]"
    keys = [line.split(" = ")[0] for line in lines[1:] if " = " in line]
    assert keys == sorted(keys)
    assert all(k == k.lower() for k in keys)
    assert "deploy_dir_image = ." in lines
    assert "qb_default_fstype = cpio.gz" in lines
