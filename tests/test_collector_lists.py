"""One list of collectors: the agent registry, the Yocto recipe and the installer agree.

The recipe is read as text (no bitbake needed): its DEFENDER_COLLECTORS list, its
PACKAGECONFIG flags and its default PACKAGECONFIG must all be the registry's
ALL_COLLECTORS. The installer must accept exactly those names. The optional outputs
(OPTIONAL_OUTPUTS) are selected the same way: DEFENDER_OUTPUTS, one flag each,
`--outputs`.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from defender_agent.collectors import ALL_COLLECTORS
from defender_agent.outputs import ALL_OUTPUTS, OPTIONAL_OUTPUTS
from defender_installer.agent_source import load_agent_source, select_collectors, select_outputs
from defender_installer.errors import UserError

REPO = Path(__file__).resolve().parent.parent
RECIPE_DIR = REPO / "meta-defender" / "recipes-security" / "defender-agent"
INC = RECIPE_DIR / "defender-agent.inc"


def recipe_text() -> str:
    """The .inc with line continuations joined, as bitbake reads it."""
    return INC.read_text(encoding="utf-8").replace("\\\n", " ")


def assignment(name: str, text: str) -> str:
    found = re.findall(rf'^{re.escape(name)}\s*(?:\?\?=|\?=|=)\s*"([^"]*)"', text, re.M)
    assert len(found) == 1, f"{INC}: expected one assignment of {name}, found {found}"
    return found[0]


def packageconfig_flags(text: str) -> dict[str, list[str]]:
    """PACKAGECONFIG[flag] -> its six comma-separated fields."""
    flags = re.findall(r'^PACKAGECONFIG\[([^\]]+)\]\s*=\s*"([^"]*)"', text, re.M)
    return {name: value.split(",") for name, value in flags}


def test_registry_is_what_the_contract_says() -> None:
    assert ALL_COLLECTORS == ("login", "sysinfo", "process", "network")


def test_recipe_collector_list_is_the_registry() -> None:
    text = recipe_text()
    assert tuple(assignment("DEFENDER_COLLECTORS", text).split()) == ALL_COLLECTORS


def test_recipe_output_list_is_the_registry() -> None:
    assert OPTIONAL_OUTPUTS == ("syslog",) and set(OPTIONAL_OUTPUTS) <= set(ALL_OUTPUTS)
    assert tuple(assignment("DEFENDER_OUTPUTS", recipe_text()).split()) == OPTIONAL_OUTPUTS


def test_recipe_has_one_packageconfig_flag_per_collector_and_output() -> None:
    flags = packageconfig_flags(recipe_text())
    assert tuple(sorted(flags)) == tuple(sorted(ALL_COLLECTORS + OPTIONAL_OUTPUTS))
    for name, fields in flags.items():
        assert len(fields) <= 6, f"PACKAGECONFIG[{name}] has too many fields"
        rdepends = fields[3].split() if len(fields) > 3 else []
        assert all(dep.startswith("python3-") for dep in rdepends), (name, rdepends)


def test_recipe_enables_every_collector_and_output_by_default() -> None:
    assert (
        assignment("PACKAGECONFIG", recipe_text()) == "${DEFENDER_COLLECTORS} ${DEFENDER_OUTPUTS}"
    )


def test_installer_accepts_exactly_the_registry() -> None:
    source = load_agent_source(REPO / "agent")
    assert source.collectors == ALL_COLLECTORS
    assert select_collectors(None, source.collectors) == ALL_COLLECTORS
    assert select_collectors(",".join(reversed(ALL_COLLECTORS)), source.collectors) == (
        ALL_COLLECTORS
    )
    with pytest.raises(UserError):
        select_collectors("no-such-collector", source.collectors)
    assert source.outputs == OPTIONAL_OUTPUTS
    assert select_outputs(None, source.outputs) == OPTIONAL_OUTPUTS


def test_every_collector_has_its_module() -> None:
    for name in ALL_COLLECTORS:
        assert (REPO / "agent/src/defender_agent/collectors" / f"{name}.py").is_file(), name


def test_recipe_installs_files_that_exist() -> None:
    """do_install copies from agent/packaging/ (the one copy); each must be there."""
    used = set(re.findall(r"\$\{S\}/packaging/([\w.-]+)", recipe_text()))
    assert used == {
        "agent.toml",
        "threat-intel.txt",
        "defender-agent.service",
        "defender-agent.init",
        "systemd",
    }
    for name in used - {"systemd"}:
        assert (REPO / "agent" / "packaging" / name).is_file(), name


def test_privilege_dropins_exist_only_for_registered_collectors() -> None:
    """packaging/systemd/NAME.conf: the unit drop-in the recipe and the installer add
    when collector NAME is built; a stray name would never be installed."""
    dropins = {p.stem for p in (REPO / "agent" / "packaging" / "systemd").glob("*.conf")}
    assert dropins == {"process", "network"}
    assert dropins <= set(ALL_COLLECTORS)


def test_recipe_sources_exist() -> None:
    """Every file:// entry of SRC_URI is found in the repository (the recipe's FILESPATH)."""
    entries = assignment("SRC_URI", recipe_text()).split()
    assert entries, "SRC_URI is empty"
    for entry in entries:
        assert entry.startswith("file://"), f"{entry}: the recipe must not download"
        path = REPO / entry.removeprefix("file://").split(";")[0]
        assert path.exists(), f"SRC_URI {entry}: {path} does not exist"


def test_license_checksum_matches_the_license() -> None:
    md5 = re.search(r"file://\.\./LICENSE;md5=([0-9a-f]{32})", recipe_text())
    assert md5, "LIC_FILES_CHKSUM must point at ../LICENSE (the repository's LICENSE)"
    assert hashlib.md5((REPO / "LICENSE").read_bytes()).hexdigest() == md5.group(1)


def run_collector_pruning(
    tmp_path: Path, packageconfig: str, kind: str = "collectors", core: tuple[str, ...] = ()
) -> set[str]:
    """Run the recipe's own do_install pruning loop on a copy of the installed package
    (`core`: modules of the kind that are always there)."""
    names = ALL_COLLECTORS if kind == "collectors" else OPTIONAL_OUTPUTS
    variable, word = {
        "collectors": ("DEFENDER_COLLECTORS", "collector"),
        "outputs": ("DEFENDER_OUTPUTS", "output"),
    }[kind]
    loop = re.search(
        rf"^    for {word} in \$\{{{variable}\}}; do\n.*?^    done\n",
        INC.read_text(encoding="utf-8"),
        re.M | re.S,
    )
    assert loop, f"{INC}: do_install has no {word} pruning loop"
    site = "/usr/lib/python3.12/site-packages"
    collectors = tmp_path / site.lstrip("/") / "defender_agent" / kind
    (collectors / "__pycache__").mkdir(parents=True)
    for name in ("__init__", *core, *names):
        (collectors / f"{name}.py").write_text("", encoding="utf-8")
        (collectors / "__pycache__" / f"{name}.cpython-312.pyc").write_bytes(b"")
    values = {
        variable: " ".join(names),
        "PACKAGECONFIG": packageconfig,
        "D": str(tmp_path),
        "PYTHON_SITEPACKAGES_DIR": site,
    }
    script = re.sub(r"\$\{([A-Z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), loop.group(0))
    subprocess.run(["sh", "-eu", "-c", script], check=True)
    return {p.relative_to(collectors).as_posix() for p in collectors.rglob("*.py*")}


@pytest.mark.parametrize(
    "selected",
    [
        (),
        ("login",),
        ("sysinfo",),
        ("process",),
        ("network",),
        ("login", "network"),
        ("process", "network"),
        ALL_COLLECTORS,
    ],
)
def test_do_install_keeps_only_selected_collectors(tmp_path: Path, selected: tuple[str]) -> None:
    left = run_collector_pruning(tmp_path, " ".join(selected))
    expected = {"__init__.py", "__pycache__/__init__.cpython-312.pyc"}
    for name in selected:
        expected |= {f"{name}.py", f"__pycache__/{name}.cpython-312.pyc"}
    assert left == expected


@pytest.mark.parametrize("packageconfig", ["login", "login syslog", "syslog network"])
def test_do_install_keeps_syslog_only_when_selected(tmp_path: Path, packageconfig: str) -> None:
    left = run_collector_pruning(tmp_path, packageconfig, "outputs", ("file", "stdout"))
    kept = {"__init__", "file", "stdout"} | ({"syslog"} & set(packageconfig.split()))
    assert left == {f"{n}.py" for n in kept} | {f"__pycache__/{n}.cpython-312.pyc" for n in kept}
