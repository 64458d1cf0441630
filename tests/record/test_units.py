"""Canonical-unit conversion at the ingestion boundary.

Conversion factors are checked against values worked out by hand from the
definitions: 1 mg/dL = 10 mg/L; 1 /uL = 1 /mm3 = 1e-3 x 10^9/L; haemoglobin
monomer 16 114.5 g/mol (1 mmol/L = 1.611 g/dL); creatinine 113.12 g/mol
(88.4 umol/L = 1 mg/dL); 1 ukat/L = 60 U/L; T(degF) = 32 + 1.8 T(Cel).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwin.errors import UnitError
from cartwin.record.units import canonical_unit, quantity_specs, to_canonical

CASES = [
    (30.0, "mg/L", "crp", 30.0),
    (3.0, "mg/dL", "crp", 30.0),
    (150.0, "10*9/L", "platelets", 150.0),
    (150000.0, "/uL", "platelets", 150.0),
    (150000.0, "/mm3", "platelets", 150.0),
    (150.0, "10*3/uL", "platelets", 150.0),
    (1200.0, "/uL", "anc", 1.2),
    (1.2, "10*9/L", "anc", 1.2),
    (1200.0, "/mm3", "anc", 1.2),
    (9.0, "g/dL", "hemoglobin", 9.0),
    (90.0, "g/L", "hemoglobin", 9.0),
    (6.2, "mmol/L", "hemoglobin", 6.2 * 1.61145),
    (1.0, "mg/dL", "creatinine", 1.0),
    (88.4, "umol/L", "creatinine", 88.4 * 113.12 / 10000.0),
    (650.0, "ng/mL", "ferritin", 650.0),
    (650.0, "ug/L", "ferritin", 650.0),
    (250.0, "U/L", "ldh", 250.0),
    (4.0, "ukat/L", "ldh", 240.0),
    (38.0, "Cel", "temperature", 38.0),
    (100.4, "[degF]", "temperature", 38.0),
    (98.6, "[degF]", "temperature", 37.0),
]


@pytest.mark.parametrize(("value", "unit", "quantity", "expected"), CASES)
def test_conversion_to_canonical(value, unit, quantity, expected):
    assert to_canonical(value, unit, quantity) == pytest.approx(expected, rel=1e-9)


def test_creatinine_conventional_factor():
    # 88.4 umol/L per mg/dL is the factor printed in clinical chemistry tables.
    assert to_canonical(88.4, "umol/L", "creatinine") == pytest.approx(1.0, rel=1e-3)


def test_canonical_units_of_issue_quantities():
    expected = {"crp": "mg/L", "platelets": "10*9/L", "anc": "10*9/L",
                "hemoglobin": "g/dL", "creatinine": "mg/dL", "ferritin": "ng/mL",
                "ldh": "U/L", "temperature": "Cel"}
    for quantity, unit in expected.items():
        assert canonical_unit(quantity) == unit


@pytest.mark.parametrize(("unit", "quantity"), [
    ("kg", "crp"), ("mmol/L", "ferritin"), ("Cel", "anc"), ("mg/dL", "ice_score"),
    ("not-a-unit", "crp"), ("%", "platelets"),
])
def test_unconvertible_unit_names_unit_and_quantity(unit, quantity):
    with pytest.raises(UnitError) as info:
        to_canonical(1.0, unit, quantity)
    assert repr(unit) in str(info.value)
    assert quantity in str(info.value)


def test_non_finite_value_rejected():
    with pytest.raises(UnitError, match="finite"):
        to_canonical(math.nan, "mg/L", "crp")


def test_unknown_quantity_rejected():
    with pytest.raises(UnitError, match="unknown quantity"):
        to_canonical(1.0, "mg/L", "no_such_quantity")


def test_every_quantity_converts_its_canonical_unit_to_itself():
    for quantity, spec in quantity_specs().items():
        assert to_canonical(2.5, spec.canonical_unit, quantity) == 2.5


@given(st.floats(min_value=-50, max_value=50, allow_nan=False))
def test_temperature_round_trip(celsius):
    fahrenheit = 32.0 + 1.8 * celsius
    assert to_canonical(fahrenheit, "[degF]", "temperature") == pytest.approx(
        celsius, abs=1e-9
    )


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False))
def test_count_conversions_are_linear(value):
    per_ul = to_canonical(value, "/uL", "platelets")
    assert per_ul == pytest.approx(value * 1e-3, rel=1e-12)
