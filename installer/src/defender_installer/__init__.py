"""Build Defender agent packages and put them on devices."""

from defender_installer._version import __version__

__all__ = ["__version__"]
