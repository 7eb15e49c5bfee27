"""Build Defender agent packages and put them on devices."""

__version__ = "0.1.0"
