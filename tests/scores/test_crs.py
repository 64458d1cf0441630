"""ASTCT CRS grade: column rules, boundaries, fever rules and the timeline.

Oracle: clinical-facts.md section 4.1 (Lee 2019, doi:10.1016/j.bbmt.2018.12.758),
including the worked example 39.5 °C + 1 vasopressor + low-flow O2 = grade 3.
SBP < 90 mmHg as hypotension is cartwin's stated convention.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwin.errors import DataError
from cartwin.record import Event, Observation, PatientFacts, PatientRecord
from cartwin.record import canonical_unit
from cartwin.scores import crs_grade, crs_timeline

UTC = dt.timezone.utc
INFUSION = dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
VASOPRESSIN_CODE = "http://www.nlm.nih.gov/research/umls/rxnorm|11149"


def at(day: float, hour: int = 8, minute: int = 0) -> dt.datetime:
    return INFUSION.replace(hour=hour, minute=minute) + dt.timedelta(days=day)


def vital(quantity: str, when: dt.datetime, value: float) -> Observation:
    return Observation(quantity, when, value, canonical_unit(quantity))


def given_for(kind: str, when: dt.datetime, hours: float = 4, **kw) -> Event:
    """An event active from ``when`` for ``hours``."""
    return Event(kind, when, when + dt.timedelta(hours=hours), **kw)


def patient(observations=(), events=(), infusion=True) -> PatientRecord:
    base = (Event("infusion", INFUSION),) if infusion else ()
    return PatientRecord(PatientFacts("p-crs"), tuple(observations), (*base, *events))


def grade_at(record: PatientRecord, when: dt.datetime, **kw) -> int:
    timeline = crs_timeline(record, **kw)
    return next(p.grade for p in timeline.points if p.time == when)


def test_worked_example_pure():
    assert crs_grade(fever=True, vasopressors=1, oxygen="low_flow") == 3


def test_worked_example_timeline():
    t = at(2)
    record = patient(
        [vital("temperature", t, 39.5), vital("systolic_bp", t, 82)],
        [
            given_for("vasopressor", t - dt.timedelta(hours=1), name="norepinephrine"),
            given_for("oxygen", t - dt.timedelta(hours=2), detail="low_flow"),
        ],
    )
    timeline = crs_timeline(record)
    point = next(p for p in timeline.points if p.time == t)
    assert (point.grade, point.study_day, point.driver) == (3, 2, "hypotension")
    assert "fever 39.5 Cel" in point.reasons[0]
    assert "oxygen: low_flow" in point.reasons
    assert timeline.daily_max[2] == 3 and timeline.max_grade == 3


@pytest.mark.parametrize(("celsius", "grade"), [(37.9, 0), (38.0, 1), (38.1, 1)])
def test_fever_threshold(celsius, grade):
    record = patient([vital("temperature", at(1), celsius)])
    assert grade_at(record, at(1)) == grade


@pytest.mark.parametrize(("sbp", "grade"), [(89, 2), (90, 1), (91, 1)])
def test_hypotension_threshold(sbp, grade):
    t = at(1)
    record = patient([vital("temperature", t, 38.5), vital("systolic_bp", t, sbp)])
    assert grade_at(record, t) == grade


@pytest.mark.parametrize(
    ("pressors", "grade"),
    [
        ([dict(name="vasopressin", detail="vasopressin")], 3),
        ([dict(detail="vasopressin")], 3),
        ([dict(name="norepinephrine"), dict(detail="vasopressin")], 3),
        ([dict(name="norepinephrine"), dict(source_code=VASOPRESSIN_CODE)], 3),
        ([dict(name="norepinephrine"), dict(name="Norepinephrine")], 3),
        ([dict(name="norepinephrine"), dict(name="epinephrine")], 4),
    ],
)
def test_vasopressor_count(pressors, grade):
    t = at(1)
    start = t - dt.timedelta(hours=1)
    events = [given_for("vasopressor", start, **kw) for kw in pressors]
    record = patient([vital("temperature", t, 38.5)], events)
    assert grade_at(record, t) == grade


@pytest.mark.parametrize(
    ("device", "grade"),
    [
        ("low_flow", 2), ("blow_by", 2), ("", 2),
        ("high_flow", 3), ("facemask", 3), ("non_rebreather", 3), ("venturi", 3),
        ("positive_pressure", 4), ("cpap", 4), ("bipap", 4), ("mechanical", 4),
        ("intubation", 4),
    ],
)  # fmt: skip
def test_each_oxygen_device(device, grade):
    t = at(1)
    oxygen = given_for("oxygen", t - dt.timedelta(hours=1), detail=device)
    assert grade_at(patient([vital("temperature", t, 38.5)], [oxygen]), t) == grade


@pytest.mark.parametrize(("litres", "grade"), [(6.0, 2), (6.5, 3)])
def test_low_flow_above_six_litres_is_high_flow(litres, grade):
    t = at(1)
    oxygen = given_for("oxygen", t, detail="low_flow", dose=litres, dose_unit="L/min")
    assert grade_at(patient([vital("temperature", t, 38.5)], [oxygen]), t) == grade


def test_unknown_oxygen_device_is_an_error():
    oxygen = given_for("oxygen", at(1), detail="tent", source_id="Procedure/o2")
    with pytest.raises(DataError, match="Procedure/o2.*'tent'"):
        crs_timeline(patient([vital("temperature", at(1), 38.5)], [oxygen]))


def test_fever_not_required_after_tocilizumab():
    later = at(3)  # two days after the fever, outside the 24 h window
    observations = [vital("temperature", at(1), 39.0), vital("systolic_bp", later, 85)]
    toci = Event("tocilizumab", at(1, 10), name="tocilizumab")
    treated = crs_timeline(patient(observations, [toci]))
    point = next(p for p in treated.points if p.time == later)
    assert (point.grade, point.driver) == (2, "hypotension")
    assert any("fever not required after tocilizumab" in r for r in point.reasons)
    untreated = crs_timeline(patient(observations))
    point = next(p for p in untreated.points if p.time == later)
    assert point.grade == 0
    assert "hypotension/hypoxia without fever: not graded as CRS" in point.reasons


def test_treatment_without_any_fever_is_not_crs():
    steroid = Event("corticosteroid", at(1), name="dexamethasone")
    record = patient([vital("systolic_bp", at(2), 80)], [steroid])
    assert grade_at(record, at(2)) == 0


def test_fever_counts_for_24_hours():
    observations = [
        vital("temperature", at(1), 38.4),
        vital("systolic_bp", at(2, 8, 0), 85),
        vital("systolic_bp", at(2, 8, 1), 85),
    ]
    record = patient(observations)
    assert grade_at(record, at(2, 8, 0)) == 2
    assert grade_at(record, at(2, 8, 1)) == 0


def test_fever_before_infusion_is_ignored():
    observations = [
        vital("temperature", at(-1), 39.0),
        vital("systolic_bp", at(0, 13), 80),
    ]
    record = patient(observations)
    timeline = crs_timeline(record)
    assert [p.time for p in timeline.points] == [at(0, 13)]
    assert timeline.max_grade == 0


def test_low_spo2_without_oxygen_is_flagged_not_graded():
    t = at(1)
    record = patient([vital("temperature", t, 38.5), vital("spo2", t, 88)])
    point = crs_timeline(record).points[0]
    assert point.grade == 1 and point.driver == "fever"
    assert any("hypoxia of unknown support" in r for r in point.reasons)


def test_event_activity_window_and_open_events():
    fever = [vital("temperature", at(1, h), 38.5) for h in (8, 12, 13)]
    closed = Event("oxygen", at(1, 9), at(1, 12), detail="high_flow")
    record = patient(fever, [closed])
    assert grade_at(record, at(1, 12)) == 3  # at the end instant: still active
    assert grade_at(record, at(1, 13)) == 1
    open_event = Event("vasopressor", at(1, 9), name="norepinephrine")
    record = patient(fever, [open_event])
    assert grade_at(record, at(1, 9)) == 3
    assert grade_at(record, at(1, 12)) == 1
    assert grade_at(record, at(1, 12), open_event_duration=dt.timedelta(hours=4)) == 3


def test_no_infusion_gives_empty_timeline():
    timeline = crs_timeline(patient([vital("temperature", at(1), 39)], infusion=False))
    assert timeline.points == () and timeline.max_grade is None
    assert "no infusion event" in timeline.message


def test_timeline_to_dict():
    # The second reading is 25 h after the fever, outside the 24 h window.
    temperatures = [
        vital("temperature", at(1), 38.5),
        vital("temperature", at(2, 9), 37),
    ]
    data = json.loads(json.dumps(crs_timeline(patient(temperatures)).to_dict()))
    days = [{"study_day": 1, "grade": 1}, {"study_day": 2, "grade": 0}]
    assert data["daily_max"] == days
    assert data["points"][0]["time"] == "2024-03-11T08:00:00+00:00"
    assert data["max_grade"] == 1


findings = st.fixed_dictionaries(
    {
        "fever": st.booleans(),
        "hypotension": st.booleans(),
        "vasopressors": st.integers(0, 3),
        "vasopressin": st.booleans(),
        "oxygen": st.sampled_from([None, "low_flow", "high_flow", "cpap"]),
        "fever_required": st.booleans(),
    }
)
more = st.sampled_from(
    ["fever", "hypotension", "vasopressor", "vasopressin", "oxygen", "treated"]
)


@given(before=findings, extra=more)
def test_one_more_criterion_never_lowers_the_grade(before, extra):
    after = dict(before)
    if extra == "vasopressor":
        after["vasopressors"] += 1
    elif extra == "oxygen":
        ladder = [None, "low_flow", "high_flow", "cpap"]
        after["oxygen"] = ladder[min(ladder.index(before["oxygen"]) + 1, 3)]
    elif extra == "treated":
        after["fever_required"] = False
    else:
        after[extra] = True
    assert crs_grade(**after) >= crs_grade(**before)
    assert 0 <= crs_grade(**after) <= 4
