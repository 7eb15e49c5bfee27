"""Write records to stdout (for `run --stdout` and debugging)."""

from __future__ import annotations

import sys

from defender_agent.plugins import QuietOutput

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.model import Record
    from defender_agent.plugins import Context


class StdoutOutput(QuietOutput):
    name = "stdout"

    def __init__(self, line: Callable[[Record], str] | None = None) -> None:
        self.counts = {"written": 0, "dropped": 0}
        self._line = line  # the ECS form, when configured; else the pipeline's line
        self.needs_line = line is None

    def write(self, record: Record, line: str) -> None:
        if self._line is not None:
            line = self._line(record)
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            self.counts["dropped"] += 1
            return
        self.counts["written"] += 1

    def stop(self) -> None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> StdoutOutput:
    from defender_agent.outputs import ecs_formatter

    return StdoutOutput(ecs_formatter(ctx, section))


def describe(section: dict[str, Any]) -> list[str]:
    return [f"one {section['format']} JSON record per line on standard output"]
