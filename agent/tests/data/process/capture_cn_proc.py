"""Capture real process-connector datagrams for test_process.py (run as root, by hand).

    python3 agent/tests/data/process/capture_cn_proc.py > cn_proc-<kernel>-<arch>.txt

Listens to the connector, then starts a thread (a thread fork and exit) and runs
/bin/false as user and group 65534 (a fork, a gid and a uid change, an exec, an exit with
status 1), and prints the datagrams that concern this process or that child, one hex
line each after a comment naming it, and the acknowledgement of its own LISTEN first.
The agent's tests parse the file and check every field against the comment.
"""

from __future__ import annotations

import _socket
import os
import platform
import select
import struct
import subprocess
import threading

NLMSG = struct.Struct("=IHHII")
CN = struct.Struct("=IIIIHH")
EVENT = struct.Struct("=IIQ")
NAMES = {0: "ack", 1: "fork", 2: "exec", 4: "uid", 0x40: "gid", 0x80000000: "exit"}
TOKEN = 0x5EED


def main() -> None:
    sock = _socket.socket(16, 2, 11)  # AF_NETLINK, SOCK_DGRAM, NETLINK_CONNECTOR
    sock.bind((0, 1))  # CN_IDX_PROC
    body = struct.pack("=I", 1)  # PROC_CN_MCAST_LISTEN
    cn = CN.pack(1, 1, 0, TOKEN, len(body), 0) + body
    sock.send(NLMSG.pack(NLMSG.size + len(cn), 3, 0, 0, os.getpid()) + cn)
    worker = threading.Thread(target=lambda: None)
    worker.start()
    worker.join()
    child = subprocess.Popen(["/bin/false"], user=65534, group=65534, extra_groups=[])
    child.wait()
    me, pid = os.getpid(), child.pid
    print(f"# Linux {platform.release()} {platform.machine()}, native byte order")
    print(f"# capturing process {me}; child {pid} (/bin/false as 65534:65534)")
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while poller.poll(500):
        data = sock.recv(8192)
        _seq, ack = CN.unpack_from(data, NLMSG.size)[2:4]
        what, cpu = EVENT.unpack_from(data, NLMSG.size + CN.size)[:2]
        ids = struct.unpack_from("=4i", data, NLMSG.size + CN.size + EVENT.size)
        name = NAMES.get(what, hex(what))
        if what == 0 and ack != TOKEN + 1:
            continue  # another listener's acknowledgement
        if what != 0 and me not in ids[:4] and pid not in ids[:4]:
            continue  # another process
        print(f"# {name} cpu={cpu} ids={ids}")
        print(data.hex())


if __name__ == "__main__":
    main()
