"""Phenopacket import under hostile input (defects found by a tester).

A minimal GA4GH Phenopacket v2 is built inline; each test changes one element.
Worked values: 311.15 K = 38 Cel; SpO2 0.95 in UCUM ``1`` = 95 %.
"""

from __future__ import annotations

import copy
import json

import pytest

from cartwin.io.phenopacket import PhenopacketError, read_phenopacket

PACKET = {
    "id": "pp-1",
    "subject": {"id": "SITE-1", "sex": "FEMALE",
                "dateOfBirth": "1970-02-03T00:00:00Z"},
    "measurements": [
        {"assay": {"id": "LOINC:8310-5", "label": "Body temperature"},
         "value": {"quantity": {"unit": {"id": "UCUM:K", "label": "K"},
                                "value": 311.15}},
         "timeObserved": {"timestamp": "2024-01-11T08:00:00+01:00"}},
    ],
    "diseases": [{"term": {"id": "NCIT:C8851",
                           "label": "Diffuse Large B-Cell\u202e Lymphoma\x00"}}],
    "medicalActions": [
        {"treatment": {
            "agent": {"id": "CARTWIN:axicabtagene-ciloleucel",
                      "label": "=HYPERLINK(\"x\")\x07"},
            "doseIntervals": [{
                "quantity": {"unit": {"id": "UCUM:{cells}", "label": "cells"},
                             "value": 2.0e8},
                "interval": {"start": "2024-01-10T10:00:00+01:00",
                             "end": "2024-01-10T10:30:00+01:00"}}]}},
    ],
    "metaData": {"created": "2024-04-01T00:00:00Z", "createdBy": "test",
                 "resources": [], "phenopacketSchemaVersion": "2.0"},
}  # fmt: skip


def _read(packet: dict, key: bytes):
    return read_phenopacket(json.dumps(packet).encode(), key=key)


def _problem(packet_or_bytes, key):
    raw = packet_or_bytes
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    with pytest.raises(PhenopacketError) as info:
        read_phenopacket(raw, key=key)
    assert len(info.value.problems) == 1, info.value
    return info.value.problems[0]


def _with_measurement(assay: str, unit: str, value) -> dict:
    packet = copy.deepcopy(PACKET)
    item = packet["measurements"][0]
    item["assay"]["id"] = assay
    item["value"]["quantity"] = {"unit": {"id": f"UCUM:{unit}", "label": unit},
                                 "value": value}  # fmt: skip
    return packet


def test_kelvin_and_unity_convert(key):
    (record,) = _read(PACKET, key).records
    assert record.observations[0].value == pytest.approx(38.0, abs=1e-9)
    packet = _with_measurement("LOINC:59408-5", "1", 0.95)
    (record,) = _read(packet, key).records
    assert record.observations[0].value == pytest.approx(95.0, rel=1e-12)


def test_numbers_written_as_text_are_still_read(key):
    # protobuf JSON allows a double as a string; 3.1 mg/dL = 31 mg/L
    packet = _with_measurement("LOINC:1988-5", "mg/dL", "3.1")
    (record,) = _read(packet, key).records
    assert record.observations[0].value == pytest.approx(31.0, rel=1e-12)


def test_labels_are_cleaned_and_event_names_come_from_the_code_table(key):
    (record,) = _read(PACKET, key).records
    assert record.facts.diagnosis == "Diffuse Large B-Cell Lymphoma"
    assert record.infusion.name == "axicabtagene ciloleucel"
    assert record.facts.product == "axicabtagene ciloleucel"


@pytest.mark.parametrize(
    ("assay", "unit", "value", "code"),
    [("CARTWIN:cart-flow", "/uL", -5, "implausible"),
     ("CARTWIN:cart-flow", "/uL", 0, "not-detected"),
     ("LOINC:8310-5", "Cel", 1e300, "implausible")],
)  # fmt: skip
def test_implausible_measurements(key, assay, unit, value, code):
    problem = _problem(_with_measurement(assay, unit, value), key)
    assert (problem.code, problem.field) == (
        code, "measurements[0].value.quantity.value")


def test_implausible_age_and_dose(key):
    packet = copy.deepcopy(PACKET)
    del packet["subject"]["dateOfBirth"]
    packet["subject"]["timeAtLastEncounter"] = {"age": {"iso8601duration": "P999Y"}}
    problem = _problem(packet, key)
    assert (problem.code, problem.field) == (
        "implausible", "subject.timeAtLastEncounter.age.iso8601duration")
    packet = copy.deepcopy(PACKET)
    dose = packet["medicalActions"][0]["treatment"]["doseIntervals"][0]
    dose["quantity"]["value"] = 1e308
    assert _problem(packet, key).code == "implausible"


def test_timestamp_in_year_9999_is_a_problem(key):
    packet = copy.deepcopy(PACKET)
    packet["measurements"][0]["timeObserved"]["timestamp"] = "9999-12-31T23:59:59Z"
    problem = _problem(packet, key)
    assert (problem.code, problem.field) == (
        "timestamp-invalid", "measurements[0].timeObserved.timestamp")


def test_huge_integer_and_deep_nesting_are_problems_not_crashes(key):
    text = json.dumps(_with_measurement("LOINC:1988-5", "mg/L", 7))
    problem = _problem(text.replace(": 7}", ": " + "9" * 5000 + "}").encode(), key)
    assert "measurements" in problem.message
    deep = '{"id": "x", "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    assert _problem(deep.encode(), key).code == "nesting-too-deep"
