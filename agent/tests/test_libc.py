"""linux/libc.py: C functions without the ctypes package."""

from __future__ import annotations

import errno
import os

from defender_agent.linux import libc


def test_libc_functions_without_the_ctypes_package() -> None:
    """The calls go through _ctypes; they must behave as ctypes' own would."""
    assert libc.function("getpid", "i", ())() == os.getpid()
    add_watch = libc.function("inotify_add_watch", "i", ("i", "z", "I"))
    assert add_watch(-1, b"/", 2) == -1 and libc.errno() == errno.EBADF
    assert libc._from_ctypes("getppid", "i", ())() == os.getppid()  # the fallback
