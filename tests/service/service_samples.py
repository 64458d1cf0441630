"""Synthetic patients and request helpers of the service tests."""

from __future__ import annotations

import datetime as dt
import json
import warnings

from cartwin.record.pseudonym import pseudonymise

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client and warns at
    # import when it finds httpx; the client works the same with either.
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401
    from fastapi.testclient import TestClient

__all__ = ["KEY", "T0", "TestClient", "at", "auth", "bundle", "pseudonym", "vital"]

#: Pseudonymisation key of these tests only.
KEY = b"service-test-key"
UTC = dt.UTC
#: CAR T infusion instant of the synthetic patients (11:00 at a UTC+01:00 site).
T0 = dt.datetime(2025, 5, 12, 10, 0, tzinfo=UTC)


def at(hours: float) -> str:
    """ISO 8601 instant ``hours`` after infusion, written with a +01:00 offset."""
    when = (T0 + dt.timedelta(hours=hours)).astimezone(
        dt.timezone(dt.timedelta(hours=1))
    )
    return when.isoformat()


def pseudonym(source_id: str) -> str:
    """The pseudonym the service gives ``source_id`` under :data:`KEY`."""
    return pseudonymise(source_id, KEY)


def bundle(source_id: str, *, infusion: bool = True, vitals: tuple = ()) -> bytes:
    """A FHIR R4 transaction-free Bundle: Patient, CAR T infusion, vital signs.

    ``vitals`` holds ``(loinc, value, ucum, hours after infusion)`` tuples.
    """
    ref = {"reference": f"Patient/{source_id}"}
    entries = [{"resource": {
        "resourceType": "Patient", "id": source_id, "gender": "female",
        "birthDate": "1960-02-03", "name": [{"family": "Testperson"}],
    }}]  # fmt: skip
    if infusion:
        entries.append({"resource": {
            "resourceType": "MedicationAdministration", "id": f"{source_id}-cart",
            "status": "completed", "subject": ref, "effectiveDateTime": at(0),
            "medicationCodeableConcept": {"coding": [{
                "system": "https://cartwin.org/fhir/CodeSystem/local",
                "code": "axicabtagene-ciloleucel",
                "display": "axicabtagene ciloleucel"}]},
        }})  # fmt: skip
    for index, (loinc, value, unit, hours) in enumerate(vitals):
        entries.append({"resource": {
            "resourceType": "Observation", "id": f"{source_id}-v{index}",
            "status": "final", "subject": ref, "effectiveDateTime": at(hours),
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "valueQuantity": {"value": value, "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit},
        }})  # fmt: skip
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": entries}
    ).encode()


def vital(quantity: str, value: float, hours: float, **extra) -> dict:
    """Body of one vital sign ``hours`` after infusion."""
    return {"quantity": quantity, "value": value, "time": at(hours), **extra}


def auth(token: str) -> dict[str, str]:
    """Authorization header of a bearer token."""
    return {"Authorization": f"Bearer {token}"}
