"""The rendered nfpm configuration is valid for the nfpm that will read it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import jsonschema
import yaml

from defender_installer import build
from defender_installer.formats import DEB
from defender_installer.nfpm import find_nfpm

MakeAgent = Callable[..., Path]


def test_rendered_config_matches_nfpm_schema(tmp_path: Path) -> None:
    schema = json.loads(
        subprocess.run(
            [str(find_nfpm()), "jsonschema"], capture_output=True, text=True, check=True
        ).stdout
    )
    contents = [
        build.ContentItem(
            dst="/etc/defender-agent/agent.toml", src="/s/a", mode=0o644, type="config|noreplace"
        ),
        build.ContentItem(dst="/var/lib/defender-agent", mode=0o750, type="dir"),
    ]
    env = build._templates()
    for epoch in (None, 1700000000):
        text = build.render_nfpm_config(
            env, DEB, "1.0~rc1", contents, {"postinstall": "/s/postinst"}, epoch
        )
        config = yaml.safe_load(text)
        jsonschema.validate(config, schema)
        assert config["contents"][0]["file_info"]["mode"] == 0o644
        assert config["contents"][1]["file_info"]["mode"] == 0o750
        assert config["version"] == "1.0~rc1"
        assert config["maintainer"].endswith("<defender@users.noreply.github.com>")
        assert ("mtime" in config) == (epoch is not None)


def test_fake_agent_builds_with_its_own_version(fake_agent: MakeAgent, tmp_path: Path) -> None:
    result = build.build_package(
        collectors="sysinfo", out_dir=tmp_path / "dist", agent_src=fake_agent(), environ={}
    )
    assert result.path.name == "defender-agent_2.3.4_all.deb"
    assert result.collectors == ("sysinfo",)
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(result.path)], capture_output=True, text=True, check=True
    ).stdout
    assert "collectors/sysinfo.py" in listing
    assert "collectors/login.py" not in listing


def test_nfpm_errors_become_one_line() -> None:
    from defender_installer.nfpm import nfpm_error

    boxed = (
        "          \n   ERROR  \n          \n  Cannot add data.tar.gz to deb: cannot write "
        "data.tar.gz body to deb: write /tmp/x/.defender-                     \n"
        "  agent_0.1.0_all.deb.1.partial: no space left on device.          \n\n"
    )
    assert nfpm_error(boxed) == (
        "Cannot add data.tar.gz to deb: cannot write data.tar.gz body to deb: write "
        "/tmp/x/.defender- agent_0.1.0_all.deb.1.partial: no space left on device."
    )
    assert nfpm_error("\u2022 using deb packager...\n\u2a2f command failed error=bad config\n") == (
        "command failed error=bad config"
    )
    assert nfpm_error("") == "no output"
