"""CAR-HEMATOTOX: points table, boundaries, windows and missing inputs.

Oracle: clinical-facts.md section 1.2 (Rejeski 2021, doi:10.1182/blood.2020010543).
The numeric cut-offs there are tagged [U]; the tests pin cartwin's chosen
convention (a value at a cut-off scores 1 point).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwin.errors import DataError
from cartwin.record import Event, Observation, PatientFacts, PatientRecord
from cartwin.record import canonical_unit, to_canonical
from cartwin.scores import hematotox_category, hematotox_from_record, hematotox_points
from cartwin.scores import hematotox as ht

UTC = dt.timezone.utc
INFUSION = dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
NORMAL = {"platelets": 200, "anc": 2.0, "hemoglobin": 12, "crp": 5, "ferritin": 300}


def at(day: float, hour: int = 8) -> dt.datetime:
    """Instant on study day ``day`` at ``hour`` UTC (site zone = UTC)."""
    return INFUSION.replace(hour=hour) + dt.timedelta(days=day)


def lab(quantity: str, when: dt.datetime, value: float, **kw) -> Observation:
    unit = canonical_unit(quantity)
    return Observation(quantity, when, value, unit, source_id=f"Obs/{quantity}", **kw)


def patient(observations=(), *, infusion=True, ld_day: int | None = -5):
    events = []
    if infusion:
        events.append(Event("infusion", INFUSION, name="axicabtagene ciloleucel"))
    if ld_day is not None:
        events.append(Event("lymphodepletion", at(ld_day, 9), name="fludarabine"))
        events.append(Event("lymphodepletion", at(ld_day, 11), name="cyclophosphamide"))
    return PatientRecord(PatientFacts("p-test"), tuple(observations), tuple(events))


def labs_at(when: dt.datetime, values: dict) -> list[Observation]:
    return [lab(q, when, v) for q, v in values.items()]


def points(**overrides) -> ht.HematotoxPoints:
    values = {**NORMAL, **overrides}
    return hematotox_points(
        platelets_10e9_per_l=values["platelets"],
        anc_10e9_per_l=values["anc"],
        hemoglobin_g_per_dl=values["hemoglobin"],
        crp_mg_per_l=values["crp"],
        ferritin_ng_per_ml=values["ferritin"],
    )


# Test vectors of clinical-facts.md section 1.2, given there in /µL and mg/dL.
@pytest.mark.parametrize(
    ("plt_per_ul", "anc_per_ul", "hb", "crp_mg_dl", "ferritin", "total", "group"),
    [
        (200_000, 2000, 12, 0.5, 300, 0, "low"),
        (100_000, 2000, 12, 0.5, 300, 1, "low"),
        (60_000, 1000, 8.5, 5.0, 2500, 7, "high"),
    ],
)
def test_published_vectors(
    plt_per_ul, anc_per_ul, hb, crp_mg_dl, ferritin, total, group
):
    result = hematotox_points(
        platelets_10e9_per_l=to_canonical(plt_per_ul, "/uL", "platelets"),
        anc_10e9_per_l=to_canonical(anc_per_ul, "/uL", "anc"),
        hemoglobin_g_per_dl=hb,
        crp_mg_per_l=to_canonical(crp_mg_dl, "mg/dL", "crp"),
        ferritin_ng_per_ml=ferritin,
    )
    assert (result.total, result.category) == (total, group)


@pytest.mark.parametrize(
    ("marker", "value", "expected"),
    [
        ("platelets", 175.1, 0), ("platelets", 175.0, 1), ("platelets", 174.9, 1),
        ("platelets", 75.1, 1), ("platelets", 75.0, 1), ("platelets", 74.9, 2),
        ("anc", 1.21, 0), ("anc", 1.2, 1), ("anc", 1.19, 1),
        ("hemoglobin", 9.1, 0), ("hemoglobin", 9.0, 1), ("hemoglobin", 8.9, 1),
        ("crp", 29.9, 0), ("crp", 30.0, 1), ("crp", 30.1, 1),
        ("ferritin", 649.9, 0), ("ferritin", 650.0, 1), ("ferritin", 650.1, 1),
        ("ferritin", 1999.9, 1), ("ferritin", 2000.0, 1), ("ferritin", 2000.1, 2),
    ],
)  # fmt: skip
def test_every_cutoff_below_at_above(marker, value, expected):
    assert getattr(points(**{marker: value}), marker) == expected


def test_cutoff_survives_unit_conversion():
    # 650 ug/L converts to 649.9999999999999 ng/mL; it must still sit at 650.
    ferritin = to_canonical(650, "ug/L", "ferritin")
    assert ferritin != 650.0
    assert points(ferritin=ferritin).ferritin == 1
    assert points(crp=to_canonical(3.0, "mg/dL", "crp")).crp == 1
    assert points(crp=to_canonical(2.9, "mg/dL", "crp")).crp == 0


def test_low_high_split():
    assert [hematotox_category(t) for t in range(8)] == ["low"] * 2 + ["high"] * 6
    assert points(platelets=100, anc=1.0).category == "high"


def test_negative_value_rejected():
    with pytest.raises(DataError, match="hemoglobin.*-1"):
        points(hemoglobin=-1)


values = st.floats(min_value=0, max_value=5000, allow_nan=False)


@given(marker=st.sampled_from(sorted(NORMAL)), a=values, b=values)
def test_points_monotone_in_each_marker(marker, a, b):
    low, high = sorted((a, b))
    p_low = getattr(points(**{marker: low}), marker)
    p_high = getattr(points(**{marker: high}), marker)
    if marker in ("crp", "ferritin"):  # higher value, more risk
        assert p_low <= p_high
    else:  # lower counts, more risk
        assert p_low >= p_high
    assert 0 <= points(**{marker: low}).total <= 7


# -- record search ------------------------------------------------------------


def test_record_uses_last_value_before_lymphodepletion():
    ld = at(-5, 9)
    observations = [
        *labs_at(at(-7), {**NORMAL, "platelets": 60}),  # superseded
        *labs_at(at(-6), NORMAL),
        lab("platelets", ld, 50),  # at LD start: excluded
        lab("ferritin", at(-4), 5000),  # after LD: excluded
    ]
    result = hematotox_from_record(patient(observations))
    assert (result.value, result.category, result.missing) == (0, "low", ())
    assert {i.name: i.value for i in result.inputs}["platelets"] == 200
    assert result.timepoint == "pre-lymphodepletion"
    assert result.window == (-12, -5)


def test_lookback_is_seven_days_inclusive():
    ld = at(-5, 9)
    edge = [lab(q, ld - dt.timedelta(days=7), v) for q, v in NORMAL.items()]
    assert hematotox_from_record(patient(edge)).value == 0
    early = [lab(q, ld - dt.timedelta(days=7, minutes=1), v) for q, v in NORMAL.items()]
    result = hematotox_from_record(patient(early))
    assert result.value is None
    assert set(result.missing) == set(NORMAL)


def test_fallback_window_without_lymphodepletion():
    late = {q: v for q, v in NORMAL.items() if q != "ferritin"}
    observations = [*labs_at(at(-11), NORMAL), *labs_at(at(-3, 20), late)]
    result = hematotox_from_record(patient(observations, ld_day=None))
    assert result.value is None
    assert result.missing == ("ferritin",)
    assert result.window == (-10, -3)
    assert result.message == "no ferritin between study day -10 and -3"
    assert [i.study_day for i in result.inputs] == [-3, -3, -3, -3]


def test_no_study_day_without_infusion_or_lymphodepletion():
    record = patient(labs_at(at(-6), NORMAL), infusion=False, ld_day=None)
    result = hematotox_from_record(record)
    assert result.value is None and result.window is None
    assert "no study day" in result.message


def test_lymphodepletion_without_infusion_still_scores():
    result = hematotox_from_record(patient(labs_at(at(-6), NORMAL), infusion=False))
    assert (result.value, result.window) == (0, None)
    assert all(i.study_day is None for i in result.inputs)


def test_explicit_day_window():
    result = hematotox_from_record(patient(labs_at(at(2), NORMAL)), day_window=(1, 3))
    assert (result.value, result.window, result.timepoint) == (0, (1, 3), "days +1..+3")


def test_censored_crp_decides_or_not():
    base = {q: v for q, v in NORMAL.items() if q != "crp"}
    clear = [*labs_at(at(-6), base), lab("crp", at(-6), 5.0, censored="below")]
    assert hematotox_from_record(patient(clear)).value == 0
    # CRP < 30 mg/L is still 0 points (the limit itself is excluded).
    edge = [*labs_at(at(-6), base), lab("crp", at(-6), 30.0, censored="below")]
    assert hematotox_from_record(patient(edge)).value == 0
    vague = [*labs_at(at(-6), base), lab("crp", at(-6), 50.0, censored="below")]
    result = hematotox_from_record(patient(vague))
    assert result.value is None and result.category == "low"
    assert result.message == "CAR-HEMATOTOX between 0 and 1: crp < 50 mg/L (censored)"


def test_to_dict_is_json_ready():
    result = hematotox_from_record(patient(labs_at(at(-6), NORMAL)))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["value"] == 0
    assert data["inputs"][0]["time"] == "2024-03-04T08:00:00+00:00"
    assert "10.1182/blood.2020010543" in data["reference"]
