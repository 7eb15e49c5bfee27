"""Collector registry: the one list of collector names.

The installer, the Yocto recipe (PACKAGECONFIG) and the Buildroot options echo exactly
ALL_COLLECTORS. A source-customized build ships only some of these modules; `available()`
tells which are present.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from types import ModuleType

ALL_COLLECTORS: tuple[str, ...] = ("login", "sysinfo")


def available() -> tuple[str, ...]:
    """Collectors whose module is present in this build (without importing them).

    Looks for `<name>.py`, or a sourceless `<name>.pyc`, beside this file: importing
    importlib.util for find_spec would cost ~0.9 MiB of RSS. Only a package that is not
    a plain directory (a zip, say) takes the find_spec path.
    """
    try:
        files = set(os.listdir(os.path.dirname(os.path.abspath(__file__))))
    except OSError:
        import importlib.util

        return tuple(
            name
            for name in ALL_COLLECTORS
            if importlib.util.find_spec(f"{__name__}.{name}") is not None
        )
    return tuple(name for name in ALL_COLLECTORS if f"{name}.py" in files or f"{name}.pyc" in files)


def load(name: str) -> ModuleType:
    """Import one collector module. Each defines create(rt, section, state) and
    describe(section) -> list of lines for `defender-agent check`."""
    if name not in ALL_COLLECTORS:
        raise KeyError(name)
    module = f"{__name__}.{name}"
    __import__(module)  # not importlib.import_module: importlib + warnings cost RSS
    return sys.modules[module]
