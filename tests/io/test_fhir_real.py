"""Import of real public FHIR R4 files (Synthea bundles, HL7 US Core examples).

The files and their provenance are listed in
``shared/data/real/fhir/PROVENANCE.md``. Counts are checked twice: against an
independent count made here with plain ``json``, and against numbers written
down when the test was made (so a regression in either shows).
"""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import json
import os
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from cartwin.io import FhirImportError, import_fhir

KEY = b"cartwin-test-key"


def _real_dir() -> Path:
    shared = os.environ.get("CARTWIN_SHARED") or (
        Path(__file__).resolve().parents[2] / ".." / "shared"
    )
    return Path(shared).resolve() / "data" / "real" / "fhir"


REAL = _real_dir()
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(),
    reason=f"real FHIR files not found at {REAL}; set CARTWIN_SHARED to the shared "
    "folder holding data/real/fhir",
)

SYNTHEA = (
    "9fe7994a-5fec-874c-8452-e45786bcfb0a",
    "ad0b4b7a-2285-7a3c-5fd2-edbe4d67b7e7",
    "dd92a3e7-d1db-c15a-f8fe-e3847b7f07b1",
)

#: Occurrences of LOINC codings in Observation.code / component.code, counted
#: by hand from the decompressed bundles when this test was written.
SYNTHEA_COUNTS = {
    SYNTHEA[0]: {"8310-5": 15, "777-3": 13, "718-7": 13, "2160-0": 10, "8480-6": 21},
    SYNTHEA[1]: {"8310-5": 13, "777-3": 11, "718-7": 11, "2160-0": 9, "8480-6": 19},
    SYNTHEA[2]: {"718-7": 2, "777-3": 2, "8867-4": 9, "8480-6": 9},
}
#: (observations produced, age in years at last data point, gender).
SYNTHEA_TOTALS = {
    SYNTHEA[0]: (244, 51, "male"),
    SYNTHEA[1]: (220, 58, "male"),
    SYNTHEA[2]: (60, 62, "female"),
}


def _all_real_files() -> list[Path]:
    if not REAL.is_dir():
        return []
    return sorted(p for p in REAL.rglob("*") if p.name.endswith((".json", ".json.bz2")))


def _observation_codes() -> dict[tuple[str, str], str]:
    """Observation rows of the shipped table, read independently with csv."""
    text = resources.files("cartwin.data.codes").joinpath("codes.csv").read_text()
    return {
        (row["system"], row["code"]): row["target"]
        for row in csv.DictReader(text.splitlines())
        if row["target_type"] == "observation"
    }


def _synthea(name: str) -> tuple:
    path = REAL / "synthea-blaze" / f"{name}.json.bz2"
    document = json.loads(bz2.decompress(path.read_bytes()))
    return path, [e["resource"] for e in document["entry"]]


def _independent_coding_counts(resources_: list[dict]) -> Counter:
    counts: Counter = Counter()
    for res in resources_:
        if res["resourceType"] != "Observation":
            continue
        concepts = [res["code"], *(c["code"] for c in res.get("component", []))]
        for concept in concepts:
            for coding in concept.get("coding", []):
                counts[(coding["system"], coding["code"])] += 1
    return counts


@pytest.mark.parametrize(
    "path", _all_real_files(), ids=lambda p: getattr(p, "name", "none")
)
def test_every_real_file_imports(path):
    # US Core examples give dates without time: the site zone must be stated.
    result = import_fhir(path, key=KEY, site_utc_offset_min=0)
    report = result.report
    for row in report.resources:
        assert row.read == row.used + row.skipped_total
    assert (
        json.loads(json.dumps(report.to_dict()))["source_sha256"]
        == result.source_sha256
    )


@pytest.mark.parametrize("name", SYNTHEA)
def test_synthea_recognised_counts_match_independent_count(name):
    path, resources_ = _synthea(name)
    result = import_fhir(path, key=KEY)
    expected = _independent_coding_counts(resources_)
    mapped = _observation_codes()
    for (system, code), count in expected.items():
        got = result.report.coding_count(system, code, resource_type="Observation")
        assert got == count, (system, code)
        recognised = result.report.coding_count(
            system, code, resource_type="Observation", recognised=True
        )
        assert recognised == (count if (system, code) in mapped else 0), code
    for code, count in SYNTHEA_COUNTS[name].items():
        assert expected[("http://loinc.org", code)] == count
        assert (
            result.report.coding_count("http://loinc.org", code, recognised=True)
            == count
        )


@pytest.mark.parametrize("name", SYNTHEA)
def test_synthea_values_match_source(name):
    # Every mapped Synthea unit converts by a factor of exactly 1 (10*3/uL to
    # 10*9/L, ug/L to ng/mL) or is already canonical, so the values must equal
    # the JSON values; times are the effectiveDateTime instants in UTC.
    path, resources_ = _synthea(name)
    mapped = _observation_codes()
    expected = Counter()
    for res in resources_:
        if res["resourceType"] != "Observation":
            continue
        when = dt.datetime.fromisoformat(res["effectiveDateTime"]).astimezone(dt.UTC)
        for part in (res, *res.get("component", [])):
            targets = [
                mapped[(c["system"], c["code"])]
                for c in part["code"]["coding"]
                if (c["system"], c["code"]) in mapped
            ]
            if targets and "valueQuantity" in part:
                expected[(targets[0], when, part["valueQuantity"]["value"])] += 1
    (record,) = import_fhir(path, key=KEY).records
    got = sorted((o.quantity, o.time, o.value) for o in record.observations)
    want = sorted(expected.elements())
    assert [g[:2] for g in got] == [w[:2] for w in want]
    # ug/L -> ng/mL goes through pint: 0.9999999999999999, hence rel=1e-12.
    assert [g[2] for g in got] == pytest.approx([w[2] for w in want], rel=1e-12)
    n_obs, age, sex = SYNTHEA_TOTALS[name]
    assert (len(record.observations), record.facts.age_years, record.facts.sex) == (
        n_obs,
        age,
        sex,
    )


@pytest.mark.parametrize("name", SYNTHEA)
def test_synthea_age_is_taken_at_the_last_data_point(name):
    path, resources_ = _synthea(name)
    (patient,) = [r for r in resources_ if r["resourceType"] == "Patient"]
    (record,) = import_fhir(path, key=KEY).records
    last = max(record.observations, key=lambda o: o.time)
    local = (last.time + dt.timedelta(minutes=last.source_utc_offset_min)).date()
    birth = dt.date.fromisoformat(patient["birthDate"])
    years = (
        local.year - birth.year - ((local.month, local.day) < (birth.month, birth.day))
    )
    assert record.facts.age_years == years


@pytest.mark.parametrize("name", SYNTHEA)
def test_synthea_keeps_no_identifier(name):
    path, resources_ = _synthea(name)
    (patient,) = [r for r in resources_ if r["resourceType"] == "Patient"]
    result = import_fhir(path, key=KEY)
    secrets = [patient["id"], patient["birthDate"], patient["address"][0]["line"][0]]
    secrets += [n["family"] for n in patient["name"]] + patient["name"][0]["given"]
    secrets += [i["value"] for i in patient["identifier"]]
    texts = (repr(result), json.dumps(result.report.to_dict()))
    for secret in secrets:
        assert all(secret not in text for text in texts), secret
    assert result.source_name == f"{result.records[0].facts.pseudonym}.json.bz2"


#: US Core example -> (quantity, canonical value, canonical unit) expected.
US_CORE_VALUES = {
    "temperature.json": [("temperature", 36.55556, "Cel")],
    "blood-pressure.json": [
        ("diastolic_bp", 44.0, "mm[Hg]"),
        ("systolic_bp", 109.0, "mm[Hg]"),
    ],
    "heart-rate.json": [("heart_rate", 44.0, "/min")],
    "respiratory-rate.json": [("respiratory_rate", 26.0, "/min")],
    "oxygen-saturation.json": [("spo2", 99.0, "%")],
    "observation-cbc-hemoglobin.json": [("hemoglobin", 17.0, "g/dL")],
    "observation-cbc-leukocytes.json": [("wbc", 10.0, "10*9/L")],  # 10*3/uL
    "observation-cbc-platelets.json": [("platelets", 200.0, "10*9/L")],  # 10*3/uL
    "observation-serum-creatinine.json": [("creatinine", 1.0, "mg/dL")],
    "observation-neutrophils.json": [],  # 770-8 is a percentage: not mapped
}


@pytest.mark.parametrize("filename", sorted(US_CORE_VALUES))
def test_us_core_example_values(filename):
    path = REAL / "us-core-examples" / filename
    result = import_fhir(path, key=KEY, site_utc_offset_min=-300)
    observations = [o for r in result.records for o in r.observations]
    got = sorted((o.quantity, o.value, o.unit) for o in observations)
    want = US_CORE_VALUES[filename]
    assert [(q, u) for q, _, u in got] == [(q, u) for q, _, u in want]
    assert [v for _, v, _ in got] == pytest.approx([v for _, v, _ in want], rel=1e-12)
    for obs in observations:
        # Date-only effectiveDateTime: 12:00 at UTC-05:00 is 17:00 UTC.
        assert (obs.time.hour, obs.time.minute, obs.source_utc_offset_min) == (
            17,
            0,
            -300,
        )


def test_us_core_date_without_site_zone_is_an_error():
    path = REAL / "us-core-examples" / "temperature.json"
    with pytest.raises(FhirImportError) as caught:
        import_fhir(path, key=KEY)
    message = str(caught.value)
    for part in (
        "temperature.json",
        "Observation/temperature",
        "effectiveDateTime",
        "1999-07-02",
        "site_utc_offset_min",
    ):
        assert part in message
    assert [p.code for p in caught.value.problems] == ["timestamp-no-zone"]


def test_us_core_patient_keeps_no_identifier():
    # The example has no Patient.gender (US Core 9 codes sex in an extension,
    # which is not read) and no data, so no age either.
    path = REAL / "us-core-examples" / "patient-example.json"
    result = import_fhir(path, key=KEY)
    (record,) = result.records
    assert (record.facts.sex, record.facts.age_years) == (None, None)
    texts = (repr(result), json.dumps(result.report.to_dict()))
    for secret in (
        "example",
        "Shaw",
        "Baxter",
        "Amy",
        "1987-02-20",
        "1032702",
        "MEADOW",
        "MOUNTAIN VIEW",
        "555-555-5555",
        "amy.shaw",
    ):
        assert all(secret not in text for text in texts), secret


def test_us_core_report_counts_unused_resources():
    folder = REAL / "us-core-examples"
    skipped = {}
    for name in (
        "diagnosticreport-cbc.json",
        "procedure-rehab.json",
        "medicationrequest-coded-oral-axid.json",
        "condition-encounter-diagnosis-example1.json",
    ):
        report = import_fhir(folder / name, key=KEY, site_utc_offset_min=0).report
        (row,) = report.resources
        skipped[row.resource_type] = dict(row.skipped)
    assert skipped == {
        "DiagnosticReport": {"unsupported resource type": 1},
        "Procedure": {"no mapped code": 1},
        "MedicationRequest": {"no mapped code": 1},
        "Condition": {"no CAR T disease code": 1},
    }


def test_diagnostic_report_without_narrative_div_validates_with_validate_all():
    # R4B rejects text without div (PROVENANCE.md); the narrative is not read,
    # so it is dropped before validation.
    path = REAL / "us-core-examples" / "diagnosticreport-cbc.json"
    report = import_fhir(path, key=KEY, validate_all=True).report
    assert report.resource("DiagnosticReport").skipped == (
        ("unsupported resource type", 1),
    )
