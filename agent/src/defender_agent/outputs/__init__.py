"""Output registry: where records go (file = JSON lines on disk, stdout for debugging)."""

from __future__ import annotations

from defender_agent.plugins import Registry

ALL_OUTPUTS: tuple[str, ...] = ("file", "stdout")

REGISTRY = Registry("outputs", __name__, ALL_OUTPUTS, __file__)
