"""Fixtures of the io tests: the key, paths and small FHIR builders.

The project runs pytest with ``--import-mode=importlib``, so helpers reach the
test modules as fixtures, not as imports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

#: Pseudonymisation key of the tests (never used for real data).
KEY = b"cartwin-test-key"
#: The project's own FHIR fixtures.
FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fhir"
#: Bundle of one CAR T patient written for these tests.
CART_BUNDLE = FIXTURES / "cart_patient_bundle.json"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def shared_dir() -> Path:
    """``/work/shared`` next to the repository, or ``$CARTWIN_SHARED``."""
    env = os.environ.get("CARTWIN_SHARED")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()


def real_fhir_dir() -> Path:
    """Folder of the real public FHIR files; skips the test when absent."""
    folder = shared_dir() / "data" / "real" / "fhir"
    if not folder.is_dir():
        pytest.skip(
            f"real FHIR data not found at {folder}: set CARTWIN_SHARED to the "
            "shared folder that holds data/real/fhir"
        )
    return folder


def observation(
    rid: str,
    code: str,
    value=None,
    unit: str | None = None,
    *,
    when: str = "2024-03-06T08:00:00+01:00",
    system: str = LOINC,
    subject: str = "Patient/p1",
    **extra,
) -> dict:
    """A minimal valid Observation (valueQuantity with UCUM code when given)."""
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": UCUM,
            "code": unit,
        }
    resource.update(extra)
    return resource


def bundle(*resources: dict) -> dict:
    """A collection Bundle of ``resources`` (no fullUrl)."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def write_json(path: Path, document) -> Path:
    """Write ``document`` as JSON and return ``path``."""
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def key() -> bytes:
    """The test pseudonymisation key."""
    return KEY


@pytest.fixture
def cart_bundle_path() -> Path:
    """Path of the project's one-patient CAR T bundle."""
    return CART_BUNDLE


@pytest.fixture
def real_fhir() -> Path:
    """Folder of the real FHIR files (the test is skipped when absent)."""
    return real_fhir_dir()


@pytest.fixture
def fhir():
    """Builders ``fhir.observation``, ``fhir.bundle`` and ``fhir.write``."""

    class Builders:
        observation = staticmethod(observation)
        bundle = staticmethod(bundle)
        write = staticmethod(write_json)

    return Builders
