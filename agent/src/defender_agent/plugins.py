"""The one plugin contract shared by collectors, detectors and outputs.

A plugin is a module in `collectors/`, `detectors/` or `outputs/`, named in its package's
registry (ALL_COLLECTORS, ALL_DETECTORS, ALL_OUTPUTS) and configured by the schema section
`<kind>.<name>`. The module defines:

    create(ctx, section, state) -> plugin   build it (ctx: Context, section: its settings,
                                            state: what its save_state() returned last run)
    describe(section) -> list[str]          what `defender-agent check` prints about it

and the plugin object has `name` and the methods of its Protocol below. Everything a
plugin needs from the agent comes through its Context: the clock, timers and file
descriptors (counted against the plugin when they raise), and emit().
tests/test_contracts.py walks every registered module and checks all of this.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable, Protocol

    from defender_agent.clock import Clock
    from defender_agent.loop import EventLoop, Timer
    from defender_agent.model import Record
    from defender_agent.pipeline import Pipeline

    class Plugin(Protocol):
        name: str

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def save_state(self) -> dict[str, Any]: ...
        def statistics(self) -> dict[str, Any]: ...

    class Collector(Plugin, Protocol):
        """Turns a source into events with ctx.emit(); never blocks the loop."""

    class Detector(Plugin, Protocol):
        """Sees every raw event (in emit order) and returns the alerts it raises."""

        def process(self, record: Record) -> list[Record]: ...

    class Output(Plugin, Protocol):
        """Takes every record, already serialised as one JSON line; never raises on I/O."""

        def write(self, record: Record, line: str) -> None: ...
        def retry(self) -> None: ...
        def reopen(self) -> None: ...


KINDS = ("collectors", "detectors", "outputs")


class Quiet:
    """Defaults for a plugin with no lifecycle of its own: nothing to start, stop, save
    or report. Subclass it and write only the methods that do something."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, Any]:
        return {}


class Timed(Quiet):
    """A plugin that keeps one timer in `_timer`: stop() cancels it; nothing to save."""

    _timer: Timer | None = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class QuietOutput(Quiet):
    """An output that keeps no backlog and holds no file to reopen."""

    def retry(self) -> None:
        pass

    def reopen(self) -> None:
        pass


class Registry:
    """The names of one kind of plugin, and which of them this build ships.

    A source-customized build leaves some modules out. Presence is decided by looking for
    `<name>.py` (or a sourceless `<name>.pyc`) beside the package's __init__, not by
    importing: importlib.util.find_spec would cost ~0.9 MiB of RSS. Only a package that is
    not a plain directory (a zip, say) takes the find_spec path.
    """

    __slots__ = ("directory", "kind", "names", "package")

    def __init__(self, kind: str, package: str, names: tuple[str, ...], init_file: str) -> None:
        self.kind = kind
        self.package = package
        self.names = names
        self.directory = os.path.dirname(os.path.abspath(init_file))

    def available(self) -> tuple[str, ...]:
        try:
            files = set(os.listdir(self.directory))
        except OSError:
            import importlib.util

            return tuple(
                name
                for name in self.names
                if importlib.util.find_spec(f"{self.package}.{name}") is not None
            )
        return tuple(n for n in self.names if f"{n}.py" in files or f"{n}.pyc" in files)

    def load(self, name: str) -> ModuleType:
        if name not in self.names:
            raise KeyError(f"no {self.kind} plugin named {name!r}")
        module = f"{self.package}.{name}"
        __import__(module)  # not importlib.import_module: importlib + warnings cost RSS
        return sys.modules[module]


def registries() -> dict[str, Registry]:
    """The three registries by kind, in the order the agent builds them."""
    from defender_agent import collectors, detectors, outputs

    return {
        "collectors": collectors.REGISTRY,
        "detectors": detectors.REGISTRY,
        "outputs": outputs.REGISTRY,
    }


class Context:
    """What the agent gives one plugin. Timers and readers registered here belong to the
    plugin: when their callback raises, the error is counted under its section."""

    __slots__ = ("_loop", "_pipeline", "clock", "name", "section")

    def __init__(self, kind: str, name: str, loop: EventLoop, pipeline: Pipeline) -> None:
        self.name = name
        self.section = f"{kind}.{name}"
        self.clock: Clock = loop.clock
        self._loop = loop
        self._pipeline = pipeline

    @property
    def device_id(self) -> str:
        """The device id every record carries (outputs that write their own form)."""
        return self._pipeline.device_id

    def emit(self, record: Record) -> bool:
        """Queue a record; False (and counted as dropped) when the queue is full."""
        return self._pipeline.emit(self.section, record)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._loop.add_reader(fd, callback, self.section)

    def remove_reader(self, fd: int) -> None:
        self._loop.remove_reader(fd)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(delay, callback, self.section)

    def call_every(
        self, interval: float, callback: Callable[[], None], first: float | None = None
    ) -> Timer:
        return self._loop.call_every(interval, callback, first, self.section)
