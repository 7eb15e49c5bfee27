"""`python -m defender_tools`."""

from defender_tools.cli import main

main()
