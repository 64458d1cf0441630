"""Incremental CRS grading equals grading the whole record; alerts on rises only.

The reference is :func:`cartwin.scores.crs_timeline` on the full record
(ASTCT consensus, Lee et al. 2019, doi:10.1016/j.bbmt.2018.12.758): fever is
T >= 38 °C and counts for 24 h; SBP < 90 mmHg without vasopressors is grade 2.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.scores import crs_timeline
from cartwin.service.crs_live import LiveCrs, PatientCrs

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
PSEUDONYM = "00112233445566aa"


def _hours(h: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=h)


def _record(masking: float | None, supports: bool = False) -> PatientRecord:
    events = [Event("infusion", T0, name="tisagenlecleucel")]
    if supports:  # low-flow oxygen (grade 2) and one vasopressor (grade 3)
        events += [
            Event("oxygen", _hours(30), _hours(40), detail="low_flow"),
            Event("vasopressor", _hours(50), _hours(55), name="norepinephrine"),
        ]
    if masking is not None:
        events.append(Event("tocilizumab", _hours(masking), name="tocilizumab"))
    return PatientRecord(
        PatientFacts(PSEUDONYM), events=tuple(events), site_utc_offset_min=60
    )


def _random_obs(rng: random.Random, index: int) -> Observation:
    quantity = rng.choice(["temperature", "systolic_bp", "spo2", "heart_rate"])
    ranges = {"temperature": (36.5, 39.5), "systolic_bp": (70, 130),
              "spo2": (85, 99), "heart_rate": (60, 120)}  # fmt: skip
    value = rng.uniform(*ranges[quantity])
    if rng.random() < 0.2:  # values exactly at the thresholds
        value = {"temperature": 38.0, "systolic_bp": 90.0, "spo2": 90.0}.get(
            quantity, 80
        )
    when = _hours(rng.randrange(-10, 90) + rng.random())
    return Observation(quantity, when, value, "", source_id=f"O/{index}")


@pytest.mark.parametrize("seed", range(8))
def test_incremental_grades_equal_full_grading(seed):
    rng = random.Random(seed)
    base = _record(masking=rng.uniform(0, 60) if seed % 2 else None, supports=True)
    live, stored = PatientCrs(base), []
    for index in range(80):
        batch = [_random_obs(rng, index)]
        if stored and rng.random() < 0.15:
            batch.append(rng.choice(stored))  # a re-sent value: a duplicate
        new = live.fresh(batch)
        live.apply(new)
        stored += new
        assert (
            live.timeline().to_dict() == crs_timeline(base.with_data(stored)).to_dict()
        )


def test_fever_then_hypotension_raises_twice_then_not_again():
    live = PatientCrs(_record(masking=None))
    fever = Observation("temperature", _hours(24), 38.6, "Cel", source_id="t")
    first = live.apply([fever])
    assert (first.grade_from, first.grade_to, first.point.driver) == (0, 1, "fever")
    low_bp = Observation("systolic_bp", _hours(25), 85.0, "mm[Hg]", source_id="b1")
    second = live.apply([low_bp])
    assert (second.grade_from, second.grade_to, second.point.driver) == (
        1,
        2,
        "hypotension",
    )
    again = Observation("systolic_bp", _hours(26), 84.0, "mm[Hg]", source_id="b2")
    assert live.apply([again]) is None
    assert live.current()[0] == 2


def test_hypotension_without_fever_is_not_crs():
    live = PatientCrs(_record(masking=None))
    low_bp = Observation("systolic_bp", _hours(5), 80.0, "mm[Hg]")
    assert live.apply([low_bp]) is None and live.current()[0] == 0


def test_current_grade_falls_after_24_hours_of_data():
    live = PatientCrs(_record(masking=None))
    live.apply([Observation("temperature", _hours(1), 39.0, "Cel")])
    live.apply([Observation("temperature", _hours(26), 37.0, "Cel")])
    assert live.current()[0] == 0  # the fever is more than 24 h before the latest value
    rise = live.apply([Observation("temperature", _hours(27), 38.1, "Cel")])
    assert (rise.grade_from, rise.grade_to) == (0, 1)


def test_no_infusion_no_grade():
    record = PatientRecord(PatientFacts(PSEUDONYM))
    live = PatientCrs(record)
    assert live.apply([Observation("temperature", _hours(1), 39.5, "Cel")]) is None
    assert live.current() == (None, None) and "no infusion" in live.timeline().message


class _Store:
    """Stands in for a TwinStore: serves one record, counts loads."""

    def __init__(self, record: PatientRecord) -> None:
        self.record, self.loads = record, 0

    def load_record(self, pseudonym: str) -> PatientRecord:
        self.loads += 1
        return self.record


def test_cache_builds_once_and_reload_reports_a_rise():
    store = _Store(_record(masking=None))
    cache = LiveCrs(max_patients=1)
    cache.get(store, PSEUDONYM), cache.get(store, PSEUDONYM)
    assert store.loads == 1
    fever = Observation("temperature", _hours(3), 38.5, "Cel")
    store.record = store.record.with_data([fever])  # an import added a fever
    change = cache.reload(store, PSEUDONYM)
    assert (change.grade_from, change.grade_to) == (0, 1) and store.loads == 2
    cache.get(store, "ffeeddccbbaa0099")  # over max_patients: the first is dropped
    assert PSEUDONYM not in cache


def test_grading_failure_does_not_fail_a_stored_commit(caplog):
    from cartwin.service.stream import StoreGate, VitalsIngestor

    bad = _record(masking=None).with_data(
        events=[Event("oxygen", _hours(2), _hours(3), detail="snorkel")]
    )
    gate = StoreGate(_Store(bad), LiveCrs())
    writer = VitalsIngestor(gate, alerts=None, broker=None, batch_max=10)
    fever = Observation("temperature", _hours(2.5), 39.0, "Cel")
    assert writer._grade(gate.store, PSEUDONYM, [fever]) is None
    assert PSEUDONYM not in gate.live
    assert "grading of patient" in caplog.text and "DataError" in caplog.text
