"""A stored record reads back equal; the OMOP columns carry the right concepts.

Concept ids are those of the OHDSI vocabularies as documented for the OMOP CDM
v5.4 (https://ohdsi.github.io/CommonDataModel/cdm54.html): gender 8507 MALE,
8532 FEMALE; "Meas Value Operator" 4171756 '<', 4171754 '<=', 4172703 '='
(documented as equal to an omitted operator), 4171755 '>=', 4172704 '>'.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cartwin.errors import StoreError
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.store import open_store
from cartwin.store._columns import person_id
from cartwin.store.schema import OPERATOR_CONCEPTS, TABLES

from store_samples import T0, pseudonym, sample_record, sha


def _import(store, *records, name="a.json"):
    return store.import_records(records, source_name=name, source_sha256=sha(name))


def test_round_trip_equal(store):
    record = sample_record()
    _import(store, record)
    loaded = store.load_record(record.facts.pseudonym)
    assert loaded == record
    # Equality of frozen dataclasses hides nothing: check the delicate parts.
    assert loaded.events[3].name == "fludarabine"  # tie at day -5 kept in order
    assert loaded.infusion.end is None
    assert loaded.observations_of("anc")[0].time.microsecond == 1
    assert loaded.observations_of("anc")[0].source_utc_offset_min == -300
    assert loaded.observations_of("cart_qpcr")[0].censored == "below"
    assert loaded.site_utc_offset_min == 60


def test_round_trip_survives_reopening(store_path):
    record = sample_record()
    with open_store(store_path) as store:
        _import(store, record)
    with open_store(store_path, read_only=True) as store:
        assert store.load_record(record.facts.pseudonym) == record


def test_unknown_facts_round_trip(store):
    record = PatientRecord(PatientFacts(pseudonym("MRN-sparse")))
    _import(store, record)
    assert store.load_record(record.facts.pseudonym) == record


_instants = st.datetimes(
    min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1),
    timezones=st.just(dt.timezone.utc),
)  # fmt: skip
_observation = st.builds(
    Observation,
    quantity=st.sampled_from(["crp", "il6", "cart_flow"]),
    time=_instants,
    value=st.floats(allow_nan=False, allow_infinity=False),
    unit=st.text(max_size=8),
    censored=st.sampled_from([None, "below", "above"]),
    source_code=st.text(max_size=12),
    source_unit=st.text(max_size=8),
    source_utc_offset_min=st.integers(-720, 840),
)


def _without_nul(obs: Observation) -> Observation:
    """``obs`` with NUL in its text replaced (PostgreSQL text cannot hold NUL)."""
    fields = ("unit", "source_code", "source_unit")
    return replace(obs, **{f: getattr(obs, f).replace("\x00", "?") for f in fields})


# A fresh store per example (new_store), so the fixture's scope is harmless.
@settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(observations=st.lists(_observation, max_size=20))
def test_round_trip_property(new_store, backend, observations):
    # Unique source ids keep the store's duplicate rule out of the way.
    observations = [
        Observation(**{**o.__dict__, "source_id": f"Observation/{i}"})
        for i, o in enumerate(observations)
    ]
    if backend == "postgres":
        observations = [_without_nul(o) for o in observations]
    record = PatientRecord(PatientFacts(pseudonym()), tuple(observations))
    with new_store() as store:
        _import(store, record)
        assert store.load_record(record.facts.pseudonym) == record


def test_person_id_is_pseudonym_bits(store):
    record = sample_record()
    _import(store, record)
    rows = store.con.execute(
        "SELECT person_id, person_source_value, gender_concept_id FROM person"
    ).fetchall()
    expected = int.from_bytes(bytes.fromhex(record.facts.pseudonym), "big", signed=True)
    assert rows == [(expected, record.facts.pseudonym, 8532)]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("0000000000000001", 1),
        ("7fffffffffffffff", 2**63 - 1),
        ("8000000000000000", -(2**63)),
        ("ffffffffffffffff", -1),
    ],
)
def test_person_id_edges(text, number):
    assert person_id(text) == number


def test_gender_concepts(store):
    _import(store, sample_record("m", sex="male"), sample_record("o", sex="other"))
    rows = dict(store.con.execute(
        "SELECT gender_source_value, gender_concept_id FROM person"
    ).fetchall())  # fmt: skip
    assert rows == {"male": 8507, "other": 0}


def test_measurement_omop_columns(store):
    _import(store, sample_record())
    rows = store.con.execute(
        "SELECT cartwin_quantity, operator_concept_id, value_source_value, "
        "measurement_concept_id, measurement_source_value, unit_source_value "
        "FROM measurement ORDER BY measurement_id"
    ).fetchall()
    by_quantity = {}
    for row in rows:  # first row of each quantity
        by_quantity.setdefault(row[0], row[1:])
    loinc_crp = "http://loinc.org|1988-5"
    assert by_quantity["crp"] == (None, "1.25 mg/dL", 0, loinc_crp, "mg/L")
    assert by_quantity["cart_qpcr"][:2] == (4171756, None)
    assert by_quantity["ferritin"][:2] == (4172704, ">100000 ug/L")
    assert OPERATOR_CONCEPTS == {
        "<": 4171756, "<=": 4171754, "=": 4172703, ">=": 4171755, ">": 4172704,
    }  # fmt: skip


def test_measurement_times_are_utc(store):
    _import(store, sample_record())
    (when,) = store.con.execute(
        "SELECT measurement_datetime FROM measurement "
        "WHERE cartwin_quantity = 'anc'"
    ).fetchone()
    assert when == T0 + dt.timedelta(days=3, microseconds=1)
    assert when.utcoffset() == dt.timedelta(0)


def test_events_go_to_their_omop_tables(store):
    _import(store, sample_record())
    counts = store.table_counts()
    # drugs: polatuzumab, fludarabine, cyclophosphamide, infusion, tocilizumab,
    # dexamethasone; procedures: leukapheresis, radiotherapy, oxygen, ICU.
    assert counts["drug_exposure"] == 6
    assert counts["procedure_occurrence"] == 4
    assert counts["condition_occurrence"] == 1
    assert counts["observation"] == 1
    assert counts["measurement"] == 6
    (source,) = store.con.execute(
        "SELECT drug_source_value FROM drug_exposure WHERE cartwin_kind = 'infusion'"
    ).fetchone()
    assert source.endswith("rxnorm|1985600")


_IDENTIFYING = re.compile(
    r"birth|address|street|postal|zip|city|phone|email|ssn|mrn|given|family"
)


def test_no_identifying_columns(store, store_columns):
    columns = store_columns(store)
    assert {t for t, _ in columns} == set(TABLES)
    for table, column in columns:
        assert not _IDENTIFYING.search(column), (table, column)
        assert column not in {"name", "first_name", "last_name", "patient_name"}
    person = [c for t, c in columns if t == "person"]
    assert "year_of_birth" not in person and "location_id" not in person


def test_load_unknown_patient_names_it(store):
    absent = pseudonym("nobody")
    with pytest.raises(StoreError, match=absent):
        store.load_record(absent)
    with pytest.raises(StoreError, match=r"\(not a pseudonym\)"):
        store.load_record("MRN-0001")
