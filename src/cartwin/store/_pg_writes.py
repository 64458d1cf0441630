"""Bulk writes of one import into PostgreSQL, inside the caller's transaction.

The PostgreSQL twin of :mod:`cartwin.store._writes`, sharing with it the row
conversion (:mod:`cartwin.store._columns`), the merging of patient facts and
the ``INSERT ... SELECT`` statements that skip duplicate rows; only the way the
NumPy columns reach the server differs. DuckDB scans registered arrays; here
each batch of columns is sent with one ``COPY ... FROM STDIN`` into a
temporary table that is dropped at commit, and the shared statements read it.
The duplicate rules and the id order are therefore those of the DuckDB store:

* a measurement repeats when person, ``source_id``, quantity and instant agree;
* an event repeats when person, kind, start, name, detail and ``source_id``
  agree;
* ids continue from the largest id in the table, in input order.

Concurrent writers are serialised by the caller (an advisory lock held for the
whole transaction, see :class:`cartwin.store.postgres.PostgresTwinStore`),
which keeps the ``max(id) + 1`` numbering free of races.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cartwin.record.model import PatientRecord
from cartwin.store import _writes
from cartwin.store._columns import (
    PERSON_COLUMNS,
    event_columns,
    facts_from_row,
    measurement_columns,
    person_columns,
)
from cartwin.store._writes import merge_persons
from cartwin.store.schema import EVENT_TABLES

#: PostgreSQL type of a staged column, by NumPy dtype kind. ``datetime64``
#: arrays hold UTC instants; the session time zone is UTC, so the naive
#: values COPY sends are read as UTC.
_STAGE_TYPES = {
    "i": "BIGINT",
    "f": "DOUBLE PRECISION",
    "M": "TIMESTAMPTZ",
    "O": "TEXT",
}


def qmark(sql: str) -> str:
    """``?`` placeholders of DuckDB SQL as psycopg's ``%s`` (``%`` escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _values(column: np.ndarray) -> list:
    """Python values of one column; NaN and NaT become SQL NULL."""
    if column.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in column.tolist()]
    if column.dtype.kind == "M":
        return column.astype("datetime64[us]").tolist()
    return column.tolist()


def stage(cur, name: str, columns: dict) -> str:
    """COPY NumPy ``columns`` into temporary table ``name`` (dropped at commit)."""
    names = list(columns)
    spec = ", ".join(f'"{n}" {_STAGE_TYPES[columns[n].dtype.kind]}' for n in names)
    cur.execute(f"CREATE TEMP TABLE {name} ({spec}) ON COMMIT DROP")
    quoted = ", ".join(f'"{n}"' for n in names)
    with cur.copy(f"COPY {name} ({quoted}) FROM STDIN") as copy:
        for row in zip(*(_values(columns[n]) for n in names)):
            copy.write_row(row)
    cur.execute(f"ANALYZE {name}")
    return name


def next_id(cur, table: str, column: str) -> int:
    """One more than the largest ``column`` in ``table`` (1 when empty)."""
    (largest,) = cur.execute(
        f"SELECT coalesce(max({column}), 0) FROM {table}"
    ).fetchone()
    return int(largest) + 1


# -- persons ------------------------------------------------------------------
def write_persons(
    cur, records: Sequence[PatientRecord], import_id: int
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
        cur, records, import_id,
        stored=_stored_persons, insert=_insert_persons, update=_update_persons,
    )  # fmt: skip


def _stored_persons(cur, facts: list) -> dict:
    ids = person_columns(facts, [None] * len(facts))["person_id"].tolist()
    rows = cur.execute(
        f"SELECT {PERSON_COLUMNS} FROM person WHERE person_id = ANY(%s)", [ids]
    ).fetchall()
    return {row[0]: facts_from_row(row) for row in rows}


def _insert_persons(cur, persons: list, import_id: int) -> None:
    if not persons:
        return
    columns = person_columns([f for f, _ in persons], [o for _, o in persons])
    names = ", ".join(columns)
    stage(cur, "_cartwin_person_new", columns)
    cur.execute(
        f"INSERT INTO person ({names}, import_id) "
        f"SELECT {names}, %s FROM _cartwin_person_new",
        [import_id],
    )


def _update_persons(cur, persons: list) -> None:
    if not persons:
        return
    columns = person_columns([f for f, _ in persons], [o for _, o in persons])
    assignments = ", ".join(f"{c} = u.{c}" for c in columns if c != "person_id")
    stage(cur, "_cartwin_person_update", columns)
    cur.execute(
        f"UPDATE person SET {assignments} FROM _cartwin_person_update u "
        "WHERE person.person_id = u.person_id"
    )


# -- measurements and events ------------------------------------------------------
def write_measurements(
    cur, records: Sequence[PatientRecord], import_id: int
) -> tuple[int, int]:
    """Insert the observations of ``records``; return (written, duplicates)."""
    columns = measurement_columns(records)
    total = len(columns["seq"])
    if total == 0:
        return 0, 0
    first = next_id(cur, "measurement", "measurement_id") - 1
    stage(cur, "_cartwin_measurement_stage", columns)
    cur.execute(qmark(_writes._INSERT_MEASUREMENTS), [first, import_id])
    return cur.rowcount, total - cur.rowcount


#: The DuckDB statement that picks the new events, as a PostgreSQL temporary
#: table (PostgreSQL has no ``CREATE OR REPLACE TABLE``).
_NEW_EVENTS = qmark(
    _writes._NEW_EVENTS.replace(
        "CREATE OR REPLACE TEMP TABLE _cartwin_new_events AS",
        "CREATE TEMP TABLE _cartwin_new_events ON COMMIT DROP AS",
    )
)


def write_events(
    cur, records: Sequence[PatientRecord], import_id: int
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
    first = max(next_id(cur, spec.table, spec.id_col) for spec in EVENT_TABLES) - 1
    stage(cur, "_cartwin_event_stage", columns)
    cur.execute(_NEW_EVENTS, [first])
    written = 0
    for spec in EVENT_TABLES:
        cur.execute(qmark(_writes._insert_event_sql(spec)), [import_id])
        written += cur.rowcount
    cur.execute("DROP TABLE _cartwin_new_events")
    return written, total - written
