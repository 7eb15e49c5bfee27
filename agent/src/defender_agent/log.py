"""The agent's own log: one line per message on stderr, one process-wide level.

A stand-in for the part of `logging` the agent uses. Importing `logging` costs ~3 MiB of
RSS on the device (it pulls in threading, traceback, string, weakref, ...) for the whole
life of the service; this module costs next to nothing. Messages use %-formatting, done
only when the level is enabled. The line format is the one the agent always printed:
`defender-agent: LEVEL: message`.
"""

from __future__ import annotations

import sys

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_level = INFO


def configure(level: str) -> None:
    """Set the level for every logger from a config name (debug/info/warning/error)."""
    global _level
    try:
        _level = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}") from None


def enabled(level: int) -> bool:
    return level >= _level


def _emit(level: int, msg: str, args: tuple[object, ...], exc: bool = False) -> None:
    try:
        text = msg % args if args else msg
    except (TypeError, ValueError, KeyError):  # a bad format must not hide the message
        text = f"{msg} {args!r}"
    info = sys.exc_info()
    if exc and info[0] is not None:
        import traceback  # only when there is a traceback to print

        tb = "".join(traceback.format_exception(info[0], info[1], info[2])).rstrip("\n")
        text = f"{text}\n{tb}"
    stream = sys.stderr  # looked up each time: tests and daemons may replace it
    if stream is None:
        return
    try:
        stream.write(f"defender-agent: {_NAMES[level]}: {text}\n")
        stream.flush()
    except (OSError, ValueError):
        pass  # a closed or broken stderr must not stop the agent


class Logger:
    """The per-module handle; `name` is kept for readers, the level is process-wide."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        if _level <= DEBUG:
            _emit(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        if _level <= INFO:
            _emit(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        if _level <= WARNING:
            _emit(WARNING, msg, args)

    def error(self, msg: str, *args: object) -> None:
        if _level <= ERROR:
            _emit(ERROR, msg, args)

    def exception(self, msg: str, *args: object) -> None:
        """An error with the traceback of the exception being handled appended."""
        if _level <= ERROR:
            _emit(ERROR, msg, args, exc=True)


def get(name: str) -> Logger:
    return Logger(name)
