"""inotify(7) through the C library: the standard library has no binding.

The calls go through libc.py (the `_ctypes` engine, not the `ctypes` package). Imported
only by collectors that follow files.
"""

from __future__ import annotations

import os
import struct
from collections import namedtuple

from defender_agent.linux import libc

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import NamedTuple

# <sys/inotify.h> / <linux/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

DIR_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name


if TYPE_CHECKING:

    class Event(NamedTuple):
        wd: int
        mask: int
        name: str

else:
    Event = namedtuple("Event", "wd mask name")


class InotifyUnavailableError(OSError):
    """The kernel or libc lacks inotify (or a limit is reached): use stat polling."""


class Inotify:
    """A non-blocking inotify fd; `read()` returns the events available now."""

    def __init__(self) -> None:
        # libc.function: the C library python itself links (glibc or musl), without the
        # ctypes package (0.7-1.1 MiB of RSS) or find_library (subprocess, ~1 MiB).
        try:
            self._init1 = libc.function("inotify_init1", "i", ("i",))
            self._add = libc.function("inotify_add_watch", "i", ("i", "z", "I"))
            self._rm = libc.function("inotify_rm_watch", "i", ("i", "i"))
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailableError(f"no inotify in the C library: {exc}") from None
        fd = self._init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = libc.errno()
            raise InotifyUnavailableError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int = DIR_MASK) -> int:
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = libc.errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        self._rm(self.fd, wd)

    def read(self) -> list[Event]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        return parse_events(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_events(data: bytes) -> list[Event]:
    events = []
    pos = 0
    while pos + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
        pos += _EVENT.size
        raw = data[pos : pos + length]
        pos += length
        name = os.fsdecode(raw.split(b"\0", 1)[0])
        events.append(Event(wd, mask, name))
    return events
