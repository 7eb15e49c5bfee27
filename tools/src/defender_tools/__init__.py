"""Defender host tools: build quick QEMU images, boot them, attack them."""

from defender_tools._version import __version__

__all__ = ["__version__"]
