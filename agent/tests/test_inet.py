"""The pure-Python address text helper agrees with the C library (socket.inet_ntop/pton)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from defender_agent.linux import inet

V4 = st.binary(min_size=4, max_size=4)
# mostly-zero words exercise "::" placement, IPv4-compatible and IPv4-mapped forms
WORD = st.one_of(st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF))
V6 = st.one_of(
    st.binary(min_size=16, max_size=16),
    st.lists(WORD, min_size=8, max_size=8).map(
        lambda ws: b"".join(w.to_bytes(2, "big") for w in ws)
    ),
)


@settings(max_examples=500)
@given(V4)
def test_ipv4_matches_socket(raw: bytes) -> None:
    text = inet.ntop4(raw)
    assert text == socket.inet_ntop(socket.AF_INET, raw)
    assert inet.pton4(text) == socket.inet_pton(socket.AF_INET, text) == raw


@settings(max_examples=1000)
@given(V6)
@example(bytes(16))
@example(bytes(15) + b"\1")
@example(bytes(10) + b"\xff\xff" + bytes(4))
@example(bytes(10) + b"\xff\xff\x0a\x00\x02\x02")
@example(bytes(12) + b"\x0a\x00\x02\x02")
@example(bytes(8) + b"\0\1" + bytes(6))
@example(b"\x20\x01\x0d\xb8" + bytes(12))
def test_ipv6_matches_socket(raw: bytes) -> None:
    text = inet.ntop6(raw)
    assert text == socket.inet_ntop(socket.AF_INET6, raw)
    assert inet.pton6(text) == socket.inet_pton(socket.AF_INET6, text) == raw
    # the uncompressed, upper-case spelling parses to the same bytes
    full = ":".join(f"{raw[i] << 8 | raw[i + 1]:04X}" for i in range(0, 16, 2))
    assert inet.pton(full) == socket.inet_pton(socket.AF_INET6, full) == raw


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "256.1.1.1",
        "1..2.3",
        "a.b.c.d",
        ":",
        ":::",
        "1::2::3",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "1::2:3:4:5:6:7:8",
        ":1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:",
        "12345::",
        "g::",
        "1.2.3.4::",
        "::1.2.3",
        "1:2:3:4:5:6:7:1.2.3.4",
    ],
)
def test_rejects_what_the_c_library_rejects(text: str) -> None:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    with pytest.raises(OSError):
        socket.inet_pton(family, text)
    with pytest.raises(ValueError):
        inet.pton(text)


@pytest.mark.parametrize("raw", [b"", b"\1\2\3", bytes(5)])
def test_ntop_rejects_wrong_lengths(raw: bytes) -> None:
    with pytest.raises(ValueError):
        inet.ntop4(raw)
    with pytest.raises(ValueError):
        inet.ntop6(raw)
