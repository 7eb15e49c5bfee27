"""The image's static files (overlay/), the /init that reads its module list, and the cache
key over the whole builder package."""

from __future__ import annotations

import glob
import importlib.resources
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from defender_tools.errors import UserError
from defender_tools.images import debian
from defender_tools.images.debian import cache, initramfs, overlay_files

PACKAGE = "defender_tools.images.debian"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
MIRRORS = ["deb http://mirror.example/debian bookworm main"]

EXPECTED = {
    "common": {
        "init": 0o755,
        "etc/hostname": 0o644,
        "etc/hosts": 0o644,
        "etc/default/locale": 0o644,
        "etc/fstab": 0o644,
    },
    "standard": {
        "etc/systemd/network/20-eth0.network": 0o644,
        "etc/ssh/sshd_config.d/defender-test.conf": 0o644,
    },
    "embedded": {
        "etc/network/interfaces": 0o644,
        "etc/default/dropbear": 0o644,
        "etc/acpi/events/defender-powerbtn": 0o644,
    },
}


def _all_overlay_files() -> list[str]:
    """Every overlay file, as a path relative to the package (overlay/TREE/...)."""
    return [
        f"overlay/{tree}/{rel.as_posix()}" for tree in EXPECTED for rel in overlay_files.files(tree)
    ]


def test_overlay_trees_hold_exactly_the_expected_files() -> None:
    trees = sorted(p.name for p in overlay_files.OVERLAY_DIR.iterdir())
    assert trees == sorted(EXPECTED)
    for tree, expected in EXPECTED.items():
        assert [rel.as_posix() for rel in overlay_files.files(tree)] == sorted(expected)


def test_each_profile_installs_common_then_its_own_tree(tmp_path: Path) -> None:
    for name, profile in debian.PROFILES.items():
        root = tmp_path / name
        installed = overlay_files.install(root, profile.overlays)
        expected = {**EXPECTED["common"], **EXPECTED[name]}
        assert sorted(p.relative_to(root).as_posix() for p in installed) == sorted(expected)
        for rel, mode in expected.items():
            assert (root / rel).stat().st_mode & 0o7777 == mode, rel
    assert not (tmp_path / "standard/etc/default/dropbear").exists()
    assert not (tmp_path / "embedded/etc/ssh/sshd_config.d").exists()
    assert (tmp_path / "standard/etc/hostname").read_text() == "defender-qemu\n"


def test_install_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "outside"
    target.write_text("keep\n")
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/hostname").symlink_to(target)
    overlay_files.install(tmp_path / "root", ["common"])
    assert target.read_text() == "keep\n"
    assert not (tmp_path / "root/etc/hostname").is_symlink()


def test_every_overlay_file_is_package_data() -> None:
    """tools/pyproject.toml's package-data globs (expanded the way setuptools does) cover
    every overlay file, so a wheel carries them."""
    data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    patterns = data.get(PACKAGE, [])
    root = Path(debian.__file__).parent
    matched = {m for pattern in patterns for m in glob.glob(pattern, root_dir=root, recursive=True)}
    missing = [path for path in _all_overlay_files() if path not in matched]
    assert not missing, f"not package data in {PYPROJECT}: {missing}"


def test_every_overlay_file_is_a_resource_of_the_package() -> None:
    resources = importlib.resources.files(PACKAGE)
    for path in _all_overlay_files():
        resource = resources.joinpath(path)
        assert resource.is_file(), path
        assert resource.read_bytes() == (overlay_files.OVERLAY_DIR.parent / path).read_bytes()


def test_init_is_not_templated_and_reads_the_module_list() -> None:
    init = (overlay_files.OVERLAY_DIR / "common" / "init").read_text()
    assert init.startswith("#!/bin/sh\n")
    assert f"/{initramfs.MODULE_LIST}" in init
    for module in debian.MODULES:
        assert module not in init
    assert "{" not in init.replace("${", "")  # no leftover template fields


def _run_init(tmp_path: Path, module_list: Path) -> list[str]:
    """Run /init with stub mount/modprobe and the list at MODULE_LIST; modules it loaded."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    loaded = tmp_path / "loaded"
    (stubs / "mount").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "modprobe").write_text(f'#!/bin/sh\necho "$2" >> {loaded}\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    init = (overlay_files.OVERLAY_DIR / "common" / "init").read_text()
    init = init.replace(f"/{initramfs.MODULE_LIST}", str(module_list))
    init = init.replace("exec /sbin/init", "exec echo handed-over-to-init")
    script = tmp_path / "init"
    script.write_text(init)
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "handed-over-to-init"
    return loaded.read_text().split() if loaded.exists() else []


def test_init_loads_exactly_the_modules_the_builder_listed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    listed = initramfs.write_module_list(root)
    assert listed == root / initramfs.MODULE_LIST
    assert listed.read_text() == "".join(f"{m}\n" for m in debian.MODULES)
    assert listed.stat().st_mode & 0o777 == 0o644
    assert _run_init(tmp_path, listed) == list(debian.MODULES)


def test_init_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    listed = tmp_path / "modules"
    listed.write_text("# comment\n\nvirtio_net\n")
    assert _run_init(tmp_path, listed) == ["virtio_net"]


def test_prepare_init_needs_the_overlays_executable_init(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing or not executable"):
        initramfs.prepare_init(tmp_path)
    overlay_files.install(tmp_path, ["common"])
    initramfs.prepare_init(tmp_path)
    assert (tmp_path / initramfs.MODULE_LIST).is_file()


# --- the cache key covers the whole builder --------------------------------------------------


@pytest.fixture
def builder_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the builder package that the cache key hashes instead of the real one."""
    copy = tmp_path / "debian"
    shutil.copytree(cache.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE_DIR", copy)
    return copy


def _key() -> str:
    return debian.cache_key("img", "bookworm", [], MIRRORS)


def test_builder_files_are_the_whole_package_and_qemuboot() -> None:
    files = cache.builder_files()
    names = {p.relative_to(cache.PACKAGE_DIR).as_posix() for p in files[:-1]}
    assert {"__init__.py", "kernel.py", "rootfs.py", "initramfs.py", "cache.py"} <= names
    assert set(_all_overlay_files()) <= names
    assert files[-1].name == "qemuboot.py"
    assert not any("__pycache__" in p.parts for p in files)


def test_cache_key_changes_when_any_overlay_file_changes(builder_copy: Path) -> None:
    key = _key()
    for path in _all_overlay_files():
        target = builder_copy / path
        original = target.read_bytes()
        target.write_bytes(original + b"# changed\n")
        assert _key() != key, f"{path}: content change not in the cache key"
        target.write_bytes(original)
        assert _key() == key


def test_cache_key_changes_with_modes_new_files_and_code(builder_copy: Path) -> None:
    key = _key()
    init = builder_copy / "overlay/common/init"
    init.chmod(0o644)
    assert _key() != key, "losing /init's executable bit must rebuild"
    init.chmod(0o755)
    assert _key() == key
    extra = builder_copy / "overlay/standard/etc/motd"
    extra.write_text("hello\n")
    assert _key() != key
    extra.unlink()
    assert _key() == key
    code = builder_copy / "profiles.py"
    code.write_text(code.read_text() + "\n")
    assert _key() != key


def test_bytecode_does_not_change_the_cache_key(builder_copy: Path) -> None:
    key = _key()
    (builder_copy / "__pycache__").mkdir()
    (builder_copy / "__pycache__" / "kernel.cpython-311.pyc").write_bytes(os.urandom(16))
    assert _key() == key
