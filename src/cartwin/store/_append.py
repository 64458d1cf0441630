"""Appending measurements of stored patients in one short transaction.

The import path (:meth:`cartwin.store.TwinStore.import_records`) does
everything a source file may need: merge patient facts, write events, look
the file's SHA-256 up in ``import_log`` and skip every row already stored by
scanning the whole ``measurement`` table. A live service that writes a few
vital signs of known patients many times a second (group commit, see
:mod:`cartwin.service.stream`) needs none of that but the rows and their
provenance, so :meth:`~cartwin.store.TwinStore.append_observations` runs only

1. one query for the next ``import_id`` and ``measurement_id``,
2. one multi-row ``INSERT`` of the measurements (ids in the order of the
   batch's patients and, within a patient, in time order, as an import gives
   them; only for patients already in ``person``; optionally skipping rows
   already stored),
3. one ``import_log`` row naming the append (when anything was written),

then commits. The rows are converted by the same code as imports
(:func:`cartwin.store._columns.measurement_columns`), so they read back the
same. Rows repeated within one call (same patient, quantity, instant and
``source_id``) are dropped before anything is sent.

The helpers here are shared by the DuckDB and PostgreSQL stores; only the
way the columns reach the server differs (a registered NumPy view for DuckDB,
``unnest`` of arrays for PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cartwin.errors import DataError, StoreError
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.store._columns import (
    measurement_columns,
    person_id,
    validate_observations,
)


@dataclass(frozen=True)
class AppendSummary:
    """What one call of :meth:`~cartwin.store.TwinStore.append_observations` did.

    Attributes
    ----------
    import_id : int or None
        Id of the ``import_log`` row naming the append; ``None`` when nothing
        was written (every row a duplicate).
    n_observations : int
        Measurements written.
    n_observations_duplicate : int
        Measurements skipped: repeated within the call, or (with
        ``check_stored``) already in the store.
    stored_before : tuple of tuple
        ``(pseudonym, quantity, time, source_id)`` of each value skipped
        because the store held it already (found with ``check_stored`` only).
    """

    import_id: int | None
    n_observations: int
    n_observations_duplicate: int
    stored_before: tuple[tuple[str, str, dt.datetime, str], ...] = ()


def append_records(
    batch: Mapping[str, Sequence[Observation]],
) -> tuple[list[PatientRecord], int]:
    """Validated records of an append batch, repeats within it dropped.

    Parameters
    ----------
    batch : mapping of str to sequence of Observation
        Pseudonym to observations, each patient's in the order to store them.

    Returns
    -------
    records : list of PatientRecord
        One record per patient with observations left, in ``batch`` order.
    repeated : int
        Observations dropped as repeats of an earlier one in the batch.

    Raises
    ------
    DataError
        When a pseudonym is not 16 hex digits, or a value is not finite or
        its ``censored`` flag unknown (as for imports).
    """
    records, repeated = [], 0
    for pseudonym, observations in batch.items():
        person_id(pseudonym)
        seen, kept = set(), []
        for obs in observations:
            key = (obs.quantity, obs.time, obs.source_id)
            if key in seen:
                repeated += 1
                continue
            seen.add(key)
            kept.append(obs)
        if kept:
            record = PatientRecord(PatientFacts(pseudonym), observations=tuple(kept))
            validate_observations(record)
            records.append(record)
    return records, repeated


def append_digest(records: Sequence[PatientRecord]) -> str:
    """SHA-256 naming one append in ``import_log`` (``source_sha256``).

    Hashes 16 random bytes and every appended row's patient, quantity,
    instant and ``source_id``, so two appends never share a digest, even of
    the same rows (the column is ``UNIQUE``).
    """
    digest = hashlib.sha256(os.urandom(16))
    for record in records:
        for obs in record.observations:
            line = f"{record.facts.pseudonym}|{obs.quantity}|{obs.time.isoformat()}"
            digest.update(f"{line}|{obs.source_id}\n".encode())
    return digest.hexdigest()


def log_counts(n_records: int, written: int, duplicates: int) -> dict[str, int]:
    """``import_log.counts`` of an append: the keys of ``ImportSummary.counts()``."""
    return {
        "n_records": n_records, "n_persons_new": 0, "n_persons_updated": 0,
        "n_observations": written, "n_observations_duplicate": duplicates,
        "n_events": 0, "n_events_duplicate": 0,
    }  # fmt: skip


def missing_persons(records: Sequence[PatientRecord], stored: set[int]) -> StoreError:
    """The error for an append naming patients that are not in ``person``."""
    absent = [
        r.facts.pseudonym for r in records if person_id(r.facts.pseudonym) not in stored
    ]
    return StoreError(
        f"cannot append observations of patient(s) {', '.join(absent)}: not in "
        "the store; import the patient first (import_records); nothing was written"
    )


def check_columns(columns: dict) -> None:
    """Refuse a staged batch whose columns differ in length (a programming error)."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"append columns differ in length: {lengths}")


def stage_columns(records: Sequence[PatientRecord]) -> dict[str, np.ndarray]:
    """The staging columns of :func:`measurement_columns`, checked."""
    columns = measurement_columns(records)
    check_columns(columns)
    return columns


#: Skips rows already stored (patient, quantity, instant, ``source_id``);
#: appended to the ``WHERE`` of the statements below when asked for.
_NOT_STORED = """
  AND NOT EXISTS (
    SELECT 1 FROM measurement m
    WHERE m.person_id = s.person_id AND m.cartwin_quantity = s.quantity
      AND m.measurement_datetime = s.ts
      AND m.source_id IS NOT DISTINCT FROM s.source_id)
"""

_SELECT_ROWS = """
SELECT ? + row_number() OVER (ORDER BY s.seq), s.person_id, 0, s.quantity, s.ts,
       s.value, s.unit, s.operator, s.source_code, s.value_text,
       s.source_value, s.source_unit, s.source_id, s.utc_offset, ?
FROM ({source}) s
WHERE s.person_id IN (SELECT person_id FROM person)
"""

#: DuckDB: the staged NumPy columns are registered as a view.
DUCK_SOURCE = (
    "SELECT seq, person_id, quantity, t::TIMESTAMPTZ AS ts, value, unit, "
    "operator::INTEGER AS operator, source_code, value_text, source_value, "
    "source_unit, source_id, utc_offset FROM {view}"
)

#: PostgreSQL: one array per column, ``unnest`` ed side by side.
PG_SOURCE = (
    "SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::text[], "
    "?::timestamptz[], ?::float8[], ?::text[], ?::integer[], ?::text[], "
    "?::text[], ?::float8[], ?::text[], ?::text[], ?::integer[]) "
    "AS u(seq, person_id, quantity, ts, value, unit, operator, source_code, "
    "value_text, source_value, source_unit, source_id, utc_offset)"
)

#: Order of the arrays :data:`PG_SOURCE` takes.
PG_COLUMNS = ("seq", "person_id", "quantity", "t", "value", "unit", "operator",
              "source_code", "value_text", "source_value", "source_unit",
              "source_id", "utc_offset")  # fmt: skip

#: Next ids, read in the append's transaction.
NEXT_IDS = (
    "SELECT (SELECT coalesce(max(import_id), 0) FROM import_log) + 1, "
    "(SELECT coalesce(max(measurement_id), 0) FROM measurement)"
)

#: The ``import_log`` row of an append (``report`` is NULL).
INSERT_LOG = "INSERT INTO import_log VALUES (?, ?, ?, now(), ?, ?, NULL)"


def insert_sql(source: str, check_stored: bool) -> str:
    """``INSERT INTO measurement`` from ``source``; parameters: first id, import id.

    ``source`` yields the staged columns with the instant as ``ts``; rows of
    patients not in ``person`` are never written (the caller compares counts).
    With ``check_stored`` the statement returns the key of each row written
    (see :func:`stored_before`); otherwise the number of rows written.
    """
    if not check_stored:
        return "INSERT INTO measurement " + _SELECT_ROWS.format(source=source)
    return (
        "INSERT INTO measurement " + _SELECT_ROWS.format(source=source)
        + _NOT_STORED + _RETURNING_KEYS
    )  # fmt: skip


_RETURNING_KEYS = (
    " RETURNING person_id, cartwin_quantity, measurement_datetime, source_id"
)


def stored_before(records: Sequence[PatientRecord], written: list) -> tuple:
    """Keys of the records' values that are not among the ``written`` rows.

    ``written`` holds the rows an ``INSERT`` of :func:`insert_sql` with
    ``check_stored`` returned. Values of patients not in ``person`` are never
    written either; the caller refuses those appends first.
    """
    done = {
        (int(pid), quantity, when, source_id or "")
        for pid, quantity, when, source_id in written
    }
    skipped = []
    for record in records:
        pid = person_id(record.facts.pseudonym)
        for obs in record.observations:
            if (pid, obs.quantity, obs.time, obs.source_id or "") not in done:
                skipped.append(
                    (record.facts.pseudonym, obs.quantity, obs.time, obs.source_id)
                )
    return tuple(skipped)


def stored_person_ids(con, records: Sequence[PatientRecord]) -> set[int]:
    """``person_id`` of the records' patients that are in ``person``.

    ``con.execute`` must take ``?`` placeholders (DuckDB, or the PostgreSQL
    facade); one query per call, used only when an append wrote fewer rows
    than it was given.
    """
    ids = [person_id(r.facts.pseudonym) for r in records]
    marks = ", ".join("?" * len(ids))
    rows = con.execute(
        f"SELECT person_id FROM person WHERE person_id IN ({marks})", ids
    ).fetchall()
    return {int(pid) for (pid,) in rows}
