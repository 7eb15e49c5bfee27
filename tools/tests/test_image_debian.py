"""The Debian image builder's pure parts: mirrors, cache key, package checks, modules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from defender_tools.errors import UserError
from defender_tools.images import debian
from defender_tools.images.debian import kernel, steps

DEB822 = """Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def _apt_dir(tmp_path: Path, sources: str = DEB822, one_line: str = "") -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line:
        (apt / "sources.list").write_text(one_line)
    return apt


def _deb(path: Path) -> Path:
    """A real (tiny) Debian package built with dpkg-deb."""
    root = path.parent / (path.stem + "-root")
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n"
    )
    subprocess.run(["dpkg-deb", "--build", str(root), str(path)], check=True, capture_output=True)
    return path


def test_mirrors_come_from_the_hosts_deb822_sources(tmp_path: Path) -> None:
    sources = debian.host_sources(_apt_dir(tmp_path))
    assert debian.mirror_lines("bookworm", sources) == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]


def test_other_suite_keeps_the_hosts_mirrors(tmp_path: Path) -> None:
    sources = debian.host_sources(_apt_dir(tmp_path))
    lines = debian.mirror_lines("trixie", sources)
    assert lines[0] == "deb http://mirror.example/debian trixie main"
    assert "deb http://mirror.example/debian-security trixie-security main" in lines


def test_one_line_sources_list_is_read_too(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        sources="",
        one_line="# comment\ndeb [arch=amd64] http://one.example/d bookworm main\n",
    )
    assert debian.mirror_lines("bookworm", debian.host_sources(apt)) == [
        "deb http://one.example/d bookworm main"
    ]


def test_no_mirror_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no Debian mirror"):
        debian.mirror_lines("bookworm", debian.host_sources(_apt_dir(tmp_path, sources="")))


def test_cache_key_is_stable_and_tracks_every_input(tmp_path: Path) -> None:
    deb = _deb(tmp_path / "a.deb")
    mirrors = ["deb http://mirror.example/debian bookworm main"]
    key = debian.cache_key("img", "bookworm", [deb], mirrors)
    assert key == debian.cache_key("img", "bookworm", [deb], mirrors)
    assert key != debian.cache_key("img", "trixie", [deb], mirrors)
    assert key != debian.cache_key("img2", "bookworm", [deb], mirrors)
    assert key != debian.cache_key("img", "bookworm", [], mirrors)
    assert key != debian.cache_key("img", "bookworm", [deb], ["deb http://other/ bookworm main"])
    with deb.open("ab") as handle:  # same name, different content
        handle.write(b"\n")
    assert key != debian.cache_key("img", "bookworm", [deb], mirrors)


def test_missing_package_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.deb: package file not found"):
        debian.check_packages([tmp_path / "nope.deb"])


def test_non_deb_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.deb"
    bogus.write_text("hello")
    with pytest.raises(UserError, match=r"bogus\.deb: not a Debian package"):
        debian.check_packages([bogus])


def test_cached_build_returns_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "images" / "quick"
    out.mkdir(parents=True)
    monkeypatch.setattr(
        debian, "host_sources", lambda: [debian.AptSource("http://m.example/d", "bookworm")]
    )
    paths = debian.output_paths(out)
    for path in paths.values():
        path.write_text("x")
    mirrors = debian.mirror_lines("bookworm", debian.host_sources())
    paths["cachekey"].write_text(debian.cache_key("quick", "bookworm", [], mirrors) + "\n")
    result = debian.build_image(out)
    assert result.cached
    assert result.conf == paths["conf"]
    # A changed input is not served from the cache (it would need root and mmdebstrap).
    paths["cachekey"].write_text("stale\n")
    monkeypatch.setattr(debian.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match="needs root"):
        debian.build_image(out)


def test_module_closure_follows_modules_dep(tmp_path: Path) -> None:
    dep = tmp_path / "modules.dep"
    dep.write_text(
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko "
        "kernel/net/core/failover.ko\n"
        "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
        "kernel/net/core/failover.ko:\n"
        "kernel/drivers/net/dummy.ko.xz:\n"
        "kernel/drivers/net/unrelated.ko:\n"
    )
    assert kernel.module_closure(dep, ["virtio_net", "dummy", "built_in_thing"]) == [
        "kernel/drivers/net/dummy.ko.xz",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/net/core/failover.ko",
    ]


def test_scratch_dir_is_removed_when_nothing_is_mounted(tmp_path: Path) -> None:
    work = tmp_path / ".img-work"
    (work / "rootfs" / "etc").mkdir(parents=True)
    assert steps.mounts_under(work) == []
    steps.remove_work_dir(work)
    assert not work.exists()


def test_mount_points_are_found_by_prefix() -> None:
    assert "/proc" in steps.mounts_under(Path("/proc"))
    assert steps.mounts_under(Path("/proc/does-not-exist")) == []


def test_profile_is_part_of_the_cache_key(tmp_path: Path) -> None:
    deb = _deb(tmp_path / "a.deb")
    mirrors = ["deb http://mirror.example/debian bookworm main"]
    standard = debian.cache_key("img", "bookworm", [deb], mirrors)
    assert standard == debian.cache_key("img", "bookworm", [deb], mirrors, "standard")
    assert standard != debian.cache_key("img", "bookworm", [deb], mirrors, "embedded")


def test_profiles_differ_in_init_and_ssh_server() -> None:
    standard = debian.get_profile("standard")
    embedded = debian.get_profile("embedded")
    assert standard.include == debian.INCLUDE  # the default image is unchanged
    assert {"systemd-sysv", "openssh-server"} <= set(standard.include)
    assert not {"sysvinit-core", "dropbear-bin"} & set(standard.include)
    assert {"sysvinit-core", "dropbear-bin", "dropbear-run", "acpid"} <= set(embedded.include)
    assert not {"systemd-sysv", "openssh-server", "udev", "dbus"} & set(embedded.include)
    assert (standard.init, standard.ssh_service) == ("systemd", "sshd")
    assert (embedded.init, embedded.ssh_service) == ("sysvinit", "dropbear")
    assert "systemd" not in embedded.kernel_cmdline


def test_profile_picks_the_default_image_directory() -> None:
    assert debian.image_dir_name("standard") == "defender-debian"
    assert debian.image_dir_name("embedded") == "defender-debian-embedded"


def test_unknown_profile_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--profile 'tiny': unknown profile .*standard, embedded"):
        debian.get_profile("tiny")
    with pytest.raises(UserError, match="--profile 'tiny'"):
        debian.build_image(tmp_path / "img", profile="tiny")


def test_conf_carries_the_profiles_kernel_command_line() -> None:
    embedded = debian._conf_values("img", debian.get_profile("embedded"))
    assert embedded["qb_kernel_cmdline_append"] == debian.EMBEDDED_KERNEL_CMDLINE
    standard = debian._conf_values("img", debian.get_profile("standard"))
    assert standard["qb_kernel_cmdline_append"] == debian.KERNEL_CMDLINE
