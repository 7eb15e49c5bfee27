"""Follow growing files (syslog text or fixed-size utmp records) across rotation.

A follower knows a file by device, inode and its first bytes (a prefix of up to
PREFIX_BYTES), not by its inode alone: an inode is reused when a log is deleted and
re-created (ext4 does it at once; a tmpfs /var/log starts from scratch at every boot),
and a resumed offset into another file skips lines. It keeps the position of the last
fully consumed byte, so a restart resumes exactly where it stopped.

Rotation loses nothing a follower can still read:
- rename + create (logrotate's default): the old file stays open and is drained for
  ROTATION_GRACE seconds, since its writer keeps writing there until it is told (HUP);
- delete + create: the same, through the open descriptor of the deleted file;
- copytruncate: when the file shrinks, the bytes between the old offset and the end of
  the copy are read from the rotated copy (`NAME.1`, `NAME-DATE`, ...) before the file is
  read again from its start;
- rotated while the agent was down: the rest of the old file is read from the rotated
  copy that has its identity, then the new file from its start.
A file whose identity changed under the same path is always read from its start.

A `Watcher` tells followers when to look: inotify on the parent directory (sees modify,
create and rename), or stat polling on a timer where inotify is missing.
"""

from __future__ import annotations

import os
import stat as _stat
import time as _time

from defender_agent import log as _log

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.linux.inotify import Inotify
    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

log = _log.get(__name__)

CHUNK = 65536
MAX_READ_PER_CHECK = 1 << 20  # then yield to the loop and continue on the next turn
MAX_LINE = 8192
SAFETY_POLL = 30.0  # with inotify: a cheap stat now and then covers lost events
ROTATION_GRACE = 10.0  # seconds a rotated-away file is still drained
RETIRED_POLL = 0.2  # seconds between looks at a rotated-away file while it is drained
PREFIX_BYTES = 128  # how much of a file's start identifies it
ROTATED_CANDIDATES = 3  # rotated copies looked at, newest first
COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z")


class _Open:
    """One open file: descriptor, identity, read position and line state."""

    __slots__ = ("dev", "discarding", "fd", "ino", "offset", "prefix", "until")

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.offset = 0
        self.prefix = b""
        self.discarding = False  # inside an over-long line: skip to its end
        self.until = 0.0  # retired files: drained until this monotonic time

    def position(self) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "inode": self.ino,
            "offset": self.offset,
            "prefix": self.prefix.hex(),
        }


def _valid_saved(saved: Any) -> dict[str, Any] | None:
    """A saved position, or None when it is damaged (bad state = no state)."""
    if not isinstance(saved, dict):
        return None
    inode, offset = saved.get("inode"), saved.get("offset")
    if not (isinstance(inode, int) and isinstance(offset, int) and offset >= 0):
        return None
    dev = saved.get("dev")
    prefix = saved.get("prefix", "")
    if (dev is not None and not isinstance(dev, int)) or not isinstance(prefix, str):
        return None
    try:
        raw = bytes.fromhex(prefix)
    except ValueError:
        return None
    if len(raw) > PREFIX_BYTES:
        return None
    return {"dev": dev, "inode": inode, "offset": offset, "prefix": raw}


class FileFollower:
    """Deliver complete units of one file: text lines (record_size 0) or records."""

    def __init__(
        self,
        path: str,
        on_lines: Callable[[list[str]], None] | None = None,
        on_records: Callable[[bytes], None] | None = None,
        record_size: int = 0,
        max_line: int = MAX_LINE,
        monotonic: Callable[[], float] = _time.monotonic,
    ) -> None:
        self.path = path
        self.on_lines = on_lines
        self.on_records = on_records
        self.record_size = record_size
        self.max_line = max_line
        self.monotonic = monotonic
        self.current: _Open | None = None
        self.retired: list[_Open] = []
        self.counts: dict[str, int] = {}
        self._start_at_end = True
        self._saved: dict[str, Any] | None = None
        self._saved_rotated: dict[str, Any] | None = None

    # --- state --------------------------------------------------------------------
    def restore(self, saved: dict[str, Any] | None) -> None:
        """Use a saved position at the first open; no state = start at the end."""
        self._saved = _valid_saved(saved)
        if saved and self._saved is not None:
            self._saved_rotated = _valid_saved(saved.get("rotated"))
        self._start_at_end = self._saved is None

    def position(self) -> dict[str, Any] | None:
        """What restore() needs after a restart: the current file, and the newest
        rotated-away file still being drained."""
        if self.current is None:
            if self._saved is None:
                return None
            out = dict(self._saved, prefix=self._saved["prefix"].hex())
        else:
            out = self.current.position()
        if self.retired:
            out["rotated"] = self.retired[-1].position()
        return out

    @property
    def is_open(self) -> bool:
        return self.current is not None

    @property
    def inode(self) -> int:
        return self.current.ino if self.current is not None else 0

    @property
    def offset(self) -> int:
        return self.current.offset if self.current is not None else 0

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    # --- opening ------------------------------------------------------------------
    def _open(self) -> _Open | None:
        """Open the path (None while it is missing or unusable), deciding where to start."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            # Appears later: everything in it will be new, so read it from the start.
            self._start_at_end = False
            return None
        except OSError as exc:
            self._count("open-error")
            log.debug("cannot open %s: %s", self.path, exc)
            return None
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            os.close(fd)  # a FIFO or a device would block or never end
            self._count("not-a-regular-file")
            return None
        cur = _Open(fd, st)
        saved, self._saved = self._saved, None
        rotated, self._saved_rotated = self._saved_rotated, None
        if rotated is not None:
            self._finish_rotated(rotated)
        if saved is not None and self._same_file(saved, cur, st.st_size):
            cur.offset = saved["offset"]
        elif saved is not None:
            # replaced while we were away: finish the old file from its rotated copy
            if rotated is None or rotated["inode"] != saved["inode"]:
                self._finish_rotated(saved)
            self._count("replaced-while-down")
        elif self._start_at_end:
            cur.offset = st.st_size - (st.st_size % self.record_size if self.record_size else 0)
        self._start_at_end = False
        self.current = cur
        self._refresh_prefix(cur)
        log.debug("following %s (inode %d) from %d", self.path, cur.ino, cur.offset)
        return cur

    def _read_prefix(self, fd: int) -> bytes:
        try:
            return os.pread(fd, PREFIX_BYTES, 0)
        except OSError:
            return b""

    def _refresh_prefix(self, src: _Open) -> None:
        if len(src.prefix) < PREFIX_BYTES:
            src.prefix = self._read_prefix(src.fd)

    def _same_file(self, saved: dict[str, Any], cur: _Open, size: int) -> bool:
        if saved["inode"] != cur.ino or saved["offset"] > size:
            return False
        if saved["dev"] is not None and saved["dev"] != cur.dev:
            return False
        prefix: bytes = saved["prefix"]
        return not prefix or self._read_prefix(cur.fd)[: len(prefix)] == prefix

    def close(self) -> None:
        """Close everything, remembering the position so position() still reports it."""
        if self.current is not None:
            pos = self.current.position()
            if self.retired:
                pos["rotated"] = self.retired[-1].position()
            self._saved = _valid_saved(pos)
            self._saved_rotated = _valid_saved(pos.get("rotated"))
            os.close(self.current.fd)
            self.current = None
        for old in self.retired:
            os.close(old.fd)
        self.retired = []

    # --- rotated copies -----------------------------------------------------------
    def _rotated_candidates(self) -> list[str]:
        """Rotated copies of this file (NAME.1, NAME-20261202, ...), newest first."""
        directory, base = os.path.split(os.path.abspath(self.path))
        try:
            names = os.listdir(directory)
        except OSError:
            return []
        found = []
        for name in names:
            if len(name) <= len(base) + 1 or not name.startswith(base):
                continue
            if name[len(base)] not in ".-_" or name.endswith(COMPRESSED):
                continue
            full = os.path.join(directory, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if _stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, full))
        found.sort(reverse=True)
        return [full for _mtime, full in found[:ROTATED_CANDIDATES]]

    def _open_copy(self, want: dict[str, Any], by_inode: bool) -> _Open | None:
        """The rotated copy that is `want` (by inode and prefix, or by prefix alone)."""
        prefix: bytes = want["prefix"]
        for path in self._rotated_candidates():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError:
                continue
            st = os.fstat(fd)
            if by_inode:
                ok = st.st_ino == want["inode"] and (want["dev"] in (None, st.st_dev))
            else:
                ok = st.st_ino != want["inode"]
            if ok and prefix and self._read_prefix(fd)[: len(prefix)] != prefix:
                ok = False
            if ok and (prefix or by_inode) and st.st_size >= want["offset"]:
                copy = _Open(fd, st)
                copy.offset = want["offset"]
                copy.prefix = prefix
                return copy
            os.close(fd)
        return None

    def _drain_copy(self, copy: _Open, reason: str) -> None:
        while self._read(copy):
            pass
        self._flush_tail(copy)
        os.close(copy.fd)
        self._count(reason)

    def _finish_rotated(self, saved: dict[str, Any]) -> None:
        """The agent was down when the file was rotated: read the rest of the old one."""
        copy = self._open_copy(saved, by_inode=True)
        if copy is None:
            self._count("rotated-copy-not-found")
            return
        self._drain_copy(copy, "recovered-from-rotated")

    # --- reading ------------------------------------------------------------------
    def check(self) -> bool:
        """Read what is new; handle truncation and rotation. True = more left to read."""
        more = False
        if self.current is None:
            self._open()
        cur = self.current
        if cur is not None:
            more = self._read(cur, current=True)
            if not more:
                more = self._check_rotation(cur)
        now = self.monotonic()
        for old in list(self.retired):
            if self._read(old):
                more = True
            elif now >= old.until:
                self._flush_tail(old)
                os.close(old.fd)
                self.retired.remove(old)
        return more

    def _check_rotation(self, cur: _Open) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # renamed or deleted, not re-created yet: keep the old fd
        if (st.st_ino, st.st_dev) == (cur.ino, cur.dev):
            return False
        # Rotated: keep draining the old file for a while (its writer may not know yet).
        cur.until = self.monotonic() + ROTATION_GRACE
        self.retired.append(cur)
        while len(self.retired) > 2:  # a rotation storm cannot pile up descriptors
            oldest = self.retired.pop(0)
            self._flush_tail(oldest)
            os.close(oldest.fd)
        self.current = None
        self._start_at_end = False
        self._count("rotations")
        new = self._open()
        return new is not None and self._read(new, current=True)

    def _read(self, src: _Open, current: bool = False) -> bool:
        """Read from one open file; True when the per-check budget ran out."""
        try:
            size = os.fstat(src.fd).st_size
        except OSError:
            return False
        if size < src.offset or (current and src.offset and self._rewritten(src)):
            if current:
                self._truncated(src)
            src.offset = 0
            src.discarding = False
        budget = MAX_READ_PER_CHECK
        while budget > 0 and src.offset < size:
            try:
                chunk = os.pread(src.fd, CHUNK, src.offset)
            except OSError as exc:
                self._count("read-error")
                log.debug("read %s: %s", self.path, exc)
                return False
            if not chunk:
                return False
            budget -= len(chunk)
            consumed = self._consume(src, chunk)
            if consumed == 0:
                break  # only a partial unit so far: wait for the writer
            src.offset += consumed
        if current:
            self._refresh_prefix(src)
        return budget <= 0 and src.offset < size

    def _rewritten(self, src: _Open) -> bool:
        """Truncated and written past our offset again before we looked: its first bytes
        are not the ones we read."""
        return bool(src.prefix) and self._read_prefix(src.fd)[: len(src.prefix)] != src.prefix

    def _truncated(self, src: _Open) -> None:
        """copytruncate: what we had not read yet is in the copy; read it there first."""
        log.info("%s was truncated; reading it from the start", self.path)
        self._count("truncations")
        want = {"inode": src.ino, "dev": src.dev, "offset": src.offset, "prefix": src.prefix}
        copy = self._open_copy(want, by_inode=False)
        if copy is not None:
            copy.discarding = src.discarding
            self._drain_copy(copy, "recovered-from-copy")
        src.prefix = b""

    def _consume(self, src: _Open, chunk: bytes) -> int:
        if self.record_size:
            n = len(chunk) - len(chunk) % self.record_size
            if n and self.on_records is not None:
                self.on_records(chunk[:n])
            return n
        start = 0
        if src.discarding:
            nl = chunk.find(b"\n")
            if nl < 0:
                return len(chunk)
            src.discarding = False
            start = nl + 1
        last = chunk.rfind(b"\n")
        if last < start:
            if len(chunk) - start >= self.max_line:
                self._deliver([chunk[start : start + self.max_line]])
                self._count("truncated-lines")
                src.discarding = True
                return len(chunk)
            return start
        lines = chunk[start:last].split(b"\n")
        self._deliver(lines)
        return last + 1

    def _deliver(self, raw_lines: list[bytes]) -> None:
        out = []
        for raw in raw_lines:
            if len(raw) > self.max_line:
                raw = raw[: self.max_line]
                self._count("truncated-lines")
            out.append(raw.decode("utf-8", errors="replace"))
        if out and self.on_lines is not None:
            self.on_lines(out)

    def _flush_tail(self, src: _Open) -> None:
        """A file that will not grow any more: deliver its unterminated last line."""
        if self.record_size:
            return
        try:
            tail = os.pread(src.fd, self.max_line, src.offset)
        except OSError:
            return
        if tail and not src.discarding:
            self._deliver([tail.rstrip(b"\n")])
        src.offset += len(tail)


class Watcher:
    """Decide when followers look: inotify on parent directories, else stat polling."""

    def __init__(
        self, ctx: Context, followers: list[FileFollower], backend: str, poll_interval: float
    ) -> None:
        self.ctx = ctx
        self.followers = followers
        self.backend = backend
        self.poll_interval = poll_interval
        self.inotify: Inotify | None = None
        self.polled: list[FileFollower] = []
        self._by_wd: dict[int, dict[str, FileFollower]] = {}
        self._timers: list[Timer] = []
        self._draining: set[str] = set()
        self.problem = ""

    def describe(self) -> str:
        if self.inotify is not None and not self.polled:
            return "inotify"
        if self.inotify is not None:
            return "inotify+poll"
        return "poll"

    def start(self) -> None:
        if self.backend != "poll":
            self._start_inotify()
        else:
            self.polled = list(self.followers)
        if self.inotify is not None:
            self.ctx.add_reader(self.inotify.fd, self._on_inotify)
            self._timers.append(self.ctx.call_every(SAFETY_POLL, self._check_all))
        if self.polled:
            self._timers.append(self.ctx.call_every(self.poll_interval, self._poll))
        self._check_all()

    def _start_inotify(self) -> None:
        try:
            from defender_agent.linux.inotify import Inotify

            ino = Inotify()
        except Exception as exc:  # ImportError, OSError, or MemoryError from ctypes under W^X
            self.problem = f"inotify unavailable ({exc}); polling"
            log.warning("%s", self.problem)
            self.polled = list(self.followers)
            return
        self.inotify = ino
        by_dir: dict[str, int] = {}
        for follower in self.followers:
            directory = os.path.dirname(os.path.abspath(follower.path))
            wd = by_dir.get(directory)
            if wd is None:
                try:
                    wd = ino.add_watch(directory)
                except OSError as exc:
                    log.info("cannot watch %s (%s); polling %s", directory, exc, follower.path)
                    self.polled.append(follower)
                    continue
                by_dir[directory] = wd
            self._by_wd.setdefault(wd, {})[os.path.basename(follower.path)] = follower

    def _on_inotify(self) -> None:
        from defender_agent.linux import inotify as ino_mod

        assert self.inotify is not None
        due: dict[int, FileFollower] = {}
        for event in self.inotify.read():
            if event.mask & ino_mod.IN_Q_OVERFLOW:
                self._check_all()
                return
            if event.mask & ino_mod.IN_IGNORED:
                # The directory itself went away: fall back to polling its files.
                lost = self._by_wd.pop(event.wd, {})
                if lost:
                    self.polled.extend(lost.values())
                    self._timers.append(self.ctx.call_every(self.poll_interval, self._poll))
                continue
            follower = self._by_wd.get(event.wd, {}).get(event.name)
            if follower is not None:
                due[id(follower)] = follower
        for follower in due.values():
            self._check(follower)

    def _check(self, follower: FileFollower) -> None:
        if follower.check():
            self.ctx.call_later(0.0, lambda: self._check(follower))
        elif follower.retired and follower.path not in self._draining:
            # a rotated-away file is not watched by name: look at it until it is closed
            self._draining.add(follower.path)
            self.ctx.call_later(RETIRED_POLL, lambda: self._recheck(follower))

    def _recheck(self, follower: FileFollower) -> None:
        self._draining.discard(follower.path)
        self._check(follower)

    def _check_all(self) -> None:
        for follower in self.followers:
            self._check(follower)

    def _poll(self) -> None:
        for follower in self.polled:
            self._check(follower)

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.inotify is not None:
            self.ctx.remove_reader(self.inotify.fd)
            self.inotify.close()
            self.inotify = None
        for follower in self.followers:
            follower.close()
