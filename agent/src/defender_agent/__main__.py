"""Allow `python -m defender_agent`."""

import sys

from defender_agent.cli import main

sys.exit(main())
