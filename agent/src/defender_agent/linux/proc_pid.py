"""Readers of /proc and /proc/<pid>/ files, one small function per file (psutil's rule).

Each takes the proc root as a parameter (tests point it at a fake tree) and returns plain
values. A process may exit between any two reads: the readers raise OSError as the
kernel reported it (FileNotFoundError or ProcessLookupError when it is gone,
PermissionError when the agent may not look) and ValueError for a file that does not
parse, and leave the meaning of each to the caller.
"""

from __future__ import annotations

import os

PF_EXITING = 0x00000004  # <linux/sched.h>: getting shut down (its memory is going)
PF_KTHREAD = 0x00200000  # <linux/sched.h>: the flags field of a kernel thread
CAP_SYS_PTRACE = 19  # <linux/capability.h>
DIR_INO_UNKNOWN = 1  # proc_fill_cache() reports inode 1 when it could not look one up


def read(path: str, limit: int) -> bytes:
    """Up to `limit` bytes of a file (a /proc file may come in several reads)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_pids(root: str) -> dict[int, int]:
    """The process ids in `root` (thread-group leaders only) and their directories' inodes.

    On procfs the inode of /proc/<pid> stays the same for as long as its directory entry
    is cached and a new process never gets an old one's, so an unchanged inode means an
    unchanged process, at the cost of one getdents() for the whole listing.
    """
    out = {}
    with os.scandir(root) as entries:
        for entry in entries:
            name = entry.name
            if name.isdigit() and name.isascii():
                out[int(name)] = entry.inode()
    return out


def read_stat(root: str, pid: int) -> tuple[int, int, int]:
    """(ppid, starttime in clock ticks since boot, flags) from /proc/<pid>/stat (proc(5)).

    The command name (field 2) is in parentheses and may itself hold spaces and ")", so
    the fields are counted from the last ")".
    """
    data = read(f"{root}/{pid}/stat", 4096)
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        raise ValueError(f"{root}/{pid}/stat: {len(fields)} fields after the name")
    return int(fields[1]), int(fields[19]), int(fields[6])  # fields 4, 22 and 9


def read_state(root: str, pid: int) -> tuple[str, int]:
    """(the one-letter state: R, S, D, Z, ...; flags) from /proc/<pid>/stat."""
    data = read(f"{root}/{pid}/stat", 4096)
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 7:
        raise ValueError(f"{root}/{pid}/stat: {len(fields)} fields after the name")
    return fields[0].decode("ascii", "replace"), int(fields[6])  # fields 3 and 9


def read_ids(root: str, pid: int) -> tuple[int, int]:
    """(real uid, effective uid) from the `Uid:` line of /proc/<pid>/status."""
    for line in read(f"{root}/{pid}/status", 8192).splitlines():
        if line.startswith(b"Uid:"):
            ids = line.split()
            if len(ids) >= 3:
                return int(ids[1]), int(ids[2])
    raise ValueError(f"{root}/{pid}/status: no Uid line")


def read_cmdline(root: str, pid: int, limit: int) -> tuple[bytes, bool]:
    """The raw NUL-separated arguments, at most `limit` bytes, and whether there were more."""
    data = read(f"{root}/{pid}/cmdline", limit + 1)
    return data[:limit], len(data) > limit


def read_link(root: str, pid: int, name: str) -> bytes:
    """The target of /proc/<pid>/exe or cwd, as bytes (a path need not be UTF-8)."""
    return os.readlink(os.fsencode(f"{root}/{pid}/{name}"))


def uptime(root: str) -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME, the clock of starttime),
    from /proc/uptime, to the hundredth."""
    return float(read(f"{root}/uptime", 256).split()[0])


def boot_time(root: str) -> float:
    """Boot time in epoch seconds (`btime` of /proc/stat; whole seconds, rounded down)."""
    for line in read(f"{root}/stat", 1 << 20).splitlines():
        if line.startswith(b"btime "):
            return float(int(line.split()[1]))
    raise ValueError(f"{root}/stat: no btime line")


def capabilities(root: str) -> int:
    """This process's effective capability set (the CapEff mask of /proc/self/status)."""
    for line in read(f"{root}/self/status", 8192).splitlines():
        if line.startswith(b"CapEff:"):
            return int(line.split()[1], 16)
    raise ValueError(f"{root}/self/status: no CapEff line")


def hidepid(root: str) -> str | None:
    """The hidepid= option of the proc file system at `root` (`invisible` where systemd's
    ProtectProc=invisible mounted it), None when none is set or root is not a procfs."""
    try:
        text = read(f"{root}/self/mountinfo", 1 << 20)
        where = os.fsencode(os.path.realpath(root))
    except (OSError, ValueError):
        return None
    found = None
    for line in text.splitlines():  # proc_pid_mountinfo(5): ... mount-point ... - fstype src opts
        left, sep, right = line.partition(b" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] != b"proc":
            continue
        if _unescape(fields[4]) == where:  # the last mount on a point is the visible one
            found = None
            for option in tail[2].split(b","):
                if option.startswith(b"hidepid="):
                    found = option[8:].decode("ascii", "replace")
    return found


def _unescape(field: bytes) -> bytes:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code in (b"\\040", b"\\011", b"\\012", b"\\134"):
        field = field.replace(code, bytes([int(code[1:], 8)]))
    return field
