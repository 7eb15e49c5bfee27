"""The kas project files validate against kas's own schema and build what we promise.

The schema is the one shipped inside the `kas` package, so this runs offline and
fails the same way `kas build` would before it touches the network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for
from kas import __compatible_file_version__, __file_version__
from kas.configschema import CONFIGSCHEMA

REPO = Path(__file__).resolve().parent.parent
KAS_DIR = REPO / "kas"
KAS_FILES = sorted(KAS_DIR.rglob("*.yml"))
TOP_FILES = sorted(KAS_DIR.glob("*.yml"))


def schema_errors(config: Any) -> list[str]:
    """Every way `config` breaks kas's schema, as readable lines (empty: valid)."""
    validator = validator_for(CONFIGSCHEMA)(CONFIGSCHEMA)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(config)
    )


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def merge(dest: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """kas's merge rule: mappings merge recursively, everything else is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(dest.get(key), dict):
            merge(dest[key], value)
        else:
            dest[key] = copy.deepcopy(value)
    return dest


def resolve(path: Path) -> dict[str, Any]:
    """The configuration kas sees for `path`: includes (repo-relative) first, then the file."""
    data = load(path)
    merged: dict[str, Any] = {}
    for include in data.get("header", {}).get("includes", []):
        assert isinstance(include, str), f"{path}: only local includes are used here"
        target = REPO / include
        assert target.is_file(), f"{path}: include {include!r} not found at {target}"
        merge(merged, resolve(target))
    return merge(merged, data)


def test_kas_files_exist() -> None:
    assert KAS_DIR / "defender-qemux86-64.yml" in TOP_FILES
    assert len(KAS_FILES) > len(TOP_FILES), "expected include fragments under kas/include/"


@pytest.mark.parametrize("path", KAS_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_kas_file_matches_schema(path: Path) -> None:
    config = load(path)
    assert schema_errors(config) == []
    version = int(config["header"]["version"])
    assert __compatible_file_version__ <= version <= __file_version__


@pytest.mark.parametrize("path", TOP_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_top_level_kas_file_builds_defender(path: Path) -> None:
    config = resolve(path)
    assert schema_errors(config) == []
    assert config["machine"] == "qemux86-64"
    assert config["distro"] == "poky"
    layers = config["repos"]["defender"]["layers"]
    assert "meta-defender" in layers
    assert (REPO / "meta-defender" / "conf" / "layer.conf").is_file()
    local_conf = "\n".join(config["local_conf_header"].values())
    assert 'IMAGE_INSTALL:append = " defender-agent"' in local_conf
    assert 'INIT_MANAGER = "systemd"' in local_conf
    core_layers = {
        (name, layer)
        for name, repo in config["repos"].items()
        for layer in repo.get("layers") or {}
    }
    assert ("poky", "meta") in core_layers or ("openembedded-core", "meta") in core_layers
    for name, repo in config["repos"].items():
        if repo.get("url"):
            assert len(repo.get("commit", "")) == 40, f"{name}: pin a full commit id"


def test_schema_check_rejects_a_misspelt_key() -> None:
    """Guards the guard: a typo kas would refuse must fail here too."""
    config = load(KAS_DIR / "defender-qemux86-64.yml")
    config["machin"] = "qemux86-64"
    assert any("machin" in line for line in schema_errors(config))
