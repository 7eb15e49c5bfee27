"""Sample logs as the parser's specification (fail2ban's style).

Every file in data/logins/ holds real log lines, each after a comment with the fact the
parser must make of it: its kind and fields (`failed user=root source=10.0.2.2
port=52712`), or `skip`. A file may also say, once, what the whole log amounts to once the
collector has counted each attempt once (`# events: login-failed=9 login=1`); replay
must produce exactly those events. Supporting a new message form is one pattern in
collectors/common/authlog.py and one sample line here; this one test runs them all,
through the parser and through `defender-agent replay`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from defender_agent import config, replay
from defender_agent.collectors.common import authlog

CORPUS = Path(__file__).parent / "data" / "logins"
FILES = sorted(CORPUS.glob("*.log"))
NOW = 1.8e9  # only places year-less stamps; no expectation depends on the time


def describe(result: authlog.ParseResult) -> str:
    if isinstance(result, str):
        return "skip"
    fields = [f"{name}={getattr(result, name)}" for name in ("user", "source", "port")]
    return " ".join([result.kind, *(f for f in fields if not f.endswith("=None"))])


def expected_events(path: Path) -> dict[str, int] | None:
    """The file's `# events: kind=N ...` line, if it has one."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# events:"):
            pairs = (item.split("=") for item in line.split(":", 1)[1].split())
            return {kind: int(n) for kind, n in pairs}
    return None


def samples(path: Path) -> list[tuple[int, str, str]]:
    """(line number, expectation, line): every log line with the comment just above it."""
    out = []
    comment = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            comment = None
        elif line.startswith("# events:"):
            continue
        elif line.startswith("#"):
            comment = line[1:].strip()
        else:
            assert comment is not None, f"{path.name}:{number}: a line without expectation"
            out.append((number, comment, line))
            comment = None
    return out


def test_the_corpus_has_samples() -> None:
    assert FILES and all(samples(path) for path in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_sample_parses_as_expected(path: Path) -> None:
    wrong = [
        f"{path.name}:{number}: expected `{want}`, got `{got}`: {line}"
        for number, want, line in samples(path)
        if (got := describe(authlog.parse_line(line, NOW))) != want
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_replay_understands_every_sample_with_a_fact(path: Path, tmp_path: Path) -> None:
    cfg = config.validate({"agent": {"state_dir": str(tmp_path)}}, "replay.toml")
    session = replay.Replay(cfg)
    session.file(str(path), "syslog")
    session.finish()
    expected_unknown = sum(1 for _n, want, _l in samples(path) if want == "skip")
    assert sum(session.unknown.values()) <= expected_unknown
    assert session.lines - session.skipped["no-syslog-prefix"] == len(samples(path))


COUNTED = [p for p in FILES if expected_events(p) is not None]


@pytest.mark.parametrize("path", COUNTED, ids=[p.name for p in COUNTED])
def test_replay_counts_each_attempt_once(path: Path, tmp_path: Path) -> None:
    cfg = config.validate({"agent": {"state_dir": str(tmp_path)}}, "replay.toml")
    session = replay.Replay(cfg)
    session.file(str(path), "syslog")
    events = dict(session.finish().events)
    events.pop("heartbeat", None)
    assert events == expected_events(path)
