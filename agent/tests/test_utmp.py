"""utmp decoding: both glibc layouts, partial and garbage records."""

from __future__ import annotations

import struct

import pytest

from defender_agent.linux import utmp
from defender_agent.linux.utmp import UtmpRecord


def rec(**kw: object) -> UtmpRecord:
    base: dict[str, object] = {
        "type": utmp.USER_PROCESS,
        "pid": 4242,
        "line": "pts/0",
        "id": "ts/0",
        "user": "root",
        "host": "10.0.2.2",
        "session": 0,
        "tv_sec": 1_795_000_000,
        "tv_usec": 123456,
        "addr": "10.0.2.2",
    }
    base.update(kw)
    return UtmpRecord(**base)  # type: ignore[arg-type]


def test_layout_sizes_and_machine_choice() -> None:
    assert utmp.LAYOUTS["384"].size == 384
    assert utmp.LAYOUTS["400"].size == 400
    assert utmp.layout_for_machine("x86_64") == "384"
    assert utmp.layout_for_machine("armv7l") == "384"
    assert utmp.layout_for_machine("aarch64") == "400"


@pytest.mark.parametrize("layout", ["384", "400"])
def test_round_trip_ipv4_ipv6(layout: str) -> None:
    records = [
        rec(),
        rec(type=utmp.DEAD_PROCESS, user="", host="", addr=None),
        rec(user="admin", addr="2001:db8::1", host="2001:db8::1", line="ssh:notty"),
    ]
    data = b"".join(utmp.encode(r, layout) for r in records)
    decoded, garbage = utmp.decode(data, layout)
    assert garbage == 0
    assert decoded == records


def test_400_layout_field_offsets_match_glibc_aarch64() -> None:
    # Build the aarch64 record by hand at the offsets of glibc's struct utmp.
    raw = bytearray(400)
    struct.pack_into("<h", raw, 0, utmp.USER_PROCESS)
    struct.pack_into("<i", raw, 4, 77)
    raw[8:13] = b"pts/1"
    raw[44:49] = b"alice"
    raw[76:84] = b"10.0.2.2"
    struct.pack_into("<q", raw, 336, 9)  # ut_session (long)
    struct.pack_into("<qq", raw, 344, 1_795_000_000, 5)  # ut_tv (struct timeval)
    raw[360:364] = bytes([10, 0, 2, 2])  # ut_addr_v6
    (decoded,), _garbage = utmp.decode(bytes(raw), "400")
    assert (decoded.pid, decoded.user, decoded.line, decoded.session) == (77, "alice", "pts/1", 9)
    assert (decoded.tv_sec, decoded.tv_usec, decoded.addr) == (1_795_000_000, 5, "10.0.2.2")


def test_truncated_record_waits_and_garbage_is_counted() -> None:
    good = utmp.encode(rec(), "384")
    decoded, garbage = utmp.decode(good + good[:100], "384")
    assert len(decoded) == 1 and garbage == 0
    bad = bytearray(good)
    struct.pack_into("<h", bad, 0, 4711)
    decoded, garbage = utmp.decode(bytes(bad) + good, "384")
    assert len(decoded) == 1 and garbage == 1


def test_strings_with_invalid_utf8_and_no_nul() -> None:
    raw = bytearray(utmp.encode(rec(), "384"))
    raw[44:76] = b"\xff\xfe" + b"u" * 30  # ut_user full length, invalid UTF-8, no NUL
    (decoded,), _ = utmp.decode(bytes(raw), "384")
    assert decoded.user == "\ufffd\ufffd" + "u" * 30
