"""Import of an OMOP CDM v5.4 database into patient records, and export back.

:func:`read_omop` reads persons and their measurements, observations, drug
exposures, procedures, conditions and (oncology extension) episodes from a
DuckDB file, a folder of CSV files or a PostgreSQL schema
(:mod:`cartwin.io.omop_source`), maps standard concept ids through the concept
table (:mod:`cartwin.io.omop_concepts`, :mod:`cartwin.io.omop_resolve`),
converts every value to its canonical unit and pseudonymises persons
(:mod:`cartwin.io.omop_map` states the rules). It returns the whole list of
records before anything is written, so a bad source leaves a store untouched:
pass them to ``TwinStore.import_records(records, source_name=...,
source_sha256=...)``.

:func:`export_omop` writes a twin version's outputs back as OMOP rows and
:func:`write_omop_records` writes records' observations as OMOP tables (see
:mod:`cartwin.io.omop_export`).

Bad input
---------
Every problem of a source is collected, then raised together as one
:class:`OmopImportError` (a :class:`~cartwin.errors.DataError`; an
:class:`OmopUnitError`, also a :class:`~cartwin.errors.UnitError`, when all
are unit problems) whose ``problems`` name the table, row id, column and
value. Problem codes: ``missing-table``, ``missing-column``
(``value_as_number`` is needed in ``measurement`` and ``observation``:
without it every value would be dropped), ``malformed`` (a cell that does not
cast to its CDM type), ``non-numeric``, ``non-finite``, ``unit``,
``implausible``, ``not-detected``, ``missing-time``, ``timestamp-invalid``,
``dates-out-of-order``, ``unknown-person``, ``duplicate-person``,
``missing-value``. Unknown concept ids are not errors: the report counts them
per table and concept id.

Content hash
------------
``source_sha256`` is the SHA-256 of the rows read (the canonical values of the
columns cartwin reads, every table in primary-key order), of the vocabulary
rows used, of the concept and code tables in force and of the site offset. The
same data read again, from the same or another kind of source, gives the same
hash, so a second import into a store is a no-op; a changed row, mapping or
offset gives a new one.

References
----------
OHDSI. OMOP Common Data Model v5.4. https://ohdsi.github.io/CommonDataModel/cdm54.html
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from cartwin.errors import DataError, UnitError
from cartwin.io.codes import CodeMap, CodeMapSource, load_code_map
from cartwin.io.omop_concepts import ConceptMap, ConceptSource, load_concept_map
from cartwin.io.omop_export import OmopExport, export_omop, write_omop_records
from cartwin.io.omop_map import (
    MapContext,
    build_records,
    map_events,
    map_persons,
    map_quantities,
)
from cartwin.io.omop_report import ConceptCount, OmopReport
from cartwin.io.omop_resolve import Resolver, via
from cartwin.io.omop_source import (
    REQUIRED_TABLES,
    TABLE_SPECS,
    Fetched,
    OmopSource,
    open_source,
)
from cartwin.io.problems import MAX_LISTED, Problem
from cartwin.record.model import PatientRecord

__all__ = [
    "CDM_RELEASE",
    "OmopExport",
    "OmopImport",
    "OmopImportError",
    "OmopUnitError",
    "export_omop",
    "read_omop",
    "write_omop_records",
]

#: CDM release the reader and writers target.
CDM_RELEASE = "OMOP CDM v5.4"
#: Largest UTC offset in use anywhere (UTC+14:00), in minutes.
MAX_UTC_OFFSET_MIN = 14 * 60
#: Tables read, in order (``person`` first; the rest need its persons).
READ_ORDER = (
    "person",
    "measurement",
    "observation",
    "drug_exposure",
    "procedure_occurrence",
    "condition_occurrence",
    "episode",
)
_CONCEPT_COLUMN = {
    "measurement": "measurement_concept_id",
    "observation": "observation_concept_id",
    "drug_exposure": "drug_concept_id",
    "procedure_occurrence": "procedure_concept_id",
    "condition_occurrence": "condition_concept_id",
    "episode": "episode_object_concept_id",
}
_EXTRA_CONCEPTS = ("unit_concept_id", "condition_source_concept_id")


class OmopImportError(DataError):
    """An OMOP source could not be imported; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        source = self.problems[0].source if self.problems else "?"
        lines = [f"{len(self.problems)} problem(s) in OMOP source {source}:"]
        lines += [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(
                f"  ... and {len(self.problems) - MAX_LISTED} more (see .problems)"
            )
        super().__init__("\n".join(lines))


class OmopUnitError(OmopImportError, UnitError):
    """Every problem of the source is a unit that cannot be converted."""


@dataclass(frozen=True)
class OmopImport:
    """Result of :func:`read_omop`.

    Attributes
    ----------
    records : tuple[PatientRecord, ...]
        One record per person read, in ``person_id`` order.
    report : OmopReport
        Rows read, used and skipped per table, and rows per concept id.
    source_name : str
        The source as shown in messages (PostgreSQL URLs without password,
        with ``#schema``).
    source_sha256 : str
        Content hash (see the module docstring).
    """

    records: tuple[PatientRecord, ...]
    report: OmopReport
    source_name: str
    source_sha256: str


def read_omop(
    source: str | os.PathLike,
    *,
    key: bytes,
    schema: str | None = None,
    person_ids: Sequence[int] | None = None,
    site_utc_offset_min: int = 0,
    extra_concepts: ConceptSource | None = None,
    extra_codes: CodeMapSource | None = None,
) -> OmopImport:
    """Read an OMOP CDM v5.4 source and return pseudonymised patient records.

    Parameters
    ----------
    source : path or str
        A DuckDB file, a folder of CSV files named after the tables (any
        case), or a ``postgresql://`` URL.
    key : bytes
        Pseudonymisation key (:func:`cartwin.record.pseudonym.load_key`).
    schema : str, optional
        Schema holding the CDM tables (PostgreSQL default ``public``, DuckDB
        default ``main``; not used for CSV folders).
    person_ids : sequence of int, optional
        Read only these OMOP ``person_id`` values (default: every person).
    site_utc_offset_min : int
        UTC offset of the site in minutes (-840 to 840); OMOP datetimes have
        no zone and are read as site local time.
    extra_concepts : path, sequence of paths or ConceptMap, optional
        Site concept tables (``CARTWIN_OMOP_CONCEPTS`` is read too).
    extra_codes : path, sequence of paths or CodeMap, optional
        Site code tables used for the vocabulary step (``CARTWIN_CODE_MAP``
        is read too).

    Returns
    -------
    OmopImport

    Raises
    ------
    OmopImportError
        Listing every problem of the source (see the module docstring).
    DataError
        For a bad argument, or a source that cannot be opened or queried.
    """
    _check_arguments(key, site_utc_offset_min, person_ids)
    concepts = load_concept_map(extra_concepts)
    codes = load_code_map(extra_codes)
    with _gc_paused():
        read = _read_source(source, schema, person_ids, Resolver(concepts, codes))
        ctx = MapContext(
            read.name, site_utc_offset_min, read.resolver, source_kind=read.kind
        )
        _bad_cells(ctx, read.fetched)
        _map_all(ctx, read.fetched)
        records = build_records(ctx, key)
        _raise_problems(ctx.problems)
        digest = _content_hash(
            read.fetched, read.resolver, concepts, codes, site_utc_offset_min
        )
    report = _report(
        ctx, records, (read.name, read.kind, digest), concepts, read.absent
    )
    return OmopImport(records, report, read.name, digest)


@dataclass(frozen=True)
class _SourceRead:
    """Everything read from a source before the connection is closed."""

    name: str
    kind: str
    absent: tuple[str, ...]
    fetched: dict[str, Fetched]
    resolver: Resolver


def _read_source(source, schema, person_ids, resolver: Resolver) -> _SourceRead:
    with open_source(source, schema=schema) as opened:
        name = opened.name
        if opened.kind == "postgresql":
            name = f"{opened.name}#{opened.schema}"
        _check_layout(opened, name)
        fetched = _fetch(opened, person_ids)
        resolver.resolve(opened, _concept_ids(fetched), _drug_ids(fetched))
        absent = tuple(t for t in READ_ORDER if not opened.has(t))
        return _SourceRead(name, opened.kind, absent, fetched, resolver)


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while rows become records.

    An import builds millions of small acyclic objects (rows, observations);
    the collector's passes over them cost about a third of the mapping time of
    10^6 measurement rows (``benchmarks/bench_omop_import.py``) and free
    nothing. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_arguments(key: bytes, offset: int, person_ids) -> None:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise DataError("key must be non-empty bytes (see cartwin.record.pseudonym)")
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise DataError(f"site_utc_offset_min = {offset!r}; must be an int (minutes)")
    if abs(offset) > MAX_UTC_OFFSET_MIN:
        raise DataError(
            f"site_utc_offset_min = {offset}; allowed -{MAX_UTC_OFFSET_MIN} to "
            f"{MAX_UTC_OFFSET_MIN} minutes"
        )
    if person_ids is not None and isinstance(person_ids, (str, bytes)):
        raise DataError(
            "person_ids must be a sequence of integer OMOP person_id values"
        )


def _check_layout(source: OmopSource, name: str) -> None:
    problems = []
    for table in REQUIRED_TABLES:
        if not source.has(table):
            problems.append(
                Problem(
                    "missing-table",
                    name,
                    f"the required table {table} is missing (found: "
                    f"{', '.join(sorted(source.tables)) or 'no tables'})",
                    resource=table,
                )
            )
    for table, spec in TABLE_SPECS.items():
        if not source.has(table):
            continue
        for column in source.missing_columns(table, spec.required):
            problems.append(
                Problem(
                    "missing-column",
                    name,
                    f"the required column {column} is missing from table {table}",
                    resource=table,
                    field=column,
                )
            )
    _raise_problems(problems)


def _fetch(source: OmopSource, person_ids) -> dict[str, Fetched]:
    return {
        table: source.fetch(TABLE_SPECS[table], person_ids)
        for table in READ_ORDER
        if source.has(table)
    }


def _concept_ids(fetched: dict[str, Fetched]) -> set[int]:
    ids: set[int] = set()
    for table, data in fetched.items():
        col = data.index()
        for name in (_CONCEPT_COLUMN.get(table), *_EXTRA_CONCEPTS):
            if name in col:
                i = col[name]
                ids.update(row[i] for row in data.rows if row[i])
    return ids


def _drug_ids(fetched: dict[str, Fetched]) -> set[int]:
    ids: set[int] = set()
    for table in ("drug_exposure", "episode"):
        if table in fetched:
            i = fetched[table].index()[_CONCEPT_COLUMN[table]]
            ids.update(row[i] for row in fetched[table].rows if row[i])
    return ids


def _bad_cells(ctx: MapContext, fetched: dict[str, Fetched]) -> None:
    for data in fetched.values():
        for cell in data.bad_cells:
            ctx.problem(
                "malformed",
                f"{cell.table}/{cell.row_id}",
                cell.column,
                cell.value,
                f"is not a valid {_KIND_NAMES[cell.kind]}",
            )


_KIND_NAMES = {
    "id": "integer",
    "date": "date (YYYY-MM-DD)",
    "ts": "datetime (YYYY-MM-DD hh:mm:ss)",
    "num": "number",
}


def _map_all(ctx: MapContext, fetched: dict[str, Fetched]) -> None:
    map_persons(ctx, fetched["person"])
    for table in READ_ORDER[1:]:
        if table not in fetched:
            continue
        if table in ("measurement", "observation"):
            map_quantities(ctx, fetched[table])
        else:
            map_events(ctx, fetched[table])


def _raise_problems(problems: list[Problem]) -> None:
    if not problems:
        return
    if all(p.code == "unit" for p in problems):
        raise OmopUnitError(problems)
    raise OmopImportError(problems)


def _content_hash(
    fetched, resolver: Resolver, concepts: ConceptMap, codes: CodeMap, offset: int
) -> str:
    digest = hashlib.sha256(b"cartwin-omop-1\n")
    digest.update(f"offset={offset}\nconcepts={concepts.digest()}\n".encode())
    code_rows = sorted(
        f"{k[0]}|{k[1]}|{v.target_type}|{v.target}" for k, v in codes.rows.items()
    )
    digest.update("\n".join(code_rows).encode("utf-8"))
    digest.update(repr(sorted(resolver.vocab.items())).encode("utf-8"))
    for table in READ_ORDER:
        if table not in fetched:
            continue
        data = fetched[table]
        width = len(data.spec.columns)
        digest.update(f"\n{table}:{len(data.rows)}\n".encode())
        for start in range(0, len(data.rows), 50_000):
            chunk = [row[:width] for row in data.rows[start : start + 50_000]]
            digest.update(repr(chunk).encode("utf-8"))
    return digest.hexdigest()


def _report(
    ctx: MapContext, records, identity, concepts: ConceptMap, absent
) -> OmopReport:
    name, kind, digest = identity
    quantities: dict[str, int] = {}
    for record in records:
        for quantity, count in record.quantities().items():
            quantities[quantity] = quantities.get(quantity, 0) + count
    return OmopReport(
        source_name=name,
        source_kind=kind,
        source_sha256=digest,
        cdm_release=CDM_RELEASE,
        concept_tables=concepts.sources,
        site_utc_offset_min=ctx.offset_min,
        tables_absent=absent,
        tables=ctx.tally.table_counts(),
        concepts=_concept_counts(ctx),
        n_patients=len(records),
        n_observations=sum(len(r.observations) for r in records),
        n_events=sum(len(r.events) for r in records),
        quantities=tuple(sorted(quantities.items())),
    )


def _concept_counts(ctx: MapContext) -> tuple[ConceptCount, ...]:
    rows = []
    for (table, concept_id), count in sorted(ctx.tally.concepts.items()):
        target, how = _recognised(ctx, table, concept_id)
        rows.append(
            ConceptCount(
                table=table,
                concept_id=concept_id,
                name=ctx.resolver.names.get(concept_id, ""),
                recognised=bool(target),
                target=target,
                via=how,
                count=count,
            )
        )
    return tuple(rows)


def _recognised(ctx: MapContext, table: str, concept_id: int) -> tuple[str, str]:
    """``(target_type:target, via)`` of a concept in a table, ``("", "")`` if none."""
    target = ctx.resolver.target(concept_id, table)
    if target is not None:
        return f"{target.target_type}:{target.target}", via(target)
    if table in ("condition_occurrence", "episode"):
        group = ctx.resolver.disease((concept_id,))
        if group is not None:
            return f"diagnosis:{group[0]}", "vocabulary"
    return "", ""
