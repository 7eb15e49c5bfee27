"""The agent's own log: format, process-wide level, lazy formatting, tracebacks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from defender_agent import log


@pytest.fixture(autouse=True)
def _reset_level() -> Iterator[None]:
    yield
    log.configure("info")


class Loud:
    """Counts how often it is turned into text."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        return "loud"


def test_format_and_levels(capsys: pytest.CaptureFixture[str]) -> None:
    logger = log.get("defender_agent.test")
    log.configure("info")
    logger.debug("hidden %s", 1)
    logger.info("started (version %s, collectors: %s)", "0.1.0", "login")
    logger.warning("%s", "careful")
    logger.error("plain %d%%", 5)
    assert capsys.readouterr().err.splitlines() == [
        "defender-agent: INFO: started (version 0.1.0, collectors: login)",
        "defender-agent: WARNING: careful",
        "defender-agent: ERROR: plain 5%",
    ]
    log.configure("DEBUG")
    logger.debug("following %s (inode %d) from %d", "/var/log/auth.log", 7, 0)
    assert capsys.readouterr().err == (
        "defender-agent: DEBUG: following /var/log/auth.log (inode 7) from 0\n"
    )
    log.configure("error")
    logger.warning("not shown")
    logger.error("shown")
    assert capsys.readouterr().err == "defender-agent: ERROR: shown\n"


def test_formatting_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    logger = log.get("x")
    loud = Loud()
    log.configure("warning")
    logger.info("%s", loud)
    assert loud.calls == 0 and capsys.readouterr().err == ""
    logger.warning("%s", loud)
    assert loud.calls == 1


def test_no_args_means_no_formatting_and_bad_formats_still_print(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = log.get("x")
    logger.info("100% literal")
    logger.info("%d items", "not-a-number")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "defender-agent: INFO: 100% literal"
    assert err[1].startswith("defender-agent: INFO: %d items") and "not-a-number" in err[1]


def test_exception_appends_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    logger = log.get("x")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("detector %s failed", "brute_force")
    err = capsys.readouterr().err
    first, *rest = err.rstrip("\n").splitlines()
    assert first == "defender-agent: ERROR: detector brute_force failed"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"
    assert err.endswith("RuntimeError: boom\n")
    logger.exception("outside a handler")
    assert capsys.readouterr().err == "defender-agent: ERROR: outside a handler\n"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        log.configure("verbose")
