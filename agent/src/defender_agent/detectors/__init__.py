"""Detector registry: each detector sees every raw event and may return alerts."""

from __future__ import annotations

from defender_agent.plugins import Registry

ALL_DETECTORS: tuple[str, ...] = ("brute_force", "custom")

REGISTRY = Registry("detectors", __name__, ALL_DETECTORS, __file__)
