"""state.json: each plugin's small persistent state (follower inode/offset), written atomically."""

from __future__ import annotations

import json
import os

from defender_agent import log as _log
from defender_agent import safefs

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

log = _log.get(__name__)


class StateStore:
    """Load once at start; save on shutdown and periodically, via rename so a crash
    mid-write never leaves a half-written file."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "state.json")
        self.data: dict[str, Any] = {}
        self._last_saved = ""

    def load(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | safefs.OPEN_FLAGS)
            with os.fdopen(fd, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state %s: %s", self.path, exc)
            data = {}
        self.data = data if isinstance(data, dict) else {}
        return self.data

    def get(self, section: str, legacy: str | None = None) -> dict[str, Any]:
        """A plugin's saved state, by section (`collectors.login`); 0.1 agents keyed
        collector state by bare name, which is still read so an upgrade loses no offset."""
        value = self.data.get(section)
        if value is None and legacy is not None:
            value = self.data.get(legacy)
        return value if isinstance(value, dict) else {}

    def save(self, data: dict[str, Any]) -> bool:
        """Write if changed; return False (and log) when the disk refuses."""
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        if text == self._last_saved:
            return True
        try:
            safefs.check_dir(os.path.dirname(self.path))  # it may have been deleted
            safefs.write_atomic(self.path, text.encode())
        except OSError as exc:
            log.warning("cannot save state %s: %s", self.path, exc.strerror or exc)
            return False
        self._last_saved = text
        self.data = data
        return True
