"""FHIR import under hostile input: every defect a tester confirmed, as a test.

Each test feeds the reader a minimal file made here (inline JSON) that used to
crash with a traceback or to be accepted silently, and checks that it now
gives the right value or a :class:`~cartwin.io.problems.FhirImportError` (a
:class:`~cartwin.errors.DataError`) whose problem names the resource, the
field and the value.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartwin.errors import DataError
from cartwin.io import FhirImportError, FhirUnitError, import_fhir
from cartwin.io._input import MAX_INPUT_ENV, InputError, json_depth, read_head
from cartwin.io._validate import ResourceValidator
from cartwin.io.codes import CODE_MAP_ENV

LOCAL = "https://cartwin.org/fhir/CodeSystem/local"
WHEN = "2024-01-10T08:00:00+01:00"


def _observation(code: str, value_text: str, unit: str, **extra) -> bytes:
    """An Observation whose value is written verbatim (huge literals too)."""
    resource = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": extra.pop("system", "http://loinc.org"),
                             "code": code}]},
        "subject": {"reference": extra.pop("subject", "Patient/p1")},
        "effectiveDateTime": extra.pop("when", WHEN),
        "valueQuantity": {"value": "@VALUE@", "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": unit},
        **extra,
    }  # fmt: skip
    return json.dumps(resource).replace('"@VALUE@"', value_text).encode()


def _problem(source, key, **kwargs):
    with pytest.raises(FhirImportError) as info:
        import_fhir(source, key=key, **kwargs)
    assert len(info.value.problems) == 1, info.value
    return info.value.problems[0]


# -- 1: valid UCUM units ------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "value", "unit", "quantity", "expected"),
    [("59408-5", "0.96", "1", "spo2", 96.0),
     ("59408-5", "0.96", "{ratio}", "spo2", 96.0),
     ("8310-5", "311.15", "K", "temperature", 38.0)],
)  # fmt: skip
def test_valid_ucum_units_convert(key, code, value, unit, quantity, expected):
    (record,) = import_fhir(_observation(code, value, unit), key=key).records
    (obs,) = record.observations
    assert (obs.quantity, obs.source_unit) == (quantity, unit)
    assert obs.value == pytest.approx(expected, abs=1e-9)


def test_ice_score_in_percent_is_a_unit_problem(key):
    source = _observation("ice-score", "50", "%", system=LOCAL)
    with pytest.raises(FhirUnitError) as info:
        import_fhir(source, key=key)
    (problem,) = info.value.problems
    assert (problem.resource, problem.field) == ("Observation/o1", "valueQuantity.code")
    assert "'%'" in problem.message and "ice_score" in problem.message


# -- 2: crashes become problems ----------------------------------------------------
@pytest.mark.parametrize("digits", [400, 5000])
def test_huge_integer_literal_is_a_non_finite_value(key, digits):
    problem = _problem(_observation("1988-5", "9" * digits, "mg/L"), key)
    assert (problem.code, problem.resource) == ("non-finite", "Observation/o1")
    assert problem.field == "valueQuantity.value"


def test_json_nested_too_deep_to_parse(key):
    text = '{"resourceType": "Patient", "id": "p1", "x": ' + "[" * 5000 + "]" * 5000
    problem = _problem((text + "}").encode(), key)
    assert problem.code == "nesting-too-deep"
    assert "nesting too deep" in problem.message


def _nested_patient(levels: int) -> bytes:
    extension = {"url": "http://x/e", "valueString": "v"}
    for _ in range(levels):
        extension = {"url": "http://x/e", "extension": [extension]}
    patient = {"resourceType": "Patient", "id": "p1", "extension": [extension]}
    return json.dumps(patient).encode()


def test_nesting_is_refused_before_parsing(key):
    # 400 nested extensions are 803 levels of objects and arrays. Refused
    # before parsing, even where a library raised the recursion limit (mpbn
    # sets 100 000), under which validating them overflowed the C stack.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        problem = _problem(_nested_patient(400), key)
    finally:
        sys.setrecursionlimit(limit)
    assert problem.code == "nesting-too-deep"
    assert "803 levels" in problem.message and "at most 100" in problem.message
    assert len(import_fhir(_nested_patient(40), key=key).records) == 1


def test_recursion_during_validation_is_a_problem_of_the_resource(key, monkeypatch):
    def overflow(self, resource):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ResourceValidator, "issues", overflow)
    problem = _problem(_nested_patient(2), key)
    assert (problem.code, problem.resource) == ("nesting-too-deep", "Patient/p1")


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
             "9999-12-31T23:00:00Z", "1899-12-31T12:00:00Z"],
)  # fmt: skip
def test_instants_outside_the_accepted_years(key, when):
    problem = _problem(_observation("1988-5", "5", "mg/L", when=when), key)
    assert (problem.code, problem.field) == ("timestamp-invalid", "effectiveDateTime")
    assert repr(when) == problem.value
    assert "1900 to 2199" in problem.message


@settings(max_examples=200, deadline=None)
@given(
    document=st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"ab', max_size=3), inner, max_size=3),
        max_leaves=30,
    )
)
def test_json_depth_matches_the_parsed_depth_across_chunks(document):
    # 16-byte chunks (CHUNK_BYTES = 1) put chunk edges inside strings too
    text = json.dumps(document).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cartwin.io._input.CHUNK_BYTES", 1)
        assert json_depth(text) == _depth(document)


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


COMPRESSED = {
    "gzip truncated": (lambda b: gzip.compress(b)[:-20], "truncated"),
    "bzip2 truncated": (lambda b: bz2.compress(b)[:-20], "truncated"),
    "gzip corrupt": (lambda b: _flip(gzip.compress(b), 30), "compression"),
    "bzip2 corrupt": (lambda b: _flip(bz2.compress(b), 40), "compression"),
}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize("case", COMPRESSED)
def test_bad_compression_is_a_problem_from_bytes_path_and_detection(
    key, tmp_path, case
):
    damage, code = COMPRESSED[case]
    raw = damage(_observation("1988-5", "5", "mg/L") * 50)
    path = tmp_path / "obs.json.gz"  # the suffix lies for bzip2: magic bytes rule
    path.write_bytes(raw)
    assert _problem(raw, key).code == code
    assert _problem(path, key).code == code
    with pytest.raises(InputError) as info:  # what format detection reads
        read_head(path, path.name, 65536)
    assert info.value.code == code and isinstance(info.value, DataError)


# -- 3: size limits and file kinds ----------------------------------------------
def test_decompression_stops_at_the_input_limit(key, tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_INPUT_ENV, "100000")
    bomb = bz2.compress(b" " * 2_000_000)  # 2 MB of spaces in about 50 bytes
    assert len(bomb) < 100
    problem = _problem(bomb, key)
    assert problem.code == "too-large"
    assert "expands (bzip2) to more than 100000 bytes" in problem.message
    assert MAX_INPUT_ENV in problem.message


def test_plain_file_over_the_limit(key, tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_INPUT_ENV, "1000")
    path = tmp_path / "big.json"
    path.write_bytes(_observation("1988-5", "5", "mg/L") + b" " * 2000)
    assert _problem(path, key).code == "too-large"
    monkeypatch.setenv(MAX_INPUT_ENV, "100000")
    assert len(import_fhir(path, key=key).records) == 1


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_limit_setting_is_refused(key, monkeypatch, value):
    monkeypatch.setenv(MAX_INPUT_ENV, value)
    with pytest.raises(DataError, match=MAX_INPUT_ENV):
        import_fhir(b"{}", key=key)


def test_devices_and_fifos_are_refused_before_reading(key, tmp_path):
    assert _problem("/dev/zero", key).code == "not-a-file"
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it for reading would block forever
    problem = _problem(fifo, key)
    assert problem.code == "not-a-file" and "FIFO" in problem.message


# -- 4: empty references -------------------------------------------------------------
@pytest.mark.parametrize(
    "reference", ["Patient/", "urn:uuid:", "Patient/ ", "Patient/Jane Doe"]
)
def test_empty_or_invalid_patient_reference_is_a_problem(key, reference):
    source = _observation("1988-5", "5", "mg/L", subject=reference)
    problem = _problem(source, key)
    assert (problem.code, problem.resource) == ("invalid-reference", "Observation/o1")
    assert (problem.field, problem.value) == ("subject.reference", repr(reference))


def test_unmapped_resource_with_empty_reference_makes_no_patient(key):
    source = _observation("0000-0", "5", "mg/L", subject="Patient/")
    assert import_fhir(source, key=key).records == ()


# -- 5: plausibility ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "value", "unit", "shown"),
    [("8310-5", "1e300", "Cel", "25 to 45 Cel"),
     ("1988-5", "-5", "mg/L", "0 to 1000 mg/L"),
     ("777-3", "200", "10.9/L", "10*9/L")],
)  # fmt: skip
def test_implausible_values_are_problems(key, code, value, unit, shown):
    problem = _problem(_observation(code, value, unit), key)
    assert problem.code in ("implausible", "unit")
    assert problem.resource == "Observation/o1"
    assert problem.field.startswith("valueQuantity.")
    assert shown in problem.message


def _infusion(dose: float | None = 2e8, **period) -> dict:
    resource = {
        "resourceType": "MedicationAdministration",
        "id": "inf1",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": LOCAL, "code": "axicabtagene-ciloleucel",
                        "display": "Product\u202e name\x07"}]},
        "subject": {"reference": "Patient/p1"},
    }  # fmt: skip
    if period:
        resource["effectivePeriod"] = period
    else:
        resource["effectiveDateTime"] = "2024-01-10T10:00:00+01:00"
    if dose is not None:
        resource["dosage"] = {"dose": {"value": dose, "unit": "{cells}",
                                       "system": "http://unitsofmeasure.org",
                                       "code": "{cells}"}}  # fmt: skip
    return resource


def _bundle(*resources) -> bytes:
    entries = [{"resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": entries}).encode()  # fmt: skip


@pytest.mark.parametrize("dose", [1e308, 1e4])
def test_implausible_infusion_dose(key, dose):
    problem = _problem(_bundle(_infusion(dose)), key)
    assert problem.code == "implausible"
    assert problem.resource == "MedicationAdministration/inf1"
    assert problem.field == "dosage.dose.value"
    assert "1e+05 to 1e+11 cells" in problem.message


def test_age_of_2023_years_is_implausible(key):
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "0001-01-01"}
    problem = _problem(_bundle(patient, _infusion()), key)
    assert (problem.code, problem.field) == ("implausible", "birthDate")
    assert "2023 years" in problem.message and "0 to 120 years" in problem.message


# -- 6: CAR T levels of 0 ------------------------------------------------------------
def test_cart_zero_without_known_limit_asks_for_the_lloq(key):
    source = _observation("cart-flow", "0", "/uL", system=LOCAL)
    problem = _problem(source, key)
    assert (problem.code, problem.field) == ("not-detected", "valueQuantity.value")
    assert "comparator '<'" in problem.message and "lloq" in problem.message


def test_cart_zero_is_censored_below_the_site_lloq(key, tmp_path, monkeypatch):
    table = tmp_path / "site.csv"
    table.write_text(
        "system,code,target_type,target,display,note,lloq\n"
        f"{LOCAL},cart-flow,observation,cart_flow,CAR T by flow,site assay,2.5\n"
    )
    monkeypatch.setenv(CODE_MAP_ENV, str(table))
    source = _observation("cart-flow", "0", "/uL", system=LOCAL)
    (obs,) = import_fhir(source, key=key).records[0].observations
    assert (obs.value, obs.censored, obs.source_value) == (2.5, "below", 0.0)


@pytest.mark.parametrize(("value", "code"), [("-20", "implausible"),
                                             ("1.5e308", "implausible")])
def test_negative_or_huge_cart_levels_are_refused(key, value, code):
    source = _observation("cart-flow", value, "/uL", system=LOCAL)
    assert _problem(source, key).code == code


def test_cart_below_a_positive_limit_is_kept(key):
    quantity = '1, "comparator": "<"'
    source = _observation("cart-qpcr", quantity, "{copies}/ug", system=LOCAL)
    (obs,) = import_fhir(source, key=key).records[0].observations
    assert (obs.quantity, obs.value, obs.censored) == ("cart_qpcr", 1.0, "below")


# -- 7: periods that end before they start ----------------------------------------
def test_infusion_ending_before_it_starts(key):
    resource = _infusion(start="2024-01-10T10:00:00+01:00",
                         end="2024-01-09T10:00:00+01:00")  # fmt: skip
    problem = _problem(_bundle(resource), key)
    assert problem.code == "date-order"
    assert problem.resource == "MedicationAdministration/inf1"
    assert problem.field == "effectivePeriod.end"


def test_observation_period_ending_before_it_starts(key):
    source = json.loads(_observation("1988-5", "5", "mg/L"))
    del source["effectiveDateTime"]
    source["effectivePeriod"] = {"start": WHEN, "end": "2024-01-09T08:00:00+01:00"}
    problem = _problem(json.dumps(source).encode(), key)
    assert (problem.code, problem.field) == ("date-order", "effectivePeriod.end")


# -- 8: free text -------------------------------------------------------------------
def _condition(text: str, display: str | None, code: str = "C83.30") -> dict:
    coding = {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}
    if display is not None:
        coding["display"] = display
    return {
        "resourceType": "Condition",
        "id": "c1",
        "code": {"coding": [coding], "text": text},
        "subject": {"reference": "Patient/p1"},
    }


SECRET = "DLBCL, Quillamina Zyxwvutson DOB 1970-02-03"


def test_condition_text_never_becomes_the_diagnosis(key):
    document = _bundle(_condition(SECRET, "Diffuse large B-cell lymphoma\u202e\x00"))
    facts = import_fhir(document, key=key).records[0].facts
    assert facts.diagnosis == "Diffuse large B-cell lymphoma"
    assert facts.diagnosis_code == "http://hl7.org/fhir/sid/icd-10-cm|C83.30"
    assert "Quillamina" not in repr(facts)


def test_diagnosis_known_only_from_text_keeps_the_group_name(key):
    document = _bundle(_condition("large B-cell lymphoma of " + SECRET, None, "X"))
    facts = import_fhir(document, key=key).records[0].facts
    assert (facts.disease, facts.diagnosis) == ("LBCL", "Large B-cell lymphoma")


def test_event_names_come_from_the_code_table(key):
    (record,) = import_fhir(_bundle(_infusion()), key=key).records
    assert record.infusion.name == "axicabtagene ciloleucel"
    assert record.facts.product == "axicabtagene ciloleucel"
