"""What every scenario is: a named story run against a booted guest, judged by named checks.

A scenario's `run(guest, profile)` plays the story and observes what the agent reports
(`observe`, the only part that talks to the guest), then judges the observation (`judge`,
pure, unit-tested without a guest) into a `ScenarioResult`: its checks (name, passed,
detail), its timings and the alert it looked at. `defender-tools demo` prints the result
as a table; the QEMU tests assert `result.passed` with `result.failures()` as the
message. Neither writes a check of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest

PASS, FAIL = "PASS", "FAIL"

Seen = TypeVar("Seen")  # what one scenario observes (its own frozen dataclass)


@dataclass(frozen=True)
class Check:
    """One expectation: a name a reader understands, whether it held, and what was seen."""

    name: str
    passed: bool
    detail: str = ""

    def line(self) -> str:
        verdict = PASS if self.passed else FAIL
        return f"{verdict} {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ScenarioResult:
    """A scenario's checks, timings (seconds) and the alert it judged (if one came)."""

    name: str
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    alert: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def extend(self, checks: list[Check]) -> None:
        self.checks.extend(checks)

    def failures(self) -> str:
        """The failed checks on one line, "" when all passed (a QEMU test's assertion message)."""
        if not self.checks:
            return f"{self.name}: {FAIL} no check ran"
        failed = [check.line() for check in self.checks if not check.passed]
        return (f"{self.name}: " + "; ".join(failed)) if failed else ""

    def report(self) -> str:
        """Plain text: the verdict, every timing, every check."""
        lines = [f"{self.name}: {PASS if self.passed else FAIL}"]
        lines += [f"  {key}: {value}" for key, value in self.timings.items()]
        lines += [f"  {check.line()}" for check in self.checks]
        return "\n".join(lines)


class Scenario(ABC, Generic[Seen]):
    """A story an attacker (or an operator) plays against the guest, and what must follow."""

    name: ClassVar[str]

    def describe(self) -> str:
        """One line for progress output while the story runs."""
        return self.name

    @abstractmethod
    def observe(self, guest: Guest) -> Seen:
        """Play the story against GUEST and record what the agent reported."""

    @abstractmethod
    def judge(self, seen: Seen, profile: Profile) -> ScenarioResult:
        """The checks, from the observation alone (PROFILE: what the image's servers log)."""

    def run(self, guest: Guest, profile: Profile) -> ScenarioResult:
        """Play the story against GUEST (an image of PROFILE) and judge what the agent did."""
        return self.judge(self.observe(guest), profile)
