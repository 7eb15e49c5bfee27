"""Output registry: where records go (file = JSON lines on disk, stdout for debugging,
syslog to the device's syslog or a remote collector)."""

from __future__ import annotations

from defender_agent.plugins import Registry

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.model import Record
    from defender_agent.plugins import Context

ALL_OUTPUTS: tuple[str, ...] = ("file", "stdout", "syslog")
# The outputs a build may leave out, like a collector: the recipe's PACKAGECONFIG flags
# and `defender-installer build --outputs`. file (what `alerts` reads) and stdout
# (`run --stdout`) are always there.
OPTIONAL_OUTPUTS: tuple[str, ...] = ("syslog",)

REGISTRY = Registry("outputs", __name__, ALL_OUTPUTS, __file__)


def ecs_formatter(ctx: Context, section: dict[str, Any]) -> Callable[[Record], str] | None:
    """The output's line maker for `format = "ecs"`; None for the pipeline's own line.
    ecs.py is imported only then."""
    if section.get("format", "defender") != "ecs":
        return None
    import os

    from defender_agent.ecs import ecs_json

    device_id, hostname = ctx.device_id, os.uname().nodename
    return lambda record: ecs_json(record, device_id, hostname)
