"""storm.py, the load `bench guest-load` runs in a guest, run here on the host."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

from defender_tools import storm


def run(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, storm.__file__, *args], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_an_exec_storm_starts_programs_with_the_argv0_it_is_given() -> None:
    result = run("exec", "50", "1", "/bin/true", "dfn-storm")
    assert result["failed"] == {}
    assert isinstance(result["started"], int) and 0 < result["started"] <= 50


def test_failed_starts_are_counted_by_errno_not_retried() -> None:
    result = run("exec", "20", "1", "/nonexistent/program", "x")
    assert result["started"] == 0
    failed = result["failed"]
    assert isinstance(failed, dict) and set(failed) == {"ENOENT"} and 0 < failed["ENOENT"] <= 20


def test_a_connection_storm_against_a_local_listener() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        result = run("connect", "50", "1", "127.0.0.1", str(server.getsockname()[1]))
    finally:
        server.close()
    assert result["failed"] == {}
    assert isinstance(result["started"], int) and 0 < result["started"] <= 50


def test_usage() -> None:
    done = subprocess.run([sys.executable, storm.__file__, "bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "storm.py exec" in done.stderr
