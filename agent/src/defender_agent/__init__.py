"""Defender on-device security agent."""

__version__ = "0.1.0"
