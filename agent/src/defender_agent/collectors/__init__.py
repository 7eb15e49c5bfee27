"""Collector registry: the one list of collector names.

The installer, the Yocto recipe (PACKAGECONFIG) and the Buildroot options echo exactly
ALL_COLLECTORS. A source-customized build ships only some of these modules; `available()`
tells which are present.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

ALL_COLLECTORS: tuple[str, ...] = ("login", "sysinfo")


def available() -> tuple[str, ...]:
    """Collectors whose module is present in this build (without importing them)."""
    present = []
    for name in ALL_COLLECTORS:
        try:
            spec = importlib.util.find_spec(f"{__name__}.{name}")
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            present.append(name)
    return tuple(present)


def load(name: str) -> ModuleType:
    """Import one collector module. Each defines create(rt, section, state) and
    describe(section) -> list of lines for `defender-agent check`."""
    if name not in ALL_COLLECTORS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
