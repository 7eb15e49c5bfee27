"""Defender on-device security agent."""

from defender_agent._version import __version__

__all__ = ["__version__"]
