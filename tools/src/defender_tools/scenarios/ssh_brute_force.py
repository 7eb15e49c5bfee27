"""SSH password guessing from the host, the way scanners do it.

Each attempt is a NEW TCP connection with ONE password, so sshd logs one
"Failed password" line per attempt and the agent sees a realistic burst.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import paramiko

from defender_tools.errors import UserError


class ScenarioError(UserError):
    """The scenario could not run as intended (e.g. a guessed password was accepted)."""


def _transport(host: str, port: int, timeout: float) -> paramiko.Transport:
    sock = socket.create_connection((host, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.start_client(timeout=timeout)
    return transport


def try_password(
    port: int, user: str, password: str, host: str = "127.0.0.1", timeout: float = 30.0
) -> bool:
    """One connection, one password attempt; True when sshd let USER in."""
    transport = _transport(host, port, timeout)
    try:
        transport.auth_password(user, password)
        return bool(transport.is_authenticated())
    except paramiko.AuthenticationException:
        return False
    finally:
        transport.close()


def iter_failed_password_attempts(
    port: int,
    user: str,
    count: int,
    host: str = "127.0.0.1",
    password_prefix: str = "wrong-guess-",
    timeout: float = 30.0,
) -> Iterator[float]:
    """Yield the wall-clock time each of COUNT failed logins as USER was refused."""
    for attempt in range(count):
        if try_password(port, user, f"{password_prefix}{attempt}", host, timeout):
            raise ScenarioError(f"password {password_prefix}{attempt} was accepted for {user}")
        yield time.time()


def failed_password_attempts(
    port: int,
    user: str,
    count: int,
    host: str = "127.0.0.1",
    password_prefix: str = "wrong-guess-",
    timeout: float = 30.0,
) -> list[float]:
    """COUNT failed logins as USER; returns the wall-clock time each failure was answered."""
    return list(iter_failed_password_attempts(port, user, count, host, password_prefix, timeout))
