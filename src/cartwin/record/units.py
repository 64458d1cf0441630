"""Conversion of UCUM-coded values to one canonical unit per quantity.

Every observation entering cartwin passes through :func:`to_canonical`. UCUM
strings are parsed with ``ucumvert`` into ``pint`` quantities; conversion
between amount-of-substance and mass concentrations uses the molar mass listed
for the quantity in ``data/codes/quantities.csv`` (haemoglobin: haem monomer,
16 114.5 g/mol, so 1 mmol/L = 1.611 g/dL; creatinine: 113.12 g/mol, so
88.4 µmol/L = 1 mg/dL). Enzyme activity in katal converts to U/L with
1 µkat = 60 U (1 U = 1 µmol/min). Arbitrary UCUM annotations such as
``{copies}`` or ``{cells}`` are dimensionless and kept only when the canonical
unit carries the same meaning.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from importlib import resources

from cartwin.errors import UnitError

# UCUM spellings that ucumvert does not parse or that sites send in practice;
# each maps to a UCUM string with the same meaning.
_ALIASES = {
    "cells/uL": "/uL",
    "cells/µL": "/uL",
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
    """

    quantity: str
    canonical_unit: str
    category: str
    molar_mass_g_per_mol: float | None
    description: str


@functools.cache
def quantity_specs() -> dict[str, QuantitySpec]:
    """Return the shipped table of quantities, keyed by quantity name."""
    text = resources.files("cartwin.data.codes").joinpath("quantities.csv")
    specs = {}
    with text.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            molar = row["molar_mass_g_per_mol"]
            specs[row["quantity"]] = QuantitySpec(
                quantity=row["quantity"],
                canonical_unit=row["canonical_unit"],
                category=row["category"],
                molar_mass_g_per_mol=float(molar) if molar else None,
                description=row["description"],
            )
    return specs


def canonical_unit(quantity: str) -> str:
    """Return the canonical UCUM unit of ``quantity``."""
    try:
        return quantity_specs()[quantity].canonical_unit
    except KeyError:
        raise UnitError(f"unknown quantity {quantity!r}") from None


@functools.cache
def _registry():
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def _normalise(unit: str) -> str:
    unit = unit.strip()
    return _ALIASES.get(unit, unit)


@functools.cache
def _parse(unit: str):
    ureg = _registry()
    if unit in ("1", ""):
        return ureg.Quantity(1.0, "dimensionless")
    parsed = ureg.from_ucum(unit)
    if not hasattr(parsed, "dimensionality"):  # a bare {annotation}
        return ureg.Quantity(1.0, "dimensionless")
    return parsed


def _strip_annotations(unit: str) -> str:
    out, depth = [], 0
    for char in unit:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0:
            out.append(char)
    stripped = "".join(out)
    return "" if stripped == "1" else stripped


@functools.cache
def _converter(source_unit: str, quantity: str):
    """Return ``f(value) -> canonical value`` or raise :class:`UnitError`."""
    spec = quantity_specs()[quantity]
    src, dst = _normalise(source_unit), spec.canonical_unit
    if src == dst:
        return lambda value: value
    if _strip_annotations(src) == _strip_annotations(dst) and "{" in src + dst:
        return lambda value: value
    try:
        q_src, q_dst = _parse(src), _parse(dst)
    except ImportError:  # a broken install is not the data's fault
        raise
    except Exception as exc:  # ucumvert raises lark/pint errors of many kinds
        raise UnitError(f"unit {source_unit!r} is not valid UCUM ({exc})") from None
    ureg = q_src._REGISTRY

    # Temperatures have offsets: convert with pint's offset-aware logic.
    if q_src.dimensionality == q_dst.dimensionality and "degree" in str(q_src.units):
        # Temperature scales are affine: convert two points once, then a + b x.
        zero = ureg.Quantity(0.0, q_src.units).to(q_dst.units).magnitude
        slope = ureg.Quantity(1.0, q_src.units).to(q_dst.units).magnitude - zero
        return lambda value: zero + slope * value
    factor = _scale_factor(q_src, q_dst, spec)
    return lambda value: value * factor


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
        per_katal = ureg.Quantity(1, "katal").to("umol/min").magnitude
        ratio = (q_src / ureg.Quantity(1, "katal")) / (q_dst / ureg.Quantity(1, "enzyme_unit"))
        return float(ratio.to("dimensionless").magnitude * per_katal)
    raise UnitError(
        f"cannot convert {spec.quantity} from {q_src.units} to {spec.canonical_unit}"
    )


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
        The value in :func:`canonical_unit` of the quantity.

    Raises
    ------
    UnitError
        When the unit is not valid UCUM or has the wrong dimension. The caller
        adds the file, resource and field to the message.

    Examples
    --------
    >>> round(to_canonical(3.0, "mg/dL", "crp"), 6)
    30.0
    >>> round(to_canonical(100.4, "[degF]", "temperature"), 6)
    38.0
    """
    if quantity not in quantity_specs():
        raise UnitError(f"unknown quantity {quantity!r}")
    if not math.isfinite(value):
        raise UnitError(f"value {value!r} is not a finite number")
    try:
        convert = _converter(unit, quantity)
    except UnitError as exc:
        raise UnitError(
            f"unit {unit!r} cannot be converted to {canonical_unit(quantity)!r} "
            f"for {quantity}: {exc}"
        ) from None
    return float(convert(float(value)))
