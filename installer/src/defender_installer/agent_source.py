"""Find an agent checkout and decide which of its files go into a package.

The installer must work with any agent checkout, so nothing here imports the
agent: the collector registry and the version are read with `ast`/`tomllib`.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from defender_installer.errors import UserError

PACKAGE = "defender_agent"
REGISTRY = PurePosixPath("collectors/__init__.py")
OUTPUT_REGISTRY = PurePosixPath("outputs/__init__.py")
PACKAGING_FILES = ("defender-agent", "defender-agent.service", "defender-agent.init", "agent.toml")
# The licence every package carries: in the agent checkout, else the repository around it.
LICENSE_FILES = ("LICENSE", "COPYING")

_COLLECTOR_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SKIP_DIRS = {"__pycache__", "tests", "test"}
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".orig", ".rej")
_TEST_FILE = re.compile(r"^(test_.*\.py|.*_test\.py|conftest\.py)$")


@dataclass(frozen=True)
class AgentSource:
    """An agent checkout: `root` holds pyproject.toml, src/defender_agent and packaging/."""

    root: Path
    version: str
    collectors: tuple[str, ...]
    outputs: tuple[str, ...] = ()  # the outputs a build may leave out (OPTIONAL_OUTPUTS)
    license_file: Path | None = None

    @property
    def package_dir(self) -> Path:
        return self.root / "src" / PACKAGE

    @property
    def packaging_dir(self) -> Path:
        return self.root / "packaging"


def _agent_root_at(path: Path) -> Path | None:
    """`path` itself if it is an agent checkout, its `agent/` child if that is, else None."""
    for candidate in (path, path / "agent"):
        if (candidate / "src" / PACKAGE / "__init__.py").is_file():
            return candidate
    return None


def locate_agent_source(explicit: Path | None, start: Path | None = None) -> Path:
    """The agent checkout to package: `--agent-src`, else the repository around the installer.

    Walks up from the installer package (an editable or in-tree install), then from the
    working directory, looking for `agent/src/defender_agent`.
    """
    if explicit is not None:
        found = _agent_root_at(explicit.expanduser().resolve())
        if found is None:
            raise UserError(
                f"--agent-src {explicit}: no {PACKAGE} package found "
                f"(expected {explicit}/src/{PACKAGE}/__init__.py or "
                f"{explicit}/agent/src/{PACKAGE}/__init__.py)"
            )
        return found
    starts = [start] if start is not None else [Path(__file__).resolve().parent, Path.cwd()]
    for origin in starts:
        for directory in (origin, *origin.parents):
            found = _agent_root_at(directory)
            if found is not None:
                return found
    raise UserError(
        f"cannot find the agent source (agent/src/{PACKAGE}) above the installer "
        "or the current directory; pass --agent-src PATH"
    )


def _assigned(path: Path, name: str, what: str) -> ast.expr | None:
    """The expression assigned to NAME at the top level of PATH, parsed, never imported."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except SyntaxError as exc:
        raise UserError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.value
    return None


def read_collectors(registry: Path) -> tuple[str, ...]:
    """`ALL_COLLECTORS` from the agent's registry module, read without importing it."""
    names = read_names(registry, "ALL_COLLECTORS", "collector")
    if names is None:
        raise UserError(f"{registry}: ALL_COLLECTORS not defined")
    return names


def read_optional_outputs(registry: Path) -> tuple[str, ...]:
    """`OPTIONAL_OUTPUTS` of the output registry; none in an agent that predates it."""
    return read_names(registry, "OPTIONAL_OUTPUTS", "output") or ()


def read_names(registry: Path, name: str, kind: str) -> tuple[str, ...] | None:
    """The literal tuple of plugin names assigned to NAME in REGISTRY, never imported."""
    node = _assigned(registry, name, f"{kind} registry")
    if node is None:
        return None
    try:
        value = ast.literal_eval(node)
    except ValueError as exc:
        raise UserError(f"{registry}: {name} must be a literal tuple") from exc
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(item, str) and _COLLECTOR_NAME.match(item) for item in value
    ):
        raise UserError(f"{registry}: {name} must be a tuple of lower-case {kind} names")
    return tuple(value)


def _literal_assignment(path: Path, name: str) -> str | None:
    """The string assigned to NAME at the top of PATH (read with ast), else None."""
    node = _assigned(path, name, f"{name}")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _module_file(src: Path, module: str) -> Path:
    """The file of MODULE (dotted) under the `src` directory: a module or a package."""
    base = src.joinpath(*module.split("."))
    package_init = base / "__init__.py"
    return package_init if package_init.is_file() else base.with_suffix(".py")


def read_version(root: Path) -> str:
    """The agent's version, read without importing the agent.

    pyproject's [project].version when it states one; when the version is dynamic, the
    `attr` named by [tool.setuptools.dynamic].version (`defender_agent._version.__version__`,
    the repository's one version); without a pyproject, `__version__` in the package's
    `_version.py` or `__init__.py`.
    """
    pyproject = root / "pyproject.toml"
    src = root / "src"
    candidates: list[tuple[Path, str]] = []
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{pyproject}: {exc}") from exc
        version = data.get("project", {}).get("version")
        if isinstance(version, str) and version:
            return version
        dynamic = data.get("tool", {}).get("setuptools", {}).get("dynamic", {}).get("version")
        attr = dynamic.get("attr") if isinstance(dynamic, dict) else None
        if isinstance(attr, str) and "." in attr:
            module, _, name = attr.rpartition(".")
            candidates.append((_module_file(src, module), name))
    candidates += [
        (src / PACKAGE / "_version.py", "__version__"),
        (src / PACKAGE / "__init__.py", "__version__"),
    ]
    for path, name in candidates:
        if path.is_file():
            version = _literal_assignment(path, name)
            if version:
                return version
    tried = ", ".join(dict.fromkeys(f"{name} in {path}" for path, name in candidates))
    raise UserError(f"{pyproject}: no [project].version and no {tried}; pass --version")


def load_agent_source(root: Path) -> AgentSource:
    """Read what the installer needs from an agent checkout and check it is complete."""
    package_dir = root / "src" / PACKAGE
    collectors = read_collectors(package_dir / REGISTRY)
    _check_modules(package_dir, REGISTRY, collectors)
    outputs: tuple[str, ...] = ()
    if (package_dir / OUTPUT_REGISTRY).is_file():
        outputs = read_optional_outputs(package_dir / OUTPUT_REGISTRY)
        _check_modules(package_dir, OUTPUT_REGISTRY, outputs)
    for name in PACKAGING_FILES:
        if not (root / "packaging" / name).is_file():
            raise UserError(f"{root / 'packaging'}: {name} is missing from the agent checkout")
    return AgentSource(
        root=root,
        version=read_version(root),
        collectors=collectors,
        outputs=outputs,
        license_file=find_license(root),
    )


def find_license(root: Path) -> Path:
    """The licence text to ship: LICENSE (or COPYING) of the checkout or of its parent."""
    for directory in (root, root.parent):
        for name in LICENSE_FILES:
            if (directory / name).is_file():
                return directory / name
    raise UserError(
        f"{root}: no licence text (LICENSE or COPYING) in the agent checkout or above it; "
        "a package must carry its licence"
    )


def commit_time(root: Path) -> int | None:
    """When the last commit touching the agent checkout was made (git), else None.

    The date of the version being packaged when SOURCE_DATE_EPOCH is not set: a
    checkout that is not a git repository, or a host without git, gives None.
    """
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%ct", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip()
    return int(value) if result.returncode == 0 and value.isdigit() else None


def _check_modules(package_dir: Path, registry: PurePosixPath, names: tuple[str, ...]) -> None:
    """Every name a registry lists has its module beside the registry."""
    directory = registry.parent.as_posix()
    for name in names:
        if not (package_dir / directory / f"{name}.py").is_file():
            raise UserError(
                f"{package_dir / registry}: {directory.rstrip('s')} {name!r} is registered "
                f"but {directory}/{name}.py is missing"
            )


def select_collectors(requested: str | None, available: tuple[str, ...]) -> tuple[str, ...]:
    """Parse `--collectors a,b`: default all; registry order, so the order typed does not matter."""
    return _select("collector", requested, available)


def select_outputs(requested: str | None, available: tuple[str, ...]) -> tuple[str, ...]:
    """Parse `--outputs a,b` (the optional outputs; `none` for none): default all."""
    if requested is not None and requested.strip() == "none":
        return ()
    return _select("output", requested, available)


def _select(kind: str, requested: str | None, available: tuple[str, ...]) -> tuple[str, ...]:
    if requested is None:
        return available
    option = f"--{kind}s"
    names = [name.strip() for name in requested.split(",")]
    if any(not name for name in names):
        raise UserError(
            f"{option} {requested!r}: empty name in list; choose from: {', '.join(available)}"
        )
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UserError(
            f"{option}: unknown {kind} {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(available)}"
        )
    return tuple(name for name in available if name in names)


def _is_packaged(relative: PurePosixPath, dropped: set[PurePosixPath]) -> bool:
    name = relative.name
    return not (
        relative in dropped
        or name.startswith(".")
        or name.endswith(_SKIP_SUFFIXES)
        or _TEST_FILE.match(name)
    )


def package_files(
    source: AgentSource, collectors: Iterable[str], outputs: Iterable[str] | None = None
) -> list[tuple[Path, PurePosixPath]]:
    """(source file, path inside defender_agent/) for the core plus the selected collectors
    and optional outputs (outputs None: all of them).

    Core is everything in the package except `collectors/<name>.py` of unselected
    collectors and `outputs/<name>.py` of unselected optional outputs; bytecode, tests
    and editor droppings never ship.
    """
    selected = set(collectors)
    kept_outputs = set(source.outputs if outputs is None else outputs)
    dropped = {
        PurePosixPath("collectors", f"{name}.py")
        for name in source.collectors
        if name not in selected
    } | {
        PurePosixPath("outputs", f"{name}.py")
        for name in source.outputs
        if name not in kept_outputs
    }
    files: list[tuple[Path, PurePosixPath]] = []
    for directory, subdirs, filenames in os.walk(source.package_dir):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if d not in _SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info")
        )
        base = Path(directory)
        for filename in sorted(filenames):
            path = base / filename
            relative = PurePosixPath(path.relative_to(source.package_dir).as_posix())
            if path.is_symlink() and _is_packaged(relative, dropped):
                raise UserError(
                    f"{path}: a symbolic link in the agent source; refusing to package "
                    "whatever it points to"
                )
            if path.is_file() and _is_packaged(relative, dropped):
                files.append((path, relative))
    return files
