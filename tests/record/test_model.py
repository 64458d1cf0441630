"""PatientRecord: ordering, study days in the site's zone, pseudonyms, hashing."""

from __future__ import annotations

import datetime as dt

import pytest

from cartwin.errors import DataError
from cartwin.record.hashing import record_hash
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import (
    DEMO_KEY,
    KeyMissingError,
    load_key,
    looks_like_pseudonym,
    pseudonymise,
)

UTC = dt.timezone.utc


def _at(day, hour=12, minute=0):
    return dt.datetime(2025, 3, 10, hour, minute, tzinfo=UTC) + dt.timedelta(days=day)


def _record(offset_min=60, infusion_hour=9):
    infusion = Event("infusion", _at(0, infusion_hour), source_utc_offset_min=offset_min)
    obs = [
        Observation("crp", _at(1), 30.0, "mg/L"),
        Observation("crp", _at(-1), 5.0, "mg/L"),
        Observation("cart_flow", _at(7), 1.0, "/uL", censored="below"),
    ]
    return PatientRecord(PatientFacts("p"), tuple(obs), (infusion,))


def test_observations_sorted_by_time():
    record = _record()
    times = [o.time for o in record.observations]
    assert times == sorted(times)


def test_study_day_uses_site_calendar_day():
    # Infusion at 09:00 UTC = 10:00 local (+01:00). 23:30 UTC the same day is
    # 00:30 local on the next day: study day 1, although it is day 0 in UTC.
    record = _record(offset_min=60)
    assert record.study_day(_at(0, 22, 59)) == 0
    assert record.study_day(_at(0, 23, 30)) == 1
    assert record.study_day(_at(-5, 12)) == -5


def test_study_day_negative_offset():
    # Site at UTC-05:00: 03:00 UTC on the day after infusion is still 22:00 local.
    record = _record(offset_min=-300, infusion_hour=15)
    assert record.study_day(_at(1, 3)) == 0
    assert record.study_day(_at(1, 6)) == 1


def test_t_days_fractional():
    record = _record(infusion_hour=12)
    assert record.t_days(_at(1, 0)) == pytest.approx(0.5)


def test_no_infusion_has_no_study_day():
    record = PatientRecord(PatientFacts("p"), (Observation("crp", _at(0), 1.0, "mg/L"),))
    with pytest.raises(DataError, match="no infusion"):
        record.study_day(_at(1))


def test_naive_datetime_rejected():
    naive = dt.datetime(2025, 1, 1, 12)
    with pytest.raises(DataError, match="timezone-aware"):
        PatientRecord(PatientFacts("p"), (Observation("crp", naive, 1.0, "mg/L"),))


def test_series_keeps_censoring():
    series = _record().series("cart_flow")
    assert series.below_lloq.tolist() == [True]
    assert series.values.tolist() == [1.0]


def test_record_hash_independent_of_input_order_and_sensitive_to_values():
    record = _record()
    shuffled = PatientRecord(record.facts, tuple(reversed(record.observations)), record.events)
    assert record_hash(record) == record_hash(shuffled)
    changed = record.with_data([Observation("crp", _at(2), 31.0, "mg/L")])
    assert record_hash(changed) != record_hash(record)


def test_pseudonym_is_keyed_and_stable():
    first = pseudonymise("MRN-123", b"key-a")
    assert first == pseudonymise("MRN-123", b"key-a")
    assert first != pseudonymise("MRN-123", b"key-b")
    assert first != pseudonymise("MRN-124", b"key-a")
    assert looks_like_pseudonym(first)


def test_key_from_environment_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv("CARTWIN_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("CARTWIN_PSEUDONYM_KEY_FILE", raising=False)
    with pytest.raises(KeyMissingError, match="CARTWIN_PSEUDONYM_KEY"):
        load_key()
    assert load_key(allow_demo=True) == DEMO_KEY
    key_file = tmp_path / "key"
    key_file.write_text("secret-from-file\n")
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY_FILE", str(key_file))
    assert load_key() == b"secret-from-file"
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", "secret-from-env")
    assert load_key() == b"secret-from-env"


def test_an_ordered_infusion_is_not_day_zero():
    ordered = Event("infusion", _at(-2), detail="requested")
    given = Event("infusion", _at(0, 9))
    record = PatientRecord(PatientFacts("p"), (), (ordered, given))
    assert record.infusion_time == _at(0, 9)
    only_ordered = PatientRecord(PatientFacts("p"), (), (ordered,))
    assert only_ordered.infusion_time is None
