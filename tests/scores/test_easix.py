"""EASIX family: formulas, units, Korell cut-off, record windows, censoring.

Oracle: clinical-facts.md section 2 (Pennisi 2021, doi:10.1182/bloodadvances.2020003885;
Korell 2022, doi:10.3389/fimmu.2022.877477). The test vectors are exact
arithmetic on the verified formulas; log2 values are printed there to two
decimals, hence a tolerance of 0.005.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwin.errors import DataError
from cartwin.record import Event, Observation, PatientFacts, PatientRecord
from cartwin.record import canonical_unit, to_canonical
from cartwin.scores import (
    easix,
    easix_from_record,
    easix_log2,
    korell_category,
    m_easix,
    simplified_easix,
)

UTC = dt.timezone.utc
INFUSION = dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
VECTOR = {"ldh": 250, "creatinine": 1.0, "platelets": 100, "crp": 50}


def at(day: float, hour: int = 8) -> dt.datetime:
    return INFUSION.replace(hour=hour) + dt.timedelta(days=day)


def lab(quantity: str, when: dt.datetime, value: float, **kw) -> Observation:
    unit = canonical_unit(quantity)
    return Observation(quantity, when, value, unit, source_id=f"Obs/{quantity}", **kw)


def patient(values: dict, day: int = -6, **kw) -> PatientRecord:
    observations = [lab(q, at(day), v, **kw.get(q, {})) for q, v in values.items()]
    events = (
        Event("infusion", INFUSION),
        Event("lymphodepletion", at(-5, 9), name="fludarabine"),
    )
    return PatientRecord(PatientFacts("p-easix"), tuple(observations), events)


def test_published_vectors():
    value = easix(ldh_u_per_l=250, creatinine_mg_per_dl=1.0, platelets_10e9_per_l=100)
    assert value == 2.5
    assert easix_log2(2.5) == pytest.approx(1.32, abs=0.005)
    # CRP 5 mg/dL, given in cartwin's mg/L.
    crp = to_canonical(5.0, "mg/dL", "crp")
    assert m_easix(ldh_u_per_l=250, crp_mg_per_l=crp, platelets_10e9_per_l=100) == 12.5
    assert simplified_easix(ldh_u_per_l=250, platelets_10e9_per_l=100) == 2.5
    assert easix_log2(4.67) == pytest.approx(2.22, abs=0.005)


@pytest.mark.parametrize(
    ("value", "group"), [(4.66, "low"), (4.67, "low"), (4.68, "high")]
)
def test_korell_cutoff_is_strict(value, group):
    assert korell_category(value) == group


def test_invalid_numbers_rejected():
    with pytest.raises(DataError, match="platelet count > 0"):
        easix(ldh_u_per_l=250, creatinine_mg_per_dl=1.0, platelets_10e9_per_l=0)
    with pytest.raises(DataError):
        simplified_easix(ldh_u_per_l=-1, platelets_10e9_per_l=100)
    with pytest.raises(DataError):
        easix_log2(0)


def test_record_easix_pre_with_korell_category():
    result = easix_from_record(patient(VECTOR))
    assert (result.name, result.value, result.category) == ("EASIX", 2.5, "low")
    assert [i.name for i in result.inputs] == ["ldh", "creatinine", "platelets"]
    assert "10.3389/fimmu.2022.877477" in result.reference
    high = easix_from_record(patient({**VECTOR, "ldh": 500}))
    assert (high.value, high.category) == (5.0, "high")


def test_record_m_easix_converts_crp():
    result = easix_from_record(patient(VECTOR), "m-EASIX")
    assert (result.name, result.value, result.category) == ("m-EASIX", 12.5, None)
    simple = easix_from_record(patient(VECTOR), "simplified")
    assert (simple.name, simple.value) == ("simplified EASIX", 2.5)


def test_unknown_variant():
    with pytest.raises(ValueError, match="'EASIX-F'"):
        easix_from_record(patient(VECTOR), "EASIX-F")


def test_missing_creatinine_message():
    values = {q: v for q, v in VECTOR.items() if q != "creatinine"}
    result = easix_from_record(patient(values))
    assert result.value is None and result.category is None
    assert result.missing == ("creatinine",)
    assert result.message.startswith("no creatinine in the 7 days before the first")
    assert result.window == (-12, -5)


def test_day_window_has_no_korell_category():
    result = easix_from_record(patient(VECTOR, day=3), day_window=(3, 3))
    assert (result.value, result.category, result.timepoint) == (2.5, None, "day +3")


def test_censored_creatinine_gives_bound():
    values = {**VECTOR, "creatinine": 0.3}
    result = easix_from_record(patient(values, creatinine={"censored": "below"}))
    assert result.value is None
    assert result.message == "EASIX < 0.75: censored input"
    assert result.category == "low"  # every value below 0.75 is <= 4.67


def test_zero_platelets_in_record_rejected():
    with pytest.raises(DataError, match="platelets"):
        easix_from_record(patient({**VECTOR, "platelets": 0}))


positive = st.floats(min_value=0.01, max_value=1e4, allow_nan=False)


@given(ldh=positive, creatinine=positive, a=positive, b=positive)
def test_easix_falls_as_platelets_rise(ldh, creatinine, a, b):
    low, high = sorted((a, b))
    kw = dict(ldh_u_per_l=ldh, creatinine_mg_per_dl=creatinine)
    at_low = easix(**kw, platelets_10e9_per_l=low)
    assert at_low >= easix(**kw, platelets_10e9_per_l=high)
    assert math.isclose(at_low * low / creatinine, ldh, rel_tol=1e-9)
