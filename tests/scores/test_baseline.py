"""The report's score set: pre-lymphodepletion scores and later m-EASIX.

Values follow the arithmetic of clinical-facts.md sections 1.2 and 2.
"""

from __future__ import annotations

import datetime as dt
import json

from cartwin.record import Event, Observation, PatientFacts, PatientRecord
from cartwin.record import canonical_unit
from cartwin.scores import baseline_scores

UTC = dt.timezone.utc
INFUSION = dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
PRE_LD = {
    "platelets": 100,
    "anc": 2.0,
    "hemoglobin": 12,
    "crp": 50,
    "ferritin": 300,
    "ldh": 250,
    "creatinine": 1.0,
}


def at(day: float, hour: int = 8) -> dt.datetime:
    return INFUSION.replace(hour=hour) + dt.timedelta(days=day)


def labs(day: int, values: dict) -> list[Observation]:
    return [Observation(q, at(day), v, canonical_unit(q)) for q, v in values.items()]


def patient(observations, *, infusion=True, ld=True) -> PatientRecord:
    events = []
    if infusion:
        events.append(Event("infusion", INFUSION))
    if ld:
        events.append(Event("lymphodepletion", at(-5, 9), name="fludarabine"))
    return PatientRecord(PatientFacts("p-base"), tuple(observations), tuple(events))


def test_pre_lymphodepletion_set():
    results = baseline_scores(patient(labs(-6, PRE_LD)))
    summary = [(r.name, r.value, r.category) for r in results]
    # CRP 50 mg/L scores 1 point and platelets 100 x 10^9/L 1 point.
    assert summary == [
        ("CAR-HEMATOTOX", 2, "high"),
        ("EASIX", 2.5, "low"),
        ("m-EASIX", 12.5, None),
    ]
    assert {r.timepoint for r in results} == {"pre-lymphodepletion"}


def test_m_easix_added_on_days_with_data():
    day3 = {"ldh": 400, "crp": 100, "platelets": 50}
    observations = [*labs(-6, PRE_LD), *labs(3, day3), *labs(0, {"crp": 80})]
    results = baseline_scores(patient(observations))
    later = [(r.timepoint, r.value, r.missing) for r in results[3:]]
    assert later == [("day 0", None, ("ldh", "platelets")), ("day +3", 80.0, ())]
    assert results[3].message == "no ldh, platelets on study day 0"


def test_later_days_skipped_without_data():
    assert len(baseline_scores(patient(labs(-6, PRE_LD)))) == 3


def test_no_study_day():
    results = baseline_scores(patient(labs(-6, PRE_LD), infusion=False, ld=False))
    assert len(results) == 3
    assert all(r.value is None and "no study day" in r.message for r in results)
    json.dumps([r.to_dict() for r in results])
