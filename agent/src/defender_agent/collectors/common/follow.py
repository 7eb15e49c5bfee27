"""Follow growing files (syslog text or fixed-size utmp records) across rotation.

A follower keeps (inode, offset) of the last fully consumed byte, so a restart resumes
exactly where it stopped: nothing lost, nothing read twice. A `Watcher` tells followers
when to look: inotify on the parent directory (sees modify, create and rename), or stat
polling on a timer where inotify is missing.
"""

from __future__ import annotations

import os

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


class FileFollower:
    """Deliver complete units of one file: text lines (record_size 0) or records."""

    def __init__(
        self,
        path: str,
        on_lines: Callable[[list[str]], None] | None = None,
        on_records: Callable[[bytes], None] | None = None,
        record_size: int = 0,
        max_line: int = MAX_LINE,
    ) -> None:
        self.path = path
        self.on_lines = on_lines
        self.on_records = on_records
        self.record_size = record_size
        self.max_line = max_line
        self.fd = -1
        self.inode = 0
        self.offset = 0
        self.counts: dict[str, int] = {}
        self._discarding = False
        self._start_at_end = True
        self._saved: dict[str, Any] | None = None

    # --- state --------------------------------------------------------------------
    def restore(self, saved: dict[str, Any] | None) -> None:
        """Use saved {inode, offset} at the first open; no state = start at the end."""
        inode, offset = (saved.get("inode"), saved.get("offset")) if saved else (None, None)
        if isinstance(inode, int) and isinstance(offset, int) and offset >= 0:
            self._saved = saved
        self._start_at_end = self._saved is None

    def position(self) -> dict[str, Any] | None:
        if self.fd < 0:
            return dict(self._saved) if self._saved else None
        return {"inode": self.inode, "offset": self.offset}

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def _count(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    # --- opening ------------------------------------------------------------------
    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            # Appears later: everything in it will be new, so read it from the start.
            self._start_at_end = False
            self._saved = None
            return False
        except OSError as exc:
            self._count("open-error")
            log.debug("cannot open %s: %s", self.path, exc)
            return False
        st = os.fstat(fd)
        self.fd, self.inode = fd, st.st_ino
        saved, self._saved = self._saved, None
        if saved is not None and saved["inode"] == st.st_ino:
            self.offset = saved["offset"] if saved["offset"] <= st.st_size else 0
        elif saved is not None or not self._start_at_end:
            self.offset = 0  # rotated while we were away, or created after we started
        else:
            self.offset = st.st_size
            if self.record_size:
                self.offset -= self.offset % self.record_size
        self._start_at_end = False
        self._discarding = False
        log.debug("following %s (inode %d) from %d", self.path, self.inode, self.offset)
        return True

    def close(self) -> None:
        """Close, remembering the position so position() still reports it."""
        if self.fd >= 0:
            self._saved = {"inode": self.inode, "offset": self.offset}
            os.close(self.fd)
            self.fd = -1

    # --- reading ------------------------------------------------------------------
    def check(self) -> bool:
        """Read what is new; handle truncation and rotation. True = more left to read."""
        if self.fd < 0 and not self._open():
            return False
        if self._read_available():
            return True
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away and not re-created yet: keep the old fd
        except OSError:
            return False
        if st.st_ino != self.inode:
            # Rotated: the old fd is drained to EOF; flush a final unterminated line.
            self._flush_tail()
            self.close()
            self._start_at_end = False
            self._count("rotations")
            if self._open():
                return self._read_available()
        return False

    def _read_available(self) -> bool:
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            return False
        if size < self.offset:
            log.info("%s was truncated; reading it from the start", self.path)
            self._count("truncations")
            self.offset = 0
            self._discarding = False
        budget = MAX_READ_PER_CHECK
        while budget > 0 and self.offset < size:
            try:
                chunk = os.pread(self.fd, CHUNK, self.offset)
            except OSError as exc:
                self._count("read-error")
                log.debug("read %s: %s", self.path, exc)
                return False
            if not chunk:
                return False
            budget -= len(chunk)
            consumed = self._consume(chunk)
            if consumed == 0:
                return False  # only a partial unit so far: wait for the writer
            self.offset += consumed
        return budget <= 0 and self.offset < size

    def _consume(self, chunk: bytes) -> int:
        if self.record_size:
            n = len(chunk) - len(chunk) % self.record_size
            if n and self.on_records is not None:
                self.on_records(chunk[:n])
            return n
        start = 0
        if self._discarding:
            nl = chunk.find(b"\n")
            if nl < 0:
                return len(chunk)
            self._discarding = False
            start = nl + 1
        last = chunk.rfind(b"\n")
        if last < start:
            if len(chunk) - start >= self.max_line:
                self._deliver([chunk[start : start + self.max_line]])
                self._count("truncated-lines")
                self._discarding = True
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

    def _flush_tail(self) -> None:
        if self.record_size or self.fd < 0:
            return
        try:
            tail = os.pread(self.fd, self.max_line, self.offset)
        except OSError:
            return
        if tail and not self._discarding:
            self._deliver([tail.rstrip(b"\n")])
        self.offset += len(tail)


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
