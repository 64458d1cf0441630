"""Bulk writes of one import, run inside the caller's transaction.

Each step registers NumPy columns as a DuckDB view and moves them into the
store with one ``INSERT ... SELECT``; DuckDB scans the arrays in bulk. Rows
already in the store, or repeated within the import, are skipped:

* a measurement repeats when person, ``source_id``, quantity and instant agree;
* an event repeats when person, kind, start, name, detail and ``source_id``
  agree.

Ids continue from the largest id in the table (events share one id sequence
across their four tables), in input order, so reading rows by id restores the
order of events that start at the same instant.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import fields, replace
from typing import Iterator, Sequence

import duckdb

from cartwin.errors import DataQualityWarning
from cartwin.record.model import PatientFacts, PatientRecord
from cartwin.store._columns import (
    PERSON_COLUMNS,
    event_columns,
    facts_from_row,
    measurement_columns,
    person_columns,
)
from cartwin.store.schema import EVENT_TABLES

_PERSON_FIELDS = tuple(f.name for f in fields(PatientFacts) if f.name != "pseudonym")


@contextlib.contextmanager
def staged(con: duckdb.DuckDBPyConnection, name: str, columns: dict) -> Iterator[str]:
    """Register NumPy ``columns`` as view ``name`` for the ``with`` block."""
    con.register(name, columns)
    try:
        yield name
    finally:
        con.unregister(name)


def first_row(result: duckdb.DuckDBPyConnection) -> tuple | None:
    """First row of an executed statement, reading the result to its end.

    DuckDB 2 refuses new work on a connection whose last result was not read
    to the end, so single-row reads use ``fetchall`` rather than ``fetchone``.
    """
    rows = result.fetchall()
    return rows[0] if rows else None


def next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    """One more than the largest ``column`` in ``table`` (1 when empty)."""
    sql = f"SELECT coalesce(max({column}), 0) FROM {table}"
    (largest,) = first_row(con.execute(sql))
    return int(largest) + 1


# -- persons ------------------------------------------------------------------
def merge_facts(
    old: PatientFacts, new: PatientFacts
) -> tuple[PatientFacts, list[str]]:
    """Fill the unknown facts of ``old`` from ``new``; list the disagreements.

    A fact already known is kept; where ``new`` gives another value the field
    is named in the returned list (``"sex: 'female' kept, 'male' ignored"``).
    """
    filled, conflicts = {}, []
    for name in _PERSON_FIELDS:
        known, offered = getattr(old, name), getattr(new, name)
        if known is None:
            filled[name] = offered
        elif offered is not None and offered != known:
            conflicts.append(f"{name}: {known!r} kept, {offered!r} ignored")
    return replace(old, **filled), conflicts


def batch_persons(records: Sequence[PatientRecord]) -> dict[str, tuple]:
    """Facts, site offset and disagreements of each patient in ``records``."""
    persons: dict[str, tuple] = {}
    for record in records:
        key = record.facts.pseudonym
        if key not in persons:
            persons[key] = (record.facts, record.site_utc_offset_min, [])
            continue
        facts, offset, conflicts = persons[key]
        facts, more = merge_facts(facts, record.facts)
        offset = record.site_utc_offset_min if offset is None else offset
        persons[key] = (facts, offset, conflicts + more)
    return persons


def write_persons(
    con: duckdb.DuckDBPyConnection, records: Sequence[PatientRecord], import_id: int
) -> tuple[int, int]:
    """Insert new persons, fill missing facts of known ones.

    Returns
    -------
    tuple of int
        Number of persons inserted and of persons whose facts were filled.

    Warns
    -----
    DataQualityWarning
        When a file gives a fact that disagrees with the one already known.
    """
    return merge_persons(
        con, records, import_id,
        stored=_stored_persons, insert=_insert_persons, update=_update_persons,
    )  # fmt: skip


def merge_persons(con, records, import_id, *, stored, insert, update) -> tuple[int, int]:
    """Backend-independent steps of :func:`write_persons`.

    ``stored``, ``insert`` and ``update`` are the backend's own reads and
    writes (DuckDB here, PostgreSQL in :mod:`cartwin.store._pg_writes`).
    """
    batch = batch_persons(records)
    if not batch:
        return 0, 0
    known = stored(con, [facts for facts, _, _ in batch.values()])
    new, updates, conflicts = plan_persons(batch, known)
    for pseudonym, found in conflicts:
        _warn_conflicts(pseudonym, found)
    insert(con, new, import_id)
    update(con, updates)
    return len(new), len(updates)


def plan_persons(batch: dict[str, tuple], stored: dict) -> tuple[list, list, list]:
    """Split a batch into persons to insert and persons whose facts to fill.

    Parameters
    ----------
    batch : dict
        ``{pseudonym: (facts, site offset, disagreements)}`` of one import
        (see :func:`batch_persons`).
    stored : dict
        ``{pseudonym: (facts, site offset)}`` of the batch's persons already
        in the store.

    Returns
    -------
    new, updates : list of (PatientFacts, int or None)
        Persons to insert, and stored persons with facts filled.
    conflicts : list of (str, list of str)
        Disagreements to report per pseudonym, in batch order.
    """
    new, updates, conflicts = [], [], []
    for pseudonym, (facts, offset, found) in batch.items():
        if pseudonym not in stored:
            new.append((facts, offset))
            conflicts.append((pseudonym, found))
            continue
        old_facts, old_offset = stored[pseudonym]
        merged, more = merge_facts(old_facts, facts)
        merged_offset = offset if old_offset is None else old_offset
        conflicts.append((pseudonym, found + more))
        if (merged, merged_offset) != (old_facts, old_offset):
            updates.append((merged, merged_offset))
    return new, updates, conflicts


def _stored_persons(con: duckdb.DuckDBPyConnection, facts: list) -> dict:
    columns = person_columns(facts, [None] * len(facts))
    with staged(con, "_cartwin_person_keys", {"person_id": columns["person_id"]}):
        rows = con.execute(
            f"SELECT {PERSON_COLUMNS} FROM person "
            "WHERE person_id IN (SELECT person_id FROM _cartwin_person_keys)"
        ).fetchall()
    return {row[0]: facts_from_row(row) for row in rows}


def _insert_persons(con: duckdb.DuckDBPyConnection, persons: list, import_id: int):
    if not persons:
        return
    columns = person_columns([f for f, _ in persons], [o for _, o in persons])
    names = ", ".join(columns)
    with staged(con, "_cartwin_person_new", columns):
        con.execute(
            f"INSERT INTO person ({names}, import_id) "
            f"SELECT {names}, ? FROM _cartwin_person_new",
            [import_id],
        )


def _update_persons(con: duckdb.DuckDBPyConnection, persons: list) -> None:
    if not persons:
        return
    columns = person_columns([f for f, _ in persons], [o for _, o in persons])
    assignments = ", ".join(f"{c} = u.{c}" for c in columns if c != "person_id")
    with staged(con, "_cartwin_person_update", columns):
        con.execute(
            f"UPDATE person SET {assignments} FROM _cartwin_person_update u "
            "WHERE person.person_id = u.person_id"
        )


def _warn_conflicts(pseudonym: str, conflicts: list[str]) -> None:
    if conflicts:
        warnings.warn(
            f"patient {pseudonym}: facts disagree between sources; "
            + "; ".join(conflicts),
            DataQualityWarning,
            # caller -> _store_errors wrapper -> import_records -> _write_import
            # -> write_persons -> merge_persons -> here: point at the caller
            # of import_records
            stacklevel=7,
        )


# -- measurements ---------------------------------------------------------------
_INSERT_MEASUREMENTS = """
INSERT INTO measurement
SELECT ? + row_number() OVER (ORDER BY s.seq), s.person_id, 0, s.quantity, s.ts,
       s.value, s.unit, s.operator::INTEGER, s.source_code, s.value_text,
       s.source_value, s.source_unit, s.source_id, s.utc_offset, ?
FROM (
    SELECT *, t::TIMESTAMPTZ AS ts, row_number() OVER (
        PARTITION BY person_id, source_id, quantity, t ORDER BY seq) AS k
    FROM _cartwin_measurement_stage
) s
WHERE s.k = 1 AND NOT EXISTS (
    SELECT 1 FROM measurement m
    WHERE m.person_id = s.person_id AND m.cartwin_quantity = s.quantity
      AND m.measurement_datetime = s.ts
      AND m.source_id IS NOT DISTINCT FROM s.source_id)
"""


def write_measurements(
    con: duckdb.DuckDBPyConnection, records: Sequence[PatientRecord], import_id: int
) -> tuple[int, int]:
    """Insert the observations of ``records``; return (written, duplicates)."""
    columns = measurement_columns(records)
    total = len(columns["seq"])
    if total == 0:
        return 0, 0
    first = next_id(con, "measurement", "measurement_id") - 1
    with staged(con, "_cartwin_measurement_stage", columns):
        (written,) = first_row(con.execute(_INSERT_MEASUREMENTS, [first, import_id]))
    return int(written), total - int(written)


# -- events ---------------------------------------------------------------------
def _stored_event_keys() -> str:
    parts = [
        f"SELECT person_id, cartwin_kind AS kind, {spec.start_col} AS ts, "
        f"cartwin_name AS name, cartwin_detail AS detail, source_id "
        f"FROM {spec.table}"
        for spec in EVENT_TABLES
    ]
    return " UNION ALL ".join(parts)


_NEW_EVENTS = f"""
CREATE OR REPLACE TEMP TABLE _cartwin_new_events AS
SELECT ? + row_number() OVER (ORDER BY s.seq) AS event_id, s.*
FROM (
    SELECT *, t_start::TIMESTAMPTZ AS ts, t_end::TIMESTAMPTZ AS te,
        row_number() OVER (PARTITION BY person_id, kind, t_start, name, detail,
                           source_id ORDER BY seq) AS k
    FROM _cartwin_event_stage
) s
WHERE s.k = 1 AND NOT EXISTS (
    SELECT 1 FROM ({_stored_event_keys()}) e
    WHERE e.person_id = s.person_id AND e.kind = s.kind AND e.ts = s.ts
      AND e.name IS NOT DISTINCT FROM s.name
      AND e.detail IS NOT DISTINCT FROM s.detail
      AND e.source_id IS NOT DISTINCT FROM s.source_id)
"""


def _insert_event_sql(spec) -> str:
    return (
        f"INSERT INTO {spec.table} ({spec.id_col}, person_id, {spec.concept_col}, "
        f"{spec.start_col}, {spec.end_col}, {spec.source_col}, {spec.dose_col}, "
        f"{spec.dose_unit_col}, cartwin_kind, cartwin_name, cartwin_detail, "
        "source_id, source_utc_offset_min, import_id) "
        "SELECT event_id, person_id, 0, ts, te, source_code, dose, dose_unit, "
        "kind, name, detail, source_id, utc_offset, ? "
        f"FROM _cartwin_new_events WHERE target = '{spec.table}'"
    )


def _next_event_id(con: duckdb.DuckDBPyConnection) -> int:
    return max(next_id(con, spec.table, spec.id_col) for spec in EVENT_TABLES)


def write_events(
    con: duckdb.DuckDBPyConnection, records: Sequence[PatientRecord], import_id: int
) -> tuple[int, int]:
    """Insert the events of ``records`` into their OMOP tables.

    Returns
    -------
    tuple of int
        Events written and events skipped as duplicates.
    """
    columns = event_columns(records)
    total = len(columns["seq"])
    if total == 0:
        return 0, 0
    first = _next_event_id(con) - 1
    with staged(con, "_cartwin_event_stage", columns):
        con.execute(_NEW_EVENTS, [first])
    written = 0
    for spec in EVENT_TABLES:
        (count,) = first_row(con.execute(_insert_event_sql(spec), [import_id]))
        written += int(count)
    con.execute("DROP TABLE _cartwin_new_events")
    return written, total - written
