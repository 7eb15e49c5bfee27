"""The brute-force scenario against a real SSH server (paramiko's, in a thread on loopback)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest

from defender_tools.scenarios.ssh_brute_force import (
    ScenarioError,
    failed_password_attempts,
    try_password,
)


class _PasswordServer(paramiko.ServerInterface):
    def __init__(self, log: list[tuple[int, str, str]], conn: int, passwords: set[str]) -> None:
        self.log, self.conn, self.passwords = log, conn, passwords

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        self.log.append((self.conn, username, password))
        if password in self.passwords:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED


@pytest.fixture(scope="module")
def sshd() -> Iterator[tuple[int, list[tuple[int, str, str]]]]:
    """Accepts connections, records (connection number, user, password) per attempt."""
    host_key = paramiko.RSAKey.generate(2048)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    log: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def serve() -> None:
        conn = 0
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            conn += 1
            transport = paramiko.Transport(client)
            transport.add_server_key(host_key)
            transport.start_server(server=_PasswordServer(log, conn, {"right", "leaked-1"}))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], log
    stop.set()
    listener.close()


def test_each_attempt_is_a_new_connection_with_one_password(
    sshd: tuple[int, list[tuple[int, str, str]]],
) -> None:
    port, log = sshd
    log.clear()
    stamps = failed_password_attempts(port, "admin", 4)
    assert len(stamps) == 4 and stamps == sorted(stamps)
    assert [entry[1] for entry in log] == ["admin"] * 4
    connections = [entry[0] for entry in log]
    assert len(set(connections)) == 4  # one password per connection
    assert len({entry[2] for entry in log}) == 4


def test_a_correct_password_is_reported(sshd: tuple[int, list[tuple[int, str, str]]]) -> None:
    port, _log = sshd
    assert try_password(port, "operator", "right")
    assert not try_password(port, "operator", "wrong")


def test_an_accepted_guess_stops_the_scenario(
    sshd: tuple[int, list[tuple[int, str, str]]],
) -> None:
    port, _log = sshd
    with pytest.raises(ScenarioError, match="was accepted"):
        failed_password_attempts(port, "admin", 3, password_prefix="leaked-")
