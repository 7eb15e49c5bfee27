"""Reading an agent checkout: registry, version, and which files are core."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from defender_agent._version import __version__ as agent_version

from defender_installer.agent_source import (
    load_agent_source,
    locate_agent_source,
    package_files,
    read_collectors,
    select_collectors,
    select_outputs,
)
from defender_installer.errors import UserError

MakeAgent = Callable[..., Path]


def test_registry_is_read_without_importing(fake_agent: MakeAgent) -> None:
    root = fake_agent(collectors=("login", "sysinfo", "process"))
    registry = root / "src/defender_agent/collectors/__init__.py"
    registry.write_text(registry.read_text() + "raise SystemExit('imported!')\n")
    assert read_collectors(registry) == ("login", "sysinfo", "process")


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("COLLECTORS = ('login',)\n", "ALL_COLLECTORS not defined"),
        ("ALL_COLLECTORS = tuple(sorted(x))\n", "must be a literal tuple"),
        ("ALL_COLLECTORS = ('Login Stuff',)\n", "tuple of lower-case collector names"),
        ("ALL_COLLECTORS = (\n", "syntax error"),
    ],
)
def test_bad_registry_is_a_user_error(fake_agent: MakeAgent, registry: str, message: str) -> None:
    root = fake_agent(collectors=(), registry=registry)
    with pytest.raises(UserError, match=message):
        load_agent_source(root)


def test_registered_collector_without_module(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    (root / "src/defender_agent/collectors/sysinfo.py").unlink()
    with pytest.raises(UserError, match=r"'sysinfo' is registered but collectors/sysinfo.py"):
        load_agent_source(root)


def test_missing_packaging_file(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    (root / "packaging/defender-agent.init").unlink()
    with pytest.raises(UserError, match=r"defender-agent\.init is missing"):
        load_agent_source(root)


def test_version_comes_from_pyproject_then_package(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    assert load_agent_source(root).version == "2.3.4"
    (root / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    (root / "src/defender_agent/__init__.py").write_text('__version__ = "9.8"\n')
    assert load_agent_source(root).version == "9.8"
    (root / "src/defender_agent/_version.py").write_text('"""v"""\n\n__version__ = "9.9"\n')
    assert load_agent_source(root).version == "9.9"


def test_dynamic_version_follows_the_setuptools_attr(fake_agent: MakeAgent) -> None:
    """`dynamic = ["version"]` + `version = {attr = ...}`: the module setuptools reads."""
    root = fake_agent()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndynamic = ["version"]\n'
        "[tool.setuptools.dynamic]\n"
        'version = {attr = "defender_agent.about.VERSION"}\n'
    )
    (root / "src/defender_agent/about.py").write_text('VERSION: str = "4.5.6"\n')
    (root / "src/defender_agent/_version.py").write_text('__version__ = "0.0.1"\n')
    assert load_agent_source(root).version == "4.5.6"


def test_no_version_anywhere_is_a_user_error(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    (root / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    (root / "src/defender_agent/__init__.py").write_text("__version__ = compute()\n")
    with pytest.raises(UserError, match=r"no \[project\]\.version.*pass --version"):
        load_agent_source(root)


def test_this_repository_reads_the_one_version_file(repo: Path) -> None:
    """The real agent's version is dynamic: it comes from defender_agent/_version.py."""
    project = tomllib.loads((repo / "agent/pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in project["project"]["dynamic"]
    assert load_agent_source(repo / "agent").version == agent_version


def test_selection_follows_registry_order_and_dedupes() -> None:
    available = ("login", "sysinfo", "process")
    assert select_collectors(None, available) == available
    assert select_collectors(" process , login,login", available) == ("login", "process")
    with pytest.raises(
        UserError, match="unknown collector 'x', 'y'; valid: login, sysinfo, process"
    ):
        select_collectors("x,login,y", available)
    with pytest.raises(UserError, match="empty name"):
        select_collectors("", available)


def test_output_selection_defaults_to_all_and_takes_none() -> None:
    assert select_outputs(None, ("syslog",)) == ("syslog",)
    assert select_outputs("none", ("syslog",)) == ()
    with pytest.raises(UserError, match="--outputs: unknown output 'mqtt'; valid: syslog"):
        select_outputs("mqtt", ("syslog",))


def test_unselected_optional_outputs_are_left_out(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    outputs = root / "src/defender_agent/outputs"
    outputs.mkdir()
    (outputs / "__init__.py").write_text(
        'ALL_OUTPUTS = ("file", "syslog")\nOPTIONAL_OUTPUTS = ("syslog",)\n'
    )
    (outputs / "file.py").write_text("")
    (outputs / "syslog.py").write_text("")
    source = load_agent_source(root)
    assert source.outputs == ("syslog",)
    without = {str(r) for _, r in package_files(source, ("login",), ())}
    assert "outputs/file.py" in without and "outputs/syslog.py" not in without
    assert "outputs/syslog.py" in {str(r) for _, r in package_files(source, ("login",))}
    (outputs / "syslog.py").unlink()
    with pytest.raises(UserError, match="output 'syslog' is registered"):
        load_agent_source(root)


def test_core_plus_selected_collectors_only(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    package = root / "src/defender_agent"
    (package / "__pycache__").mkdir()
    (package / "__pycache__/cli.cpython-311.pyc").write_bytes(b"\0")
    (package / "stray.pyc").write_bytes(b"\0")
    (package / "tests").mkdir()
    (package / "tests/test_cli.py").write_text("")
    (package / "linux/test_utmp.py").write_text("")
    (package / ".cli.py.swp").write_text("")
    (package / "rules.json").write_text("{}")
    source = load_agent_source(root)
    packaged = [relative for _, relative in package_files(source, ("login",))]
    assert packaged == [
        PurePosixPath(p)
        for p in (
            "__init__.py",
            "cli.py",
            "rules.json",
            "collectors/__init__.py",
            "collectors/login.py",
            "linux/__init__.py",
            "linux/utmp.py",
        )
    ]


def test_locate_explicit_accepts_agent_dir_or_repo_root(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    assert locate_agent_source(root) == root.resolve()
    assert locate_agent_source(root.parent) == root.resolve()
    with pytest.raises(UserError, match="--agent-src"):
        locate_agent_source(root / "src")


def test_locate_walks_up_to_the_repository(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    deep = root.parent / "installer" / "src" / "defender_installer"
    deep.mkdir(parents=True)
    assert locate_agent_source(None, start=deep) == root
    with pytest.raises(UserError, match="pass --agent-src"):
        locate_agent_source(None, start=Path("/proc/self"))


def test_a_symlink_in_the_source_is_refused_not_followed(fake_agent: MakeAgent) -> None:
    root = fake_agent()
    (root / "src/defender_agent/rules.json").symlink_to("/etc/shadow")
    source = load_agent_source(root)
    with pytest.raises(UserError, match=r"rules.json: a symbolic link in the agent source"):
        package_files(source, ("login",))
