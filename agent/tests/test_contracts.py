"""Every registered plugin keeps the one contract (psutil's test_contracts.py is the model).

For each name in the collector, detector and output registries: the module exists, has
create(ctx, section, state) and describe(section) with those parameters, the schema has
its section with an `enabled` key, and the object create() returns (with the defaults
of its section) has the Protocol's methods with the right arity and a `name` equal to
the registry name. Adding a plugin that forgets one of these fails here, not at run time.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from defender_agent import config, schema
from defender_agent.agent import Agent
from defender_agent.clock import ManualClock
from defender_agent.plugins import KINDS, registries

BASE = {"start": 0, "stop": 0, "save_state": 0, "statistics": 0}
ROLE = {
    "collectors": {},
    "detectors": {"process": 1},
    "outputs": {"write": 2, "retry": 0, "reopen": 0},
}
PLUGINS = [(kind, name) for kind, reg in registries().items() for name in reg.names]


def test_registries_cover_the_three_kinds() -> None:
    assert tuple(registries()) == KINDS


def test_schema_sections_are_exactly_the_registered_plugins() -> None:
    plugin_sections = {s for s in schema.SECTIONS if s.split(".")[0] in KINDS}
    assert plugin_sections == {f"{kind}.{name}" for kind, name in PLUGINS}
    assert set(schema.SECTIONS) - plugin_sections == {"agent", "aggregation"}


def test_plugin_names_are_unique_and_well_formed() -> None:
    for kind, reg in registries().items():
        assert len(set(reg.names)) == len(reg.names), kind
        for name in reg.names:
            assert name.isidentifier() and name == name.lower() and name != "common"


def _arity(func: Any) -> int:
    params = inspect.signature(func).parameters.values()
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


@pytest.mark.parametrize(("kind", "name"), PLUGINS, ids=[f"{k}.{n}" for k, n in PLUGINS])
def test_module_contract(kind: str, name: str, tmp_path: Path) -> None:
    registry = registries()[kind]
    assert name in registry.available(), f"{kind}/{name}.py is missing from this checkout"
    module = registry.load(name)
    assert list(inspect.signature(module.create).parameters) == ["ctx", "section", "state"]
    assert list(inspect.signature(module.describe).parameters) == ["section"]
    keys = [k for k in schema.SCHEMA if k.section == f"{kind}.{name}"]
    assert any(k.name == "enabled" for k in keys), f"{kind}.{name} has no `enabled` key"

    cfg = config.validate(
        {"agent": {"state_dir": str(tmp_path / "state")}}, str(tmp_path / "agent.toml")
    )
    section = cfg.section(f"{kind}.{name}")
    lines = module.describe(section)
    assert isinstance(lines, list) and lines and all(isinstance(x, str) for x in lines)

    agent = Agent("contract", ManualClock())
    plugin = module.create(agent.context(kind, name), section, {})
    assert plugin.name == name
    for method, arity in {**BASE, **ROLE[kind]}.items():
        assert callable(getattr(plugin, method, None)), f"{kind}.{name} lacks {method}()"
        assert _arity(getattr(plugin, method)) == arity, f"{kind}.{name}.{method}() arity"
    assert isinstance(plugin.save_state(), dict)
    assert isinstance(plugin.statistics(), dict)
    agent.shutdown()
