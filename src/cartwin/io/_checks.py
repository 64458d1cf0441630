"""Checks every reader applies to what it keeps: ranges, CAR T zeros, text.

The readers (FHIR, tabular, OMOP, Phenopacket) call these helpers so that the
same value is accepted or refused whatever its format. Each check returns a
:class:`Finding` (problem code and message) or raises nothing; the reader
adds the file, resource or row, field and value.

Rules
-----
- **Values**: the plausible range of the quantity (``quantities.csv``, see
  :func:`cartwin.record.units.check_plausible`), for exact and censored
  values alike (a limit of quantification is a value too).
- **CAR T levels of 0** (``cart_flow``, ``cart_qpcr``) without a comparator
  mean "not detected", which is a censored value, not a level of 0 (a model
  on the log scale cannot use 0; ``DESIGN.md``: values below a limit of
  quantification are censored, never zeros). When the code map gives the
  assay's lower limit of quantification (``lloq``) the value is stored as
  censored below at that limit; otherwise it is the problem ``not-detected``,
  asking for the limit as ``comparator "<"``. A censored ``< 0`` is refused
  the same way. Negative CAR T levels are implausible.
- **Ages**: whole years from 0 to 120 (:data:`AGE_RANGE_YEARS`).
- **CAR T doses**: 1e5 to 1e11 cells (:data:`CELL_DOSE_RANGE`). Approved
  products give 0.2e6 to 5e6 cells/kg (tisagenlecleucel, paediatric) up to
  about 4.6e8 cells in total (idecabtagene vicleucel); 1e5 and 1e11 leave a
  factor of 100 on either side, for dose-escalation and TCR-T trials.
- **Clinical instants**: years 1900 to 2199 (:data:`YEAR_RANGE`). Dates such
  as 0001-01-01 or 9999-12-31 are placeholders or typos, and their day
  arithmetic (UTC offsets, study days) leaves the calendar.
- **Free text** kept in a record (names, displays, codes, units) passes
  :func:`clean_text`: control characters (NUL, BEL, ...) and the Unicode
  bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F,
  U+061C), which can make a display read differently from what it holds, are
  removed, white space is collapsed, and the text is cut to
  :data:`MAX_TEXT_CHARS` characters.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

from cartwin.record.units import (
    ImplausibleValueError,
    canonical_unit,
    check_plausible,
)

#: Quantities that hold CAR T levels (0 means "not detected").
CART_QUANTITIES = ("cart_flow", "cart_qpcr")
#: Plausible age in whole years.
AGE_RANGE_YEARS = (0, 120)
#: Plausible CAR T infusion dose in cells.
CELL_DOSE_RANGE = (1e5, 1e11)
#: First and last calendar year of a clinical instant.
YEAR_RANGE = (1900, 2199)
#: Longest free text kept, in characters.
MAX_TEXT_CHARS = 200
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Finding:
    """A value a reader must not keep: stable problem code and message."""

    code: str
    message: str


def value_finding(quantity: str, value: float, censored: str | None) -> Finding | None:
    """Why a canonical value (or limit) cannot be kept, or ``None``."""
    if quantity in CART_QUANTITIES and value == 0 and censored != "above":
        return _not_detected(quantity)
    try:
        check_plausible(value, quantity)
    except ImplausibleValueError as exc:
        return Finding("implausible", str(exc))
    return None


def undetected(
    quantity: str, value: float, censored: str | None, lloq: float | None
) -> tuple[float, str | None]:
    """``(value, censored)`` with an exact CAR T 0 replaced by ``< lloq``.

    Returns the input unchanged unless ``quantity`` is a CAR T level, the
    value is exactly 0 without comparator, and ``lloq`` (canonical unit) is
    known; :func:`value_finding` then refuses the zeros that remain.
    """
    if quantity in CART_QUANTITIES and value == 0 and censored is None and lloq:
        return float(lloq), "below"
    return value, censored


def _not_detected(quantity: str) -> Finding:
    unit = canonical_unit(quantity)
    return Finding(
        "not-detected",
        f"a {quantity} level of 0 means 'not detected', which cartwin stores as "
        f"censored below the assay's lower limit of quantification: send the "
        f"limit (in {unit}) with comparator '<' (FHIR valueQuantity.comparator, "
        "a '<' cell, OMOP operator_concept_id 4171756), or give it in the code "
        "map's lloq column",
    )


def age_finding(years: int) -> Finding | None:
    """Why an age in whole years is implausible, or ``None``."""
    low, high = AGE_RANGE_YEARS
    if low <= years <= high:
        return None
    return Finding(
        "implausible",
        f"gives an age of {years} years; plausible ages are {low} to {high} years",
    )


def dose_finding(cells: float) -> Finding | None:
    """Why a CAR T dose in cells is implausible, or ``None``."""
    low, high = CELL_DOSE_RANGE
    if low <= cells <= high:
        return None
    return Finding(
        "implausible",
        f"a CAR T dose of {cells:.3g} cells is outside the plausible range "
        f"{low:.0e} to {high:.0e} cells",
    )


def instant_finding(when: dt.datetime) -> Finding | None:
    """Why a UTC instant is outside the years cartwin accepts, or ``None``."""
    first, last = YEAR_RANGE
    if first <= when.year <= last:
        return None
    return Finding(
        "timestamp-invalid",
        f"is in the year {when.year}; clinical times must fall in the years "
        f"{first} to {last}",
    )


def finite_number(value) -> float | None:
    """``float(value)`` when it is a finite real number, else ``None``.

    Booleans are not numbers here; integers too large for a float give
    ``None`` instead of :class:`OverflowError`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def clean_text(text: object) -> str:
    """``text`` without control characters, white space collapsed, cut short.

    Examples
    --------
    >>> clean_text("Kym\\u202eriah\\x00  tisa-cel\\n")
    'Kymriah tisa-cel'
    """
    if text is None:
        return ""
    if isinstance(text, str) and text.isprintable() and "  " not in text:
        cleaned = text.strip()  # the common case: nothing to remove
    else:
        cleaned = _SPACE.sub(" ", _CONTROL.sub("", str(text))).strip()
    if len(cleaned) > MAX_TEXT_CHARS:
        cleaned = cleaned[: MAX_TEXT_CHARS - 1] + "\u2026"
    return cleaned

