"""meta-defender under real bitbake: the layer parses and the recipe is what we mean.

Runs only against a local checkout, named by environment variables:

- DEFENDER_POKY_DIR=/path/to/poky (scarthgap: poky carries bitbake), or
- DEFENDER_OECORE_DIR=/path/to/openembedded-core plus DEFENDER_BITBAKE_DIR=/path/to/bitbake
  (wrynose and later, where poky is no longer one repository).

The test makes a throw-away build directory under /tmp, adds meta-defender, and runs
`bitbake -p`, `bitbake -e defender-agent` and `bitbake defender-agent -c unpack`
offline (BB_NO_NETWORK = "1"). With DEFENDER_BITBAKE_DIR alone, only the parse-cache
test runs: it needs bitbake but not openembedded-core (see the end of this file). bitbake
refuses to run as root, so as root the commands run as the user DEFENDER_BITBAKE_USER
(default `defender-build`; create it with `useradd -m defender-build`); the checkout and
this repository must be readable by that user. Host needs: the HOSTTOOLS bitbake checks
(Debian: chrpath diffstat gawk, besides the usual build tools) and the en_US.UTF-8 locale.

It also checks, against the python3 manifest of that checkout, that the recipe's
RDEPENDS cover what the agent imports: the core in RDEPENDS:${PN}, each collector in
its PACKAGECONFIG flag.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from defender_agent.collectors import ALL_COLLECTORS

REPO = Path(__file__).resolve().parent.parent
LAYER = REPO / "meta-defender"
INC = LAYER / "recipes-security" / "defender-agent" / "defender-agent.inc"
AGENT_PKG = REPO / "agent" / "src" / "defender_agent"
VERSION_FILE = AGENT_PKG / "_version.py"
BUILD_USER = os.environ.get("DEFENDER_BITBAKE_USER", "defender-build")
TIMEOUT = 1800  # a cold parse of openembedded-core takes a minute or two

pytestmark = [pytest.mark.bitbake, pytest.mark.timeout(2 * TIMEOUT)]


@dataclass(frozen=True)
class Checkout:
    """Where `oe-init-build-env` lives, the bitbake it uses and the core layer (meta/)."""

    init_dir: Path
    bitbake_dir: Path
    label: str

    @property
    def manifest(self) -> Path:
        return self.init_dir / "meta/recipes-devtools/python/python3/python3-manifest.json"


def find_checkout() -> Checkout:
    poky = os.environ.get("DEFENDER_POKY_DIR")
    oecore = os.environ.get("DEFENDER_OECORE_DIR")
    bitbake = os.environ.get("DEFENDER_BITBAKE_DIR")
    if poky:
        checkout = Checkout(Path(poky), Path(poky) / "bitbake", f"poky {poky}")
    elif oecore and bitbake:
        checkout = Checkout(Path(oecore), Path(bitbake), f"openembedded-core {oecore}")
    elif oecore:
        pytest.fail("set both DEFENDER_OECORE_DIR and DEFENDER_BITBAKE_DIR (or DEFENDER_POKY_DIR)")
    elif bitbake:
        pytest.skip("DEFENDER_BITBAKE_DIR alone: these tests need DEFENDER_OECORE_DIR too")
    else:
        pytest.skip(
            "no bitbake checkout: set DEFENDER_POKY_DIR (poky) or "
            "DEFENDER_OECORE_DIR + DEFENDER_BITBAKE_DIR (openembedded-core + bitbake)"
        )
    for needed in (checkout.init_dir / "oe-init-build-env", checkout.bitbake_dir / "bin/bitbake"):
        if not needed.exists():
            pytest.fail(f"{checkout.label}: {needed} is missing")
    return checkout


class Build:
    """A build directory in /tmp with meta-defender added, driven as a non-root user."""

    def __init__(self, checkout: Checkout) -> None:
        self.checkout = checkout
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(BUILD_USER)
            except KeyError:
                pytest.skip(
                    f"running as root and user {BUILD_USER!r} does not exist "
                    f"(bitbake refuses root): useradd -m {BUILD_USER}, "
                    "or set DEFENDER_BITBAKE_USER"
                )
            self.user = BUILD_USER
        self.root = Path(tempfile.mkdtemp(prefix="defender-bitbake-"))
        self.dir = self.root / "build"
        if self.user:
            shutil.chown(self.root, self.user)

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """`command` in the initialised build environment, in a clean environment."""
        script = (
            f"cd {shlex.quote(str(self.checkout.init_dir))} && "
            f"BITBAKEDIR={shlex.quote(str(self.checkout.bitbake_dir))} "
            f". ./oe-init-build-env {shlex.quote(str(self.dir))} >/dev/null && {command}"
        )
        home = pwd.getpwnam(self.user).pw_dir if self.user else os.environ.get("HOME", "/tmp")
        env = [
            "env",
            "-i",
            f"HOME={home}",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG=en_US.UTF-8",
            "LC_ALL=en_US.UTF-8",
        ]
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run(
            [*prefix, *env, "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def check(self, command: str) -> str:
        result = self.run(command)
        assert result.returncode == 0, (
            f"{command!r} failed ({result.returncode}) in {self.dir}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        return result.stdout

    def remove(self) -> None:
        self.run("bitbake -m >/dev/null 2>&1 || true")  # stop a lingering server
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def checkout() -> Checkout:
    return find_checkout()


@pytest.fixture(scope="module")
def bitbake_dir() -> Path:
    """bitbake alone: DEFENDER_BITBAKE_DIR, else the one in DEFENDER_POKY_DIR."""
    bitbake = os.environ.get("DEFENDER_BITBAKE_DIR")
    poky = os.environ.get("DEFENDER_POKY_DIR")
    if bitbake:
        path = Path(bitbake)
    elif poky:
        path = Path(poky) / "bitbake"
    else:
        pytest.skip("no bitbake checkout: set DEFENDER_BITBAKE_DIR or DEFENDER_POKY_DIR")
    if not (path / "bin/bitbake").is_file():
        pytest.fail(f"{path / 'bin/bitbake'} is missing")
    return path


@pytest.fixture(scope="module")
def build(checkout: Checkout) -> Iterator[Build]:
    build = Build(checkout)
    try:
        build.check("true")  # creates conf/ from the checkout's templates
        with open(build.dir / "conf" / "local.conf", "a", encoding="utf-8") as conf:
            conf.write('\nBB_NO_NETWORK = "1"\nINIT_MANAGER = "systemd"\n')
        build.check(f"bitbake-layers add-layer {shlex.quote(str(LAYER))}")
        yield build
    finally:
        build.remove()


@pytest.fixture(scope="module")
def recipe_env(build: Build) -> dict[str, str]:
    """Final values from `bitbake -e defender-agent` (variable -> expanded value)."""
    output = build.check("bitbake -e defender-agent")
    values: dict[str, str] = {}
    for match in re.finditer(r'^(?:export )?([A-Za-z0-9_:${}.+-]+)="(.*)"$', output, re.M):
        values[match.group(1)] = match.group(2)
    return values


def test_layer_parses(build: Build) -> None:
    output = build.check("bitbake -p")
    assert "ERROR" not in output
    layers = build.check("bitbake-layers show-layers")
    assert re.search(rf"^defender\s+{re.escape(str(LAYER))}\s+6\s*$", layers, re.M), layers


def agent_version(path: Path) -> str:
    """`__version__` of the agent's one version file."""
    match = re.search(r'^__version__ = "([^"]+)"$', path.read_text(encoding="utf-8"), re.M)
    assert match, f"{path}: no __version__"
    return match.group(1)


def test_recipe_is_found_with_every_collector(recipe_env: dict[str, str]) -> None:
    assert recipe_env["FILE"] == str(INC.parent / "defender-agent.bb")
    assert recipe_env["PV"] == agent_version(VERSION_FILE)
    assert tuple(recipe_env["PACKAGECONFIG"].split()) == ALL_COLLECTORS
    assert recipe_env["DEFENDER_SOURCE_DIR"] == str(REPO)
    assert recipe_env["S"].endswith("/agent")
    assert recipe_env["SYSTEMD_SERVICE:defender-agent"] == "defender-agent.service"
    assert recipe_env["INITSCRIPT_NAME"] == "defender-agent"
    assert recipe_env["CONFFILES:defender-agent"] == "/etc/defender-agent/agent.toml"
    assert recipe_env["BB_NO_NETWORK"] == "1"


def test_drop_ins_go_where_the_init_script_finds_them(
    build: Build, recipe_env: dict[str, str]
) -> None:
    """The collectors' capability drop-ins: the unit's directory with systemd; without it
    (systemd.bbclass deletes the unit directory) the one the init script falls back to."""
    unitdir = recipe_env["systemd_system_unitdir"]
    assert recipe_env["DEFENDER_DROPIN_DIR"] == f"{unitdir}/defender-agent.service.d"
    conf = build.dir / "conf" / "local.conf"
    saved = conf.read_text(encoding="utf-8")
    try:
        conf.write_text(saved.replace('INIT_MANAGER = "systemd"', 'INIT_MANAGER = "sysvinit"'))
        output = build.check("bitbake -e defender-agent")
    finally:
        conf.write_text(saved, encoding="utf-8")
    match = re.search(r'^DEFENDER_DROPIN_DIR="(.*)"$', output, re.M)
    assert match, "DEFENDER_DROPIN_DIR not in bitbake -e"
    assert match.group(1) == "/usr/share/defender-agent/service.d"
    init = (REPO / "agent" / "packaging" / "defender-agent.init").read_text(encoding="utf-8")
    assert f"DROPINS={match.group(1)}" in init


def test_sources_unpack_offline(build: Build, recipe_env: dict[str, str]) -> None:
    """do_fetch and do_unpack copy the in-tree agent; nothing is downloaded."""
    build.check("bitbake defender-agent -c unpack")
    source = Path(recipe_env["S"])
    for name in ("pyproject.toml", "src/defender_agent/__init__.py", "../LICENSE"):
        assert (source / name).is_file(), f"{source / name} was not unpacked"
    for name in ("agent.toml", "defender-agent.service", "defender-agent.init"):
        assert (source / "packaging" / name).is_file(), name
    assert not (source / "tests").exists(), "the agent's tests are not part of the build"


def test_flag_rdepends_reach_the_package(recipe_env: dict[str, str]) -> None:
    """bitbake turned each enabled flag's RDEPENDS field into RDEPENDS of the package."""
    rdepends = set(recipe_env["RDEPENDS:defender-agent"].split())
    core, flags = recipe_rdepends()
    assert core <= rdepends
    for name in ALL_COLLECTORS:
        assert flags[name] <= rdepends, name


# --- what the agent imports, against the release's python3 manifest -----------------


def recipe_rdepends() -> tuple[set[str], dict[str, set[str]]]:
    """(RDEPENDS:${PN} of the .inc, {collector: its PACKAGECONFIG RDEPENDS field})."""
    text = INC.read_text(encoding="utf-8").replace("\\\n", " ")
    core = re.findall(r'^RDEPENDS:\$\{PN\}\s*\+?=\s*"([^"]*)"', text, re.M)
    flags = dict(re.findall(r'^PACKAGECONFIG\[(\w+)\]\s*=\s*"([^"]*)"', text, re.M))
    return (
        set(" ".join(core).split()),
        {name: set((value.split(",") + [""] * 4)[3].split()) for name, value in flags.items()},
    )


def module_path(name: str) -> Path | None:
    """The file of an agent module `defender_agent.x.y`, if it exists."""
    parts = name.split(".")[1:]
    base = AGENT_PKG.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level outside modules, agent modules) imported at run time by one file.

    Imports under `if TYPE_CHECKING:` never run and are left out.
    """
    outside: set[str] = set()
    inside: set[str] = set()

    def add(name: str) -> None:
        if name.split(".")[0] == "defender_agent":
            if module_path(name):
                inside.add(name)
        else:
            outside.add(name.split(".")[0])

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            for child in node.orelse if name == "TYPE_CHECKING" else [*node.body, *node.orelse]:
                self.visit(child)

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                add(alias.name)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            assert node.level == 0, f"{path}: relative import"
            assert node.module is not None
            add(node.module)
            for alias in node.names:
                if node.module.startswith("defender_agent"):
                    add(f"{node.module}.{alias.name}")

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return outside, inside


def agent_modules() -> dict[str, tuple[set[str], set[str]]]:
    modules = {}
    for path in sorted(AGENT_PKG.rglob("*.py")):
        parts = path.relative_to(AGENT_PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = module_imports(path)
    return modules


def reachable(
    roots: set[str],
    modules: dict[str, tuple[set[str], set[str]]],
    stop: frozenset[str] = frozenset(),
) -> set[str]:
    """Agent modules imported, directly or not, from `roots` (packages of a module too),
    not following into `stop` (collectors the core uses only when the build has them:
    `replay` runs the login collector's parsers, and says so in a build without it)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend([*modules[name][1], *parents])
    return seen


def outside_imports(names: set[str], modules: dict[str, tuple[set[str], set[str]]]) -> set[str]:
    return set().union(*(modules[name][0] for name in names)) if names else set()


def load_manifest(path: Path) -> dict[str, dict[str, list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads("\n".join(line for line in lines if not line.lstrip().startswith("#")))


def providers(module: str, manifest: dict[str, dict[str, list[str]]]) -> set[str]:
    """Packages (python3-*) holding a standard-library module; python3-core if built in."""
    lib = "${libdir}/python${PYTHON_MAJMIN}/"
    wanted = {lib + module, lib + module + ".py", lib + "lib-dynload/" + module + ".*.so"}
    found = {
        "python3-" + name
        for name, package in manifest.items()
        if wanted & {entry.rstrip("/") for entry in package["files"]}
    }
    return found or {"python3-core"}


def with_rdepends(packages: set[str], manifest: dict[str, dict[str, list[str]]]) -> set[str]:
    """`packages` plus everything the manifest makes them pull in."""
    closed: set[str] = set()
    todo = list(packages)
    while todo:
        package = todo.pop()
        if package in closed:
            continue
        closed.add(package)
        short = package.removeprefix("python3-")
        todo.extend("python3-" + dep for dep in manifest.get(short, {}).get("rdepends", []))
    return closed


def test_rdepends_cover_what_the_agent_imports(checkout: Checkout) -> None:
    manifest = load_manifest(checkout.manifest)
    modules = agent_modules()
    collector_modules = {f"defender_agent.collectors.{name}" for name in ALL_COLLECTORS}
    roots = {
        name
        for name in modules
        if name not in collector_modules
        # kernel interfaces and the collectors' shared code ship in every build but are
        # imported only through the collectors that use them
        and not name.startswith(("defender_agent.linux", "defender_agent.collectors.common"))
    }
    core_modules = reachable(roots, modules, frozenset(collector_modules))
    core_deps, flag_deps = recipe_rdepends()
    # Below 3.11 the agent reads TOML with tomli; every supported release has 3.11+.
    stdlib = set(sys.stdlib_module_names)

    def check(part: str, imports: set[str], listed: set[str]) -> None:
        foreign = imports - stdlib - {"tomli"}
        assert not foreign, f"{part} imports non-standard modules {sorted(foreign)}"
        have = with_rdepends(listed, manifest)
        missing = {
            module: sorted(providers(module, manifest))
            for module in sorted(imports & stdlib)
            if not providers(module, manifest) & have
        }
        assert not missing, f"{part}: RDEPENDS miss the packages of {missing} ({checkout.label})"

    core_imports = outside_imports(core_modules, modules)
    check("core", core_imports, core_deps)
    wanted = {"python3-core"}.union(*(providers(m, manifest) for m in core_imports & stdlib))
    extra = core_deps - wanted
    assert not extra, f"RDEPENDS:${{PN}} lists {sorted(extra)}, which the core never imports"

    for name in ALL_COLLECTORS:
        own = reachable({f"defender_agent.collectors.{name}"}, modules) - core_modules
        imports = outside_imports(own, modules)
        check(f"collector {name}", imports, core_deps | flag_deps[name])
        wanted = set().union(*(providers(m, manifest) for m in imports & stdlib))
        extra = flag_deps[name] - wanted
        assert not extra, f"PACKAGECONFIG[{name}] lists {sorted(extra)}, never imported by it"


def test_agent_pyproject_builds_with_the_release_setuptools(checkout: Checkout) -> None:
    """The recipe builds the wheel with the release's setuptools, not the host's.

    setuptools before 77 rejects `license = "MIT"` (a PEP 639 string); the table form
    `{text = "MIT"}` works on every release.
    """
    recipes = sorted(
        (checkout.init_dir / "meta/recipes-devtools/python").glob("python3-setuptools_*.bb")
    )
    assert recipes, f"{checkout.label}: no python3-setuptools recipe"
    version = tuple(int(x) for x in recipes[-1].stem.split("_")[1].split(".")[:2])
    project = tomllib.loads((REPO / "agent/pyproject.toml").read_text(encoding="utf-8"))
    license_value = project["project"].get("license")
    if version < (77, 0):
        assert not isinstance(license_value, str), (
            f"agent/pyproject.toml: project.license = {license_value!r} needs setuptools>=77; "
            f"{checkout.label} has {recipes[-1].stem}: use license = {{text = "
            f'"{license_value}"}}'
        )


def test_license_checksum_is_what_bitbake_will_compare(recipe_env: dict[str, str]) -> None:
    match = re.fullmatch(r"file://\.\./LICENSE;md5=([0-9a-f]{32})", recipe_env["LIC_FILES_CHKSUM"])
    assert match, recipe_env["LIC_FILES_CHKSUM"]
    assert hashlib.md5((REPO / "LICENSE").read_bytes()).hexdigest() == match.group(1)


# --- PV and bitbake's parse cache (bitbake alone, with a stub core layer) -------------

STUB_BITBAKE_CONF = """\
TMPDIR = "${TOPDIR}/tmp"
CACHE = "${TMPDIR}/cache"
PERSISTENT_DIR = "${TMPDIR}/persistent"
STAMP = "${TMPDIR}/stamps/${PN}-${PV}"
WORKDIR = "${TMPDIR}/work/${PN}-${PV}"
T = "${WORKDIR}/temp"
B = "${WORKDIR}"
PN = "${@bb.parse.vars_from_file(d.getVar('FILE', False), d)[0] or 'defaultpkgname'}"
PV = "${@bb.parse.vars_from_file(d.getVar('FILE', False), d)[1] or '1.0'}"
PR = "r0"
PF = "${PN}-${PV}-${PR}"
FILE_DIRNAME = "${@os.path.dirname(d.getVar('FILE', False))}"
"""
STUB_LAYER_CONF = """\
BBPATH .= ":${LAYERDIR}"
BBFILE_COLLECTIONS += "core"
BBFILE_PATTERN_core = "^${LAYERDIR}/"
BBFILE_PRIORITY_core = "5"
LAYERVERSION_core = "1"
LAYERSERIES_CORENAMES = "scarthgap wrynose"
"""


def test_version_change_reparses_the_recipe(bitbake_dir: Path, tmp_path: Path) -> None:
    """PV is read from _version.py at parse time; a changed file must not leave it stale.

    The recipe registers the file with bb.parse.mark_dependency. This runs the checkout's
    bitbake on a copy of the layer and the version file (so the version can change without
    touching this repository), over a stub core layer whose classes are empty: `bitbake -s`
    prints PV from the parse cache, which must follow the file. Needs only a bitbake
    checkout (DEFENDER_BITBAKE_DIR, or poky's).
    """
    source = tmp_path / "defender"
    shutil.copytree(LAYER, source / "meta-defender")
    shutil.copy2(REPO / "LICENSE", source / "LICENSE")
    version_file = source / "agent/src/defender_agent/_version.py"
    version_file.parent.mkdir(parents=True)
    shutil.copy2(VERSION_FILE, version_file)
    stub = tmp_path / "stub"
    (stub / "conf").mkdir(parents=True)
    (stub / "classes").mkdir()
    (stub / "conf/layer.conf").write_text(STUB_LAYER_CONF, encoding="utf-8")
    (stub / "conf/bitbake.conf").write_text(STUB_BITBAKE_CONF, encoding="utf-8")
    (stub / "classes/base.bbclass").write_text('addtask build\ndo_build[noexec] = "1"\n')
    for name in ("python_setuptools_build_meta", "systemd", "update-rc.d", "useradd"):
        (stub / "classes" / f"{name}.bbclass").write_text("", encoding="utf-8")
    build = tmp_path / "build"
    (build / "conf").mkdir(parents=True)
    (build / "conf/bblayers.conf").write_text(
        f'BBPATH = "${{TOPDIR}}"\nBBFILES ?= ""\nBBLAYERS = "{stub} {source / "meta-defender"}"\n',
        encoding="utf-8",
    )

    def shown_version() -> str:
        # bitbake alone runs as root too (the refusal is openembedded-core's sanity class)
        result = subprocess.run(
            [
                "env",
                "-i",
                f"HOME={tmp_path}",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "LANG=en_US.UTF-8",
                "LC_ALL=en_US.UTF-8",
                str(bitbake_dir / "bin/bitbake"),
                "-s",
            ],
            cwd=build,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        match = re.search(r"^defender-agent\s+:(\S+)-r0\s*$", result.stdout, re.M)
        assert match, result.stdout
        return match.group(1)

    version = agent_version(VERSION_FILE)
    assert shown_version() == version
    assert shown_version() == version  # now from the parse cache
    version_file.write_text(
        version_file.read_text(encoding="utf-8").replace(version, "97.98.99"), encoding="utf-8"
    )
    later = version_file.stat().st_mtime + 10
    os.utime(version_file, (later, later))
    assert shown_version() == "97.98.99", "the parse cache kept the old PV"
