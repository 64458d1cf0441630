"""OMOP import rules on a small synthetic CDM written as CSV files.

Expected values are computed by hand from the rows below: unit factors are
exact (1 mg/dL = 10 mg/L; 100.4 degF = 38 degC) or follow the molar mass of
quantities.csv (haem monomer 16 114.5 g/mol: 6.2 mmol/L x 1.61145 = 9.991 g/dL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from cartwin.io.omop import read_omop
from cartwin.record.pseudonym import pseudonymise

UTC = dt.timezone.utc
P1, P2 = 1, 2


def base_tables() -> dict:
    """Two persons; person 1 had CAR T, person 2 a single haemoglobin."""
    return {
        "person": [
            {
                "person_id": P1,
                "gender_concept_id": 8532,
                "year_of_birth": 1960,
                "month_of_birth": 5,
                "day_of_birth": 20,
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
                "person_source_value": "MRN-0001",
            },
            {
                "person_id": P2,
                "gender_concept_id": 8507,
                "year_of_birth": 1975,
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
            },
        ],
        "measurement": [
            _m(1, 3020460, "2024-03-06 08:00:00", 3.0, unit_concept_id=8840),
            _m(2, 3020460, None, 12, unit_source_value="mg/L", date="2024-03-07"),
            _m(
                3,
                3001122,
                "2024-03-06 08:00:00",
                500,
                unit_source_value="ug/L",
                operator_concept_id=4172704,
            ),
            _m(
                4,
                3023091,
                "2024-03-06 08:00:00",
                2,
                unit_concept_id=8845,
                operator_concept_id=4171756,
            ),
            _m(5, 3020891, "2024-03-06 09:30:00", 100.4, unit_concept_id=9289),
            _m(6, 999999, "2024-03-06 08:00:00", 1, unit_source_value="mg/L"),
            _m(7, 3020460, "2024-03-08 08:00:00", None, unit_source_value="mg/L"),
            _m(8, 424242, "2024-03-09 08:00:00", 7, unit_source_value="mg/L"),
            _m(
                9,
                3000963,
                "2024-03-06 07:00:00",
                6.2,
                unit_source_value="mmol/L",
                person_id=P2,
            ),
        ],
        "drug_exposure": [
            _d(
                1,
                792844,
                "2024-03-05",
                "2024-03-05 10:00:00",
                quantity=2,
                dose_unit_source_value="10*8{cells}",
            ),
            _d(
                2,
                40171288,
                "2024-03-07",
                "2024-03-07 14:00:00",
                quantity=560,
                dose_unit_source_value="mg",
            ),
            _d(3, 1395557, "2024-02-28", None, end="2024-03-02"),
            _d(4, 111, "2024-03-08", None),
        ],
        "procedure_occurrence": [
            {
                "procedure_occurrence_id": 1,
                "person_id": P1,
                "procedure_concept_id": 4097246,
                "procedure_date": "2024-03-08",
                "procedure_type_concept_id": 0,
            },
        ],
        "observation": [
            {
                "observation_id": 1,
                "person_id": P1,
                "observation_concept_id": 4138933,
                "observation_date": "2024-03-08",
                "observation_type_concept_id": 0,
            },
        ],
        "condition_occurrence": [
            {
                "condition_occurrence_id": 1,
                "person_id": P1,
                "condition_concept_id": 555,
                "condition_start_date": "2023-12-01",
                "condition_type_concept_id": 0,
            },
        ],
        "episode": [
            {
                "episode_id": 1,
                "person_id": P1,
                "episode_concept_id": 0,
                "episode_start_date": "2024-03-01",
                "episode_end_date": "2024-03-03",
                "episode_object_concept_id": 1310317,
                "episode_type_concept_id": 0,
            },
        ],
        "concept": [
            _c(555, "Diffuse large B-cell lymphoma", "Condition", "SNOMED", "0000001"),
            _c(111, "dexamethasone 4 MG Oral Tablet", "Drug", "RxNorm", "0000002"),
            _c(1518254, "dexamethasone", "Drug", "RxNorm", "3264"),
            _c(
                424242,
                "C reactive protein [Mass/volume] in Serum or Plasma by High "
                "sensitivity method",
                "Measurement",
                "LOINC",
                "30522-7",
            ),
        ],
        "concept_ancestor": [
            {
                "ancestor_concept_id": 1518254,
                "descendant_concept_id": 111,
                "min_levels_of_separation": 2,
                "max_levels_of_separation": 2,
            },
        ],
    }


def _m(mid, concept, when, value, *, person_id=P1, date=None, **extra) -> dict:
    return {
        "measurement_id": mid,
        "person_id": person_id,
        "measurement_concept_id": concept,
        "measurement_date": date or when[:10],
        "measurement_datetime": when,
        "measurement_type_concept_id": 0,
        "value_as_number": value,
        **extra,
    }


def _d(did, concept, date, when, *, end=None, **extra) -> dict:
    return {
        "drug_exposure_id": did,
        "person_id": P1,
        "drug_concept_id": concept,
        "drug_exposure_start_date": date,
        "drug_exposure_start_datetime": when,
        "drug_exposure_end_date": end,
        "drug_type_concept_id": 0,
        **extra,
    }


def _c(cid, name, domain, vocabulary, code) -> dict:
    return {
        "concept_id": cid,
        "concept_name": name,
        "domain_id": domain,
        "vocabulary_id": vocabulary,
        "concept_class_id": "x",
        "standard_concept": "S",
        "concept_code": code,
        "valid_start_date": "1970-01-01",
        "valid_end_date": "2099-12-31",
    }


@pytest.fixture
def cdm(tmp_path, omop):
    return omop.write_csv(tmp_path / "cdm", base_tables())


@pytest.fixture
def imported(cdm, key):
    return read_omop(cdm, key=key, site_utc_offset_min=60)


def _with_pseudonym(record, pseudonym: str):
    facts = dataclasses.replace(record.facts, pseudonym=pseudonym)
    return dataclasses.replace(record, facts=facts)


def _obs(result, source_id):
    for record in result.records:
        for obs in record.observations:
            if obs.source_id == source_id:
                return obs
    raise AssertionError(f"no observation {source_id}")


def _events(result, kind):
    return [e for e in result.records[0].events if e.kind == kind]


def test_values_are_converted_to_canonical_units(imported):
    assert _obs(imported, "measurement/1").value == pytest.approx(30.0, rel=1e-12)
    assert _obs(imported, "measurement/5").value == pytest.approx(38.0, rel=1e-12)
    haemoglobin = _obs(imported, "measurement/9")
    assert haemoglobin.value == pytest.approx(6.2 * 16114.5 / 10_000, rel=1e-9)
    assert (haemoglobin.unit, haemoglobin.source_unit) == ("g/dL", "mmol/L")


def test_unit_concept_wins_over_unit_source_value(imported):
    crp = _obs(imported, "measurement/1")
    assert (crp.source_value, crp.source_unit) == (3.0, "mg/dL")


def test_operator_concepts_give_censoring(imported):
    assert _obs(imported, "measurement/3").censored == "above"
    assert _obs(imported, "measurement/4").censored == "below"
    assert _obs(imported, "measurement/4").value == 2.0
    assert _obs(imported, "measurement/1").censored is None


def test_times_are_site_local_with_noon_for_dates(imported):
    # site at UTC+01:00: 08:00 local is 07:00Z; a date alone is 12:00 local
    assert _obs(imported, "measurement/1").time == dt.datetime(
        2024, 3, 6, 7, tzinfo=UTC
    )
    assert _obs(imported, "measurement/2").time == dt.datetime(
        2024, 3, 7, 11, tzinfo=UTC
    )
    assert _obs(imported, "measurement/1").source_utc_offset_min == 60
    record = imported.records[0]
    assert record.study_day(_obs(imported, "measurement/2").time) == 2


def test_infusion_dose_in_cells_and_product(imported):
    (infusion,) = _events(imported, "infusion")
    assert infusion.dose == pytest.approx(2e8)
    assert infusion.dose_unit == "{cells}"
    assert infusion.start == dt.datetime(2024, 3, 5, 9, tzinfo=UTC)
    assert imported.records[0].facts.product == "axicabtagene ciloleucel"
    (tocilizumab,) = _events(imported, "tocilizumab")
    assert (tocilizumab.dose, tocilizumab.dose_unit) == (560.0, "mg")


def test_lymphodepletion_span_from_dates(imported):
    fludarabine, cyclophosphamide = _events(imported, "lymphodepletion")
    assert fludarabine.start == dt.datetime(2024, 2, 28, 11, tzinfo=UTC)
    assert fludarabine.end == dt.datetime(2024, 3, 2, 11, tzinfo=UTC)
    assert fludarabine.source_id == "drug_exposure/3"
    # the episode (oncology extension) of its object concept, cyclophosphamide
    assert cyclophosphamide.source_id == "episode/1"
    assert cyclophosphamide.end == dt.datetime(2024, 3, 3, 11, tzinfo=UTC)


def test_drug_below_an_ingredient_maps_through_concept_ancestor(imported):
    (steroid,) = _events(imported, "corticosteroid")
    assert steroid.name == "dexamethasone 4 MG Oral Tablet"
    row = next(c for c in imported.report.concepts if c.concept_id == 111)
    assert (row.recognised, row.target, row.via) == (
        True,
        "event:corticosteroid",
        "ancestor",
    )


def test_code_table_codes_map_through_the_source_vocabulary(imported):
    assert _obs(imported, "measurement/8").quantity == "crp"
    row = next(c for c in imported.report.concepts if c.concept_id == 424242)
    assert row.via == "vocabulary"


def test_procedures_and_observations_give_events(imported):
    assert [e.detail for e in _events(imported, "oxygen")] == ["positive_pressure"]
    assert len(_events(imported, "icu")) == 1


def test_condition_named_in_the_vocabulary_gives_the_disease(imported):
    facts = imported.records[0].facts
    assert (facts.disease, facts.diagnosis) == ("LBCL", "Diffuse large B-cell lymphoma")
    assert facts.diagnosis_code == "OMOP|555"
    row = next(c for c in imported.report.concepts if c.concept_id == 555)
    assert (row.recognised, row.target) == (True, "diagnosis:LBCL")


def test_facts_pseudonym_sex_and_age(imported, key):
    first, second = imported.records
    assert first.facts.pseudonym == pseudonymise("MRN-0001", key)
    # no person_source_value: person_id is namespaced by the source (kind, name)
    assert second.facts.pseudonym == pseudonymise("omop:csv:cdm:2", key)
    # born 1960-05-20, infused 2024-03-05: 63 years
    assert (first.facts.sex, first.facts.age_years) == ("female", 63)
    # born 1975, month and day unknown (taken as 1 July), last data 2024-03-06: 48
    assert (second.facts.sex, second.facts.age_years) == ("male", 48)


def test_unknown_concepts_are_counted_not_errors(imported):
    report = imported.report
    assert report.concept_counts("measurement", recognised=False) == {999999: 1}
    skipped = dict(report.table("measurement").skipped)
    assert skipped == {"concept not recognised": 1, "no value_as_number": 1}
    assert report.table("measurement").used == 7
    json.dumps(report.to_dict())


def test_person_ids_filter_reads_one_person(cdm, key):
    result = read_omop(cdm, key=key, person_ids=[P2])
    expected = [pseudonymise("omop:csv:cdm:2", key)]
    assert [r.facts.pseudonym for r in result.records] == expected
    assert result.report.table("measurement").read == 1


def test_site_concept_table_maps_more_ids(cdm, key, tmp_path):
    site = tmp_path / "site.csv"
    site.write_text("concept_id,target_type,target\n999999,observation,il6\n")
    result = read_omop(cdm, key=key, extra_concepts=site)
    assert _obs(result, "measurement/6").quantity == "il6"


def test_the_hash_follows_content_and_settings(cdm, key, imported):
    again = read_omop(cdm, key=key, site_utc_offset_min=60)
    assert again.source_sha256 == imported.source_sha256
    shifted = read_omop(cdm, key=key, site_utc_offset_min=0)
    assert shifted.source_sha256 != imported.source_sha256


def test_postgres_reads_the_same_records(postgres, cdm, key, imported):
    postgres.load_csv_folder(cdm, "synthetic")
    from_pg = read_omop(
        postgres.url, schema="synthetic", key=key, site_utc_offset_min=60
    )
    # person 2 has no person_source_value: its id is namespaced by the source,
    # so only the pseudonyms of such persons differ between the two sources
    source = f"omop:postgresql:{from_pg.source_name}:2"
    assert from_pg.records[1].facts.pseudonym == pseudonymise(source, key)
    same_id = [_with_pseudonym(r, "x") for r in from_pg.records]
    assert same_id == [_with_pseudonym(r, "x") for r in imported.records]
    assert from_pg.records[0] == imported.records[0]
    assert from_pg.source_sha256 == imported.source_sha256
    only = read_omop(postgres.url, schema="synthetic", key=key, person_ids=[P2])
    assert [len(r.observations) for r in only.records] == [1]
