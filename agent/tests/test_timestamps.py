"""Source timestamps and syslog framing: every record is dated from what its source wrote.

Each case is a real line form with the epoch it must give. Zones are POSIX TZ strings
(no tzdata needed): the device's zone is whatever TZ / /etc/localtime say to libc.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defender_agent.collectors.common import syslog, timestamps

CET = "CET-1CEST,M3.5.0,M10.5.0/3"  # Central Europe: UTC+1, summer UTC+2


def _in_zone(monkeypatch: pytest.MonkeyPatch, tz: str) -> Iterator[None]:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from _in_zone(monkeypatch, CET)


@pytest.fixture
def utc_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from _in_zone(monkeypatch, "UTC0")


def utc(*fields: int) -> float:
    return timestamps.utc(*fields)


def test_days_from_civil_matches_gmtime() -> None:
    for epoch in (0, 951782400, 1709164800, 1764547200, 4102444800, -86400 * 365):
        tm = time.gmtime(epoch)
        assert timestamps.utc(tm.tm_year, tm.tm_mon, tm.tm_mday, 0, 0, 0) == epoch - epoch % 86400


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-12-02T01:14:04.832485+00:00", utc(2026, 12, 2, 1, 14, 4) + 0.832485),
        ("2019-07-08T17:40:16-04:00", utc(2019, 7, 8, 21, 40, 16)),
        ("2026-11-27T08:00:00Z", utc(2026, 11, 27, 8, 0, 0)),
        ("2026-11-27 08:00:00.5+0530", utc(2026, 11, 27, 2, 30, 0) + 0.5),
        ("2026-11-27T08:00:00+01", utc(2026, 11, 27, 7, 0, 0)),
        ("2016-12-31T23:59:60Z", utc(2017, 1, 1, 0, 0, 0)),  # a leap second
    ],
)
def test_rfc3339_with_a_zone(stamp: str, expected: float) -> None:
    assert timestamps.iso(stamp) == pytest.approx(expected, abs=1e-6)


@pytest.mark.usefixtures("zone")
def test_iso_without_a_zone_is_local_time() -> None:
    assert timestamps.iso("2026-01-15T12:00:00") == utc(2026, 1, 15, 11, 0, 0)  # CET
    assert timestamps.iso("2026-07-15T12:00:00.25") == utc(2026, 7, 15, 10, 0, 0) + 0.25  # CEST


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:00+25:00",
        "2026-01-01",
        "yesterday",
    ],
)
def test_impossible_times_are_none(stamp: str) -> None:
    assert timestamps.iso(stamp) is None


@pytest.mark.usefixtures("zone")
def test_bsd_stamp_is_local_time_in_the_current_year() -> None:
    now = utc(2026, 12, 2, 12, 0, 0)
    assert timestamps.bsd("Dec", 2, "01:14:04", None, now) == utc(2026, 12, 2, 0, 14, 4)
    assert timestamps.bsd("Jul", 10, "06:55:46", ".5", now) == utc(2026, 7, 10, 4, 55, 46) + 0.5


@pytest.mark.usefixtures("utc_zone")
def test_bsd_stamp_from_the_future_is_last_years() -> None:
    now = utc(2026, 3, 1, 0, 0, 0)
    assert timestamps.bsd("Dec", 10, "06:55:46", None, now) == utc(2025, 12, 10, 6, 55, 46)
    # a syslog host a little ahead of the agent (within FUTURE_SLACK) stays in this year
    assert timestamps.bsd("Mar", 1, "00:05:00", None, now) == utc(2026, 3, 1, 0, 5, 0)


@pytest.mark.usefixtures("utc_zone")
def test_bsd_stamps_around_new_year() -> None:
    just_after = utc(2027, 1, 1, 0, 0, 1)
    assert timestamps.bsd("Dec", 31, "23:59:59", None, just_after) == utc(2026, 12, 31, 23, 59, 59)
    just_before = utc(2026, 12, 31, 23, 59, 59)  # the writer's clock is already in 2027
    assert timestamps.bsd("Jan", 1, "00:00:05", None, just_before) == utc(2027, 1, 1, 0, 0, 5)


@pytest.mark.usefixtures("utc_zone")
def test_bsd_feb_29_goes_to_the_last_leap_year() -> None:
    assert timestamps.bsd("Feb", 29, "10:00:00", None, utc(2026, 6, 1, 0, 0, 0)) == utc(
        2024, 2, 29, 10, 0, 0
    )
    assert timestamps.bsd("Foo", 1, "10:00:00", None, 0.0) is None
    assert timestamps.bsd("Jan", 32, "10:00:00", None, 0.0) is None


def test_utmp_time() -> None:
    assert timestamps.utmp(1764547200, 250000) == 1764547200.25
    assert timestamps.utmp(0, 0) is None


NOW = utc(2026, 12, 2, 12, 0, 0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # rsyslog, Debian 12 default (RFC 3339, microseconds)
        (
            "2026-12-02T01:14:04.832485+00:00 device1 sshd[339]: Accepted publickey",
            (utc(2026, 12, 2, 1, 14, 4) + 0.832485, "device1", "sshd", 339, "Accepted publickey"),
        ),
        # busybox syslogd / older rsyslog: BSD, day padded with a space
        (
            "Dec  2 01:14:04 device1 sshd[339]: msg",
            (utc(2026, 12, 2, 1, 14, 4), "device1", "sshd", 339, "msg"),
        ),
        # unpadded day
        (
            "Dec 2 01:14:04 device1 sshd[339]: msg",
            (utc(2026, 12, 2, 1, 14, 4), "device1", "sshd", 339, "msg"),
        ),
        # busybox with facility.level after the host; no pid
        (
            "Dec 10 06:55:46 gw authpriv.info dropbear: msg",
            (utc(2026, 12, 10, 6, 55, 46) - 366 * 86400 + 86400, "gw", "dropbear", None, "msg"),
        ),
        # a forwarder that kept <PRI>
        (
            "<38>Dec  2 01:14:04 gw sshd[1]: msg",
            (utc(2026, 12, 2, 1, 14, 4), "gw", "sshd", 1, "msg"),
        ),
        # RFC 5424, the example from the issue
        (
            "<38>1 2019-07-08T17:40:16-04:00 host sshd 57915 - - Failed password",
            (utc(2019, 7, 8, 21, 40, 16), "host", "sshd", 57915, "Failed password"),
        ),
        # RFC 5424 with structured data (an escaped ]), a BOM, nil host and procid
        (
            '<86>1 2026-12-02T01:14:04Z - sshd - ID47 [a@1 x="q\\]r"][b@2] \ufeffhello',
            (utc(2026, 12, 2, 1, 14, 4), None, "sshd", None, "hello"),
        ),
        # RFC 5424 with no timestamp: dated when observed
        ("<38>1 - gw sshd 7 - - msg", (None, "gw", "sshd", 7, "msg")),
    ],
)
@pytest.mark.usefixtures("utc_zone")
def test_syslog_framing(line: str, expected: tuple[object, ...]) -> None:
    got = syslog.parse(line, NOW)
    assert got is not None
    assert got.time == (pytest.approx(expected[0]) if expected[0] is not None else None)
    assert tuple(got)[1:] == expected[1:]


@pytest.mark.parametrize(
    "line",
    [
        "not syslog at all",
        "<38>1 2019-07-08T17:40:16Z host app 1 - [unterminated sd msg",
        "<38>1 2019-07-08T17:40:16Z host app 1 - [a@1]x glued",
        "<38>1 2019-07-08T17:40:16Z host app 1 - neither-nil-nor-sd msg",
    ],
)
def test_not_syslog(line: str) -> None:
    assert syslog.parse(line, NOW) is None


def test_unreadable_stamp_keeps_the_line_without_a_time() -> None:
    got = syslog.parse("2026-02-30T01:00:00Z gw sshd[1]: msg", NOW)
    assert got is not None and got.time is None and got.message == "msg"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_line_never_raises(text: str) -> None:
    syslog.parse(text, NOW)
    syslog.parse("<13>1 " + text, NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]"\\= ab@1', max_size=80))
def test_structured_data_scan_is_total(text: str) -> None:
    end = syslog.structured_data_end("[" + text)
    assert end == -1 or 1 <= end <= len(text) + 1
