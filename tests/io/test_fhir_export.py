"""FHIR R4 export of twin outputs: validation, counts, values, references, privacy.

The demo patient (``cartwin/data/demo_patient.json``, synthetic) is imported
with the demo key and its twin built at a fixed instant; the Bundle must carry
exactly the twin version's numbers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from cartwin.errors import DataError
from cartwin.io.fhir_export import (
    DATA_HASH_SYSTEM,
    PSEUDONYM_SYSTEM,
    RISK_PROBABILITY,
    VERSION_SYSTEM,
    export_fhir,
)
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def demo():
    from cartwin.demo import demo_bundle_path
    from cartwin.io.fhir import import_fhir
    from cartwin.twin.build import build_twin

    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    version = build_twin(record, now=dt.datetime(2024, 3, 11, 12, tzinfo=UTC))
    return record, version


@pytest.fixture(scope="module")
def bundle(demo):
    return export_fhir(*demo)


def _resources(bundle: dict, resource_type: str) -> list[dict]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == resource_type
    ]


def _by_identifier(bundle: dict, suffix: str) -> dict:
    for entry in bundle["entry"]:
        for identifier in entry["resource"].get("identifier") or ():
            if identifier["value"].endswith(suffix):
                return entry["resource"]
    raise KeyError(suffix)


def _references(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def test_every_resource_and_the_bundle_validate(bundle):
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "transaction"


def test_resource_counts(bundle, demo):
    _, version = demo
    n_scores = len(version.outputs["scores"])
    assert n_scores == 5  # HEMATOTOX, EASIX, m-EASIX at day -5, 0, +3
    counts = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    # per score: value Observation + RiskAssessment; forecast: 3 derived + 1 risk;
    # CRS and ICANS maximum grades; one Patient, Device and Provenance
    assert counts == {
        "Observation": n_scores + 3 + 2,
        "RiskAssessment": n_scores + 1,
        "Patient": 1,
        "Device": 1,
        "Provenance": 1,
    }


def test_transaction_entries(bundle, demo):
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    assert all(u.startswith("urn:uuid:") for u in urls)
    for entry in bundle["entry"]:
        request, resource = entry["request"], entry["resource"]
        assert (
            request["method"] == "POST" and request["url"] == resource["resourceType"]
        )
        if resource["resourceType"] != "Provenance":
            first = resource["identifier"][0]
            assert (
                request["ifNoneExist"]
                == f"identifier={first['system']}|{first['value']}"
            )
    assert json.dumps(export_fhir(*demo)) == json.dumps(bundle)  # deterministic


def test_every_reference_resolves_or_is_conditional(bundle, demo):
    record, _ = demo
    urls = {e["fullUrl"] for e in bundle["entry"]}
    source_ids = {o.source_id.partition("/")[2] for o in record.observations}
    references = _references(bundle)
    assert references
    for reference in references:
        if reference.startswith("urn:uuid:"):
            assert reference in urls
        else:
            kind, _, query = reference.partition("?_id=")
            assert kind == "Observation" and query in source_ids, reference


def test_score_values_and_risks(bundle, demo):
    _, version = demo
    for index, score in enumerate(version.outputs["scores"]):
        value = _by_identifier(bundle, f"/scores/{index}/value")
        assert value["valueQuantity"]["value"] == score["value"]
        risk = _by_identifier(bundle, f"/scores/{index}")
        (prediction,) = risk["prediction"]
        if score["category"] is None:
            assert "qualitativeRisk" not in prediction
        else:
            (coding,) = prediction["qualitativeRisk"]["coding"]
            assert (coding["system"], coding["code"]) == (
                RISK_PROBABILITY,
                score["category"],
            )
        sources = {
            f"Observation?_id={i['source_id'].partition('/')[2]}"
            for i in score["inputs"]
        }
        assert {b["reference"] for b in risk["basis"][1:]} == sources
    hematotox = _by_identifier(bundle, "/scores/0")
    assert hematotox["code"]["coding"][0]["code"] == "car-hematotox"
    assert hematotox["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"


def test_forecast_observations_carry_the_interval(bundle, demo):
    _, version = demo
    kinetics = version.outputs["kinetics"]
    for name, summary in kinetics["derived"].items():
        observation = _by_identifier(bundle, f"/kinetics/{name}")
        quantity = observation["valueQuantity"]
        assert (quantity["value"], quantity["code"]) == (
            summary["median"],
            summary["unit"],
        )
        assert quantity["system"] == "http://unitsofmeasure.org"
        limits = observation["referenceRange"][0]
        assert (limits["low"]["value"], limits["high"]["value"]) == (
            summary["lower"],
            summary["upper"],
        )
        assert limits["type"]["text"] == "90% posterior predictive interval"
    risk = _by_identifier(bundle, "/kinetics/forecast")
    assert [p["outcome"]["coding"][0]["code"] for p in risk["prediction"]] == [
        f"kinetics-{n}" for n in kinetics["derived"]
    ]
    n_cart = len(demo[0].observations_of(kinetics["quantity"]))
    assert len(risk["basis"]) == 3 + n_cart


def test_grade_observations(bundle, demo):
    _, version = demo
    assert _by_identifier(bundle, "/crs/max-grade")["valueInteger"] == 2
    assert _by_identifier(bundle, "/icans/max-grade")["valueInteger"] == 1
    assert (
        version.outputs["crs"]["max_grade"] == 2
        and version.outputs["icans"]["max_grade"] == 1
    )


def test_provenance_links_outputs_version_and_sources(bundle, demo):
    _, version = demo
    (provenance,) = _resources(bundle, "Provenance")
    outputs = {
        e["fullUrl"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] in ("Observation", "RiskAssessment")
    }
    assert {t["reference"] for t in provenance["target"]} == outputs
    identifiers = {
        (e["what"]["identifier"]["system"], e["what"]["identifier"]["value"])
        for e in provenance["entity"]
        if "identifier" in e["what"]
    }
    assert identifiers == {
        (VERSION_SYSTEM, version.version_id),
        (DATA_HASH_SYSTEM, version.data_hash),
    }
    device_url = next(
        e["fullUrl"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Device"
    )
    assert provenance["agent"][0]["who"]["reference"] == device_url
    sources = [e for e in provenance["entity"] if "reference" in e["what"]]
    assert len(sources) == len({r for r in _references(bundle) if "?" in r})


def test_patient_has_only_the_pseudonym(bundle, demo):
    record, _ = demo
    (patient,) = _resources(bundle, "Patient")
    assert patient == {
        "resourceType": "Patient",
        "gender": "male",
        "identifier": [{"system": PSEUDONYM_SYSTEM, "value": record.facts.pseudonym}],
    }


def test_no_identifying_text(bundle):
    from cartwin.demo import demo_bundle_path

    source = json.loads(demo_bundle_path().read_text(encoding="utf-8"))
    patient = next(
        e["resource"]
        for e in source["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    text = json.dumps(bundle)
    for secret in (
        patient["id"],
        patient["birthDate"],
        patient["name"][0]["family"],
        patient["name"][0]["given"][0],
        patient["identifier"][0]["value"],
        patient["address"][0]["postalCode"],
    ):
        assert secret not in text


def test_without_source_references(demo):
    bundle = export_fhir(*demo, source_references=False)
    assert all(r.startswith("urn:uuid:") for r in _references(bundle))
    (provenance,) = _resources(bundle, "Provenance")
    assert all("reference" not in e["what"] for e in provenance["entity"])


def test_record_without_infusion_exports_missing_scores():
    from cartwin.twin.build import build_twin

    when = dt.datetime(2024, 1, 5, 8, tzinfo=UTC)
    record = PatientRecord(
        PatientFacts(pseudonym="0123456789abcdef", sex="female"),
        observations=(
            Observation("crp", when, 12.0, "mg/L", source_id="Observation/crp-1"),
        ),
    )
    version = build_twin(record, now=when)
    bundle = export_fhir(record, version)
    counts = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    n_scores = len(version.outputs["scores"])
    assert counts["RiskAssessment"] == n_scores  # no forecast without day 0
    for index, score in enumerate(version.outputs["scores"]):
        value = _by_identifier(bundle, f"/scores/{index}/value")
        assert (
            score["value"] is None
            and value["dataAbsentReason"]["text"] == score["message"]
        )
    Bundle.model_validate(bundle)


def test_version_of_another_patient_is_refused(demo):
    _, version = demo
    other = PatientRecord(PatientFacts(pseudonym="fedcba9876543210"))
    with pytest.raises(DataError, match=version.pseudonym):
        export_fhir(other, version)
