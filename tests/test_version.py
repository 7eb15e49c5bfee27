"""One version number, read from one place: agent/src/defender_agent/_version.py.

The three distributions (agent, installer, tools) declare `dynamic = ["version"]` and
read `__version__` from their `_version.py`; the installer's and the tools' are git
symlinks to the agent's. The Yocto recipe reads the same file for PV (see
defender-agent.inc). These tests keep it that way, without bitbake; the recipe under a
real bitbake is in test_bitbake_parse.py.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import defender_agent
import defender_installer
import defender_tools
import pytest
from defender_installer.agent_source import read_version

REPO = Path(__file__).resolve().parent.parent
VERSION_FILE = REPO / "agent/src/defender_agent/_version.py"
DISTRIBUTIONS = {
    # directory: (distribution name, import package)
    "agent": ("defender-agent", "defender_agent"),
    "installer": ("defender-installer", "defender_installer"),
    "tools": ("defender-tools", "defender_tools"),
}
RECIPE_DIR = REPO / "meta-defender/recipes-security/defender-agent"
INC = RECIPE_DIR / "defender-agent.inc"


def the_version() -> str:
    """`__version__` of the one version file, read as the recipe and installer read it."""
    tree = ast.parse(VERSION_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
            "__version__"
        ]:
            assert isinstance(node.value, ast.Constant)
            assert isinstance(node.value.value, str)
            return node.value.value
    raise AssertionError(f"{VERSION_FILE}: no __version__")


def test_version_file_holds_only_a_docstring_and_the_version() -> None:
    tree = ast.parse(VERSION_FILE.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{VERSION_FILE}: say what the file is for"
    assert len(tree.body) == 2, f"{VERSION_FILE}: a docstring and __version__, nothing else"
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[.+-]?\w+)*", the_version()), the_version()


@pytest.mark.parametrize("part", ["installer", "tools"])
def test_other_version_files_are_relative_symlinks_to_the_one_file(part: str) -> None:
    package = DISTRIBUTIONS[part][1]
    link = REPO / part / "src" / package / "_version.py"
    assert link.is_symlink(), f"{link}: must be a symlink to {VERSION_FILE}"
    target = os.readlink(link)
    assert not os.path.isabs(target), f"{link} -> {target}: use a relative link"
    assert link.resolve() == VERSION_FILE.resolve()


@pytest.mark.parametrize("part", ["installer", "tools"])
def test_git_stores_the_version_files_as_symlinks(part: str) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    path = f"{part}/src/{DISTRIBUTIONS[part][1]}/_version.py"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-s", "--", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not listed:
        pytest.skip(f"{path} is not in the git index yet")
    assert listed[0] == "120000", f"{path}: git mode {listed[0]}, expected a symlink (120000)"


@pytest.mark.parametrize("part", sorted(DISTRIBUTIONS))
def test_pyproject_reads_the_version_file(part: str) -> None:
    package = DISTRIBUTIONS[part][1]
    data = tomllib.loads((REPO / part / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in data["project"], f"{part}/pyproject.toml: no literal version"
    assert "version" in data["project"].get("dynamic", [])
    dynamic = data["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": f"{package}._version.__version__"}


def test_packages_report_the_one_version() -> None:
    version = the_version()
    assert defender_agent.__version__ == version
    assert defender_installer.__version__ == version
    assert defender_tools.__version__ == version


@pytest.mark.parametrize("part", sorted(DISTRIBUTIONS))
def test_installed_distribution_has_the_one_version(part: str) -> None:
    name = DISTRIBUTIONS[part][0]
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    assert installed == the_version(), (
        f"{name} was installed as {installed}; reinstall after a version change "
        f"(pip install -e {part}, or make deps)"
    )


def test_installer_packages_the_one_version() -> None:
    assert read_version(REPO / "agent") == the_version()


# --- the recipe ----------------------------------------------------------------------


def test_recipe_file_name_carries_no_version() -> None:
    assert sorted(p.name for p in RECIPE_DIR.glob("*.bb")) == ["defender-agent.bb"]


def recipe_functions() -> dict[str, str]:
    """The .inc's python `def` functions, by name (bitbake runs them as plain Python)."""
    text = INC.read_text(encoding="utf-8")
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r"^def (\w+)\(d\):\n(?:(?:[ \t]+.*)?\n)*", text, re.M)
    }


def anonymous_python() -> str:
    match = re.search(r"^python __anonymous\(\) \{\n(.*?)^\}", INC.read_text("utf-8"), re.M | re.S)
    assert match, f"{INC}: no anonymous python function"
    return "def anonymous(d):\n" + match.group(1)


class FakeData:
    """The bits of bitbake's datastore the recipe's functions use."""

    def __init__(self, **values: str) -> None:
        self.values = values

    def getVar(self, name: str) -> str:
        return self.values[name]


class Fatal(Exception):
    pass


def run_recipe_python(source_dir: Path) -> tuple[str, list[str]]:
    """(PV as the recipe computes it, files registered with bitbake's parse cache)."""
    marked: list[str] = []

    def fatal(message: str) -> None:
        raise Fatal(message)

    bb = SimpleNamespace(
        fatal=fatal,
        parse=SimpleNamespace(mark_dependency=lambda _d, path: marked.append(path)),
    )
    namespace: dict[str, object] = {"os": os, "bb": bb}
    for source in (*recipe_functions().values(), anonymous_python()):
        exec(compile(source, str(INC), "exec"), namespace)
    d = FakeData(DEFENDER_SOURCE_DIR=str(source_dir))
    version = namespace["defender_agent_version"](d)  # type: ignore[operator]
    namespace["anonymous"](d)  # type: ignore[operator]
    assert isinstance(version, str)
    return version, marked


def test_recipe_pv_is_read_from_the_version_file() -> None:
    text = INC.read_text(encoding="utf-8")
    assert re.findall(r"^PV\s*:?=.*$", text, re.M) == ['PV := "${@defender_agent_version(d)}"']
    version, marked = run_recipe_python(REPO)
    assert version == the_version()
    assert marked == [str(VERSION_FILE)], "the version file must be a parse-cache dependency"


def test_recipe_version_reader_follows_the_file(tmp_path: Path) -> None:
    version_file = tmp_path / "agent/src/defender_agent/_version.py"
    version_file.parent.mkdir(parents=True)
    version_file.write_text('"""v"""\n\n__version__ = "7.8.9"\n', encoding="utf-8")
    assert run_recipe_python(tmp_path) == ("7.8.9", [str(version_file)])
    version_file.write_text('"""v"""\n\nVERSION = "7.8.9"\n', encoding="utf-8")
    with pytest.raises(Fatal, match="no __version__"):
        run_recipe_python(tmp_path)
    version_file.unlink()
    with pytest.raises(Fatal, match="cannot read the agent version"):
        run_recipe_python(tmp_path)
