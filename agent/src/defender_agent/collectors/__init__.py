"""Collector registry: the one list of collector names.

The installer (`--collectors`) and the Yocto recipe (PACKAGECONFIG flags) echo exactly
ALL_COLLECTORS; tests/test_collector_lists.py keeps them equal. A source-customized
build ships only some of these modules; REGISTRY.available() tells which are present.
Code the collectors share (file following, syslog framing, auth-log patterns) lives in
the `common` subpackage, which every build ships.
"""

from __future__ import annotations

from defender_agent.plugins import Registry

ALL_COLLECTORS: tuple[str, ...] = ("login", "sysinfo", "process", "network")

REGISTRY = Registry("collectors", __name__, ALL_COLLECTORS, __file__)
