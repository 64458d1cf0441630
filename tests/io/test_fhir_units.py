"""Units are converted at the FHIR boundary, and the source value is kept.

Expected values are worked out by hand from the unit definitions:
1 mg/dL = 10 mg/L; 1 /uL = 1 /mm3 = 10^-3 x 10^9/L; 1 g/L = 0.1 g/dL;
haemoglobin as haem monomer, 16 114.5 g/mol, so 1 mmol/L = 1.611 45 g/dL;
creatinine 113.12 g/mol, so 1 umol/L = 0.011 312 mg/dL; 1 ug/L = 1 ng/mL;
1 ukat/L = 60 U/L (1 U = 1 umol/min); T(Cel) = (T(degF) - 32) / 1.8.
The relative tolerance 1e-9 only absorbs floating-point rounding.
"""

from __future__ import annotations

import json

import pytest

from cartwin.io import import_fhir

# (LOINC, value, UCUM unit, quantity, expected canonical value)
CASES = [
    ("1988-5", 12.0, "mg/L", "crp", 12.0),
    ("1988-5", 3.2, "mg/dL", "crp", 32.0),
    ("777-3", 85.0, "10*9/L", "platelets", 85.0),
    ("777-3", 85000.0, "/uL", "platelets", 85.0),
    ("777-3", 85000.0, "/mm3", "platelets", 85.0),
    ("751-8", 0.4, "10*9/L", "anc", 0.4),
    ("751-8", 400.0, "/uL", "anc", 0.4),
    ("751-8", 400.0, "/mm3", "anc", 0.4),
    ("718-7", 9.8, "g/dL", "hemoglobin", 9.8),
    ("718-7", 98.0, "g/L", "hemoglobin", 9.8),
    ("718-7", 6.0, "mmol/L", "hemoglobin", 6.0 * 1.611450),
    ("2160-0", 1.3, "mg/dL", "creatinine", 1.3),
    ("2160-0", 115.0, "umol/L", "creatinine", 115.0 * 113.12e-4),
    ("2276-4", 1250.0, "ng/mL", "ferritin", 1250.0),
    ("2276-4", 1250.0, "ug/L", "ferritin", 1250.0),
    ("2532-0", 480.0, "U/L", "ldh", 480.0),
    ("2532-0", 8.0, "ukat/L", "ldh", 480.0),
    ("8310-5", 38.3, "Cel", "temperature", 38.3),
    ("8310-5", 100.4, "[degF]", "temperature", 38.0),
]


@pytest.fixture(scope="module")
def observations():
    resources = []
    for index, (code, value, unit, _, _) in enumerate(CASES):
        resources.append(
            {
                "resourceType": "Observation",
                "id": f"u{index}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": f"2024-03-06T08:{index:02d}:00+01:00",
                "valueQuantity": {
                    "value": value,
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        )
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    (record,) = import_fhir(json.dumps(document).encode(), key=b"k").records
    return {o.source_id: o for o in record.observations}


@pytest.mark.parametrize(
    "index", range(len(CASES)), ids=lambda i: f"{CASES[i][3]}-{CASES[i][2]}"
)
def test_value_in_canonical_unit(observations, index):
    code, value, unit, quantity, expected = CASES[index]
    obs = observations[f"Observation/u{index}"]
    assert obs.quantity == quantity
    assert obs.value == pytest.approx(expected, rel=1e-9)
    assert (obs.source_value, obs.source_unit) == (value, unit)
    assert obs.source_code == f"http://loinc.org|{code}"


def test_unit_text_used_when_code_is_absent(fhir, key):
    # observation-neutrophils style: UCUM system, human unit, no code.
    resource = fhir.observation("t", "1988-5", 2.0, None)
    resource["valueQuantity"] = {
        "value": 2.0,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
    }
    (record,) = import_fhir(json.dumps(resource).encode(), key=key).records
    assert record.observations[0].value == pytest.approx(20.0)


def test_score_without_unit_is_accepted(fhir, key):
    resource = fhir.observation(
        "ice",
        "ice-score",
        system="https://cartwin.org/fhir/CodeSystem/local",
        valueInteger=7,
    )
    (record,) = import_fhir(json.dumps(resource).encode(), key=key).records
    assert [(o.quantity, o.value) for o in record.observations] == [("ice_score", 7.0)]
