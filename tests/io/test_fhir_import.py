"""Import of the project's one-patient CAR T bundle and its variants.

``tests/data/fhir/cart_patient_bundle.json`` was written for these tests: one
patient (born 1961-05-20, DLBCL C83.38), lymphodepletion from 2024-02-28,
axi-cel 200 x 10^6 cells on 2024-03-05 10:00 +01:00, CRS with tocilizumab,
vasopressin, high-flow oxygen and ICU, labs in non-canonical units, and one
observation of a patient that is only referenced.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import json

import pytest

from cartwin.io import import_fhir
from cartwin.record.pseudonym import pseudonymise

PATIENT_ID = "3f1c2a9e-7b40-4d5e-9a61-0c2b8e4f5d17"
UTC = dt.UTC


@pytest.fixture
def result(cart_bundle_path, key):
    return import_fhir(cart_bundle_path, key=key)


@pytest.fixture
def record(result):
    return result.records[0]


def test_one_record_per_patient_present_or_referenced(result, key):
    assert [r.facts.pseudonym for r in result.records] == [
        pseudonymise(PATIENT_ID, key),
        pseudonymise("ref-only-5521", key),
    ]
    absent = result.records[1]
    assert absent.facts == type(absent.facts)(
        pseudonym=pseudonymise("ref-only-5521", key)
    )
    assert [(o.quantity, o.value) for o in absent.observations] == [("anc", 0.3)]


def test_facts(record):
    facts = record.facts
    # 2024-03-05 (infusion day) - 1961-05-20 = 62 completed years.
    assert facts.age_years == 62
    assert facts.sex == "female"
    assert facts.disease == "LBCL"
    assert facts.diagnosis_code == "http://hl7.org/fhir/sid/icd-10-cm|C83.38"
    assert facts.product == "axicabtagene ciloleucel"


def test_infusion_is_day_zero_with_dose_in_cells(record):
    infusion = record.infusion
    assert infusion.start == dt.datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    assert infusion.source_utc_offset_min == 60
    assert (infusion.dose, infusion.dose_unit) == (200e6, "{cells}")
    assert record.study_day(dt.datetime(2024, 2, 28, 8, 0, tzinfo=UTC)) == -6


def test_events(record):
    rows = [(e.kind, e.detail, e.name) for e in record.events]
    assert rows == [
        ("leukapheresis", "", "Leukapheresis for CAR T manufacturing"),
        ("lymphodepletion", "", "fludarabine"),
        ("lymphodepletion", "", "cyclophosphamide"),  # contained Medication
        ("lymphodepletion", "", "fludarabine"),
        ("lymphodepletion", "", "fludarabine"),
        ("infusion", "", "axicabtagene ciloleucel"),
        ("corticosteroid", "requested", "dexamethasone"),
        ("tocilizumab", "", "tocilizumab"),
        # names come from the code table, not from the file's coding display
        (
            "oxygen",
            "high_flow",
            "High-flow nasal cannula (> 6 L/min) facemask non-rebreather or "
            "Venturi mask",
        ),
        ("icu", "", "Admission to intensive care unit"),
        ("vasopressor", "vasopressin", "vasopressin"),
    ]
    oxygen = record.events_of("oxygen")[0]
    assert (oxygen.start, oxygen.end) == (
        dt.datetime(2024, 3, 8, 0, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 9, 6, 0, tzinfo=UTC),
    )
    fludarabine = record.events_of("lymphodepletion")[0]
    assert (fludarabine.dose, fludarabine.dose_unit) == (30.0, "mg/m2")
    assert (
        fludarabine.source_code == "http://www.nlm.nih.gov/research/umls/rxnorm|24698"
    )


def test_observations_converted_and_censored(record):
    crp = record.observations_of("crp")
    assert [(o.value, o.source_value, o.source_unit) for o in crp] == [
        (32.0, 3.2, "mg/dL"),  # 1 mg/dL = 10 mg/L
        (185.0, 185.0, "mg/L"),
    ]
    (temperature,) = record.observations_of("temperature")
    assert temperature.value == pytest.approx(39.0, abs=1e-9)  # (102.2 - 32) / 1.8
    below, exact = record.observations_of("cart_qpcr")
    assert (below.value, below.censored) == (50.0, "below")
    assert (exact.value, exact.censored) == (41000.0, None)
    bp = {
        o.quantity: o.value for o in record.observations if o.quantity.endswith("_bp")
    }
    assert bp == {"systolic_bp": 84.0, "diastolic_bp": 46.0}
    assert crp[0].source_id == "Observation/obs-20"
    assert crp[0].time == dt.datetime(2024, 3, 4, 6, 0, tzinfo=UTC)


def test_report_counts_every_resource(result):
    resources = result.report.to_dict()["resources"]
    assert resources["Observation"] == {
        "read": 11,
        "used": 7,
        "skipped": {
            "dataAbsentReason": 1,
            "no mapped code": 1,
            "non-numeric value (valueCodeableConcept)": 1,
            "status entered-in-error": 1,
        },
    }
    assert resources["MedicationRequest"]["skipped"] == {
        "CAR T infusion request (day 0 comes from administrations)": 1
    }
    assert resources["Procedure"] == {
        "read": 4,
        "used": 3,
        "skipped": {"status not-done": 1},
    }
    assert resources["Encounter"]["skipped"] == {"unsupported resource type": 1}
    assert resources["Condition"] == {
        "read": 2,
        "used": 1,
        "skipped": {"no CAR T disease code": 1},
    }
    assert resources["Medication"] == {"read": 1, "used": 1, "skipped": {}}


def test_report_counts_codings(result):
    report = result.report
    assert report.coding_count("http://loinc.org", "1988-5", recognised=True) == 2
    assert report.coding_count("http://loinc.org", "2345-7", recognised=False) == 1
    assert report.coding_count("http://loinc.org", "85354-9", recognised=False) == 1
    assert report.coding_count("http://loinc.org", "8480-6", recognised=True) == 1
    assert (
        report.coding_count("http://snomed.info/sct", "38341003", recognised=False) == 1
    )
    rows = [c for c in report.codings if c.code == "C83.38"]
    assert [(r.resource_type, r.recognised, r.target) for r in rows] == [
        ("Condition", True, "LBCL")
    ]
    totals = report.to_dict()["totals"]
    assert totals == {"patients": 2, "observations": 8, "events": 11}


def test_same_records_from_ndjson_gzip_bzip2_and_bytes(cart_bundle_path, key, tmp_path):
    raw = cart_bundle_path.read_bytes()
    reference = import_fhir(cart_bundle_path, key=key).records
    lines = [json.dumps(e["resource"]) for e in json.loads(raw)["entry"]]
    ndjson = ("\n".join(lines) + "\n").encode()
    for data, name in (
        (gzip.compress(raw), "b.json.gz"),
        (bz2.compress(raw), "b.json.bz2"),
        (raw, "b.json"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        got = import_fhir(path, key=key)
        assert got.records == reference
        assert got.source_sha256 == hashlib.sha256(data).hexdigest()
    # NDJSON has no fullUrl: references by urn:uuid name the patient id itself.
    from_ndjson = import_fhir(ndjson, key=key, source_name="export.ndjson")
    assert [r.facts for r in from_ndjson.records] == [r.facts for r in reference]
    assert from_ndjson.source_name == "export.ndjson"


def test_different_keys_give_different_pseudonyms(cart_bundle_path):
    first = import_fhir(cart_bundle_path, key=b"key-one").records[0].facts.pseudonym
    second = import_fhir(cart_bundle_path, key=b"key-two").records[0].facts.pseudonym
    assert first != second


def test_no_identifier_leaks_into_result_or_report(result):
    secrets = (
        PATIENT_ID,
        "ref-only-5521",
        "Zyxwort",
        "Hildegard",
        "1961-05-20",
        "MRN-Q7731",
        "Quarzweg",
        "Blumenfeld",
        "555-0199",
    )
    texts = (repr(result), json.dumps(result.report.to_dict()), result.source_name)
    for secret in secrets:
        assert all(secret not in text for text in texts), secret


def test_patient_id_in_file_name_is_replaced(cart_bundle_path, key, tmp_path):
    path = tmp_path / f"{PATIENT_ID}.json"
    path.write_bytes(cart_bundle_path.read_bytes())
    result = import_fhir(path, key=key)
    assert result.source_name == f"{pseudonymise(PATIENT_ID, key)}.json"
    assert result.report.source_name == result.source_name


def test_single_resource_and_reference_forms(fhir, key):
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "male",
        "birthDate": "1950-12-31",
    }
    document = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": "http://fhir.example/Patient/p1", "resource": patient},
            {
                "resource": fhir.observation(
                    "a", "1988-5", 5, "mg/L", subject="http://fhir.example/Patient/p1"
                )
            },
            {
                "resource": fhir.observation(
                    "b", "1988-5", 6, "mg/L", subject="Patient/p1/_history/2"
                )
            },
            {
                "resource": fhir.observation(
                    "c",
                    "1988-5",
                    7,
                    "mg/L",
                    subject="Patient/p1",
                    when="2024-03-06T23:30:00-05:00",
                )
            },
        ],
    }
    (record,) = import_fhir(json.dumps(document).encode(), key=key).records
    assert [o.value for o in record.observations] == [5.0, 6.0, 7.0]
    # Age at the last data point, on its own local day (2024-03-06 at -05:00).
    assert record.facts.age_years == 73
    single = import_fhir(
        json.dumps(fhir.observation("x", "777-3", 150000, "/uL")).encode(), key=key
    )
    assert single.records[0].observations[0].value == pytest.approx(150.0)


def test_zoneless_times_accepted_with_site_offset(fhir, key):
    resource = fhir.observation("z", "1988-5", 5, "mg/L", when="2024-03-06T10:00:00")
    document = json.dumps(fhir.bundle(resource)).encode()
    (record,) = import_fhir(document, key=key, site_utc_offset_min=120).records
    (obs,) = record.observations
    assert obs.time == dt.datetime(2024, 3, 6, 8, 0, tzinfo=UTC)
    assert obs.source_utc_offset_min == 120
    date_only = fhir.observation("d", "1988-5", 5, "mg/L", when="2024-03-06")
    (record,) = import_fhir(
        json.dumps(date_only).encode(), key=key, site_utc_offset_min=-600
    ).records
    assert record.observations[0].time == dt.datetime(2024, 3, 6, 22, 0, tzinfo=UTC)


def test_issued_and_period_start_are_time_fallbacks(fhir, key):
    by_period = fhir.observation("p", "1988-5", 5, "mg/L")
    del by_period["effectiveDateTime"]
    by_period["effectivePeriod"] = {
        "start": "2024-03-06T10:00:00Z",
        "end": "2024-03-06T11:00:00Z",
    }
    by_issued = fhir.observation("i", "1988-5", 6, "mg/L")
    del by_issued["effectiveDateTime"]
    by_issued["issued"] = "2024-03-07T10:00:00.123456789+00:00"
    document = json.dumps(fhir.bundle(by_period, by_issued)).encode()
    (record,) = import_fhir(document, key=key).records
    assert [o.time for o in record.observations] == [
        dt.datetime(2024, 3, 6, 10, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 7, 10, 0, 0, 123456, tzinfo=UTC),
    ]


def test_condition_choice_prefers_car_t_disease_then_onset(fhir, key):
    def condition(rid, system, code, display, onset):
        return {
            "resourceType": "Condition",
            "id": rid,
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "onsetDateTime": onset,
        }

    icd = "http://hl7.org/fhir/sid/icd-10"
    document = fhir.bundle(
        condition("c1", icd, "C50.9", "Breast cancer", "2010-01-01"),
        condition("c2", icd, "C90.00", "Multiple myeloma", "2021-06-01"),
        condition(
            "c3",
            "http://snomed.info/sct",
            "93143009",
            "B lymphoblastic leukaemia",
            "2023-02-01",
        ),
    )
    result = import_fhir(json.dumps(document).encode(), key=key)
    facts = result.records[0].facts
    assert (facts.disease, facts.diagnosis) == ("MM", "Multiple myeloma")
    assert result.report.resource("Condition").skipped == (
        ("not the primary diagnosis", 2),
    )
    targets = {c.code: c.target for c in result.report.codings}
    assert targets == {"C50.9": "other", "C90.00": "MM", "93143009": "B-ALL"}
