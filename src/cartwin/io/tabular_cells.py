"""Cell values to numbers, censoring flags, instants and day offsets.

Rules
-----
- Numbers: native numbers (XLSX, Parquet) or text. Text may start with a
  censoring operator: ``<``, ``<=``, ``≤`` (below a limit of quantification,
  the value is the limit) or ``>``, ``>=``, ``≥`` (above an upper limit).
  With ``decimal = ","`` a comma is the decimal mark; thousands separators
  are refused rather than guessed (``1,000`` may be 1000 or 1.0, so the
  message asks to write the number without separators).
- Times: native date-times, dates, or text in ISO 8601
  (``2024-03-06``, ``2024-03-06 08:00``, ``2024-03-06T08:00:00+01:00``,
  ``...Z``) or in the mapping's ``date_format`` (:func:`datetime.strptime`).
  A time without zone is read in the site's zone; a date without time is
  placed at ``default_time`` site time (12:00 unless the mapping says
  otherwise, so that its calendar day survives any offset up to ±12 h).
  Without a site offset both are errors (``DESIGN.md``: a timestamp without a
  zone is an error unless the user states the site's zone).
- Times must fall in the years 1900 to 2199 once in UTC
  (:data:`cartwin.io._checks.YEAR_RANGE`); ``0001-01-01 00:30`` at +60 min
  has no UTC equivalent at all.
- Day offsets: whole numbers of days, ``-7``, ``7``, ``7.0``, ``+7``.
"""

from __future__ import annotations

import datetime as dt
import re

from cartwin.io._checks import finite_number, instant_finding

_UTC = dt.timezone.utc
_CENSORING = (
    ("<=", "below"), ("≤", "below"), ("<", "below"),
    (">=", "above"), ("≥", "above"), (">", "above"),
)  # fmt: skip
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
#: Censoring words accepted in a separate censoring column.
CENSORED_WORDS = {
    "below": "below", "<": "below", "<=": "below", "≤": "below",
    "above": "above", ">": "above", ">=": "above", "≥": "above",
}  # fmt: skip


class CellError(ValueError):
    """A cell that cannot be read; ``code`` is a stable problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def cell_text(value: object) -> str | None:
    """Text of a header, id or name cell; ``None`` when blank.

    Whole numbers lose their ``.0`` (an XLSX id ``101`` is read as ``101.0``).

    Examples
    --------
    >>> cell_text(101.0), cell_text(" D7 "), cell_text("  ")
    ('101', 'D7', None)
    """
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def parse_number(value: object, decimal_mark: str = ".") -> tuple[float, str | None]:
    """Value and censoring flag (``None``, ``"below"``, ``"above"``) of a cell.

    Raises
    ------
    CellError
        ``non-numeric`` for text that is not a (censored) number, booleans and
        dates; ``non-numeric`` for NaN and infinities too.

    Examples
    --------
    >>> parse_number("<0.5"), parse_number("1,5", ","), parse_number(3)
    ((0.5, 'below'), (1.5, None), (3.0, None))
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CellError("non-numeric", f"is a {type(value).__name__}, not a number")
    censored = None
    if isinstance(value, str):
        value, censored = _split_operator(value.strip())
        value = _text_number(value, decimal_mark)
    number = finite_number(value)
    if number is None:
        raise CellError("non-numeric", "is not a finite number")
    return number, censored


def _split_operator(text: str) -> tuple[str, str | None]:
    for operator, censored in _CENSORING:
        if text.startswith(operator):
            return text[len(operator):].strip(), censored
    return text, None


def _text_number(text: str, decimal_mark: str) -> float:
    if decimal_mark == ",":
        if "." in text:
            raise CellError("non-numeric", "has a '.' but the mapping sets "
                                           "decimal = ','")
        text = text.replace(",", ".")
    if not _NUMBER.match(text):
        raise CellError("non-numeric", f"is not a number{_comma_hint(text)}")
    return float(text)


def _comma_hint(text: str) -> str:
    if _THOUSANDS.match(text):
        plain = text.replace(",", "")
        hint = f" (a thousands separator? they are not read: write {plain}"
        if "." not in text:
            hint += f"; decimal = ',' would read it as {text.replace(',', '.')}"
        return hint + ")"
    if "," in text:
        return " (if the comma is the decimal mark, set decimal = ',' in the mapping)"
    return ""


def parse_day(value: object) -> int:
    """Whole-day offset from infusion day 0.

    Raises
    ------
    CellError
        ``day-invalid`` for anything but a whole number.
    """
    try:
        number, censored = parse_number(value)
    except CellError:
        raise CellError("day-invalid", "is not a whole number of days") from None
    if censored is not None or not number.is_integer():
        raise CellError("day-invalid", "is not a whole number of days")
    return int(number)


def parse_instant(
    value: object, site_offset_min: int | None, *,
    date_format: str | None = None, default_time: dt.time = dt.time(12),
) -> tuple[dt.datetime, int]:  # fmt: skip
    """``(instant in UTC, source offset in minutes)`` of a date or date-time cell.

    Raises
    ------
    CellError
        ``date-invalid`` when the cell is not a date; ``date-no-zone`` when it
        has no zone and no site offset is known.
    """
    if isinstance(value, str):
        value = _text_instant(value.strip(), date_format)
    if isinstance(value, dt.datetime):
        return _place(value, site_offset_min)
    if isinstance(value, dt.date):
        return place_date(value, site_offset_min, default_time)
    raise CellError("date-invalid", f"is a {type(value).__name__}, not a date "
                                    "(format the cell as a date or write ISO 8601)")


def place_date(
    day: dt.date, site_offset_min: int | None, default_time: dt.time
) -> tuple[dt.datetime, int]:
    """A calendar day at ``default_time`` site time, as a UTC instant."""
    if site_offset_min is None:
        raise CellError("date-no-zone", "is a date without time and the site's "
                                        "zone is unknown; set [time] utc_offset_min")
    zone = dt.timezone(dt.timedelta(minutes=site_offset_min))
    local = dt.datetime.combine(day, default_time, tzinfo=zone)
    return _to_utc(local), site_offset_min


def _to_utc(local: dt.datetime) -> dt.datetime:
    """``local`` in UTC; ``date-invalid`` outside the accepted years."""
    try:
        instant = local.astimezone(_UTC)
    except OverflowError:
        instant = None
    finding = instant_finding(instant or local)
    if instant is None or finding is not None:
        message = finding.message if finding else "has no UTC equivalent"
        raise CellError("date-invalid", message)
    return instant


def _text_instant(text: str, date_format: str | None) -> dt.date | dt.datetime:
    if date_format is not None:
        try:
            parsed = dt.datetime.strptime(text, date_format)
        except ValueError:
            raise CellError("date-invalid", f"does not match date_format "
                                            f"{date_format!r}") from None
        has_clock = any(f in date_format for f in ("%H", "%I", "%M", "%S", "%z"))
        return parsed if has_clock else parsed.date()
    if _ISO_DATE.match(text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise CellError("date-invalid", "is not a calendar date") from None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise CellError("date-invalid", "is not an ISO 8601 date or date-time; "
                                        "set [time] date_format for other "
                                        "spellings") from None


def _place(value: dt.datetime, site_offset_min: int | None) -> tuple[dt.datetime, int]:
    if value.tzinfo is None:
        if site_offset_min is None:
            raise CellError("date-no-zone", "has a time but no zone and the "
                                            "site's zone is unknown; set [time] "
                                            "utc_offset_min")
        value = value.replace(tzinfo=dt.timezone(dt.timedelta(minutes=site_offset_min)))
    offset = value.utcoffset()
    return _to_utc(value), int(offset.total_seconds() // 60)
