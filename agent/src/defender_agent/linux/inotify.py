"""inotify(7) through ctypes: the standard library has no binding.

Imported only by collectors that follow files, so agents without them never load ctypes.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections import namedtuple

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
        # dlopen(NULL): the C library python itself links (glibc or musl). Avoids
        # ctypes.util.find_library, which imports subprocess and costs ~1 MiB of RSS.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._init1 = libc.inotify_init1
            self._add = libc.inotify_add_watch
            self._rm = libc.inotify_rm_watch
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailableError(f"no inotify in the C library: {exc}") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailableError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int = DIR_MASK) -> int:
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
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
