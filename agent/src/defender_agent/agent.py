"""The agent: an event loop, a pipeline and the plugins of the three registries.

build() is the one place a configuration becomes a running agent: it loops over the
collector, detector and output registries, creates every enabled plugin with its
Context, section and saved state, and wires the agent's own periodic records
(heartbeat, statistics) and state saving.
"""

from __future__ import annotations

import os

from defender_agent import log as _log
from defender_agent.clock import Clock
from defender_agent.loop import EventLoop
from defender_agent.model import Record
from defender_agent.pipeline import QUEUE_MAX, Pipeline
from defender_agent.plugins import KINDS, Context, registries

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.config import Config
    from defender_agent.loop import Timer
    from defender_agent.plugins import Collector, Detector, Output, Plugin
    from defender_agent.state import StateStore

log = _log.get(__name__)

# Positions are saved this long after something ran (only when they changed), and at once
# after an alert: a crash (kill -9, power loss) re-reads at most about this much input.
STATE_SAVE_INTERVAL = 1.0
OUTPUT_RETRY_INTERVAL = 5.0


class Agent:
    """Owns the loop, the pipeline and the plugins; runs until stopped."""

    def __init__(
        self, device_id: str, clock: Clock | None = None, queue_max: int = QUEUE_MAX
    ) -> None:
        self.clock = clock or Clock()
        self.pipeline = Pipeline(self.clock, device_id, queue_max)
        self.loop = EventLoop(self.clock, on_error=self._count_error)
        self.plugins: dict[str, list[tuple[str, Plugin]]] = {kind: [] for kind in KINDS}
        self.store: StateStore | None = None
        self._started = self.clock.monotonic()
        self._shut = False
        self._calls_at_save = -1  # plugin callbacks run at the last save (none yet)
        self._own_calls = 0  # loop callbacks that were the agent's own upkeep
        self._save_timer: Timer | None = None

    # --- plugins ------------------------------------------------------------------
    def context(self, kind: str, name: str) -> Context:
        return Context(kind, name, self.loop, self.pipeline)

    def add(self, kind: str, plugin: Plugin) -> None:
        """Add a created plugin; detectors and outputs join the pipeline too."""
        section = f"{kind}.{plugin.name}"
        self.plugins[kind].append((section, plugin))
        self.pipeline.count(section)
        if kind == "detectors":
            detector: Detector = plugin  # type: ignore[assignment]
            self.pipeline.detectors.append((section, detector))
        elif kind == "outputs":
            output: Output = plugin  # type: ignore[assignment]
            self.pipeline.add_output(section, output)

    @property
    def collectors(self) -> list[Collector]:
        return [plugin for _section, plugin in self.plugins["collectors"]]

    def _count_error(self, section: str) -> None:
        self.pipeline.count(section).errors += 1

    def _all(self) -> list[tuple[str, Plugin]]:
        return [item for kind in KINDS for item in self.plugins[kind]]

    # --- the agent's own records --------------------------------------------------
    def uptime(self) -> float:
        return self.clock.monotonic() - self._started

    def heartbeat(self) -> None:
        payload = {"uptime": round(self.uptime(), 3), "pid": os.getpid()}
        self.pipeline.emit("agent", Record("heartbeat", payload))

    def statistics_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uptime": round(self.uptime(), 3),
            "event_loop": self.loop.backend,
            "queue": self.pipeline.statistics(),
        }
        for kind in KINDS:
            out[kind] = {}
            for section, plugin in self.plugins[kind]:
                entry: dict[str, Any] = self.pipeline.count(section).as_dict()
                entry["counts"] = plugin.statistics()
                out[kind][plugin.name] = entry
        if self.pipeline.aggregator is not None:
            out["aggregation"] = self.pipeline.aggregator.statistics()
        return out

    def statistics(self) -> None:
        self.pipeline.emit("agent", Record("statistics", self.statistics_payload()))

    def _active_calls(self) -> int:
        """Callbacks that were not the agent's own upkeep (saves, output retries)."""
        return self.loop.calls - self._own_calls

    def _arm_save(self) -> None:
        """A save STATE_SAVE_INTERVAL after something ran, armed only then: an idle agent
        is not woken every second to find nothing to save (each wakeup is a measurable
        share of its idle CPU on a slow core)."""
        if self._save_timer is None and self._active_calls() != self._calls_at_save:
            self._save_timer = self.loop.call_later(STATE_SAVE_INTERVAL, self._timed_save)

    def _timed_save(self) -> None:
        self._own_calls += 1
        self._save_timer = None
        self.save_state()

    def save_state(self) -> None:
        """Save every plugin's position, after the queue is drained: a collector's position
        must never run ahead of what outputs took (a periodic save can fire in the turn
        that read the lines, before their records left the queue; a kill -9 right after
        would lose them)."""
        self._calls_at_save = self._active_calls()
        if self.store is not None:
            self.pipeline.drain()
            self.store.save({section: plugin.save_state() for section, plugin in self._all()})

    def _retry_outputs(self) -> None:
        before = self.loop.calls
        for section, output in self.pipeline.outputs:
            self.loop.call(section, output.retry)
        self._own_calls += self.loop.calls - before + 1  # and this timer's own call

    # --- running ------------------------------------------------------------------
    def start(self, heartbeat_interval: float = 300.0, statistics_interval: float = 3600.0) -> None:
        """Arm the periodic records (the first heartbeat is the first record), then start
        outputs (they must take the first records), detectors and collectors."""
        self.loop.call_every(heartbeat_interval, self.heartbeat, first=0.0)
        self.loop.call_every(statistics_interval, self.statistics)
        self.loop.call_every(OUTPUT_RETRY_INTERVAL, self._retry_outputs)
        if self.pipeline.aggregator is not None:
            aggregator = self.pipeline.aggregator
            aggregator.start(
                lambda every, flush: self.loop.call_every(every, flush, owner="aggregation")
            )
        for kind in reversed(KINDS):
            for section, plugin in self.plugins[kind]:
                self.loop.call(section, plugin.start)
        self.save_state()  # the starting positions: a crash before the next save loses nothing

    def run_once(self, max_wait: float | None = None) -> None:
        """One turn: wait for readiness or a timer, handle them, drain the pipeline."""
        self.loop.run_once(0.0 if len(self.pipeline) else max_wait)
        self.pipeline.drain()
        if self.pipeline.alerted:
            self.pipeline.alerted = False
            self.save_state()  # the incident is remembered before anything else is read
        self._arm_save()
        if self.loop.reopen_requested:
            self.loop.reopen_requested = False
            for section, output in self.pipeline.outputs:
                self.loop.call(section, output.reopen)

    def advance(self, seconds: float) -> None:
        """Virtual time only: move the clock forward, firing every timer on its deadline."""
        clock = self.clock
        if not clock.virtual:
            raise RuntimeError("advance() needs a ManualClock")
        target = clock.monotonic() + seconds
        while True:
            self.run_once(0.0)
            deadline = self.loop.next_deadline()
            if deadline is None or deadline > target:
                break
            clock.advance(max(0.0, deadline - clock.monotonic()))  # type: ignore[attr-defined]
        clock.advance(max(0.0, target - clock.monotonic()))  # type: ignore[attr-defined]
        self.run_once(0.0)

    def stop(self) -> None:
        self.loop.stopping = True

    def run(self, duration: float | None = None) -> None:
        """Loop until stop() / a signal (or `duration` seconds), then shut down cleanly."""
        end = None if duration is None else self.clock.monotonic() + duration
        while not self.loop.stopping:
            if end is not None:
                left = end - self.clock.monotonic()
                if left <= 0:
                    break
                self.run_once(left)
            else:
                self.run_once()
        self.shutdown()

    def shutdown(self) -> None:
        """Collectors stop first (they flush held events), the pipeline drains, then
        detectors stop; a last statistics record (the counts since the previous one) and
        what aggregation holds are written before outputs stop; state is saved last, with
        every final position."""
        if self._shut:
            return
        self._shut = True
        self.loop.stopping = True
        for kind in KINDS:
            if kind == "outputs":
                self.statistics()
                if self.pipeline.aggregator is not None:
                    self.pipeline.aggregator.stop()
            for section, plugin in self.plugins[kind]:
                self.loop.call(section, plugin.stop)
                if kind == "collectors":
                    self.pipeline.drain()
            self.pipeline.drain()
        self.save_state()
        self.loop.close()


def build(cfg: Config, clock: Clock | None = None, stdout: bool = False) -> Agent:
    """Wire every enabled plugin of the three registries from a validated config."""
    from defender_agent import safefs
    from defender_agent.state import StateStore

    safefs.check_dir(cfg.state_dir)
    agent = Agent(cfg.device_id(), clock)
    store = StateStore(cfg.state_dir)
    store.load()
    agent.store = store
    aggregated: dict[str, str] = {}  # collector section -> priority
    for kind, registry in registries().items():
        available = registry.available()
        for name in registry.names:
            forced = stdout and kind == "outputs" and name == "stdout"
            if not forced and not cfg.enabled(kind, name, available):
                continue
            module = registry.load(name)
            section = f"{kind}.{name}"
            ctx = agent.context(kind, name)
            settings = cfg.section(section)
            plugin = module.create(ctx, settings, store.get(section, name))
            agent.add(kind, plugin)
            if kind == "collectors" and settings.get("priority", "none") != "none":
                aggregated[section] = settings["priority"]
    if aggregated:
        from defender_agent.aggregate import Aggregator

        periods = cfg.section("aggregation")
        agent.pipeline.aggregator = Aggregator(
            agent.pipeline.write,
            {level: float(periods[level]) for level in ("high", "medium", "low")},
            aggregated,
            int(periods["max_entries"]),
        )
    return agent
