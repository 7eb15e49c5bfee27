"""Detector registry: each detector sees every raw event and may return alerts."""

from __future__ import annotations

from defender_agent.plugins import Registry

ALL_DETECTORS: tuple[str, ...] = (
    "brute_force",
    "custom",
    "port_scan",
    "botnet",
    "crypto_miner",
    "reverse_shell",
    "download_then_run",
    "threat_intel",
)

REGISTRY = Registry("detectors", __name__, ALL_DETECTORS, __file__)
