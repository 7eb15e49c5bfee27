"""`defender-installer build`: make an agent package with only the chosen collectors.

The package holds the agent core plus the selected collector and optional output modules, the
launcher, the systemd unit, the sysvinit script and the default configuration
(both conffiles), the licence and a changelog, laid out as described in layout.py.
nfpm does the packaging from a configuration rendered from templates/nfpm.yaml.j2.
"""

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
import typer

from defender_installer import __version__, layout
from defender_installer.agent_source import (
    AgentSource,
    commit_time,
    find_license,
    load_agent_source,
    locate_agent_source,
    package_files,
    select_collectors,
    select_outputs,
)
from defender_installer.debian_docs import PackageDocs, gzip_n
from defender_installer.errors import UserError
from defender_installer.formats import PackageFormat, get_format
from defender_installer.nfpm import run_nfpm

DEFAULT_OUT = Path("dist")


@dataclass(frozen=True)
class ContentItem:
    """One entry of nfpm's `contents`: a staged file (src) or a directory (type dir)."""

    dst: str
    mode: int
    src: str = ""
    type: str = ""


@dataclass(frozen=True)
class BuildResult:
    """What was built; `as_json()` is the `--json` output."""

    format: str
    path: Path
    version: str
    collectors: tuple[str, ...]
    size: int
    sha256: str
    outputs: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path),
            "version": self.version,
            "collectors": list(self.collectors),
            "outputs": list(self.outputs),
            "size": self.size,
            "sha256": self.sha256,
        }


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("defender_installer", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["sh"] = shlex.quote
    return env


LAST_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: the last time packages can carry


def source_date_epoch(environ: dict[str, str] | os._Environ[str]) -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) if set; a bad value is a user mistake."""
    raw = environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not raw.isascii():
        raise UserError(f"SOURCE_DATE_EPOCH={raw!r}: must be a whole number of seconds")
    if len(raw) > 12 or int(raw) > LAST_EPOCH:
        raise UserError(f"SOURCE_DATE_EPOCH={raw[:20]!r}: after the year 9999")
    return int(raw)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stage(
    source: AgentSource,
    collectors: tuple[str, ...],
    fmt: PackageFormat,
    version: str,
    build_time: float,
    stage: Path,
    outputs: tuple[str, ...] | None = None,
) -> list[ContentItem]:
    """Copy everything the package ships into `stage` and say where each file goes."""
    items: list[ContentItem] = []

    def add(src: Path, dst: str, mode: int, kind: str = "") -> None:
        staged = stage / dst.lstrip("/")
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, staged)
        items.append(ContentItem(dst=dst, src=str(staged), mode=mode, type=kind))

    outputs = source.outputs if outputs is None else outputs
    for src, relative in package_files(source, collectors, outputs):
        add(src, f"{layout.PYTHON_PACKAGE_DIR}/{relative}", 0o644)

    build_info = stage / "BUILD-INFO.json"
    build_info.write_text(
        json.dumps(
            {
                "name": layout.PACKAGE_NAME,
                "version": version,
                "format": fmt.name,
                "collectors": list(collectors),
                "outputs": list(outputs),
                "build_time": _rfc3339(build_time),
                "builder": f"defender-installer {__version__}",
            },
            indent=2,
            sort_keys=True,
        )
        + "\n",
        encoding="utf-8",
    )
    packaging = source.packaging_dir
    add(build_info, layout.BUILD_INFO_PATH, 0o644)
    add(packaging / "defender-agent", layout.COMMAND_PATH, 0o755)
    manual = packaging / "defender-agent.1"
    if manual.is_file():  # an older agent checkout has none
        compressed = stage / "defender-agent.1.gz"
        compressed.write_bytes(gzip_n(manual.read_bytes()))
        add(compressed, layout.MANUAL_PATH, 0o644)
    add(packaging / "defender-agent.service", layout.SYSTEMD_UNIT_PATH, 0o644)
    for name in collectors:  # the privileges a collector needs come with it, and only then
        dropin = packaging / "systemd" / f"{name}.conf"
        if dropin.is_file():
            add(dropin, f"{layout.SYSTEMD_DROPIN_DIR}/{name}.conf", 0o644)
    # Everything under /etc is a conffile (Debian policy 10.7.2): dpkg keeps a local edit
    # on upgrade and asks. config: %config for rpm (replaced, the edit kept as .rpmsave),
    # as the script is code; config|noreplace: %config(noreplace), as the settings are not.
    add(packaging / "defender-agent.init", layout.INIT_SCRIPT_PATH, 0o755, "config")
    add(packaging / "agent.toml", layout.CONFIG_PATH, 0o644, "config|noreplace")
    if (packaging / "threat-intel.txt").is_file():  # the ThreatIntel detector's list
        add(packaging / "threat-intel.txt", layout.THREAT_LIST_PATH, 0o644, "config|noreplace")
    items.append(ContentItem(dst=layout.STATE_DIR, mode=0o750, type="dir"))
    return items


def _stage_format_files(
    env: jinja2.Environment, fmt: PackageFormat, docs: PackageDocs, stage: Path
) -> list[ContentItem]:
    """The files the format's conventions add: licence, changelog, lintian overrides."""
    files = {f"{layout.DOC_DIR}/{name}": data for name, data in fmt.doc_files(docs).items()}
    for dst, name in fmt.rendered_files.items():
        template = env.get_template(f"{fmt.name}/{name}")
        files[dst] = template.render(name=layout.PACKAGE_NAME, version=docs.version).encode()
    items = []
    for dst, data in files.items():
        staged = stage / dst.lstrip("/")
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(data)
        items.append(ContentItem(dst=dst, src=str(staged), mode=0o644))
    return items


def _render_scripts(
    env: jinja2.Environment, fmt: PackageFormat, version: str, out: Path
) -> dict[str, str]:
    """Render the format's maintainer scripts; returns nfpm's `scripts` mapping."""
    values = {
        "name": layout.PACKAGE_NAME,
        "version": version,
        "service": layout.SERVICE_NAME,
        "init_script": layout.INIT_SCRIPT_PATH,
        "unit_path": layout.SYSTEMD_UNIT_PATH,
        "package_dir": layout.PYTHON_PACKAGE_DIR,
        "config_dir": layout.CONFIG_DIR,
        "state_dir": layout.STATE_DIR,
        "agent_user": layout.AGENT_USER,
        "agent_groups": " ".join(layout.AGENT_GROUPS),
    }
    out.mkdir(parents=True, exist_ok=True)
    scripts: dict[str, str] = {}
    for key, template in fmt.scripts.items():
        path = out / template.removesuffix(".j2")
        path.write_text(env.get_template(f"{fmt.name}/{template}").render(values), "utf-8")
        path.chmod(0o755)
        scripts[key] = str(path)
    return scripts


def render_nfpm_config(
    env: jinja2.Environment,
    fmt: PackageFormat,
    version: str,
    contents: list[ContentItem],
    scripts: dict[str, str],
    epoch: int | None,
) -> str:
    """The nfpm YAML for one package (kept separate so tests can check it against nfpm)."""
    return env.get_template("nfpm.yaml.j2").render(
        installer_version=__version__,
        name=layout.PACKAGE_NAME,
        arch=fmt.arch,
        version=version,
        maintainer=layout.MAINTAINER,
        license=layout.LICENSE,
        description=layout.DESCRIPTION,
        mtime=_rfc3339(epoch) if epoch is not None else "",
        depends=fmt.depends,
        contents=contents,
        scripts=scripts,
    )


def _prepare_out_dir(out_dir: Path) -> Path:
    out_dir = out_dir.expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot create directory: {exc.strerror}") from exc
    if not os.access(out_dir, os.W_OK):
        raise UserError(f"--out {out_dir}: directory is not writable")
    return out_dir.resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def build_package(
    format_name: str = "deb",
    collectors: str | None = None,
    out_dir: Path = DEFAULT_OUT,
    version: str | None = None,
    agent_src: Path | None = None,
    environ: dict[str, str] | None = None,
    outputs: str | None = None,
) -> BuildResult:
    """Build one package and move it into `out_dir` only once it is complete."""
    environ = dict(os.environ if environ is None else environ)
    fmt = get_format(format_name)
    source = load_agent_source(locate_agent_source(agent_src))
    selected = select_collectors(collectors, source.collectors)
    selected_outputs = select_outputs(outputs, source.outputs)
    version = version if version is not None else source.version
    fmt.check_version(version)
    epoch = source_date_epoch(environ)
    out_dir = _prepare_out_dir(out_dir)
    final = out_dir / fmt.filename(layout.PACKAGE_NAME, version, fmt.arch)

    env = _templates()
    with tempfile.TemporaryDirectory(prefix="defender-installer-") as tmp:
        work = Path(tmp)
        build_time = float(epoch) if epoch is not None else time.time()
        contents = _stage(
            source, selected, fmt, version, build_time, work / "root", selected_outputs
        )
        docs = PackageDocs(
            package=layout.PACKAGE_NAME,
            version=version,
            maintainer=layout.MAINTAINER,
            license_name=layout.LICENSE,
            license_file=source.license_file or find_license(source.root),
            # SOURCE_DATE_EPOCH, else the last commit of the agent checkout, else now
            date=epoch if epoch is not None else commit_time(source.root) or int(build_time),
            builder=f"defender-installer {__version__}",
        )
        contents += _stage_format_files(env, fmt, docs, work / "root")
        scripts = _render_scripts(env, fmt, version, work / "scripts")
        config = work / "nfpm.yaml"
        config.write_text(
            render_nfpm_config(env, fmt, version, contents, scripts, epoch), encoding="utf-8"
        )
        # Build next to the destination, then rename: an old package is never half-replaced.
        partial = out_dir / f".{final.name}.{os.getpid()}.partial"
        try:
            run_nfpm(config, fmt.packager, partial, environ)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)

    return BuildResult(
        format=fmt.name,
        path=final,
        version=version,
        collectors=selected,
        size=final.stat().st_size,
        sha256=_sha256(final),
        outputs=selected_outputs,
    )


def command(
    format_name: Annotated[
        str, typer.Option("--format", help="Package format (this release: deb).")
    ] = "deb",
    collectors: Annotated[
        str | None,
        typer.Option(help="Comma-separated collectors to include (default: all registered)."),
    ] = None,
    outputs: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated optional outputs to include, or `none` (default: all; "
            "file and stdout are always in)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for the package.")] = DEFAULT_OUT,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary instead of the path.")
    ] = False,
    version: Annotated[
        str | None, typer.Option("--version", help="Package version (default: the agent's).")
    ] = None,
    agent_src: Annotated[
        Path | None,
        typer.Option("--agent-src", help="Agent checkout (default: agent/ of this repository)."),
    ] = None,
) -> None:
    """Build an agent package containing the core plus the selected collectors."""
    result = build_package(
        format_name=format_name,
        collectors=collectors,
        outputs=outputs,
        out_dir=out,
        version=version,
        agent_src=agent_src,
    )
    if json_output:
        typer.echo(json.dumps(result.as_json(), sort_keys=True))
    else:
        typer.echo(str(result.path))
