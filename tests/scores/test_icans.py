"""ICE score bands and ASTCT ICANS grade over time.

Oracle: clinical-facts.md sections 4.2-4.3 (Lee 2019, doi:10.1016/j.bbmt.2018.12.758),
including the worked example ICE 3 + seizure -> grade 3.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartwin.errors import DataError
from cartwin.record import Event, Observation, PatientFacts, PatientRecord
from cartwin.scores import ice_grade, icans_grade, icans_timeline

UTC = dt.timezone.utc
INFUSION = dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def at(day: float, hour: int = 8) -> dt.datetime:
    return INFUSION.replace(hour=hour) + dt.timedelta(days=day)


def ice(when: dt.datetime, score: float) -> Observation:
    return Observation("ice_score", when, score, "{score}", source_id="Obs/ice")


def patient(observations=(), events=(), infusion=True) -> PatientRecord:
    base = (Event("infusion", INFUSION),) if infusion else ()
    return PatientRecord(PatientFacts("p-icans"), tuple(observations), (*base, *events))


@pytest.mark.parametrize(
    ("score", "grade"),
    [(10, 0), (9, 1), (7, 1), (6, 2), (3, 2), (2, 3), (0, 3)],
)
def test_every_ice_band_edge(score, grade):
    assert ice_grade(score) == grade


@pytest.mark.parametrize("score", [11, -1, 7.5, float("nan")])
def test_invalid_ice_score(score):
    with pytest.raises(DataError, match="ICE score must be an integer 0-10"):
        ice_grade(score)


@pytest.mark.parametrize(
    ("findings", "grade"),
    [
        (dict(ice_score=3, seizure="rapid"), 3),  # worked example
        (dict(ice_score=0), 3),  # awake, global aphasia
        (dict(ice_score=0, consciousness="unarousable"), 4),
        (dict(consciousness="spontaneous"), 1),
        (dict(consciousness="voice"), 2),
        (dict(consciousness="tactile"), 3),
        (dict(ice_score=8, seizure="prolonged"), 4),
        (dict(ice_score=8, seizure=""), 3),
        (dict(motor_weakness=True), 4),
        (dict(cerebral_edema="focal"), 3),
        (dict(cerebral_edema="diffuse"), 4),
        (dict(ice_score=10), 0),
        ({}, 0),
    ],
)
def test_most_severe_domain(findings, grade):
    assert icans_grade(**findings) == grade


def test_unknown_consciousness_level():
    with pytest.raises(DataError, match="consciousness detail .*'drowsy'"):
        icans_grade(consciousness="drowsy")


def test_worked_example_timeline():
    t = at(4)
    record = patient([ice(t, 3)], [Event("seizure", t, detail="rapid")])
    point = icans_timeline(record).points[0]
    assert (point.grade, point.study_day, point.driver) == (3, 4, "seizure")
    assert point.reasons[0] == "ICE score 3"


def test_timeline_daily_max_and_event_window():
    observations = [ice(at(2), 8), ice(at(3, 8), 5), ice(at(3, 20), 9), ice(at(5), 10)]
    drowsy = Event("consciousness", at(3, 10), at(3, 14), detail="tactile")
    timeline = icans_timeline(patient(observations, [drowsy]))
    assert timeline.daily_max == {2: 1, 3: 3, 5: 0}
    assert [p.grade for p in timeline.points] == [1, 2, 3, 3, 1, 0]
    assert timeline.max_grade == 3


def test_event_without_detail_is_flagged():
    record = patient(events=[Event("cerebral_edema", at(2), source_id="Img/1")])
    point = icans_timeline(record).points[0]
    assert point.grade == 3
    reason = "cerebral edema without detail (Img/1): graded as at least 3"
    assert point.reasons == (reason,)


def test_bad_consciousness_event_names_the_source():
    event = Event("consciousness", at(2), source_id="Obs/gcs")
    with pytest.raises(DataError, match="Obs/gcs"):
        icans_timeline(patient(events=[event]))


def test_fractional_ice_in_record_names_the_source():
    with pytest.raises(DataError, match="Obs/ice"):
        icans_timeline(patient([ice(at(1), 6.5)]))


def test_before_infusion_and_without_infusion():
    record = patient([ice(at(-2), 2), ice(at(1), 10)])
    assert [p.study_day for p in icans_timeline(record).points] == [1]
    empty = icans_timeline(patient([ice(at(1), 2)], infusion=False))
    assert empty.points == () and "no infusion event" in empty.message


def test_to_dict():
    record = patient([ice(at(1), 6)], [Event("motor_weakness", at(1))])
    data = json.loads(json.dumps(icans_timeline(record).to_dict()))
    assert data["points"][0]["driver"] == "motor weakness"
    assert data["max_grade"] == 4


domains = st.fixed_dictionaries(
    {},
    optional={
        "ice_score": st.integers(0, 10),
        "consciousness": st.sampled_from(["spontaneous", "voice", "tactile"]),
        "seizure": st.sampled_from(["rapid", "prolonged"]),
        "motor_weakness": st.booleans(),
        "cerebral_edema": st.sampled_from(["focal", "diffuse"]),
    },
)


@given(findings=domains, extra=domains)
def test_adding_findings_never_lowers_the_grade(findings, extra):
    merged = {**findings, **{k: v for k, v in extra.items() if k not in findings}}
    assert icans_grade(**merged) >= icans_grade(**findings)
    singles = [icans_grade(**{k: v}) for k, v in merged.items()]
    assert icans_grade(**merged) == max(singles, default=0)
