"""What anyone who can write a log line can do to the agent: nothing that blinds it.

Each test is one of the ways a hostile tester broke the agent before, run the same way,
then counting what arrived: no pattern stalls the loop, no field grows memory without
bound, no line is lost or alert raised twice.
"""

from __future__ import annotations

import itertools
import re
import time

try:
    import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python < 3.11
    import sre_parse  # type: ignore[no-redef,unused-ignore]

import pytest

from defender_agent.collectors.common import authlog, syslog

LINE = 8192  # the follower's cap: no line the patterns see is longer
BUDGET_S = 0.01  # per 8 KiB line; the quadratic Dropbear pattern took ~100 ms here

TABLES = {"sshd": authlog._SSHD, "dropbear": authlog._DROPBEAR, "login": authlog._LOGIN}
PATTERNS = [
    (f"{prog}:{kind}:{n}", pattern)
    for prog, table in TABLES.items()
    for n, (kind, pattern) in enumerate(table)
]
PATTERNS += [
    ("repeat", authlog._REPEAT),
    ("rfc3164", syslog._RFC3164),
    ("rfc5424", syslog._RFC5424),
]


def _literals(pattern: re.Pattern[str]) -> list[str]:
    """The literal pieces of a pattern: what an attacker repeats to make it backtrack."""
    text = re.sub(r"\(\?P<\w+>", "(", pattern.pattern)
    pieces = re.split(r"\\[dDsSwW]|[()?:|*+\[\]^$\\{}]|\d,\d", text)
    return [p for p in dict.fromkeys(pieces) if p.strip()]


def _head(items: object) -> tuple[str, bool]:
    """The literal text a match must start with (first branch of an alternation), and
    whether the walk reached the end of the pattern."""
    out = ""
    for op, arg in items:  # type: ignore[attr-defined]
        name = str(op)
        if name == "LITERAL":
            out += chr(arg)
        elif name == "SUBPATTERN":
            text, done = _head(arg[-1])
            out += text
            if not done:
                return out, False
        elif name == "BRANCH":
            text, done = _head(arg[1][0])
            out += text
            if not done:
                return out, False
        elif name == "AT" or (name in ("MAX_REPEAT", "MIN_REPEAT") and arg[0] == 0):
            continue  # an anchor, or an optional part: a match may leave it out
        else:
            return out, False
    return out, True


def _hostile_lines(pattern: re.Pattern[str]) -> list[str]:
    """Lines that start like a match and then repeat pattern fragments to LINE chars."""
    lits = _literals(pattern)
    head = _head(sre_parse.parse(pattern.pattern))[0]
    units = [*lits, "1", "a", " ", "'", ":", "<", ">", "1:1", " port 1", "' from 1:1 "]
    lines = []
    for a, b in itertools.product(units, repeat=2):
        unit = a + b
        lines.append((head + " " + unit * (LINE // len(unit) + 1))[:LINE])
    return lines


def _worst(pattern: re.Pattern[str], lines: list[str]) -> tuple[float, str]:
    worst, which = 0.0, ""
    for line in lines:
        start = time.perf_counter()
        pattern.match(line)
        took = time.perf_counter() - start
        if took > worst:
            worst, which = took, line
    return worst, which


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[n for n, _ in PATTERNS])
def test_no_pattern_backtracks_on_a_crafted_line(name: str, pattern: re.Pattern[str]) -> None:
    lines = _hostile_lines(pattern)
    worst, line = _worst(pattern, lines)
    if worst > BUDGET_S:  # one retry: a busy CI machine may stall any single match
        worst, line = _worst(pattern, [line])
    assert worst <= BUDGET_S, f"{name}: {worst * 1000:.1f} ms on {line[:80]!r}..."


@pytest.mark.parametrize(
    "message",
    [
        "Pubkey auth succeeded for '" + "' with " * 1100,  # was ~100 ms: nested lazy groups
        "Password auth succeeded for '" + "' with ' from 1:a" * 500,
        "Exit before auth from <" + "1:1>: (user '" * 700,
        "Bad password attempt for '" + "' from 1:" * 900,
    ],
)
def test_known_crafted_dropbear_lines_are_cheap(message: str) -> None:
    line = f"Nov 27 08:00:00 gw dropbear[1]: {message}"[:LINE]
    start = time.perf_counter()
    for _ in range(10):
        authlog.parse_line(line, 0.0)
    assert (time.perf_counter() - start) / 10 <= BUDGET_S


def test_attacker_fields_are_capped_when_parsed() -> None:
    name = "A" * 7000
    fact = authlog.parse_line(
        f"Nov 27 08:00:00 gw sshd[9]: Failed password for invalid user {name} "
        "from 203.0.113.7 port 4242 ssh2",
        0.0,
    )
    assert isinstance(fact, authlog.AuthFact)
    assert fact.user == "A" * authlog.MAX_USER + authlog.TRUNCATED
    assert (fact.source, fact.port) == ("203.0.113.7", 4242)  # still counted, still located
