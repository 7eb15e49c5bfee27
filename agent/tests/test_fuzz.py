"""Every parser of outside input, fuzzed: none may raise anything but its documented error.

Inputs come from the kernel, from files others write and from the configuration. The
examples per target are bounded for `make test` (conftest.py's `fuzz` profile); run longer on
demand with DEFENDER_FUZZ_EXAMPLES=20000 pytest agent/tests/test_fuzz.py. The auth-log
line, syslog framing and timestamp targets live beside their parsers' tests
(test_authlog.py, test_timestamps.py) and follow the same budget.
"""

from __future__ import annotations

import os
import struct
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from defender_agent import config
from defender_agent.collectors import sysinfo
from defender_agent.collectors.common import authlog, syslog, timestamps
from defender_agent.linux import inet, inotify, utmp

fuzz = settings.get_profile("fuzz")  # conftest.py


@fuzz
@given(st.binary(max_size=2000), st.sampled_from(sorted(utmp.LAYOUTS)))
def test_utmp_records(data: bytes, layout: str) -> None:
    records, garbage = utmp.decode(data, layout)
    size = utmp.LAYOUTS[layout].size
    assert len(records) + garbage == len(data) // size


@fuzz
@given(
    st.lists(
        st.tuples(st.integers(-1, 2**31 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=40))
    )
)
def test_inotify_events(events: list[tuple[int, int, bytes]]) -> None:
    data = b"".join(struct.pack("iIII", wd, mask, 0, len(name)) + name for wd, mask, name in events)
    parsed = inotify.parse_events(data + b"\x01\x02")  # and a torn tail
    assert len(parsed) == len(events)


@fuzz
@given(st.binary(max_size=4), st.binary(max_size=16), st.text(max_size=60))
def test_addresses(v4: bytes, v6: bytes, text: str) -> None:
    for parse, raw, size in ((inet.ntop4, v4, 4), (inet.ntop6, v6, 16)):
        try:
            parse(raw)
        except ValueError:
            assert len(raw) != size
    try:
        inet.pton(text)
    except ValueError:
        pass


def _file(text: str) -> str:
    fd, path = tempfile.mkstemp()
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(text)
    return path


@fuzz
@given(st.text(max_size=500))
def test_proc_and_etc_files(text: str) -> None:
    path = _file(text)
    try:
        assert isinstance(sysinfo.os_release(path), dict)
        total = sysinfo.memory_total_kib(path)
        assert total is None or total >= 0
        assert isinstance(sysinfo.ipv6_addresses(path), dict)
    finally:
        os.unlink(path)


TOML_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
SECTIONS = st.sampled_from(["agent", "collectors", "detectors", "outputs", "bogus"])


@fuzz
@given(
    st.dictionaries(
        SECTIONS,
        st.dictionaries(
            st.text(max_size=12)
            | st.sampled_from(["login", "sysinfo", "brute_force", "file", "state_dir", "window"]),
            TOML_VALUE,
            max_size=4,
        ),
        max_size=4,
    )
)
def test_config_tables(data: dict[str, object]) -> None:
    try:
        config.validate(data, "fuzz.toml")
    except config.ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ") and "\n" not in str(exc)


@fuzz
@given(st.text(max_size=400), st.floats(0, 4e9))
def test_log_lines(line: str, now: float) -> None:
    authlog.parse_line(line, now)
    framed = syslog.parse("<13>1 " + line, now)
    assert framed is None or isinstance(framed.message, str)


@fuzz
@given(st.text(max_size=40), st.floats(0, 4e9))
def test_timestamps(text: str, now: float) -> None:
    timestamps.iso(text)
    timestamps.bsd(text[:3], len(text), text[:8], None, now)
