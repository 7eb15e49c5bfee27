"""Decode utmp/wtmp/btmp records (glibc layout).

Source: glibc sysdeps/gnu/bits/utmp.h (struct utmp, struct exit_status) and
bits/wordsize.h (__WORDSIZE_TIME64_COMPAT32). Where that macro is 1 (x86_64, and all
32-bit ABIs: x86, ARM) ut_session and ut_tv are 32-bit, giving 384 bytes:

    short ut_type; (2 pad) pid_t ut_pid; char ut_line[32]; char ut_id[4];
    char ut_user[32]; char ut_host[256]; struct exit_status {short, short};
    int32 ut_session; struct {int32 tv_sec; int32 tv_usec} ut_tv;
    int32 ut_addr_v6[4]; char __glibc_reserved[20];

On aarch64 the macro is 0: ut_session is `long` (8 bytes, at offset 336, already
aligned) and ut_tv is `struct timeval` (two 8-byte longs), then ut_addr_v6 and the
reserved bytes end at 396, and the struct is padded to its 8-byte alignment: 400 bytes.
musl writes no utmp at all.
"""

from __future__ import annotations

import os
import struct
from collections import namedtuple

from defender_agent.linux import inet

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import NamedTuple

LAYOUTS: dict[str, struct.Struct] = {
    "384": struct.Struct("<h2xi32s4s32s256s2hiIi16s20s"),
    "400": struct.Struct("<h2xi32s4s32s256s2hqqq16s20s4x"),
}
assert LAYOUTS["384"].size == 384 and LAYOUTS["400"].size == 400

EMPTY = 0
RUN_LVL = 1
BOOT_TIME = 2
NEW_TIME = 3
OLD_TIME = 4
INIT_PROCESS = 5
LOGIN_PROCESS = 6
USER_PROCESS = 7
DEAD_PROCESS = 8
ACCOUNTING = 9


if TYPE_CHECKING:

    class UtmpRecord(NamedTuple):
        type: int
        pid: int
        line: str
        id: str
        user: str
        host: str
        session: int
        tv_sec: int
        tv_usec: int
        addr: str | None

else:
    UtmpRecord = namedtuple("UtmpRecord", "type pid line id user host session tv_sec tv_usec addr")


def layout_for_machine(machine: str | None = None) -> str:
    """'400' on aarch64, '384' everywhere else glibc writes utmp."""
    arch = machine if machine is not None else os.uname().machine
    return "400" if arch in ("aarch64", "arm64", "aarch64_be") else "384"


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _addr(raw: bytes) -> str | None:
    if not any(raw):
        return None
    if not any(raw[4:]):
        return inet.ntop4(raw[:4])
    return inet.ntop6(raw)


def decode(data: bytes, layout: str) -> tuple[list[UtmpRecord], int]:
    """Decode whole records; return them and how many were garbage (type out of range).

    A trailing partial record is ignored here; the follower only passes whole ones.
    """
    fmt = LAYOUTS[layout]
    records = []
    garbage = 0
    for fields in fmt.iter_unpack(data[: len(data) - len(data) % fmt.size]):
        ut_type, pid, line, ut_id, user, host, _term, _exit, session, sec, usec, addr = fields[:12]
        if not EMPTY <= ut_type <= ACCOUNTING:
            garbage += 1
            continue
        records.append(
            UtmpRecord(
                ut_type,
                pid,
                _text(line),
                _text(ut_id),
                _text(user),
                _text(host),
                session,
                sec,
                usec,
                _addr(addr),
            )
        )
    return records, garbage


def encode(record: UtmpRecord, layout: str) -> bytes:
    """Build a record (tests and simulators use it to write real wtmp/btmp files)."""
    addr = b"\0" * 16
    if record.addr:
        addr = inet.pton(record.addr).ljust(16, b"\0")
    return LAYOUTS[layout].pack(
        record.type,
        record.pid,
        record.line.encode(),
        record.id.encode(),
        record.user.encode(),
        record.host.encode(),
        0,
        0,
        record.session,
        record.tv_sec,
        record.tv_usec,
        addr,
        b"",
    )
