"""Bad input: every problem is named with file, resource, field and value.

Each test checks the exception type, the stable problem code and that the
message quotes what a user needs to find the record.
"""

from __future__ import annotations

import bz2
import gzip
import json

import pytest

from cartwin.errors import DataError, UnitError
from cartwin.io import FhirImportError, FhirUnitError, import_fhir


def _fails(path, key, *parts, code, error=FhirImportError, **kwargs):
    """Import ``path``; check the error type, its single code and message parts."""
    with pytest.raises(error) as caught:
        import_fhir(path, key=key, **kwargs)
    assert isinstance(caught.value, DataError)
    assert [p.code for p in caught.value.problems] == [code]
    message = str(caught.value)
    for part in (path.name, *parts):
        assert part in message, (part, message)
    return caught.value


def test_malformed_json_names_line_and_column(tmp_path, key):
    path = tmp_path / "broken.json"
    path.write_text(
        '{\n  "resourceType": "Observation",\n  "id": "x1"\n  "status": "final"\n}\n'
    )
    error = _fails(
        path,
        key,
        "line 4 column 3",
        "Expecting ',' delimiter",
        '\'"status"',
        code="malformed-json",
    )
    assert error.problems[0].location == "line 4 column 3"


def test_truncated_json(tmp_path, key, cart_bundle_path):
    raw = cart_bundle_path.read_bytes()
    path = tmp_path / "cut.json"
    path.write_bytes(raw[: len(raw) // 2])
    _fails(path, key, "truncated", "line ", code="truncated")


@pytest.mark.parametrize(
    "compress", [gzip.compress, bz2.compress], ids=["gzip", "bzip2"]
)
def test_truncated_compressed_file(tmp_path, key, cart_bundle_path, compress):
    data = compress(cart_bundle_path.read_bytes())
    path = tmp_path / "cut.json.z"
    path.write_bytes(data[: len(data) - 40])
    _fails(path, key, "truncated", code="truncated")


def test_unknown_resource_type(tmp_path, key, fhir):
    path = fhir.write(
        tmp_path / "typo.json", fhir.bundle({"resourceType": "Observaton", "id": "x1"})
    )
    _fails(
        path,
        key,
        "Observaton/x1",
        "entry[0]",
        "field resourceType",
        "'Observaton'",
        code="unknown-resource-type",
    )


def test_not_a_fhir_resource(tmp_path, key, fhir):
    path = fhir.write(tmp_path / "plain.json", {"patient": "x"})
    _fails(path, key, "without a resourceType", code="not-fhir")


def test_observation_with_mapped_code_but_no_value(tmp_path, key, fhir):
    resource = fhir.observation("noval", "1988-5")
    path = fhir.write(tmp_path / "noval.json", fhir.bundle(resource))
    _fails(
        path, key, "Observation/noval", "field value[x]", "1988", code="missing-value"
    )


def test_unknown_unit_is_a_unit_error(tmp_path, key, fhir):
    resource = fhir.observation("badunit", "1988-5", 3.0, "mg/furlong")
    path = fhir.write(tmp_path / "units.json", fhir.bundle(resource))
    error = _fails(
        path,
        key,
        "Observation/badunit",
        "field valueQuantity.code",
        "'mg/furlong'",
        code="unit",
        error=FhirUnitError,
    )
    assert isinstance(error, UnitError)


def test_wrong_dimension_is_a_unit_error(tmp_path, key, fhir):
    resource = fhir.observation("dim", "718-7", 9.0, "mg/L", system="http://loinc.org")
    resource["valueQuantity"]["code"] = "kg"
    path = fhir.write(tmp_path / "dim.json", resource)
    _fails(
        path,
        key,
        "Observation/dim",
        "valueQuantity.code",
        "'kg'",
        "g/dL",
        code="unit",
        error=FhirUnitError,
    )


def test_missing_unit_is_a_unit_error(tmp_path, key, fhir):
    resource = fhir.observation("nounit", "1988-5", 3.0, None)
    resource["valueQuantity"] = {"value": 3.0}
    path = fhir.write(tmp_path / "nounit.json", resource)
    _fails(
        path,
        key,
        "Observation/nounit",
        "valueQuantity.unit",
        "no unit given",
        code="unit",
        error=FhirUnitError,
    )


def test_timestamp_without_zone(tmp_path, key, fhir):
    resource = fhir.observation(
        "nozone", "1988-5", 3.0, "mg/L", when="2024-03-06T10:00:00"
    )
    path = fhir.write(tmp_path / "zone.json", fhir.bundle(resource))
    _fails(
        path,
        key,
        "Observation/nozone",
        "field effectiveDateTime",
        "'2024-03-06T10:00:00'",
        "site_utc_offset_min",
        code="timestamp-no-zone",
    )


def test_year_only_time_is_imprecise(tmp_path, key, fhir):
    resource = fhir.observation("year", "1988-5", 3.0, "mg/L", when="2024")
    path = fhir.write(tmp_path / "year.json", resource)
    _fails(
        path,
        key,
        "Observation/year",
        "effectiveDateTime",
        "'2024'",
        code="timestamp-imprecise",
        site_utc_offset_min=0,
    )


@pytest.mark.parametrize("token", ["NaN", "Infinity", "1e999"])
def test_non_finite_value(tmp_path, key, fhir, token):
    resource = fhir.observation("nan", "1988-5", 1.0, "mg/L")
    text = json.dumps(resource).replace('"value": 1.0', f'"value": {token}')
    path = tmp_path / "nan.json"
    path.write_text(text)
    _fails(
        path,
        key,
        "Observation/nan",
        "field valueQuantity.value",
        "not a finite number",
        code="non-finite",
    )


def test_validation_error_names_field_and_value(tmp_path, key, fhir):
    resource = fhir.observation("badstatus", "1988-5", 3.0, "mg/L")
    resource["valueQuantity"]["value"] = "3,0"
    path = fhir.write(tmp_path / "invalid.json", resource)
    _fails(
        path,
        key,
        "Observation/badstatus",
        "field valueQuantity.value",
        "'3,0'",
        code="invalid",
    )


def test_infusion_dose_per_kg_is_rejected(tmp_path, key):
    resource = {
        "resourceType": "MedicationAdministration",
        "id": "kg-dose",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "https://cartwin.org/fhir/CodeSystem/local",
                    "code": "tisagenlecleucel",
                }
            ]
        },
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-05T10:00:00+01:00",
        "dosage": {
            "dose": {
                "value": 2e6,
                "unit": "{cells}/kg",
                "system": "http://unitsofmeasure.org",
                "code": "{cells}/kg",
            }
        },
    }
    path = tmp_path / "dose.json"
    path.write_text(json.dumps(resource))
    _fails(
        path,
        key,
        "MedicationAdministration/kg-dose",
        "dosage.dose.code",
        "'{cells}/kg'",
        code="unit",
        error=FhirUnitError,
    )


def test_all_problems_of_a_file_are_raised_together(tmp_path, key, fhir):
    document = fhir.bundle(
        fhir.observation("a", "1988-5", 3.0, "mg/furlong"),
        fhir.observation("b", "1988-5"),
        fhir.observation("c", "1988-5", 3.0, "mg/L", when="2024-03-06T10:00:00"),
        fhir.observation("d", "1988-5", 3.0, "mg/L"),  # fine
    )
    path = fhir.write(tmp_path / "many.json", document)
    with pytest.raises(FhirImportError) as caught:
        import_fhir(path, key=key)
    error = caught.value
    assert not isinstance(error, UnitError)  # not all problems are unit problems
    assert [(p.resource, p.code) for p in error.problems] == [
        ("Observation/c", "timestamp-no-zone"),  # found by validation, first pass
        ("Observation/a", "unit"),
        ("Observation/b", "missing-value"),
    ]
    assert str(error).startswith("3 problem(s) in many.json:")


def test_ndjson_problems_name_their_lines(tmp_path, key, fhir):
    lines = [
        json.dumps(fhir.observation("ok", "1988-5", 3.0, "mg/L")),
        "{oops",
        "",
        json.dumps({"resourceType": "Nope"}),
    ]
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FhirImportError) as caught:
        import_fhir(path, key=key)
    assert [(p.code, p.location) for p in caught.value.problems] == [
        ("malformed-json", "line 2 column 2"),
    ]


def test_bad_arguments(cart_bundle_path):
    with pytest.raises(DataError, match="key must be non-empty bytes"):
        import_fhir(cart_bundle_path, key=b"")
    with pytest.raises(DataError, match="site_utc_offset_min = 900"):
        import_fhir(cart_bundle_path, key=b"k", site_utc_offset_min=900)


def test_missing_file(tmp_path, key):
    with pytest.raises(FhirImportError, match="cannot read file"):
        import_fhir(tmp_path / "absent.json", key=key)


def test_errors_are_found_after_elements_were_reused(tmp_path, key, fhir):
    # 100 resources share one valid code and subject (validated once, then
    # reused); later resources break the shared element or the resource itself.
    good = [fhir.observation(f"g{i}", "1988-5", 3.0, "mg/L") for i in range(100)]
    bad_code = fhir.observation("badcode", "1988-5", 3.0, "mg/L")
    bad_code["code"] = {"coding": {"system": "http://loinc.org", "code": "1988-5"}}
    extra = fhir.observation("extra", "1988-5", 3.0, "mg/L", colour="red")
    path = fhir.write(tmp_path / "reuse.json", fhir.bundle(*good, bad_code, extra))
    with pytest.raises(FhirImportError) as caught:
        import_fhir(path, key=key)
    got = [(p.resource, p.code, p.field) for p in caught.value.problems]
    assert got == [
        ("Observation/badcode", "invalid", "code.coding"),
        ("Observation/extra", "invalid", "colour"),
    ]
