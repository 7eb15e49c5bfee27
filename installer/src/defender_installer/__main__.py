"""Allow `python -m defender_installer` where the console script is not on PATH."""

from defender_installer.cli import main

main()
