"""Writing files as a privileged process without being turned against the device.

Everything the agent writes (events, state) is opened without following symbolic
links, inside a directory it owns that nobody else can write, and only a file the agent
created itself is ever chmod'ed. A planted symlink at `events.jsonl` or `state.json.tmp`
makes the open fail; it never sends the agent's writes (or a truncate, or a chmod) to
the link's target.
"""

from __future__ import annotations

import os
import stat

OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


class UnsafePathError(OSError):
    """A path the agent refuses to write (or read its configuration from)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(0, problem, path)


def _foreign_writers(st: os.stat_result) -> str:
    """Why someone other than the agent (or root) could change this file or directory."""
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        return f"owned by uid {st.st_uid}, not by the agent (uid {euid}) or root"
    if st.st_mode & stat.S_IWOTH:
        return f"writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    if st.st_mode & stat.S_IWGRP and st.st_gid not in (os.getegid(), 0):
        return f"writable by group {st.st_gid} (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def check_dir(path: str, create: bool = True, mode: int = 0o750) -> None:
    """A directory the agent may write in: a real directory (not a symlink) that only
    the agent (or root) can change. Created with `mode` when missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        os.makedirs(path, mode=mode, exist_ok=True)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(path, "is a symbolic link; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(path, "is not a directory")
    problem = _foreign_writers(st)
    if problem:
        raise UnsafePathError(path, f"refusing to write in a directory {problem}")


def check_trusted_file(path: str, st: os.stat_result) -> None:
    """A file whose content the agent trusts (its configuration names what it writes)."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(path, "is not a regular file")
    problem = _foreign_writers(st)
    if problem:
        raise UnsafePathError(path, f"refusing a file {problem}: it says what the agent writes")


def open_append(path: str, mode: int = 0o640) -> int:
    """An O_APPEND descriptor on `path`, created (with `mode`) if missing.

    An existing file must be a regular file the agent owns; its mode is left alone.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, mode)
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | OPEN_FLAGS)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise UnsafePathError(path, "exists and is not a regular file of the agent's") from None
        return fd
    os.fchmod(fd, mode)  # ours, just made: the umask must not widen or narrow it
    return fd


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so a crash leaves the old or the new file, never half.

    The temporary is created exclusively (a planted `path.tmp` symlink is removed, not
    followed), written in full, fsync'ed and renamed over `path`.
    """
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, mode)
    try:
        done = 0
        while done < len(data):  # write(2) may write less than asked
            done += os.write(fd, data[done:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_small(path: str, limit: int) -> bytes:
    """Read a file the agent trusts, refusing what is not a regular file or too large
    (a FIFO would block, /dev/zero would never end). Follows symlinks: /etc often has them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        check_trusted_file(path, st)
        if st.st_size > limit:
            raise UnsafePathError(path, f"is {st.st_size} bytes; the limit is {limit}")
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise UnsafePathError(path, f"is more than {limit} bytes")
    return data
