"""JSON-lines file output with size-capped rotation and a backlog for a full disk.

Each record is one os.write() of one line (no user-space buffer), so an alert is in the
file as soon as it is raised; alerts are also fsync'ed. When the disk refuses (ENOSPC,
EROFS, ...), records wait in a bounded in-memory backlog and are retried on the next
write and on the runtime's retry timer; the problem is logged once, not per record.
"""

from __future__ import annotations

import os
from collections import deque

from defender_agent import log as _log
from defender_agent import safefs

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.model import Record
    from defender_agent.plugins import Context

log = _log.get(__name__)

BACKLOG_MAX = 1000
FILE_MODE = 0o640


class FileOutput:
    name = "file"

    def __init__(
        self,
        path: str,
        max_bytes: int = 1 << 20,
        backups: int = 3,
        backlog_max: int = BACKLOG_MAX,
        line: Callable[[Record], str] | None = None,
    ) -> None:
        self.path = path
        self._line = line  # the ECS form, when configured; else the pipeline's line
        self.needs_line = line is None
        self.max_bytes = max_bytes
        self.backups = backups
        self.fd = -1
        self.size = 0
        self.backlog: deque[tuple[bool, bytes]] = deque()
        self.backlog_max = backlog_max
        self.failing = False
        self.counts = {"written": 0, "dropped": 0, "rotations": 0, "errors": 0}

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        """Open now: a state directory that cannot be written shows in the log at once."""
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)

    def stop(self) -> None:
        if self.backlog:
            self._flush_backlog()
        self._close_fd()

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return {**self.counts, "backlog": len(self.backlog)}

    def _open(self) -> None:
        """Open (or create) the file inside a directory only the agent can change; a
        symlink planted at the path makes this fail instead of redirecting the writes."""
        safefs.check_dir(os.path.dirname(self.path) or ".")
        fd = safefs.open_append(self.path, FILE_MODE)
        self.fd, self.size = fd, os.fstat(fd).st_size

    def _rotate(self) -> None:
        if self.backups == 0:
            os.ftruncate(self.fd, 0)  # our descriptor: a path could have been swapped
            self.size = 0
            self.counts["rotations"] += 1
            return
        self._close_fd()
        for n in range(self.backups - 1, 0, -1):
            src = f"{self.path}.{n}"
            if os.path.lexists(src):
                os.replace(src, f"{self.path}.{n + 1}")  # renames entries, follows nothing
        os.replace(self.path, f"{self.path}.1")
        self.counts["rotations"] += 1
        self._open()

    def _write_line(self, data: bytes, sync: bool) -> None:
        if self.fd < 0:
            self._open()
        if self.size > 0 and self.size + len(data) > self.max_bytes:
            self._rotate()
        start = self.size
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
            if sync:
                os.fsync(self.fd)
        except OSError:
            if done:  # never leave half a line behind: readers split on newlines
                try:
                    os.ftruncate(self.fd, start)
                except OSError:
                    pass
            raise
        self.size += len(data)
        self.counts["written"] += 1

    def write(self, record: Record, line: str) -> None:
        if self._line is not None:
            line = self._line(record)
        data = (line + "\n").encode("utf-8")
        sync = record.type == "alert"
        if self.backlog and not self._flush_backlog():
            self._keep(sync, data)
            return
        try:
            self._write_line(data, sync)
        except OSError as exc:
            self._failed(exc)
            self._keep(sync, data)
            return
        self._recovered()

    def _keep(self, sync: bool, data: bytes) -> None:
        if len(self.backlog) >= self.backlog_max:
            self.backlog.popleft()  # the oldest record goes; newer alerts matter more
            self.counts["dropped"] += 1
        self.backlog.append((sync, data))

    def _flush_backlog(self) -> bool:
        while self.backlog:
            sync, data = self.backlog[0]
            try:
                self._write_line(data, sync)
            except OSError as exc:
                self._failed(exc)
                return False
            self.backlog.popleft()
        self._recovered()
        return True

    def _failed(self, exc: OSError) -> None:
        self.counts["errors"] += 1
        if not self.failing:
            self.failing = True
            log.error(
                "cannot write %s (%s); keeping up to %d records in memory",
                self.path,
                exc.strerror or exc,
                self.backlog_max,
            )
        self._close_fd()

    def _recovered(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("writing %s again", self.path)

    def retry(self) -> None:
        """Every few seconds: catch up a backlog, and notice the file (or the whole state
        directory) was removed under us, so records never go to a deleted file."""
        if self.fd >= 0 and not self._still_ours():
            log.warning("%s was removed or replaced; writing a new one", self.path)
            self.counts["reopened"] = self.counts.get("reopened", 0) + 1
            self._close_fd()
        if self.backlog:
            self._flush_backlog()
        elif self.fd < 0:
            try:
                self._open()
            except OSError as exc:
                self._failed(exc)

    def _still_ours(self) -> bool:
        try:
            st = os.lstat(self.path)
            mine = os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def reopen(self) -> None:
        """SIGHUP: an external logrotate moved the file; start a new one."""
        self._close_fd()

    def _close_fd(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> FileOutput:
    from defender_agent.outputs import ecs_formatter

    return FileOutput(
        str(section["path"]),
        int(section["max_bytes"]),
        int(section["backups"]),
        line=ecs_formatter(ctx, section),
    )


def describe(section: dict[str, Any]) -> list[str]:
    return [
        f"{section['path']}: {section['format']} JSON lines, "
        f"rotated at {section['max_bytes']} bytes, "
        f"{section['backups']} backups"
    ]
