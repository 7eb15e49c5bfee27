"""/proc/net/{tcp,udp,raw}{,6}, the socket tables as text, and /proc/PID/fd, their owners.

The tables are the fallback for kernels without sock_diag (linux/inet_diag.py), and the
only source of raw sockets. A line (net/ipv4/tcp_ipv4.c, udp.c, raw.c; ipv6 likewise):

    sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41321

An address is the kernel's __be32 words printed with %08X, each as the integer the CPU
reads from those four bytes: on a little-endian CPU every 4-byte group comes out
byte-reversed ("0100007F" is 127.0.0.1; an IPv6 address is four such groups), on a
big-endian one (MIPS, PowerPC) in network order. Ports are printed after ntohs, as plain
hex. For raw sockets the "port" is the IP protocol the socket receives.

Rows are the ones linux/inet_diag.py makes: (family, state, local address, local port,
remote address, remote port, uid, inode), addresses as 4 or 16 bytes in network order.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    Row = tuple[int, int, bytes, int, bytes, int, int, int]

AF_INET, AF_INET6 = 2, 10
LINE_MAX = 512  # a real line is under 200 bytes; longer ones are not the kernel's
SOCKET_LINK = "socket:["


def _address(text: str, swap: bool) -> tuple[bytes, int]:
    """Address and port of one field: on a little-endian CPU, "0100007F:1F90" is
    (b"\\x7f\\x00\\x00\\x01", 8080)."""
    hex_addr, sep, hex_port = text.partition(":")
    if not sep or len(hex_addr) not in (8, 32) or not 1 <= len(hex_port) <= 4:
        raise ValueError(text)
    raw = bytes.fromhex(hex_addr)
    port = int(hex_port, 16)
    if port < 0:
        raise ValueError(text)
    if swap:
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw, port


def parse_line(line: str, swap: bool) -> Row:
    """One table line -> a row; ValueError when it is not one."""
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        raise ValueError(line)
    laddr, lport = _address(fields[1], swap)
    raddr, rport = _address(fields[2], swap)
    if len(laddr) != len(raddr):
        raise ValueError(line)
    state = int(fields[3], 16)
    uid, inode = int(fields[7]), int(fields[9])
    if not (0 <= state <= 0xFF and 0 <= uid < 2**32 and 0 <= inode < 2**64):
        raise ValueError(line)
    family = AF_INET if len(laddr) == 4 else AF_INET6
    return (family, state, laddr, lport, raddr, rport, uid, inode)


def read_table(
    path: str, limit: int, byteorder: str = sys.byteorder
) -> tuple[list[Row], int, bool]:
    """The rows of one table: (rows, lines that did not parse, complete). Reading stops at
    `limit` rows (complete False). OSError when the file cannot be read."""
    swap = byteorder == "little"
    rows: list[Row] = []
    garbage = 0
    with open(path, encoding="ascii", errors="replace") as fh:
        fh.readline(LINE_MAX)  # the header
        while True:
            line = fh.readline(LINE_MAX)
            if not line:
                return rows, garbage, True
            if not line.endswith("\n") and len(line) == LINE_MAX:
                garbage += 1
                while line and not line.endswith("\n"):  # skip the rest of it
                    line = fh.readline(LINE_MAX)
                continue
            try:
                rows.append(parse_line(line, swap))
            except ValueError:
                garbage += 1
                continue
            if len(rows) >= limit:
                return rows, garbage, False


def socket_owners(proc: str, wanted: set[int], max_fds: int) -> tuple[dict[int, int], int, bool]:
    """Which process holds each socket inode of `wanted`: ({inode: pid}, descriptors
    examined, complete).

    Every /proc/PID/fd link to "socket:[INODE]" is read, lowest pid first (a socket shared
    after fork is credited to the parent, usually), until all are found or `max_fds`
    descriptors were examined (complete False). Another user's /proc/PID/fd takes
    CAP_DAC_READ_SEARCH to open (mode 0500) and CAP_SYS_PTRACE to read its links; a
    process that exits mid-scan or cannot be read is skipped.
    """
    found: dict[int, int] = {}
    examined = 0
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return found, examined, False
    for pid in pids:
        try:
            dir_fd = os.open(f"{proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            examined += _scan_fds(dir_fd, pid, wanted, found, max_fds - examined)
        except OSError:  # the process exited between open and listdir
            pass
        finally:
            os.close(dir_fd)
        if len(found) == len(wanted):
            return found, examined, True
        if examined >= max_fds:
            return found, examined, False
    return found, examined, True


def _scan_fds(dir_fd: int, pid: int, wanted: set[int], found: dict[int, int], budget: int) -> int:
    """Read the links of one /proc/PID/fd (relative to its descriptor: no path walk per
    link); returns how many were examined."""
    names = os.listdir(dir_fd)[: max(budget, 0)]
    for name in names:
        try:
            link = os.readlink(name, dir_fd=dir_fd)
        except OSError:  # closed since listdir
            continue
        if link.startswith(SOCKET_LINK) and link.endswith("]"):
            try:
                inode = int(link[len(SOCKET_LINK) : -1])
            except ValueError:
                continue
            if inode in wanted and inode not in found:
                found[inode] = pid
    return len(names)


def executable(proc: str, pid: int) -> str | None:
    """/proc/PID/exe: the program's path (ending in " (deleted)" when its file is gone),
    None for kernel threads, exited processes and, without CAP_SYS_PTRACE, other users'."""
    try:
        path = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None
    # bytes that are not UTF-8 (os.readlink keeps them as surrogates) must not reach JSON
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
