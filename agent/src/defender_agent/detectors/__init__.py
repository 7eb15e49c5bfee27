"""Detector registry: each detector sees every raw event and may return alerts."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.runtime import Detector

ALL_DETECTORS: tuple[str, ...] = ("brute_force",)


def create(name: str, section: dict[str, Any]) -> Detector:
    """Each detector module defines create(section) -> Detector."""
    if name not in ALL_DETECTORS:
        raise KeyError(name)
    qualified = f"{__name__}.{name}"
    __import__(qualified)  # not importlib.import_module: importlib + warnings cost RSS
    detector: Detector = sys.modules[qualified].create(section)
    return detector
