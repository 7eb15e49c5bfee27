"""Write records to stdout (for `run --stdout` and debugging)."""

from __future__ import annotations

import sys

from defender_agent.model import Record


class StdoutOutput:
    name = "stdout"

    def __init__(self) -> None:
        self.counts = {"written": 0, "dropped": 0}

    def write(self, record: Record, line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            self.counts["dropped"] += 1
            return
        self.counts["written"] += 1

    def retry(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)
