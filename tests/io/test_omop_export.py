"""Twin outputs as OMOP rows, and records written as OMOP rows then read back."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from cartwin.errors import DataError
from cartwin.io.omop import export_omop, read_omop, write_omop_records
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY, pseudonymise
from cartwin.store._columns import person_id
from cartwin.twin.version import TwinVersion

UTC = dt.timezone.utc
PSEUDONYM = "0123456789abcdef"
CREATED = dt.datetime(2024, 3, 20, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_twin():
    """The demo patient's record and a real twin version (50 draws, seeded)."""
    from cartwin.demo import demo_bundle_path
    from cartwin.io import import_fhir
    from cartwin.twin.build import TwinSettings, build_twin

    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    return record, build_twin(record, settings=TwinSettings(n_draws=50), now=CREATED)


def rows(path, table: str) -> list[dict]:
    relation = duckdb.sql(
        f"SELECT * FROM read_csv('{path / (table + '.csv')}', header = true) ORDER BY 1"
    )
    return [
        dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()
    ]


def test_derived_kinetics_become_measurements_with_intervals(demo_twin, tmp_path):
    record, version = demo_twin
    written = export_omop(record, version, tmp_path / "out")
    derived = version.outputs["kinetics"]["derived"]
    found = {
        r["measurement_source_value"]: r for r in rows(tmp_path / "out", "measurement")
    }
    assert written.count("measurement") == len(found) == 3
    for name in ("cmax", "tmax", "auc0_28"):
        row = found[f"cartwin:kinetics.{name}@{version.version_id}"]
        assert (row["value_as_number"], row["range_low"], row["range_high"]) == (
            derived[name]["median"],
            derived[name]["lower"],
            derived[name]["upper"],
        )
        assert row["unit_source_value"] == derived[name]["unit"]
        assert row["person_id"] == person_id(record.facts.pseudonym)
        assert row["value_source_value"] == "90% interval in range_low..range_high"
    # UCUM units with a concept in the shipped table: /uL 8647, d 8512
    assert (
        found[f"cartwin:kinetics.tmax@{version.version_id}"]["unit_concept_id"] == 8512
    )
    assert (
        found[f"cartwin:kinetics.cmax@{version.version_id}"]["unit_concept_id"] == 8647
    )


def test_scores_and_grades_become_observations(demo_twin, tmp_path):
    record, version = demo_twin
    export_omop(record, version, tmp_path / "out")
    found = rows(tmp_path / "out", "observation")
    scores = version.outputs["scores"]
    assert len(found) == len(scores) + 2
    by_source = {}
    for row in found:
        by_source.setdefault(row["observation_source_value"].split("@")[0], []).append(
            row
        )
    crs = by_source["cartwin:crs.max_grade"][0]
    icans = by_source["cartwin:icans.max_grade"][0]
    assert crs["value_as_number"] == version.outputs["crs"]["max_grade"]
    assert icans["value_as_number"] == version.outputs["icans"]["max_grade"]
    easix = [s for s in scores if s["name"] == "EASIX"][0]
    (row,) = by_source["cartwin:score.EASIX"]
    assert (row["value_as_number"], row["value_as_string"]) == (
        easix["value"],
        easix["category"],
    )
    assert row["qualifier_source_value"] == easix["timepoint"]


def _version(outputs: dict, pseudonym: str = PSEUDONYM) -> TwinVersion:
    return TwinVersion(
        pseudonym=pseudonym,
        created_at=CREATED,
        data_hash="0" * 64,
        model_name="test",
        model_version="1",
        package_version="0",
        outputs=outputs,
    )


def test_missing_values_are_null_with_the_reason(tmp_path):
    record = PatientRecord(PatientFacts(PSEUDONYM), site_utc_offset_min=60)
    version = _version(
        {
            "kinetics": {"status": "unavailable", "reason": "no CAR T infusion"},
            "scores": [
                {
                    "name": "EASIX",
                    "value": None,
                    "category": None,
                    "message": "LDH missing in days -5..0",
                    "timepoint": "day 0",
                }
            ],
            "crs": {"name": "ASTCT CRS", "max_grade": None, "message": "no infusion"},
        }
    )
    written = export_omop(record, version, tmp_path / "out")
    assert written.count("measurement") == 0
    easix, crs = sorted(
        rows(tmp_path / "out", "observation"),
        key=lambda r: r["observation_source_value"],
        reverse=True,
    )
    assert easix["value_as_number"] is None
    assert easix["value_as_string"] == "LDH missing in days -5..0"
    assert crs["value_as_string"] == "no infusion"
    # created 09:30Z, site at UTC+01:00
    assert easix["observation_datetime"] == dt.datetime(2024, 3, 20, 10, 30)


def test_duckdb_export_appends_each_row_once(demo_twin, tmp_path):
    record, version = demo_twin
    path = tmp_path / "twin.duckdb"
    first = export_omop(record, version, path, format="duckdb")
    second = export_omop(record, version, path, format="duckdb")
    assert first.count("measurement") == 3
    assert (second.count("measurement"), second.count("observation")) == (0, 0)
    con = duckdb.connect(str(path))
    total = con.execute("SELECT count(*) FROM observation").fetchall()[0][0]
    con.close()
    assert total == first.count("observation") == len(version.outputs["scores"]) + 2


def test_export_checks_patient_and_format(tmp_path):
    record = PatientRecord(PatientFacts(PSEUDONYM))
    with pytest.raises(DataError, match="belongs to patient fedcba9876543210"):
        export_omop(record, _version({}, "fedcba9876543210"), tmp_path)
    with pytest.raises(DataError, match="format 'xlsx'"):
        export_omop(record, _version({}), tmp_path, format="xlsx")


def sample_record() -> PatientRecord:
    t0 = dt.datetime(2024, 3, 6, 7, 15, tzinfo=UTC)
    observations = (
        Observation("crp", t0, 30.0, "mg/L"),
        Observation("crp", t0 + dt.timedelta(days=1), 5.0, "mg/L", censored="below"),
        Observation("platelets", t0, 152.5, "10*9/L"),
        Observation("anc", t0, 0.42, "10*9/L"),
        Observation("temperature", t0 + dt.timedelta(hours=5), 38.3, "Cel"),
        Observation("ferritin", t0, 1500.0, "ng/mL", censored="above"),
        Observation("cart_qpcr", t0, 1.0e4, "{copies}/ug"),
    )
    facts = PatientFacts(PSEUDONYM, sex="female")
    return PatientRecord(facts, observations, site_utc_offset_min=120)


@pytest.mark.parametrize("format", ["csv", "duckdb"])
def test_round_trip_of_observations(tmp_path, key, format):
    record = sample_record()
    dest = tmp_path / ("cdm" if format == "csv" else "cdm.duckdb")
    write_omop_records([record], dest, format=format)
    result = read_omop(dest, key=key, site_utc_offset_min=120)
    (back,) = result.records
    assert back.facts.pseudonym == pseudonymise(PSEUDONYM, key)
    assert back.facts.sex == "female"
    expected = [o for o in record.observations if o.quantity != "cart_qpcr"]
    assert len(back.observations) == len(expected)
    for got, want in zip(back.observations, expected, strict=True):
        assert (got.quantity, got.time, got.unit, got.censored) == (
            want.quantity,
            want.time,
            want.unit,
            want.censored,
        )
        assert got.value == pytest.approx(want.value, rel=1e-12)
    # CAR T levels have no OMOP concept: written with concept 0, counted unrecognised
    assert result.report.concept_counts("measurement", recognised=False) == {0: 1}
