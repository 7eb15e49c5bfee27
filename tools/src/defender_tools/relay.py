"""A byte relay QEMU runs for each guest connection to a guest forward.

`guestfwd=tcp:GUEST_ADDR:GUEST_PORT-cmd:python3 relay.py HOST PORT` in the user network
makes QEMU (libslirp) start this program for every TCP connection the guest opens to
GUEST_ADDR:GUEST_PORT, with that connection as its standard input and output. It opens a
TCP connection to HOST:PORT (a collector on the host's loopback) and copies bytes both
ways until either side closes. A collector that is not listening closes the guest's
connection at once, as a refused connect would. The guest reaches nothing else: the
network stays `restrict=on`.

Standard library only, no threads: poll(2) on the two descriptors.
"""

from __future__ import annotations

import os
import select
import socket
import sys

CHUNK = 65536


def relay(guest_in: int, guest_out: int, host: str, port: int) -> int:
    try:
        peer = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        print(f"relay: {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    peer.settimeout(None)
    poller = select.poll()
    poller.register(guest_in, select.POLLIN)
    poller.register(peer.fileno(), select.POLLIN)
    with peer:
        while True:
            for fd, _events in poller.poll():
                data = os.read(fd, CHUNK) if fd == guest_in else peer.recv(CHUNK)
                if not data:
                    return 0
                if fd == guest_in:
                    peer.sendall(data)
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(guest_out, view) :]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: relay.py HOST PORT", file=sys.stderr)
        return 2
    return relay(0, 1, argv[1], int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
