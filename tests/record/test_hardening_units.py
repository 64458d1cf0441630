"""Units and plausible ranges under hostile input (defects found by a tester).

Worked values: SpO2 0.96 in UCUM ``1`` is 96 %; 311.15 K = 38 Cel (0 Cel =
273.15 K by definition of the Celsius scale); UCUM reads ``10.9/L`` as
10 x 9 per litre. Plausible ranges come from ``quantities.csv``; the published
numbers checked to lie inside them are cited at each test.
"""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from cartwin.errors import DataError, UnitError
from cartwin.record.units import (
    ImplausibleValueError,
    check_plausible,
    plausible_range,
    quantity_specs,
    to_canonical,
)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(0.96, "1", 96.0), (0.96, "{ratio}", 96.0), (96.0, "%", 96.0),
     (1.0, "1", 100.0), (0.5, "{fraction}", 50.0)],
)  # fmt: skip
def test_dimensionless_ratio_converts_to_percent(value, unit, expected):
    assert to_canonical(value, unit, "spo2") == pytest.approx(expected, rel=1e-12)


def test_annotation_alone_is_unity_so_96_of_it_is_9600_percent():
    # UCUM: {%} is the number 1 with an annotation; the range check stops it.
    assert to_canonical(96.0, "{%}", "spo2") == pytest.approx(9600.0, rel=1e-12)
    with pytest.raises(ImplausibleValueError, match="0 to 100 %"):
        check_plausible(9600.0, "spo2")


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(311.15, "K", 38.0), (273.15, "K", 0.0), (100.4, "[degF]", 38.0),
     (37.0, "Cel", 37.0)],
)  # fmt: skip
def test_temperature_scales_are_affine(value, unit, expected):
    assert to_canonical(value, unit, "temperature") == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("unit", "quantity", "fragment"),
    [
        ("%", "ice_score", "number of points"),
        ("10*3.K", "temperature", "cannot carry a factor"),
        ("10.9/L", "platelets", "10*9/L"),
        ("2/uL", "platelets", "number 2"),
        ("{copies}/uL", "cart_flow", "{copies}"),
        ("{cells}/ug", "cart_qpcr", "{cells}"),
        ("kg", "crp", "another dimension"),
        ("m[", "crp", "not valid UCUM"),
    ],
)
def test_unit_problems_are_unit_errors_naming_unit_and_quantity(
    unit, quantity, fragment
):
    with pytest.raises(UnitError) as info:
        to_canonical(5.0, unit, quantity)
    message = str(info.value)
    assert repr(unit) in message and quantity in message and fragment in message


@pytest.mark.parametrize(
    ("unit", "quantity", "expected"),
    [("{cells}/uL", "cart_flow", 12.0), ("cells/uL", "cart_flow", 12.0),
     ("{cell}/uL", "cart_flow", 12.0), ("/uL", "cart_flow", 12.0),
     ("copies/ug", "cart_qpcr", 12.0), ("/ug", "cart_qpcr", 12.0),
     ("100/uL", "platelets", 1.2)],
)  # fmt: skip
def test_matching_or_absent_annotations_and_powers_of_ten_are_read(
    unit, quantity, expected
):
    assert to_canonical(12.0, unit, quantity) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "make", [lambda: 10**400, lambda: 10**5000, lambda: float("inf"),
             lambda: "seven", lambda: None],
    ids=["400-digit int", "5000-digit int", "inf", "text", "None"],
)  # fmt: skip
def test_values_that_are_not_finite_numbers_are_unit_errors(make):
    with pytest.raises(UnitError, match="not a finite number"):
        to_canonical(make(), "mg/L", "crp")


def test_conversion_overflow_is_a_unit_error():
    # 1e308 mg/dL is 1e309 mg/L, beyond the largest double (1.8e308).
    with pytest.raises(UnitError, match="out of the range"):
        to_canonical(1e308, "mg/dL", "crp")


def test_every_quantity_has_a_range_and_a_justification():
    text = resources.files("cartwin.data.codes").joinpath("quantities.csv")
    rows = list(csv.DictReader(text.read_text(encoding="utf-8").splitlines()))
    assert {"min_plausible", "max_plausible", "note", "annotation"} <= set(rows[0])
    for row in rows:
        spec = quantity_specs()[row["quantity"]]
        assert spec.min_plausible < spec.max_plausible, row["quantity"]
        assert spec.note, row["quantity"]
        if spec.category in ("lab", "cart", "tumour"):
            assert spec.min_plausible == 0.0, row["quantity"]  # never negative


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        # clinical-facts.md 5.9: CARTITUDE-4 flow peak mean 1451 cells/uL,
        # CARTITUDE-1 qPCR Cmax mean 48 692 copies/ug; ASTCT fever 38 Cel.
        ("cart_flow", 1451.0), ("cart_qpcr", 48692.0), ("temperature", 38.0),
        ("temperature", 25.0), ("temperature", 45.0), ("crp", 0.0),
        ("crp", 1000.0), ("platelets", 5000.0), ("ice_score", 10.0),
        ("spo2", 100.0),
    ],
)  # fmt: skip
def test_real_values_and_range_edges_are_plausible(quantity, value):
    check_plausible(value, quantity)


@pytest.mark.parametrize(
    ("quantity", "value", "shown"),
    [("temperature", 1e300, "1e+300 Cel"), ("crp", -5.0, "-5 mg/L"),
     ("cart_flow", -1.0, "-1 /uL"), ("temperature", 24.9, "24.9 Cel"),
     ("ice_score", 11.0, "11 {score}")],
)  # fmt: skip
def test_implausible_values_name_value_quantity_and_range(quantity, value, shown):
    low, high = plausible_range(quantity)
    with pytest.raises(ImplausibleValueError) as info:
        check_plausible(value, quantity)
    assert isinstance(info.value, DataError)
    message = str(info.value)
    assert shown in message and quantity in message
    assert f"{low:g} to {high:g}" in message
