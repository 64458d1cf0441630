"""FHIR ``dateTime`` / ``instant`` / ``date`` strings to UTC instants.

Rules (``DESIGN.md``, "Time and clinical conventions"):

- A value with a time and a zone (``2020-03-01T16:00:26+01:00``, ``...Z``) is
  converted to UTC; its offset is kept in minutes.
- A value with a time but no zone is invalid FHIR; it is accepted only when the
  caller states the site's UTC offset, and is then read as site local time.
- A date without time (``2020-03-01``) is placed at 12:00 site local time, so
  that its calendar day survives any offset up to +-12 h; it too needs the
  site's offset.
- A year or year-month alone (``2020``, ``2020-03``) cannot place an
  observation on a study day and is rejected.

- An instant outside the years 1900 to 2199 (in UTC) is invalid
  (:data:`cartwin.io._checks.YEAR_RANGE`): ``0001-01-01T00:00:00+14:00`` and
  ``9999-12-31T23:59:59-14:00`` are placeholders or typos, and do not even
  have a UTC equivalent in Python's calendar.

Fractional seconds beyond microseconds are truncated.
"""

from __future__ import annotations

import datetime as dt
import re

from cartwin.io._checks import instant_finding

_UTC = dt.UTC
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
_ZONELESS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


class TimeProblem(ValueError):
    """A time string that cannot be placed; ``code`` is a stable problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_zoneless(text: object) -> bool:
    """Whether ``text`` is a date-time with a time of day but no zone."""
    return isinstance(text, str) and _ZONELESS.match(text) is not None


def parse_instant(
    text: str, site_utc_offset_min: int | None
) -> tuple[dt.datetime, int]:
    """Return ``(instant in UTC, source offset in minutes)`` for a FHIR time.

    Parameters
    ----------
    text : str
        FHIR ``dateTime``, ``instant`` or ``date``.
    site_utc_offset_min : int or None
        UTC offset of the site in minutes (e.g. 60 for CET), used for values
        without a zone; ``None`` makes such values an error.

    Raises
    ------
    TimeProblem
        ``timestamp-no-zone``, ``timestamp-imprecise`` or ``timestamp-invalid``.
    """
    if not isinstance(text, str):
        raise TimeProblem("timestamp-invalid", "is not a string")
    if "T" in text:
        return _parse_datetime(text, site_utc_offset_min)
    return _parse_date(text, site_utc_offset_min)


def site_zone(site_utc_offset_min: int) -> dt.timezone:
    """The fixed-offset zone of the site."""
    return dt.timezone(dt.timedelta(minutes=site_utc_offset_min))


def _parse_datetime(text: str, site: int | None) -> tuple[dt.datetime, int]:
    try:
        if "." in text:
            text = _LONG_FRACTION.sub(r"\1", text)
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeProblem("timestamp-invalid", "is not a FHIR dateTime") from None
    if value.tzinfo is None:
        if site is None:
            raise TimeProblem(
                "timestamp-no-zone",
                "has a time but no UTC offset; add the zone or pass "
                "site_utc_offset_min",
            )
        value = value.replace(tzinfo=site_zone(site))
    offset = value.utcoffset()
    return _to_utc(value), int(offset.total_seconds() // 60)


def _to_utc(local: dt.datetime) -> dt.datetime:
    """``local`` in UTC; ``timestamp-invalid`` outside the accepted years."""
    try:
        instant = local.astimezone(_UTC)
    except OverflowError:
        instant = None
    finding = instant_finding(instant or local)
    if instant is None or finding is not None:
        message = finding.message if finding else "has no UTC equivalent"
        raise TimeProblem("timestamp-invalid", message)
    return instant


def _parse_date(text: str, site: int | None) -> tuple[dt.datetime, int]:
    match = _DATE.match(text)
    if match is None:
        raise TimeProblem("timestamp-invalid", "is not a FHIR date or dateTime")
    if match.group(3) is None:
        raise TimeProblem(
            "timestamp-imprecise", "gives only a year or month; a day is needed"
        )
    if site is None:
        raise TimeProblem(
            "timestamp-no-zone",
            "is a date without time; give the site zone (--site-utc-offset MINUTES, or site_utc_offset_min in Python) to place it at "
            "12:00 site time",
        )
    try:
        local = dt.datetime(*map(int, match.groups()), 12, tzinfo=site_zone(site))
    except ValueError:
        raise TimeProblem("timestamp-invalid", "is not a calendar date") from None
    return _to_utc(local), site


def parse_date(text: str) -> dt.date:
    """Calendar date of a FHIR ``date`` (year or year-month: first day).

    Raises
    ------
    TimeProblem
        ``timestamp-invalid`` when ``text`` is not a FHIR date.
    """
    match = _DATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise TimeProblem("timestamp-invalid", "is not a FHIR date")
    year, month, day = match.groups()
    try:
        return dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise TimeProblem("timestamp-invalid", "is not a calendar date") from None
