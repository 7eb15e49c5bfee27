"""Turn the timestamps sources write into epoch seconds, without datetime or calendar.

- BSD syslog (RFC 3164): `Dec 10 06:55:46`, day padded with a space or not, optionally
  with a fraction (`journalctl -o short-precise`). It has no year and no zone: it is local
  time in the device's zone (TZ, else /etc/localtime, as libc's mktime reads them) and
  the year is the one that puts it nearest before now; a stamp up to FUTURE_SLACK ahead
  of the clock is kept in the current year (a syslog host a little ahead, a zone
  mismatch), anything further ahead belongs to the previous year.
- ISO 8601 / RFC 3339: `2026-12-02T01:14:04.832485+00:00` (rsyslog's high-precision
  default), `Z` or an offset, `T` or a space; without a zone it is local time.

Every function returns None for a stamp it cannot read or that names no real time
(month 13, Feb 30, hour 25): the caller then dates the record with the observed time.
The patterns are anchored and linear; nothing here backtracks on hostile input.
"""

from __future__ import annotations

import re
import time

FUTURE_SLACK = 86400.0  # seconds a year-less stamp may lie ahead of the clock
_HALF_YEAR = 183 * 86400.0

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d{1,9})?(Z|z|[+-]\d\d(?::?\d\d)?)?$"
)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _valid(year: int, month: int, day: int, hour: int, minute: int, second: int) -> bool:
    if not (1 <= month <= 12 and day >= 1 and 0 <= hour <= 23 and 0 <= minute <= 59):
        return False
    if not 0 <= second <= 60:  # 60: a leap second, as RFC 3339 allows
        return False
    if month == 2 and day == 29:
        return _leap(year)
    return day <= _DAYS_IN_MONTH[month - 1]


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def utc(year: int, month: int, day: int, hour: int, minute: int, second: float) -> float:
    return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second


def local(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """Local wall time in the device's zone -> epoch (libc decides DST: tm_isdst = -1)."""
    if not _valid(year, month, day, hour, minute, second):
        return None
    try:
        return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _fraction(text: str | None) -> float:
    return float(text) if text else 0.0


def bsd(month_name: str, day: int, hms: str, fraction: str | None, now: float) -> float | None:
    """`Dec 10 06:55:46[.123]` as local time in the year that puts it nearest before now."""
    month = MONTHS.get(month_name)
    if month is None or len(hms) != 8:
        return None
    try:
        hour, minute, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
    except ValueError:
        return None
    year = time.localtime(now).tm_year
    stamp = local(year, month, day, hour, minute, second)
    if stamp is None or stamp - now > FUTURE_SLACK:
        # ahead of the clock: last year's (or Feb 29 of a year that has none: last leap)
        stamp = None
        for back in range(1, 9):
            stamp = local(year - back, month, day, hour, minute, second)
            if stamp is not None:
                break
    elif now - stamp > _HALF_YEAR:
        # far behind: just after New Year's Eve, a stamp of the year that begins
        ahead = local(year + 1, month, day, hour, minute, second)
        if ahead is not None and ahead - now <= FUTURE_SLACK:
            stamp = ahead
    if stamp is None:
        return None
    return stamp + _fraction(fraction)


_MINUTES: dict[str, float | None] = {}  # "YYYY-MM-DDTHH:MM|zone" -> epoch of that minute
_MINUTES_MAX = 64


def iso(text: str) -> float | None:
    """ISO 8601 / RFC 3339 date-time -> epoch; local time when it carries no zone.

    Lines of one log share their minutes: the epoch of a minute (and zone) is computed
    once and kept in a small table, so most stamps cost one match and two int()s.
    """
    m = _ISO.match(text)
    if m is None:
        return None
    zone = m.group(8)
    # a zoneless stamp is local time: the key holds the zone the C library uses now
    key = f"{text[:16]}|{zone or time.tzname}"
    base = _MINUTES.get(key, -1.0)
    if base == -1.0:
        base = _minute(m)
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[key] = base
    second = int(m.group(6))
    if base is None or second > 60:
        return None
    return base + second + _fraction(m.group(7))


def _minute(m: re.Match[str]) -> float | None:
    """The epoch of the stamp's minute (second 0), or None when it names no real time."""
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = 0
    zone = m.group(8)
    if zone is None:
        return local(year, month, day, hour, minute, second)
    if not _valid(year, month, day, hour, minute, second):
        return None
    offset = 0
    if zone not in ("Z", "z"):
        hours = int(zone[1:3])
        minutes = int(zone[-2:]) if len(zone) > 3 else 0
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 3600 + minutes * 60) * (1 if zone[0] == "+" else -1)
    return utc(year, month, day, hour, minute, second) - offset


def utmp(tv_sec: int, tv_usec: int) -> float | None:
    """A utmp record's ut_tv; 0 (a writer that left it unset) means no time."""
    if tv_sec <= 0:
        return None
    return tv_sec + max(0, min(tv_usec, 999999)) / 1e6
