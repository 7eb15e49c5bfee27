"""Load for the agent, run inside a guest by `defender-tools bench guest-load`.

Standard library only (the guest's python3), so it is copied in as it is:

    python3 storm.py exec RATE SECONDS PROGRAM ARGV0 [ARG...]
        posix_spawn PROGRAM (named ARGV0 in its argv) at RATE per second for SECONDS,
        reaping as they end
    python3 storm.py connect RATE SECONDS HOST PORT
        open and close a TCP connection to HOST:PORT at RATE per second for SECONDS

Paced against the monotonic clock: a slow moment is caught up, not lost, so the count is
what the guest could do. Prints one JSON line: what was started and the achieved rate.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


def exec_storm(rate: float, seconds: float, argv: list[str]) -> dict[str, float]:
    children: set[int] = set()
    started = failed = 0
    begin = time.monotonic()
    while (now := time.monotonic() - begin) < seconds:
        while started + failed < int(now * rate):
            try:
                children.add(os.posix_spawn(argv[0], argv[1:], os.environ))
                started += 1
            except OSError:
                failed += 1
        _reap(children)
        time.sleep(0.002)
    elapsed = time.monotonic() - begin
    while children:
        pid, _status = os.waitpid(-1, 0)
        children.discard(pid)
    return {"started": started, "failed": failed, "seconds": round(elapsed, 2)}


def connect_storm(rate: float, seconds: float, host: str, port: int) -> dict[str, float]:
    started = failed = 0
    begin = time.monotonic()
    while (now := time.monotonic() - begin) < seconds:
        while started + failed < int(now * rate):
            try:
                with socket.create_connection((host, port), timeout=2):
                    started += 1
            except OSError:
                failed += 1
        time.sleep(0.002)
    return {"started": started, "failed": failed, "seconds": round(time.monotonic() - begin, 2)}


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] not in ("exec", "connect"):
        print(__doc__, file=sys.stderr)
        return 2
    rate, seconds = float(argv[1]), float(argv[2])
    if argv[0] == "exec":
        result = exec_storm(rate, seconds, argv[3:])
    else:
        result = connect_storm(rate, seconds, argv[3], int(argv[4]))
    result["rate"] = round(result["started"] / result["seconds"], 1) if result["seconds"] else 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
