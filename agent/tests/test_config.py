"""agent.toml loading and validation: errors name the file and the key."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from defender_agent import config, reference, schema
from defender_agent.collectors import ALL_COLLECTORS

ROOT = Path(__file__).resolve().parents[2]
BOTH = config.available_plugins()  # every plugin: this checkout is a full build

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_good_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[agent]
device_id = "gw-1"
heartbeat_interval = 60
[collectors.login]
backend = "poll"
poll_interval = 0.5
auth_logs = ["/var/log/auth.log"]
utmp_layout = 400
[detectors.brute_force]
max_failures = 3
window = 30
[outputs.file]
backups = 0
""",
    )
    cfg = config.load(path, BOTH)
    assert cfg.from_file
    assert cfg.device_id() == "gw-1"
    assert cfg.section("agent")["heartbeat_interval"] == 60.0
    assert cfg.section("collectors.login")["backend"] == "poll"
    assert cfg.section("collectors.login")["utmp_layout"] == "400"
    assert cfg.section("detectors.brute_force")["max_failures"] == 3
    assert cfg.section("collectors.sysinfo")["interval"] == 86400.0  # default kept
    assert cfg.events_path == "/var/lib/defender-agent/events.jsonl"


def test_unknown_key_names_file_and_key_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "[detectors.brute_force]\nmax_failure = 3\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path, BOTH)
    assert str(err.value) == (
        f"{path}: detectors.brute_force.max_failure: unknown key (did you mean 'max_failures'?)"
    )


def test_unknown_section_and_collector(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"agnet: unknown section \(did you mean 'agent'"):
        config.load(write(tmp_path, "[agnet]\nx = 1\n"), BOTH)
    with pytest.raises(config.ConfigError, match=r"collectors.nosuch: unknown collector"):
        config.load(write(tmp_path, "[collectors.nosuch]\nenabled = true\n"), BOTH)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[agent]\nheartbeat_interval = "5m"\n',
            "agent.heartbeat_interval: expected a number, got '5m'",
        ),
        ("[detectors.brute_force]\nmax_failures = 2.5\n", "expected an integer, got 2.5"),
        ("[detectors.brute_force]\nenabled = 1\n", "expected true or false, got 1"),
        ('[collectors.login]\nauth_logs = "/var/log/auth.log"\n', "expected a list of strings"),
        ('[collectors.login]\nbackend = "fanotify"\n', "expected one of auto, inotify, poll"),
    ],
)
def test_bad_type(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path, BOTH)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[detectors.brute_force]\nmax_failures = 0\n", "max_failures: 0 is below the minimum 1"),
        (
            "[collectors.login]\npoll_interval = 120\n",
            "poll_interval: 120.0 is above the maximum 60",
        ),
        ("[outputs.file]\nmax_bytes = 100\n", "max_bytes: 100 is below the minimum 4096"),
        ("[outputs.file]\nbackups = 21\n", "backups: 21 is above the maximum 20"),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(write(tmp_path, text), BOTH)


def test_enabling_a_collector_not_in_the_build(tmp_path: Path) -> None:
    path = write(tmp_path, "[collectors.sysinfo]\nenabled = true\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path, {**BOTH, "collectors": ("login",)})
    assert str(err.value) == (
        f"{path}: collectors.sysinfo.enabled: collector 'sysinfo' is not in this build"
        " (in this build: login)"
    )
    # unset means "on if present": the same build loads fine without the key
    login_only = {**BOTH, "collectors": ("login",)}
    cfg = config.load(write(tmp_path, "[collectors.sysinfo]\ninterval = 3600\n"), login_only)
    assert not cfg.enabled("collectors", "sysinfo", ("login",))
    assert cfg.enabled("collectors", "login", ("login",))


def test_enabling_an_output_not_in_the_build(tmp_path: Path) -> None:
    path = write(tmp_path, "[outputs.stdout]\nenabled = true\n")
    with pytest.raises(config.ConfigError, match="output 'stdout' is not in this build"):
        config.load(path, {**BOTH, "outputs": ("file",)})


def test_invalid_toml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="invalid TOML"):
        config.load(write(tmp_path, "[agent\n"), BOTH)
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(config.ConfigError, match=f"{missing}: file not found"):
        config.load(missing, BOTH)


def test_missing_default_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    cfg = config.load(None, BOTH)
    assert not cfg.from_file
    assert cfg.section("detectors.brute_force")["max_failures"] == 5
    assert cfg.section("detectors.brute_force")["window"] == 60.0


def test_packaged_agent_toml_is_current_and_parses_to_defaults() -> None:
    packaged = ROOT / "agent" / "packaging" / "agent.toml"
    assert packaged.read_text() == reference.render_toml(), (
        "regenerate: defender-agent config defaults"
    )
    parsed = tomllib.loads(packaged.read_text())  # only empty tables: every key commented
    assert parsed["agent"] == {}
    assert parsed["collectors"] == {name: {} for name in ALL_COLLECTORS}
    assert config.validate(parsed, "packaged", BOTH).section("agent") == config.defaults()["agent"]
    cfg = config.load(str(packaged), BOTH)
    assert cfg.section("outputs.file") == {
        **config.defaults()["outputs.file"],
        "path": "/var/lib/defender-agent/events.jsonl",  # empty = in the state directory
    }
    # every key appears once, uncommentable: uncommenting all lines gives a valid config
    uncommented = "\n".join(
        line[2:] if re.match(r"# [a-z_]+ = ", line) else line
        for line in packaged.read_text().splitlines()
    )
    data = tomllib.loads(uncommented)
    flat = ("agent", "aggregation")  # sections with keys; the others hold plugin tables
    assert sum(
        len(v) if k in flat else sum(len(t) for t in v.values()) for k, v in data.items()
    ) == len(schema.SCHEMA)
    config.validate(data, "uncommented", BOTH)


def test_comment_only_shortcut_matches_the_parser(tmp_path: Path) -> None:
    assert config._only_comments("# x = 1\n\n[agent]\n  # y\n[collectors.login]\n")
    assert not config._only_comments("[agent]\ndevice_id = 'x'\n")
    assert not config._only_comments("[agnet]\n")  # unknown tables still go to the parser
    with pytest.raises(config.ConfigError, match="unknown section"):
        config.load(write(tmp_path, "[agnet]\n"), BOTH)


def test_configuration_doc_is_current() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == reference.render_markdown(), (
        "regenerate: defender-agent config reference > docs/configuration.md"
    )


@pytest.mark.parametrize(
    "text",
    [
        "[collectors.login]\npoll_interval = nan\n",
        "[agent]\nheartbeat_interval = nan\n",
        "[detectors.brute_force]\nwindow = -nan\n",
    ],
)
def test_nan_is_rejected(tmp_path: Path, text: str) -> None:
    # TOML allows nan; it compares false with both bounds, and a nan timer interval
    # would spin the event loop at 100% CPU.
    with pytest.raises(config.ConfigError, match="expected a number, got nan"):
        config.load(write(tmp_path, text), BOTH)
