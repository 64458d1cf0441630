"""Conversion of UCUM-coded values to one canonical unit per quantity.

Every observation entering cartwin passes through :func:`to_canonical`. UCUM
strings are parsed with ``ucumvert`` into ``pint`` quantities of one private
registry; conversion between amount-of-substance and mass concentrations uses
the molar mass listed for the quantity in ``data/codes/quantities.csv``
(haemoglobin: haem monomer, 16 114.5 g/mol, so 1 mmol/L = 1.611 g/dL;
creatinine: 113.12 g/mol, so 88.4 µmol/L = 1 mg/dL). Enzyme activity in katal
converts to U/L with 1 µkat = 60 U (1 U = 1 µmol/min). Temperatures are
affine: K, Cel and [degF] convert through two points (311.15 K = 38 Cel).

Rules, stated plainly
---------------------
- Dimensionless units convert by their factor: a SpO2 of 0.96 in UCUM ``1``
  (or an annotation alone such as ``{ratio}``) is 96 %. An annotation alone is
  the number 1 in UCUM, so ``96 {%}`` reads as 9600 % and is then stopped by
  the plausibility check (:func:`check_plausible`).
- A quantity counted in points (canonical unit an annotation alone, the ICE
  score ``{score}``) accepts only unity (``1``, ``{score}``, ...); ``%`` of a
  score is refused.
- Annotations (``{copies}``, ``{cells}``) are dimensionless in UCUM but carry
  meaning. A quantity with an ``annotation`` in ``quantities.csv`` accepts a
  unit without annotation or with exactly that one (``{cell}`` = ``{cells}``,
  ``{copy}`` = ``{copies}``): CAR T cells by flow (``/uL`` means cells/µL)
  refuse ``{copies}/uL``, and qPCR copies refuse ``{cells}/ug``.
- A bare number in a unit must be a power of ten (``10``, ``100``,
  ``10*9``). UCUM reads ``10.9/L`` as 10 × 9 per litre; it is almost always a
  typo of ``10*9/L`` (10⁹/L), so it is refused rather than read as 90/L.
- Every failure is a :class:`~cartwin.errors.UnitError` whose message names
  the unit and the quantity; no exception of ``pint`` or ``ucumvert`` leaves
  this module.

Plausible ranges
----------------
Each quantity has ``min_plausible`` and ``max_plausible`` (canonical unit) in
``quantities.csv``, with a one-line justification in its ``note`` column. The
ranges are wide on purpose: they stop typing and unit errors (a temperature
of 1e300 °C, a negative CRP), never a real measurement. Negative values of
concentrations and counts are always implausible.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass
from importlib import resources

from cartwin.errors import DataError, UnitError

# UCUM spellings that ucumvert does not parse or that sites send in practice;
# each maps to a UCUM string with the same meaning.
_ALIASES = {
    "cells/uL": "{cells}/uL",
    "cells/µL": "{cells}/uL",
    "/µL": "/uL",
    "µmol/L": "umol/L",
    "µg/L": "ug/L",
    "µkat/L": "ukat/L",
    "°C": "Cel",
    "degC": "Cel",
    "°F": "[degF]",
    "degF": "[degF]",
    "mmHg": "mm[Hg]",
    "beats/min": "/min",
    "{beats}/min": "/min",
    "{breaths}/min": "/min",
    "copies/ug": "{copies}/ug",
    "copies/µg": "{copies}/ug",
    "10^9/L": "10*9/L",
    "x10E9/L": "10*9/L",
    "10*3/mm3": "10*3/uL",
    "K/uL": "10*3/uL",
    "IU/L": "U/L",
    "[iU]/L": "U/L",
    "{score}": "1",
    "{Score}": "1",
    "{points}": "1",
}
_ANNOTATION = re.compile(r"\{([^{}]*)\}")
_SAME_ANNOTATION = {"cell": "cells", "copy": "copies"}
_POWER_OF_TEN = re.compile(r"^10*$")


class ImplausibleValueError(DataError):
    """A value lies outside the plausible range of its quantity."""


@dataclass(frozen=True)
class QuantitySpec:
    """One measurable quantity and its canonical unit.

    Attributes
    ----------
    quantity : str
        cartwin's key, e.g. ``"crp"``.
    canonical_unit : str
        UCUM code every value of the quantity is stored in.
    category : str
        ``lab``, ``vital``, ``cart``, ``tumour`` or ``neuro``.
    molar_mass_g_per_mol : float or None
        Used to convert mol-based concentrations to mass concentrations.
    description : str
        Human-readable meaning.
    annotation : str
        What the quantity counts (``{cells}``, ``{copies}``), ``""`` if free.
    min_plausible, max_plausible : float
        Plausible range in the canonical unit (see the module docstring).
    note : str
        Why the range is what it is.
    """

    quantity: str
    canonical_unit: str
    category: str
    molar_mass_g_per_mol: float | None
    description: str
    annotation: str = ""
    min_plausible: float = -math.inf
    max_plausible: float = math.inf
    note: str = ""


@functools.cache
def quantity_specs() -> dict[str, QuantitySpec]:
    """Return the shipped table of quantities, keyed by quantity name."""
    text = resources.files("cartwin.data.codes").joinpath("quantities.csv")
    with text.open(encoding="utf-8") as handle:
        return {row["quantity"]: _spec(row) for row in csv.DictReader(handle)}


def _spec(row: dict[str, str]) -> QuantitySpec:
    molar = row["molar_mass_g_per_mol"]
    return QuantitySpec(
        quantity=row["quantity"],
        canonical_unit=row["canonical_unit"],
        category=row["category"],
        molar_mass_g_per_mol=float(molar) if molar else None,
        description=row["description"],
        annotation=row.get("annotation") or "",
        min_plausible=float(row.get("min_plausible") or -math.inf),
        max_plausible=float(row.get("max_plausible") or math.inf),
        note=row.get("note") or "",
    )


def canonical_unit(quantity: str) -> str:
    """Return the canonical UCUM unit of ``quantity``."""
    try:
        return quantity_specs()[quantity].canonical_unit
    except KeyError:
        raise UnitError(f"unknown quantity {quantity!r}") from None


def plausible_range(quantity: str) -> tuple[float, float]:
    """``(low, high)`` plausible values of ``quantity`` in its canonical unit.

    Examples
    --------
    >>> plausible_range("temperature")
    (25.0, 45.0)
    """
    spec = quantity_specs().get(quantity)
    if spec is None:
        raise UnitError(f"unknown quantity {quantity!r}")
    return spec.min_plausible, spec.max_plausible


def check_plausible(value: float, quantity: str) -> None:
    """Raise when ``value`` (canonical unit) is outside the plausible range.

    Raises
    ------
    ImplausibleValueError
        Naming the value, the quantity, the range and its unit; the caller
        adds the file, resource and field.

    Examples
    --------
    >>> check_plausible(38.5, "temperature")
    >>> try:
    ...     check_plausible(-5.0, "crp")
    ... except ImplausibleValueError as exc:
    ...     print(exc)
    crp = -5 mg/L is outside the plausible range 0 to 1000 mg/L
    """
    low, high = plausible_range(quantity)
    if low <= value <= high:
        return
    unit = canonical_unit(quantity)
    raise ImplausibleValueError(
        f"{quantity} = {value:g} {unit} is outside the plausible range "
        f"{low:g} to {high:g} {unit}"
    )


@functools.cache
def _ucum():
    """``(registry, parse)``: one pint registry and a UCUM parser bound to it.

    ``PintUcumRegistry.from_ucum`` builds quantities in pint's *application*
    registry, so mixing them with quantities of the registry itself fails;
    a transformer bound to our registry keeps every quantity in one.
    """
    from ucumvert import (
        PintUcumRegistry,
        UcumToPintTransformer,
        get_ucum_parser,
        parse_ucum,
    )

    ureg = PintUcumRegistry()
    transformer = UcumToPintTransformer(ureg=ureg)
    parser = get_ucum_parser()
    return ureg, lambda code: transformer.transform(parse_ucum(code, parser))


def _normalise(unit: str) -> str:
    unit = unit.strip()
    return _ALIASES.get(unit, unit)


def _parse(unit: str):
    """A pint quantity of ``unit`` (annotations count as 1)."""
    ureg, parse = _ucum()
    if unit in ("1", ""):
        return ureg.Quantity(1.0, "dimensionless")
    parsed = parse(unit)
    if isinstance(parsed, (int, float)):
        return ureg.Quantity(float(parsed), "dimensionless")
    if not hasattr(parsed, "dimensionality"):  # a bare {annotation}
        return ureg.Quantity(1.0, "dimensionless")
    return parsed


def _annotations(unit: str) -> set[str]:
    names = (a.strip().lower() for a in _ANNOTATION.findall(unit))
    return {_SAME_ANNOTATION.get(a, a) for a in names}


def _strip_annotations(unit: str) -> str:
    stripped = _ANNOTATION.sub("", unit)
    return "" if stripped == "1" else stripped


def _check_annotations(src: str, spec: QuantitySpec) -> None:
    if not spec.annotation:
        return
    extra = _annotations(src) - _annotations(spec.annotation)
    if extra:
        raise UnitError(
            f"{spec.quantity} counts {spec.annotation}, but the unit counts "
            f"{', '.join('{' + a + '}' for a in sorted(extra))}"
        )


def _check_factors(src: str) -> None:
    """Refuse bare numbers that are not powers of ten (``10.9/L``)."""
    parts = re.split(r"[./()]", _ANNOTATION.sub("", src))
    for part in parts:
        if part.isdigit() and not _POWER_OF_TEN.match(part):
            raise UnitError(
                f"multiplies by the number {part}; UCUM reads '.' as a product "
                "(10.9/L is 90/L), which is almost always a typo of 10*9/L: "
                "write powers of ten as 10*N"
            )


@functools.cache
def _converter(source_unit: str, quantity: str):
    """Return ``f(value) -> canonical value`` or raise :class:`UnitError`."""
    spec = quantity_specs()[quantity]
    src, dst = _normalise(source_unit), spec.canonical_unit
    if src == dst:
        return lambda value: value
    _check_annotations(src, spec)
    _check_factors(src)
    if _strip_annotations(src) == _strip_annotations(dst) and "{" in src + dst:
        return lambda value: value
    try:
        return _pint_converter(src, dst, spec)
    except (UnitError, ImportError):  # a broken install is not the data's fault
        raise
    except Exception as exc:  # ucumvert and pint raise errors of many kinds
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnitError(f"{source_unit!r} is not valid UCUM ({reason})") from None


def _pint_converter(src: str, dst: str, spec: QuantitySpec):
    q_src, q_dst = _parse(src), _parse(dst)
    if not _strip_annotations(dst) and _strip_annotations(src):
        raise UnitError(f"{spec.quantity} is a number of points; it has no unit")
    if q_src.check("[temperature]") and q_dst.check("[temperature]"):
        return _affine(q_src, q_dst)
    factor = _scale_factor(q_src, q_dst, spec)
    return lambda value: value * factor


def _affine(q_src, q_dst):
    """Temperature scales are affine: convert two points once, then a + b x."""
    if q_src.magnitude != 1 or len(q_src.unit_items()) != 1:
        raise UnitError(f"a temperature unit cannot carry a factor ({q_src})")
    ureg = q_src._REGISTRY
    zero = ureg.Quantity(0.0, q_src.units).to(q_dst.units).magnitude
    slope = ureg.Quantity(1.0, q_src.units).to(q_dst.units).magnitude - zero
    return lambda value: zero + slope * value


def _scale_factor(q_src, q_dst, spec: QuantitySpec) -> float:
    ureg = q_src._REGISTRY
    if q_src.dimensionality == q_dst.dimensionality:
        return float((q_src / q_dst).to("dimensionless").magnitude)
    # mol-based concentration to mass concentration through the molar mass.
    if spec.molar_mass_g_per_mol is not None:
        molar = ureg.Quantity(spec.molar_mass_g_per_mol, "g/mol")
        for candidate in (q_src * molar, q_src / molar):
            if candidate.dimensionality == q_dst.dimensionality:
                return float((candidate / q_dst).to("dimensionless").magnitude)
    # Enzyme activity: katal (mol/s) against U (umol/min).
    src_u, dst_u = str(q_src.units), str(q_dst.units)
    if "katal" in src_u and "enzyme_unit" in dst_u:
        katal, enzyme = ureg.Quantity(1, "katal"), ureg.Quantity(1, "enzyme_unit")
        per_katal = katal.to("umol/min").magnitude
        ratio = (q_src / katal) / (q_dst / enzyme)
        return float(ratio.to("dimensionless").magnitude * per_katal)
    raise UnitError(f"{q_src.units} has another dimension than {spec.canonical_unit}")


def to_canonical(value: float, unit: str, quantity: str) -> float:
    """Convert ``value`` in UCUM ``unit`` to the canonical unit of ``quantity``.

    Parameters
    ----------
    value : float
        Measured value, finite.
    unit : str
        UCUM code (common non-UCUM spellings such as ``mmHg`` are accepted).
    quantity : str
        cartwin quantity key from ``quantities.csv``.

    Returns
    -------
    float
        The value in :func:`canonical_unit` of the quantity. The range is not
        checked here (see :func:`check_plausible`).

    Raises
    ------
    UnitError
        When the value is not a finite number, or the unit is not valid UCUM,
        has the wrong dimension or annotation, or a factor that is not a power
        of ten. The message names the unit and the quantity; the caller adds
        the file, resource and field.

    Examples
    --------
    >>> round(to_canonical(3.0, "mg/dL", "crp"), 6)
    30.0
    >>> round(to_canonical(100.4, "[degF]", "temperature"), 6)
    38.0
    >>> round(to_canonical(0.96, "1", "spo2"), 6)
    96.0
    """
    if quantity not in quantity_specs():
        raise UnitError(f"unknown quantity {quantity!r}")
    number = _finite(value, unit, quantity)
    try:
        convert = _converter(unit, quantity)
    except UnitError as exc:
        raise UnitError(
            f"unit {unit!r} cannot be converted to {canonical_unit(quantity)!r} "
            f"for {quantity}: {exc}"
        ) from None
    result = float(convert(number))
    if not math.isfinite(result):
        raise UnitError(
            f"value {value!r} in unit {unit!r} is out of the range of numbers "
            f"once converted to {canonical_unit(quantity)!r} for {quantity}"
        )
    return result


def _finite(value, unit: str, quantity: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        shown = _shown(value)
        raise UnitError(
            f"value {shown} in unit {unit!r} for {quantity} is not a finite number"
        )
    return number


def _shown(value) -> str:
    """A short ``repr``, safe for integers of any length."""
    if isinstance(value, int) and value.bit_length() > 128:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"<an integer of about {digits} digits>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
