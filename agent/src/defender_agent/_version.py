"""The one version number of Defender: the agent, the installer and the tools.

The installer's and the tools' `_version.py` are symlinks to this file, every
pyproject.toml reads `__version__` from it, and so does the Yocto recipe (PV).
Change the version here and nowhere else.
"""

__version__ = "0.1.0"
