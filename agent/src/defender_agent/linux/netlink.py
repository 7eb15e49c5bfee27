"""Netlink sockets: the opening and the receive buffer every kernel interface here shares.

The event sources (cn_proc: the process connector, conntrack: ctnetlink) bind to a
multicast group and keep their socket; the requests (conntrack's probe, inet_diag) open
one, ask and close it. All of them are non-blocking: the kernel answers a request inside
send() and queues an event before anyone reads it, so an empty queue is an answer, never
a reason to wait. The socket comes from the C module `_socket`, not `socket`: socket.py
builds enums at import, which costs ~1.5 MiB of RSS for the agent's whole life.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

AF_NETLINK = 16
SOL_SOCKET = 1
SO_RCVBUF, SO_RCVBUFFORCE = 8, 33


class StepError(OSError):
    """Opening a socket failed; `step` says where: socket, bind, or the caller's own."""

    def __init__(self, step: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror)
        self.step = step


def open_socket(kind: int, protocol: int, groups: int | None = None) -> Any:
    """A non-blocking AF_NETLINK socket, bound to the multicast `groups` when given (a
    request needs no bind: the kernel gives it a port id at the first send). StepError
    from the step that failed; nothing is left open then."""
    import _socket

    try:
        sock = _socket.socket(AF_NETLINK, kind, protocol)
    except OSError as exc:
        raise StepError("socket", exc) from None
    if groups is not None:
        try:
            sock.bind((0, groups))
        except OSError as exc:
            sock.close()
            raise StepError("bind", exc) from None
    sock.setblocking(False)
    return sock


def grow_buffer(sock: Any, size: int) -> int:
    """Room for a burst of events while the agent waits for a CPU: SO_RCVBUFFORCE
    (CAP_NET_ADMIN) past net.core.rmem_max, else SO_RCVBUF up to it. The bytes the
    kernel then allows (it doubles the request for its bookkeeping); 0 when unknown."""
    for option in (SO_RCVBUFFORCE, SO_RCVBUF):
        try:
            sock.setsockopt(SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    try:
        return int(sock.getsockopt(SOL_SOCKET, SO_RCVBUF))
    except OSError:
        return 0
