"""OMOP import of the OHDSI Synthea sample: CSV folder, DuckDB file, PostgreSQL.

The sample (28 synthetic persons, OMOP CDM v5.4, vocabulary v5.0 09-APR-22;
``data/real/omop/PROVENANCE.md``) is read in each source form. The rows per
concept id that cartwin recognises must equal a direct SQL count over the
CSV files joined with the shipped concept table, and a few counts are written
out as PROVENANCE.md lists them (exact integers, no tolerance).
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from cartwin.io.omop import read_omop
from cartwin.store import open_store

KEY = b"cartwin-test-key"
CONCEPTS_CSV = resources.files("cartwin.data.codes").joinpath("omop_concepts.csv")
#: Measurement counts per concept id as listed in PROVENANCE.md.
PROVENANCE_COUNTS = {
    3004249: 726,  # systolic blood pressure, LOINC 8480-6
    3012888: 726,  # diastolic blood pressure, LOINC 8462-4
    3027018: 468,  # heart rate, LOINC 8867-4
    3000963: 108,  # haemoglobin, LOINC 718-7
    3024929: 107,  # platelets, LOINC 777-3
    3051825: 229,  # creatinine in blood, LOINC 38483-4
    3001122: 12,  # ferritin, LOINC 2276-4
    3020891: 37,  # body temperature, LOINC 8310-5
}


def sql_counts(folder: Path, table: str, column: str, target_types: tuple) -> dict:
    """Rows per concept id of ``table`` whose concept the concept table maps."""
    types = ", ".join(f"'{t}'" for t in target_types)
    rows = duckdb.sql(
        f"SELECT t.{column}, count(*) "
        f"FROM read_csv('{folder / (table.upper() + '.csv')}', header = true) t "
        f"JOIN read_csv('{CONCEPTS_CSV}', header = true, all_varchar = true) c "
        f"ON CAST(c.concept_id AS BIGINT) = t.{column} AND c.target_type IN ({types}) "
        "GROUP BY 1"
    ).fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def csv_import(omop_sample):
    """The sample read once from its CSV folder."""
    return read_omop(omop_sample, key=KEY)


def test_measurement_counts_equal_direct_sql(csv_import, omop_sample):
    recognised = csv_import.report.concept_counts("measurement", recognised=True)
    expected = sql_counts(
        omop_sample, "measurement", "measurement_concept_id", ("observation",)
    )
    assert recognised == expected
    assert {k: recognised[k] for k in PROVENANCE_COUNTS} == PROVENANCE_COUNTS


def test_event_table_counts_equal_direct_sql(csv_import, omop_sample):
    for table, column in (
        ("drug_exposure", "drug_concept_id"),
        ("procedure_occurrence", "procedure_concept_id"),
    ):
        recognised = csv_import.report.concept_counts(table, recognised=True)
        assert recognised == sql_counts(omop_sample, table, column, ("event",))
    # acetaminophen 325 MG Oral Tablet, 27 rows (direct count of the sample)
    assert csv_import.report.concept_counts("drug_exposure")[1127433] == 27


def test_every_row_is_counted_once(csv_import, omop_sample):
    for table in ("measurement", "observation", "drug_exposure"):
        total = duckdb.sql(
            f"SELECT count(*) FROM read_csv('{omop_sample / (table.upper() + '.csv')}')"
        ).fetchall()[0][0]
        counts = csv_import.report.table(table)
        assert sum(csv_import.report.concept_counts(table).values()) == total
        assert counts.read == total == counts.used + counts.skipped_total


def test_records_hold_every_recognised_measurement(csv_import):
    assert len(csv_import.records) == 28
    quantities = dict(csv_import.report.quantities)
    # creatinine: 229 in blood (38483-4) + 12 in serum or plasma (2160-0)
    assert quantities["creatinine"] == 241
    assert quantities["systolic_bp"] == 726
    assert csv_import.report.n_observations == sum(
        csv_import.report.concept_counts("measurement", recognised=True).values()
    )


def test_values_match_the_source_rows(csv_import, omop_sample):
    rows = duckdb.sql(
        f"SELECT measurement_id, value_as_number, unit_source_value "
        f"FROM read_csv('{omop_sample / 'MEASUREMENT.csv'}', header = true) "
        "WHERE measurement_concept_id IN (3001122, 3020891, 3000963)"
    ).fetchall()
    source = {f"measurement/{mid}": (value, unit) for mid, value, unit in rows}
    seen = 0
    for record in csv_import.records:
        for obs in record.observations:
            if obs.source_id in source:
                value, unit = source[obs.source_id]
                # ug/L = ng/mL, Cel and g/dL are canonical: the value is unchanged
                assert obs.value == pytest.approx(value, rel=1e-12)
                assert obs.source_unit == unit
                seen += 1
    assert seen == len(source) == 12 + 37 + 108


def test_duckdb_copy_gives_the_same_import(csv_import, omop_sample, omop, tmp_path):
    path = omop.to_duckdb(omop_sample, tmp_path / "synthea.duckdb")
    from_duckdb = read_omop(path, key=KEY)
    assert from_duckdb.records == csv_import.records
    assert from_duckdb.source_sha256 == csv_import.source_sha256
    assert from_duckdb.report.concepts == csv_import.report.concepts


def test_store_import_is_idempotent(csv_import, tmp_path):
    with open_store(tmp_path / "store.duckdb") as store:
        first = store.import_records(
            list(csv_import.records),
            source_name=csv_import.source_name,
            source_sha256=csv_import.source_sha256,
        )
        again = store.import_records(
            list(csv_import.records),
            source_name=csv_import.source_name,
            source_sha256=csv_import.source_sha256,
        )
    assert first.n_observations == csv_import.report.n_observations
    assert again.already_imported


def test_postgres_gives_the_same_counts(postgres, omop_sample, csv_import):
    postgres.load_csv_folder(omop_sample, "synthea")
    from_pg = read_omop(postgres.url, schema="synthea", key=KEY)
    assert from_pg.report.source_kind == "postgresql"
    assert from_pg.report.concept_counts("measurement", recognised=True) == sql_counts(
        omop_sample, "measurement", "measurement_concept_id", ("observation",)
    )
    assert from_pg.records == csv_import.records
    assert from_pg.source_sha256 == csv_import.source_sha256


def test_concept_ids_taken_from_the_sample_match_it(omop_sample):
    """Every shipped row whose note cites the sample agrees with its CONCEPT.csv."""
    with open(omop_sample / "CONCEPT.csv", newline="") as handle:
        sample = {row["concept_id"]: row for row in csv.DictReader(handle)}
    cited = 0
    with CONCEPTS_CSV.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["note"].startswith("CONCEPT.csv of OHDSI synthea27nj"):
                continue
            found = sample[row["concept_id"]]
            assert (
                found["vocabulary_id"],
                found["concept_code"],
                found["concept_name"],
            ) == (row["vocabulary_id"], row["concept_code"], row["concept_name"])
            cited += 1
    assert cited >= 70
