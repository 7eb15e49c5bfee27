"""Defender host tools: build quick QEMU images, boot them, attack them."""

__version__ = "0.1.0"
