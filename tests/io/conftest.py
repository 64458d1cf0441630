"""Fixtures of the io tests: the key, paths, FHIR and OMOP builders.

The project runs pytest with ``--import-mode=importlib``, so helpers reach the
test modules as fixtures, not as imports.
"""

from __future__ import annotations

import csv as _csv
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


# -- OMOP CDM fixtures (tests/io/test_omop_*.py) ----------------------------------
# The ``postgres`` fixture (a throwaway PostgreSQL server on a loopback port)
# is shared by all test folders: see tests/conftest.py and tests/pg_fixture.py.


#: Columns of the CDM tables the synthetic OMOP builders write (CDM v5.4 subset).
OMOP_COLUMNS = {
    "person": ("person_id", "gender_concept_id", "year_of_birth", "month_of_birth",
               "day_of_birth", "birth_datetime", "race_concept_id",
               "ethnicity_concept_id", "person_source_value", "gender_source_value"),
    "measurement": ("measurement_id", "person_id", "measurement_concept_id",
                    "measurement_date", "measurement_datetime",
                    "measurement_type_concept_id", "operator_concept_id",
                    "value_as_number", "unit_concept_id", "unit_source_value",
                    "value_source_value", "measurement_source_value"),
    "observation": ("observation_id", "person_id", "observation_concept_id",
                    "observation_date", "observation_datetime",
                    "observation_type_concept_id", "value_as_number",
                    "unit_concept_id", "unit_source_value"),
    "drug_exposure": ("drug_exposure_id", "person_id", "drug_concept_id",
                      "drug_exposure_start_date", "drug_exposure_start_datetime",
                      "drug_exposure_end_date", "drug_exposure_end_datetime",
                      "drug_type_concept_id", "quantity", "dose_unit_source_value"),
    "procedure_occurrence": ("procedure_occurrence_id", "person_id",
                             "procedure_concept_id", "procedure_date",
                             "procedure_datetime", "procedure_end_date",
                             "procedure_end_datetime", "procedure_type_concept_id"),
    "condition_occurrence": ("condition_occurrence_id", "person_id",
                             "condition_concept_id", "condition_start_date",
                             "condition_start_datetime", "condition_end_date",
                             "condition_type_concept_id", "condition_source_value",
                             "condition_source_concept_id"),
    "episode": ("episode_id", "person_id", "episode_concept_id", "episode_start_date",
                "episode_start_datetime", "episode_end_date", "episode_end_datetime",
                "episode_object_concept_id", "episode_type_concept_id"),
    "concept": ("concept_id", "concept_name", "domain_id", "vocabulary_id",
                "concept_class_id", "standard_concept", "concept_code",
                "valid_start_date", "valid_end_date", "invalid_reason"),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id",
                         "min_levels_of_separation", "max_levels_of_separation"),
}


def omop_sample_dir() -> Path:
    """The OHDSI Synthea OMOP sample (CSV folder); skips the test when absent."""
    folder = shared_dir() / "data" / "real" / "omop" / "synthea27nj-cdm54"
    if not (folder / "MEASUREMENT.csv").is_file():
        pytest.skip(
            f"OMOP sample not found at {folder}: set CARTWIN_SHARED to the shared "
            "folder that holds data/real/omop/synthea27nj-cdm54"
        )
    return folder


def write_omop_csv(folder: Path, tables: dict) -> Path:
    """Write ``{table: [row dict, ...]}`` as CDM CSV files (upper-case names).

    Columns are the table's :data:`OMOP_COLUMNS` plus any extra key used;
    ``drop`` (a set of ``table.column``) in ``tables`` leaves columns out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    drop = tables.pop("drop", set())
    for table, rows in tables.items():
        names = list(OMOP_COLUMNS.get(table, ()))
        names += [k for row in rows for k in row if k not in names]
        names = [n for n in names if f"{table}.{n}" not in drop]
        with open(folder / f"{table.upper()}.csv", "w", newline="") as handle:
            writer = _csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return folder


def csv_folder_to_duckdb(folder: Path, path: Path) -> Path:
    """Copy every CSV of an OMOP folder into a DuckDB file (types sniffed)."""
    import duckdb

    con = duckdb.connect(str(path))
    for csv_path in sorted(folder.glob("*.csv")):
        literal = str(csv_path).replace("'", "''")
        con.execute(
            f'CREATE TABLE "{csv_path.stem.lower()}" AS '
            f"SELECT * FROM read_csv('{literal}', header = true)"
        )
    con.close()
    return path


@pytest.fixture(scope="session")
def omop_sample() -> Path:
    """The OHDSI Synthea OMOP sample folder (the test is skipped when absent)."""
    return omop_sample_dir()


@pytest.fixture
def omop():
    """OMOP builders: ``write_csv(folder, tables)``, ``to_duckdb(folder, path)``."""

    class Builders:
        write_csv = staticmethod(write_omop_csv)
        to_duckdb = staticmethod(csv_folder_to_duckdb)
        columns = OMOP_COLUMNS

    return Builders
