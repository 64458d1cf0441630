"""OMOP import under hostile input (defects found by a tester).

Each test writes a tiny CDM v5.4 CSV folder inline: person 1 with one CRP
measurement (LOINC 1988-5, OMOP concept 3020460, as in the shipped concept
table) unless the test says otherwise.
"""

from __future__ import annotations

import pytest

from cartwin.io.omop import OmopImportError, read_omop
from cartwin.record.pseudonym import pseudonymise

CRP = 3020460
AXI_CEL = 792844  # RxNorm axicabtagene ciloleucel in the shipped concept table


def _person(pid: int = 1, gender: int = 8532, **extra) -> dict:
    return {"person_id": pid, "gender_concept_id": gender, "year_of_birth": 1960,
            "race_concept_id": 0, "ethnicity_concept_id": 0, **extra}  # fmt: skip


def _measurement(mid: int = 1, value="12", *, concept: int = CRP,
                 when: str = "2024-03-06 08:00:00", unit: str = "mg/L") -> dict:
    return {"measurement_id": mid, "person_id": 1, "measurement_concept_id": concept,
            "measurement_date": when[:10], "measurement_datetime": when,
            "measurement_type_concept_id": 0, "value_as_number": value,
            "unit_source_value": unit}  # fmt: skip


def _write(omop, folder, persons=None, measurements=None, **tables):
    data = {"person": persons or [_person()],
            "measurement": measurements or [_measurement()], **tables}  # fmt: skip
    return omop.write_csv(folder, data)


def _problems(source, key, **kwargs):
    with pytest.raises(OmopImportError) as info:
        read_omop(source, key=key, **kwargs)
    return info.value.problems


# -- 10: persons ---------------------------------------------------------------------
def test_duplicate_person_with_another_gender_is_a_problem(omop, tmp_path, key):
    folder = _write(omop, tmp_path / "cdm", [_person(), _person(gender=8507)])
    (problem,) = _problems(folder, key)
    assert (problem.code, problem.resource, problem.field) == (
        "duplicate-person", "person/1", "person_id")


def test_identical_repeated_person_row_is_skipped_and_counted(omop, tmp_path, key):
    folder = _write(omop, tmp_path / "cdm", [_person(), _person()])
    result = read_omop(folder, key=key)
    assert len(result.records) == 1
    assert dict(result.report.table("person").skipped) == {"repeated row": 1}


def test_missing_value_as_number_column_is_a_problem(omop, tmp_path, key):
    folder = omop.write_csv(tmp_path / "cdm", {
        "person": [_person()], "measurement": [_measurement()],
        "drop": {"measurement.value_as_number"},
    })  # fmt: skip
    (problem,) = _problems(folder, key)
    assert (problem.code, problem.resource, problem.field) == (
        "missing-column", "measurement", "value_as_number")


def test_person_id_pseudonyms_are_namespaced_by_source(omop, tmp_path, key):
    one = read_omop(_write(omop, tmp_path / "siteA"), key=key).records[0]
    two = read_omop(_write(omop, tmp_path / "siteB"), key=key).records[0]
    assert one.facts.pseudonym == pseudonymise("omop:csv:siteA:1", key)
    assert one.facts.pseudonym != two.facts.pseudonym
    # the hospital's own id gives one pseudonym whatever the source
    persons = [_person(person_source_value="MRN-7")]
    three = read_omop(_write(omop, tmp_path / "siteC", persons), key=key).records[0]
    four = read_omop(_write(omop, tmp_path / "siteD", persons), key=key).records[0]
    assert three.facts.pseudonym == four.facts.pseudonym == pseudonymise("MRN-7", key)


# -- 2 and 5: times, values, ages, doses ---------------------------------------------
@pytest.mark.parametrize(
    ("measurement", "code", "field"),
    [(_measurement(value="-5"), "implausible", "value_as_number"),
     (_measurement(value="3000"), "implausible", "value_as_number"),
     (_measurement(when="9999-12-31 23:59:59"), "timestamp-invalid",
      "measurement_datetime")],
)  # fmt: skip
def test_implausible_measurements(omop, tmp_path, key, measurement, code, field):
    folder = _write(omop, tmp_path / "cdm", measurements=[measurement])
    (problem,) = _problems(folder, key, site_utc_offset_min=60)
    assert (problem.code, problem.resource, problem.field) == (
        code, "measurement/1", field)


def test_cart_zero_without_comparator_is_not_detected(omop, tmp_path, key):
    site = tmp_path / "site.csv"
    site.write_text("concept_id,target_type,target\n2000000001,observation,cart_flow\n")
    row = _measurement(value="0", concept=2000000001, unit="/uL")
    folder = _write(omop, tmp_path / "cdm", measurements=[row])
    (problem,) = _problems(folder, key, extra_concepts=site)
    assert (problem.code, problem.field) == ("not-detected", "value_as_number")
    assert "4171756" in problem.message


def test_age_of_2023_years_is_implausible(omop, tmp_path, key):
    folder = _write(omop, tmp_path / "cdm", [_person(year_of_birth=1)])
    (problem,) = _problems(folder, key)
    assert (problem.code, problem.resource) == ("implausible", "person/1")
    assert "0 to 120 years" in problem.message


def test_implausible_infusion_dose(omop, tmp_path, key):
    drug = {"drug_exposure_id": 1, "person_id": 1, "drug_concept_id": AXI_CEL,
            "drug_exposure_start_date": "2024-03-05", "drug_type_concept_id": 0,
            "quantity": "1e4", "dose_unit_source_value": "10*8{cells}"}  # fmt: skip
    folder = _write(omop, tmp_path / "cdm", drug_exposure=[drug])
    (problem,) = _problems(folder, key)
    assert (problem.code, problem.resource, problem.field) == (
        "implausible", "drug_exposure/1", "quantity")
