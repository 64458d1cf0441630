"""Bad OMOP input: clear errors naming table, row, column and value; nothing stored."""

from __future__ import annotations

import pytest

from cartwin.errors import DataError, UnitError
from cartwin.io.omop import OmopImportError, OmopUnitError, read_omop
from cartwin.store import open_store


def tables(*measurements: dict, **more) -> dict:
    """One person and the given measurement rows (plus other tables)."""
    return {
        "person": [
            {
                "person_id": 1,
                "gender_concept_id": 8532,
                "year_of_birth": 1960,
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
            }
        ],
        "measurement": list(measurements),
        **more,
    }


def crp(mid: int, value, unit: str = "mg/L", **extra) -> dict:
    row = {
        "measurement_id": mid,
        "person_id": 1,
        "measurement_concept_id": 3020460,
        "measurement_date": "2024-03-06",
        "measurement_type_concept_id": 0,
        "value_as_number": value,
        "unit_source_value": unit,
    }
    row.update(extra)
    return row


def read(tmp_path, omop, key, content: dict):
    folder = omop.write_csv(tmp_path / "cdm", content)
    return read_omop(folder, key=key)


def problems(excinfo) -> list:
    return list(excinfo.value.problems)


def test_missing_table_is_named_with_the_source(tmp_path, omop, key):
    content = tables(crp(1, 3.0))
    del content["measurement"]
    with pytest.raises(OmopImportError) as excinfo:
        read(tmp_path, omop, key, content)
    (problem,) = problems(excinfo)
    assert (problem.code, problem.resource) == ("missing-table", "measurement")
    assert str(tmp_path / "cdm") in str(excinfo.value)
    assert "required table measurement is missing" in str(excinfo.value)


def test_missing_column_is_named_with_its_table(tmp_path, omop, key):
    content = tables(
        crp(1, 3.0), drop={"measurement.measurement_date", "person.year_of_birth"}
    )
    with pytest.raises(OmopImportError) as excinfo:
        read(tmp_path, omop, key, content)
    found = {(p.resource, p.field) for p in problems(excinfo)}
    assert found == {("measurement", "measurement_date"), ("person", "year_of_birth")}


def test_non_numeric_value_of_a_mapped_measurement(tmp_path, omop, key):
    content = tables(
        crp(1, "high"), crp(2, 4.0), {**crp(3, "n/a"), "measurement_concept_id": 999999}
    )
    with pytest.raises(OmopImportError) as excinfo:
        read(tmp_path, omop, key, content)
    (problem,) = problems(excinfo)  # the unmapped row 3 is no problem
    assert (problem.code, problem.resource, problem.field, problem.value) == (
        "non-numeric",
        "measurement/1",
        "value_as_number",
        "'high'",
    )


def test_unit_that_cannot_be_converted(tmp_path, omop, key):
    content = tables(crp(1, 3.0), crp(7, 3.0, unit="mmol/L"), crp(8, 1.0, unit="kg"))
    with pytest.raises(OmopUnitError) as excinfo:
        read(tmp_path, omop, key, content)
    assert isinstance(excinfo.value, UnitError)
    found = [(p.resource, p.field, p.value) for p in problems(excinfo)]
    assert found == [
        ("measurement/7", "unit_source_value", "'mmol/L'"),
        ("measurement/8", "unit_source_value", "'kg'"),
    ]
    assert "'mg/L'" in str(excinfo.value)  # what the unit must convert to


def test_drug_exposure_ending_before_it_starts(tmp_path, omop, key):
    drug = {
        "drug_exposure_id": 42,
        "person_id": 1,
        "drug_concept_id": 40171288,
        "drug_exposure_start_date": "2024-03-07",
        "drug_exposure_end_date": "2024-03-05",
        "drug_type_concept_id": 0,
    }
    with pytest.raises(OmopImportError) as excinfo:
        read(tmp_path, omop, key, tables(crp(1, 3.0), drug_exposure=[drug]))
    (problem,) = problems(excinfo)
    assert (problem.code, problem.resource) == (
        "dates-out-of-order",
        "drug_exposure/42",
    )
    assert "2024-03-05 12:00:00 is before start 2024-03-07 12:00:00" in problem.message


def test_malformed_cells_and_unknown_person(tmp_path, omop, key):
    content = tables(
        crp(1, 3.0, measurement_date="2024-13-45"),
        crp(2, 3.0, person_id=77),
        crp(3, 3.0, measurement_concept_id="abc"),
    )
    with pytest.raises(OmopImportError) as excinfo:
        read(tmp_path, omop, key, content)
    found = {(p.code, p.resource, p.field) for p in problems(excinfo)}
    assert found == {
        ("malformed", "measurement/1", "measurement_date"),
        ("missing-time", "measurement/1", "measurement_date / measurement_datetime"),
        ("unknown-person", "measurement/2", "person_id"),
        ("malformed", "measurement/3", "measurement_concept_id"),
    }


def test_all_problems_are_listed_in_one_error(tmp_path, omop, key):
    content = tables(crp(1, "x"), crp(2, 3.0, unit="kg"), crp(3, 3.0, person_id=9))
    with pytest.raises(OmopImportError) as excinfo:
        read(tmp_path, omop, key, content)
    assert not isinstance(excinfo.value, UnitError)  # mixed kinds
    assert [p.code for p in problems(excinfo)] == [
        "non-numeric",
        "unit",
        "unknown-person",
    ]
    assert str(excinfo.value).startswith("3 problem(s) in OMOP source")


def test_a_bad_source_leaves_the_store_untouched(tmp_path, omop, key):
    good = read(tmp_path / "good", omop, key, tables(crp(1, 3.0)))
    with open_store(tmp_path / "store.duckdb") as store:
        store.import_records(
            list(good.records),
            source_name=good.source_name,
            source_sha256=good.source_sha256,
        )
        before = store.snapshot()
        with pytest.raises(OmopImportError):
            bad = read(tmp_path / "bad", omop, key, tables(crp(1, 3.0), crp(2, "x")))
            store.import_records(
                list(bad.records),
                source_name=bad.source_name,
                source_sha256=bad.source_sha256,
            )
        assert store.snapshot() == before


def test_bad_arguments_and_sources(tmp_path, omop, key):
    folder = omop.write_csv(tmp_path / "cdm", tables(crp(1, 3.0)))
    with pytest.raises(DataError, match="key must be non-empty bytes"):
        read_omop(folder, key=b"")
    with pytest.raises(DataError, match="site_utc_offset_min = 900"):
        read_omop(folder, key=key, site_utc_offset_min=900)
    with pytest.raises(DataError, match="does not exist"):
        read_omop(tmp_path / "nowhere", key=key)
    with pytest.raises(
        DataError, match="cannot connect to OMOP source postgresql://u@"
    ):
        read_omop("postgresql://u:secret@127.0.0.1:1/cdm", key=key)
