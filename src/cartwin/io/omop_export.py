"""Twin outputs and patient records written as OMOP CDM v5.4 rows.

:func:`export_omop` writes one twin version's outputs:

* a ``measurement`` row per derived CAR T kinetics value (Cmax, Tmax,
  AUC0-28d): ``value_as_number`` the posterior median, ``range_low`` /
  ``range_high`` the interval bounds (90 % by default; the level is in
  ``value_source_value``), ``unit_source_value`` the UCUM unit (and
  ``unit_concept_id`` when the concept table knows it), and
  ``measurement_source_value`` naming the output and the version,
  ``cartwin:kinetics.cmax@<version_id>``;
* an ``observation`` row per clinical score (``cartwin:score.<name>@...``,
  ``value_as_number`` the score or NULL, ``value_as_string`` the risk group
  or why the value is missing, ``qualifier_source_value`` the time point) and
  one per CRS and ICANS maximum grade (``cartwin:crs.max_grade@...``).

``person_id`` is the store's id of the pseudonym
(:func:`cartwin.store._columns.person_id`), not the site's own person id. The
rows are dated at the version's creation instant in site local time (OMOP
datetimes have no zone). Concept ids are 0 ("No matching concept"): there is
no standard concept for these model outputs, and the type concept 32880
("Standard algorithm") could not be confirmed in the sample vocabulary, so
``*_type_concept_id`` is 0 as well. Row ids are the first 60 bits of a
SHA-256 of the version id and the output name, so exporting the same version
twice writes the same rows.

:func:`write_omop_records` writes records' observations as ``person`` and
``measurement`` rows (the inverse of reading them; used by tests and the
benchmark). Quantities without a concept id (CAR T levels, local scores) are
written with concept 0 and are therefore not read back.

``format="csv"`` writes one file per table into the folder ``dest`` and
replaces files of the same name; ``format="duckdb"`` creates the tables in the
DuckDB file ``dest`` when missing and appends rows whose id is not there yet.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np

from cartwin.errors import DataError
from cartwin.io.omop_concepts import ConceptMap, load_concept_map
from cartwin.record.model import PatientRecord
from cartwin.store._columns import person_id
from cartwin.store.schema import CENSORED_OPERATORS, GENDER_CONCEPTS
from cartwin.twin.version import TwinVersion

#: Output names of the derived kinetics values, in the order written.
DERIVED = ("cmax", "tmax", "auc0_28")
#: Formats :func:`export_omop` and :func:`write_omop_records` write.
FORMATS = ("csv", "duckdb")

#: CDM v5.4 columns (with SQL types) of the tables written.
CDM_COLUMNS = {
    "person": (
        ("person_id", "BIGINT"),
        ("gender_concept_id", "INTEGER"),
        ("year_of_birth", "INTEGER"),
        ("month_of_birth", "INTEGER"),
        ("day_of_birth", "INTEGER"),
        ("birth_datetime", "TIMESTAMP"),
        ("race_concept_id", "INTEGER"),
        ("ethnicity_concept_id", "INTEGER"),
        ("location_id", "BIGINT"),
        ("provider_id", "BIGINT"),
        ("care_site_id", "BIGINT"),
        ("person_source_value", "VARCHAR"),
        ("gender_source_value", "VARCHAR"),
        ("gender_source_concept_id", "INTEGER"),
        ("race_source_value", "VARCHAR"),
        ("race_source_concept_id", "INTEGER"),
        ("ethnicity_source_value", "VARCHAR"),
        ("ethnicity_source_concept_id", "INTEGER"),
    ),
    "measurement": (
        ("measurement_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("measurement_concept_id", "INTEGER"),
        ("measurement_date", "DATE"),
        ("measurement_datetime", "TIMESTAMP"),
        ("measurement_time", "VARCHAR"),
        ("measurement_type_concept_id", "INTEGER"),
        ("operator_concept_id", "INTEGER"),
        ("value_as_number", "DOUBLE"),
        ("value_as_concept_id", "INTEGER"),
        ("unit_concept_id", "INTEGER"),
        ("range_low", "DOUBLE"),
        ("range_high", "DOUBLE"),
        ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"),
        ("visit_detail_id", "BIGINT"),
        ("measurement_source_value", "VARCHAR"),
        ("measurement_source_concept_id", "INTEGER"),
        ("unit_source_value", "VARCHAR"),
        ("unit_source_concept_id", "INTEGER"),
        ("value_source_value", "VARCHAR"),
        ("measurement_event_id", "BIGINT"),
        ("meas_event_field_concept_id", "INTEGER"),
    ),
    "observation": (
        ("observation_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("observation_concept_id", "INTEGER"),
        ("observation_date", "DATE"),
        ("observation_datetime", "TIMESTAMP"),
        ("observation_type_concept_id", "INTEGER"),
        ("value_as_number", "DOUBLE"),
        ("value_as_string", "VARCHAR"),
        ("value_as_concept_id", "INTEGER"),
        ("qualifier_concept_id", "INTEGER"),
        ("unit_concept_id", "INTEGER"),
        ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"),
        ("visit_detail_id", "BIGINT"),
        ("observation_source_value", "VARCHAR"),
        ("observation_source_concept_id", "INTEGER"),
        ("unit_source_value", "VARCHAR"),
        ("qualifier_source_value", "VARCHAR"),
        ("value_source_value", "VARCHAR"),
        ("observation_event_id", "BIGINT"),
        ("obs_event_field_concept_id", "INTEGER"),
    ),
}


@dataclass(frozen=True)
class OmopExport:
    """What an export wrote.

    Attributes
    ----------
    dest : str
        Folder (CSV) or DuckDB file written.
    format : str
        ``"csv"`` or ``"duckdb"``.
    rows : tuple[tuple[str, int], ...]
        Rows written per table (for DuckDB: new rows appended).
    """

    dest: str
    format: str
    rows: tuple[tuple[str, int], ...]

    def count(self, table: str) -> int:
        """Rows written to ``table``."""
        return dict(self.rows).get(table, 0)

    def to_dict(self) -> dict:
        """JSON-ready mapping (for ``--json`` output)."""
        return {"dest": self.dest, "format": self.format, "rows": dict(self.rows)}


def export_omop(
    record: PatientRecord,
    version: TwinVersion,
    dest: str | os.PathLike,
    *,
    format: str = "csv",
    concepts: ConceptMap | None = None,
) -> OmopExport:
    """Write a twin version's outputs as OMOP ``measurement``/``observation`` rows.

    Parameters
    ----------
    record : PatientRecord
        The patient's record (its site offset dates the rows).
    version : TwinVersion
        The version whose outputs are written; it must belong to ``record``.
    dest : path
        Folder for ``format="csv"``, DuckDB file for ``format="duckdb"``.
    format : {"csv", "duckdb"}
    concepts : ConceptMap, optional
        Concept table for unit concept ids (default: the shipped one).

    Raises
    ------
    DataError
        When the version belongs to another patient or the format is unknown.
    """
    _check_format(format)
    if version.pseudonym != record.facts.pseudonym:
        raise DataError(
            f"twin version {version.version_id} belongs to patient "
            f"{version.pseudonym}, not {record.facts.pseudonym}"
        )
    units = _unit_concepts(concepts or load_concept_map())
    offset = record.site_utc_offset_min or 0
    tables = {
        "measurement": _derived_rows(version, units, offset),
        "observation": _score_rows(version, offset) + _grade_rows(version, offset),
    }
    return _write(dest, format, {k: _columns(k, v) for k, v in tables.items()})


def write_omop_records(
    records: Sequence[PatientRecord],
    dest: str | os.PathLike,
    *,
    format: str = "csv",
    concepts: ConceptMap | None = None,
) -> OmopExport:
    """Write records' observations as OMOP ``person`` and ``measurement`` rows.

    ``person_source_value`` is the pseudonym and ``person_id`` the store's id
    of it; each observation becomes one measurement row (ids 1, 2, ... in
    record and time order) with the first concept id the concept table lists
    for its quantity (0 when none), the canonical value and unit, the
    censoring as ``operator_concept_id`` and the instant in site local time.
    ``year_of_birth`` is left empty (records keep only the age).

    Parameters
    ----------
    records : sequence of PatientRecord
    dest : path
        Folder for ``format="csv"``, DuckDB file for ``format="duckdb"``.
    format : {"csv", "duckdb"}
    concepts : ConceptMap, optional
        Concept table giving the measurement and unit concept ids (default:
        the shipped one).

    Returns
    -------
    OmopExport
        Rows written per table.
    """
    _check_format(format)
    table = concepts or load_concept_map()
    quantity_concepts = _quantity_concepts(table)
    units = _unit_concepts(table)
    people = [_person_row(r) for r in records]
    return _write(
        dest,
        format,
        {
            "person": _columns("person", people),
            "measurement": _measurement_columns(records, quantity_concepts, units),
        },
    )


# -- rows of a twin version -------------------------------------------------------
def _derived_rows(version: TwinVersion, units: dict, offset: int) -> list[dict]:
    kinetics = version.outputs.get("kinetics") or {}
    derived = kinetics.get("derived") or {}
    level = kinetics.get("interval")
    stamp = _local(version.created_at, offset)
    rows = []
    for name in DERIVED:
        item = derived.get(name)
        if not item:
            continue
        rows.append(
            {
                "measurement_id": _row_id(version, f"kinetics.{name}"),
                "person_id": person_id(version.pseudonym),
                "measurement_concept_id": 0,
                "measurement_type_concept_id": 0,
                "measurement_date": stamp.date(),
                "measurement_datetime": stamp,
                "value_as_number": _finite(item.get("median")),
                "range_low": _finite(item.get("lower")),
                "range_high": _finite(item.get("upper")),
                "unit_source_value": item.get("unit"),
                "unit_concept_id": units.get(item.get("unit"), 0),
                "measurement_source_value": _source(version, f"kinetics.{name}"),
                "value_source_value": _interval_text(level),
            }
        )
    return rows


def _score_rows(version: TwinVersion, offset: int) -> list[dict]:
    rows = []
    for index, score in enumerate(version.outputs.get("scores") or ()):
        name = f"score.{score.get('name', '?')}"
        text = score.get("category") or score.get("message") or None
        timepoint = score.get("timepoint") or None
        row = _observation(version, name, offset, score.get("value"), text, timepoint)
        # a score may be given at several time points: the id names the row
        row["observation_id"] = _row_id(version, f"{name}#{index}:{timepoint}")
        rows.append(row)
    return rows


def _grade_rows(version: TwinVersion, offset: int) -> list[dict]:
    rows = []
    for which in ("crs", "icans"):
        timeline = version.outputs.get(which)
        if timeline is None:
            continue
        grade = timeline.get("max_grade")
        text = None if grade is not None else (timeline.get("message") or None)
        rows.append(
            _observation(
                version, f"{which}.max_grade", offset, grade, text, timeline.get("name")
            )
        )
    return rows


def _observation(version, name: str, offset: int, value, text, qualifier) -> dict:
    stamp = _local(version.created_at, offset)
    return {
        "observation_id": _row_id(version, name),
        "person_id": person_id(version.pseudonym),
        "observation_concept_id": 0,
        "observation_type_concept_id": 0,
        "observation_date": stamp.date(),
        "observation_datetime": stamp,
        "value_as_number": _finite(value),
        "value_as_string": None if text is None else str(text)[:60],
        "observation_source_value": _source(version, name),
        "qualifier_source_value": None if qualifier is None else str(qualifier)[:50],
    }


def _row_id(version: TwinVersion, name: str) -> int:
    digest = hashlib.sha256(f"{version.version_id}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 4


def _source(version: TwinVersion, name: str) -> str:
    return f"cartwin:{name}@{version.version_id}"[:50]


def _interval_text(level) -> str | None:
    if not isinstance(level, (int, float)):
        return None
    return f"{level * 100:g}% interval in range_low..range_high"


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _local(when: dt.datetime, offset_min: int) -> dt.datetime:
    return (
        when.astimezone(dt.timezone.utc) + dt.timedelta(minutes=offset_min)
    ).replace(tzinfo=None)


# -- rows of records --------------------------------------------------------------
def _person_row(record: PatientRecord) -> dict:
    facts = record.facts
    return {
        "person_id": person_id(facts.pseudonym),
        "gender_concept_id": GENDER_CONCEPTS.get(facts.sex or "", 0),
        "race_concept_id": 0,
        "ethnicity_concept_id": 0,
        "person_source_value": facts.pseudonym,
        "gender_source_value": facts.sex,
    }


def _measurement_columns(records, concepts: dict, units: dict) -> dict:
    rows = [(r, o) for r in records for o in r.observations]
    offsets = [dt.timedelta(minutes=r.site_utc_offset_min or 0) for r, _ in rows]
    stamps = np.array(
        [
            (o.time.astimezone(dt.timezone.utc) + off).replace(tzinfo=None)
            for (_, o), off in zip(rows, offsets, strict=True)
        ],
        dtype="datetime64[us]",
    )
    n = len(rows)
    columns = {
        name: np.full(n, None, dtype=object) for name, _ in CDM_COLUMNS["measurement"]
    }
    columns.update(
        {
            "measurement_id": np.arange(1, n + 1, dtype=np.int64),
            "person_id": np.array(
                [person_id(r.facts.pseudonym) for r, _ in rows], np.int64
            ),
            "measurement_concept_id": np.array(
                [concepts.get(o.quantity, 0) for _, o in rows], np.int64
            ),
            "measurement_date": stamps.astype("datetime64[D]").astype("datetime64[us]"),
            "measurement_datetime": stamps,
            "measurement_type_concept_id": np.zeros(n, np.int64),
            "operator_concept_id": np.array(
                [CENSORED_OPERATORS.get(o.censored) for _, o in rows], object
            ),
            "value_as_number": np.array([o.value for _, o in rows], float),
            "unit_concept_id": np.array(
                [units.get(o.unit, 0) for _, o in rows], np.int64
            ),
            "unit_source_value": np.array([o.unit for _, o in rows], object),
            "measurement_source_value": np.array([o.quantity for _, o in rows], object),
        }
    )
    return columns


def _quantity_concepts(concepts: ConceptMap) -> dict[str, int]:
    found: dict[str, int] = {}
    for cid, row in concepts.of_type("observation").items():
        found.setdefault(row.target, cid)
    return found


def _unit_concepts(concepts: ConceptMap) -> dict[str, int]:
    found: dict[str, int] = {}
    for cid, row in concepts.of_type("unit").items():
        found.setdefault(row.target, cid)
    return found


# -- writing ----------------------------------------------------------------------
def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise DataError(f"OMOP export format {format!r}; allowed: {', '.join(FORMATS)}")


def _columns(table: str, rows: list[dict]) -> dict[str, np.ndarray]:
    """One array per CDM column; integers without NULL as int64 (ids use 64 bits)."""
    columns = {}
    for name, sql_type in CDM_COLUMNS[table]:
        values = [row.get(name) for row in rows]
        whole = sql_type in ("BIGINT", "INTEGER") and None not in values
        columns[name] = np.array(values, dtype=np.int64 if whole else object)
    return columns


def _write(dest, format: str, tables: dict[str, dict]) -> OmopExport:
    path = Path(dest)
    con = duckdb.connect(str(path) if format == "duckdb" else ":memory:")
    written = []
    try:
        if format == "csv":
            path.mkdir(parents=True, exist_ok=True)
        for table, columns in tables.items():
            con.register("staged", columns)
            try:
                written.append((table, _write_table(con, table, path, format)))
            finally:
                con.unregister("staged")
    except duckdb.Error as exc:
        raise DataError(f"cannot write OMOP {format} to {path}: {exc}") from None
    finally:
        con.close()
    return OmopExport(str(path), format, tuple(written))


def _write_table(
    con: duckdb.DuckDBPyConnection, table: str, path: Path, format: str
) -> int:
    columns = CDM_COLUMNS[table]
    select = ", ".join(
        f"CAST({name} AS {sql_type}) AS {name}" for name, sql_type in columns
    )
    if format == "csv":
        target = "'" + str(path / f"{table}.csv").replace("'", "''") + "'"
        con.execute(
            f"COPY (SELECT {select} FROM staged) TO {target} (HEADER)"
        ).fetchall()
        return int(con.execute("SELECT count(*) FROM staged").fetchall()[0][0])
    ddl = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({ddl})").fetchall()
    key = columns[0][0]
    before = int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    con.execute(
        f"INSERT INTO {table} ({', '.join(n for n, _ in columns)}) SELECT {select} "
        f"FROM staged WHERE {key} NOT IN (SELECT {key} FROM {table})"
    ).fetchall()
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]) - before
