"""relay.py, the program QEMU runs per guest-forward connection: bytes both ways between
its standard input/output (the guest's connection) and a TCP collector on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from defender_tools import qemuboot, relay

RELAY = Path(relay.__file__)


def test_bytes_go_both_ways_until_the_guest_closes() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got: list[bytes] = []

    def collector() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello guest")
            while data := conn.recv(4096):
                got.append(data)

    thread = threading.Thread(target=collector)
    thread.start()
    guest, qemu_side = socket.socketpair()
    with guest, qemu_side, server:
        proc = subprocess.Popen(
            [sys.executable, str(RELAY), "127.0.0.1", str(port)],
            stdin=qemu_side.fileno(),
            stdout=qemu_side.fileno(),
        )
        guest.sendall(b"<14>1 " + b"x" * 200_000)  # more than one chunk and pipe buffer
        assert guest.recv(64) == b"hello guest"
        guest.shutdown(socket.SHUT_WR)
        assert proc.wait(timeout=10) == 0
        thread.join(timeout=10)
    assert b"".join(got) == b"<14>1 " + b"x" * 200_000


def test_a_collector_that_is_not_there_closes_the_guest_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        guest, qemu_side = socket.socketpair()
        with guest, qemu_side:
            res = subprocess.run(
                [sys.executable, str(RELAY), "127.0.0.1", str(port)],
                stdin=qemu_side.fileno(),
                stdout=qemu_side.fileno(),
                stderr=subprocess.PIPE,
                text=True,
                timeout=10,
            )
    assert res.returncode == 1 and "refused" in res.stderr.lower()


def test_guest_forwards_in_the_netdev() -> None:
    arg = qemuboot.netdev_arg(2222, [("10.0.2.100", 514, 40514)])
    assert arg.startswith("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,")
    assert arg.endswith(
        f",guestfwd=tcp:10.0.2.100:514-cmd:{sys.executable} {RELAY} 127.0.0.1 40514"
    )
    assert qemuboot.netdev_arg(2222) == "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"
