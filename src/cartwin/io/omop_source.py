"""Where OMOP rows come from: a DuckDB file, a CSV folder or PostgreSQL.

:func:`open_source` returns an :class:`OmopSource` that lists the tables and
columns present (names in any case) and fetches the columns cartwin reads,
cast to one canonical Python type per column, ordered by the table's primary
key. The same data therefore gives the same Python rows whichever engine it
sits in, and :mod:`cartwin.io.omop` hashes them into ``source_sha256``.

* **CSV folder**: one file per table named after the table in any case
  (``MEASUREMENT.csv``, ``measurement.csv``), read by DuckDB's ``read_csv``
  with every column as ``VARCHAR`` (the delimiter is detected, so the
  tab-separated vocabulary files of OHDSI Athena work too). Each column is
  then cast explicitly to its CDM type with ``TRY_CAST``; a cell that does
  not cast becomes a problem naming the row and column instead of aborting
  the read.
* **DuckDB file**: opened read-only; tables in ``schema`` (default ``main``).
  Columns whose type differs from the CDM type are checked the same way.
* **PostgreSQL**: ``postgresql://`` URL and ``schema`` (default ``public``),
  read with psycopg 3 in one read-only transaction; columns are cast with
  ``CAST``. A ``timestamptz`` column is read in UTC (the session zone is set
  to UTC) and then treated like the zone-less CDM ``TIMESTAMP``.

Column types (CDM v5.4): ids and concept ids ``BIGINT``, numbers ``DOUBLE``,
text ``VARCHAR``, ``*_date`` ``DATE``, ``*_datetime`` ``TIMESTAMP``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb

from cartwin.errors import DataError

#: SQL type of each canonical column kind, per dialect.
_DUCK_TYPES = {
    "id": "BIGINT",
    "num": "DOUBLE",
    "text": "VARCHAR",
    "date": "DATE",
    "ts": "TIMESTAMP",
}
_PG_TYPES = {
    "id": "bigint",
    "num": "double precision",
    "text": "text",
    "date": "date",
    "ts": "timestamp",
}
#: PostgreSQL types (``information_schema``) read without a cast, per kind; their
#: Python values are already canonical (``numeric`` is cast: it gives Decimal).
_PG_NATIVE = {
    "id": {"bigint", "integer", "smallint"},
    "num": {"double precision"},
    "text": {"text", "character varying"},
    "date": {"date"},
    "ts": {"timestamp without time zone"},
}
#: DuckDB type names (``information_schema``) that need no check per kind.
_DUCK_NATIVE = {
    "id": {
        "BIGINT",
        "INTEGER",
        "SMALLINT",
        "TINYINT",
        "HUGEINT",
        "UBIGINT",
        "UINTEGER",
        "USMALLINT",
        "UTINYINT",
    },
    "num": {"DOUBLE", "FLOAT", "REAL", "BIGINT", "INTEGER", "SMALLINT", "HUGEINT"},
    "date": {"DATE", "TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"},
    "ts": {"TIMESTAMP", "DATE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"},
    "text": None,
}


@dataclass(frozen=True)
class Column:
    """One column cartwin reads: name, canonical kind and whether it is needed."""

    name: str
    kind: str
    required: bool = False


@dataclass(frozen=True)
class TableSpec:
    """The columns cartwin reads from one OMOP table.

    ``key`` is the primary key (rows are fetched in its order). ``numbers``
    are the numeric value columns whose unparsable text is returned beside
    the row (``<column>__text``) rather than flagged, because whether it is a
    problem depends on the concept of the row.
    """

    table: str
    key: str
    columns: tuple[Column, ...]

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the columns the CDM requires and cartwin needs."""
        return tuple(c.name for c in self.columns if c.required)

    @property
    def numbers(self) -> tuple[str, ...]:
        """Names of the numeric value columns (kind ``num``)."""
        return tuple(c.name for c in self.columns if c.kind == "num")


def _spec(table: str, key: str, required: str, optional: str) -> TableSpec:
    def columns(text: str, needed: bool) -> list[Column]:
        pairs = (item.split(":") for item in text.split())
        return [Column(name, kind, needed) for name, kind in pairs]

    return TableSpec(table, key, (*columns(required, True), *columns(optional, False)))


#: Tables cartwin reads, with their columns (``name:kind``; CDM v5.4).
TABLE_SPECS = {
    spec.table: spec
    for spec in (
        _spec(
            "person",
            "person_id",
            "person_id:id gender_concept_id:id year_of_birth:id",
            "month_of_birth:id day_of_birth:id birth_datetime:ts "
            "person_source_value:text gender_source_value:text",
        ),
        _spec(
            "measurement",
            "measurement_id",
            "measurement_id:id person_id:id measurement_concept_id:id "
            "measurement_date:date value_as_number:num",
            "measurement_datetime:ts operator_concept_id:id "
            "unit_concept_id:id unit_source_value:text value_source_value:text "
            "measurement_source_value:text",
        ),
        _spec(
            "observation",
            "observation_id",
            "observation_id:id person_id:id observation_concept_id:id "
            "observation_date:date value_as_number:num",
            "observation_datetime:ts unit_concept_id:id "
            "unit_source_value:text value_as_string:text "
            "observation_source_value:text",
        ),
        _spec(
            "drug_exposure",
            "drug_exposure_id",
            "drug_exposure_id:id person_id:id drug_concept_id:id "
            "drug_exposure_start_date:date",
            "drug_exposure_start_datetime:ts drug_exposure_end_date:date "
            "drug_exposure_end_datetime:ts quantity:num "
            "dose_unit_source_value:text drug_source_value:text",
        ),
        _spec(
            "procedure_occurrence",
            "procedure_occurrence_id",
            "procedure_occurrence_id:id person_id:id procedure_concept_id:id "
            "procedure_date:date",
            "procedure_datetime:ts procedure_end_date:date "
            "procedure_end_datetime:ts procedure_source_value:text",
        ),
        _spec(
            "condition_occurrence",
            "condition_occurrence_id",
            "condition_occurrence_id:id person_id:id condition_concept_id:id "
            "condition_start_date:date",
            "condition_start_datetime:ts condition_end_date:date "
            "condition_end_datetime:ts condition_source_value:text "
            "condition_source_concept_id:id",
        ),
        _spec(
            "episode",
            "episode_id",
            "episode_id:id person_id:id episode_concept_id:id "
            "episode_start_date:date episode_object_concept_id:id",
            "episode_start_datetime:ts episode_end_date:date "
            "episode_end_datetime:ts episode_source_value:text",
        ),
    )
}

#: Tables that must be present in every source.
REQUIRED_TABLES = ("person", "measurement")
#: Vocabulary tables used when present, with the columns they need.
VOCABULARY_COLUMNS = {
    "concept": ("concept_id", "concept_name", "vocabulary_id", "concept_code"),
    "concept_ancestor": (
        "ancestor_concept_id",
        "descendant_concept_id",
        "min_levels_of_separation",
    ),
}


@dataclass(frozen=True)
class BadCell:
    """A cell whose text does not cast to its CDM type."""

    table: str
    row_id: str
    column: str
    value: str
    kind: str


@dataclass(frozen=True)
class Fetched:
    """Rows of one table: canonical values first, then ``*__text`` columns."""

    spec: TableSpec
    names: tuple[str, ...]
    rows: list[tuple]
    bad_cells: tuple[BadCell, ...] = ()

    def index(self) -> dict[str, int]:
        """Column position by name."""
        return {name: i for i, name in enumerate(self.names)}


class OmopSource:
    """Tables of an OMOP CDM database, read through one connection.

    Subclasses implement :meth:`_query` and fill :attr:`tables` (lower-case
    table name to the name as stored) and :attr:`columns` (lower-case table
    name to a mapping of lower-case column name to (stored name, type)).
    """

    name: str
    kind: str
    tables: dict[str, str]
    columns: dict[str, dict[str, tuple[str, str]]]

    def __enter__(self) -> OmopSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        """Close the connection."""

    def has(self, table: str) -> bool:
        """Whether the source has ``table`` (any case)."""
        return table in self.tables

    def missing_columns(self, table: str, needed: Sequence[str]) -> list[str]:
        """Needed columns that ``table`` lacks."""
        present = self.columns.get(table, {})
        return [c for c in needed if c not in present]

    def fetch(self, spec: TableSpec, person_ids: Sequence[int] | None) -> Fetched:
        """Rows of ``spec.table`` in key order, cast to canonical types."""
        present = self.columns[spec.table]
        selects, names = [], []
        for column in spec.columns:
            selects.append(self._cast(present.get(column.name), column.kind))
            names.append(column.name)
        for number in spec.numbers:
            selects.append(self._unparsed(present.get(number), "num"))
            names.append(f"{number}__text")
        sql = f"SELECT {', '.join(selects)} FROM {self._table(spec.table)}"
        if person_ids is not None:
            sql += f" WHERE {self._in_list(self._person(spec.table))}"
        sql += f" ORDER BY {self._cast(present[spec.key], 'id')}"
        rows = self._query(sql, self._filter_params(person_ids))
        bad = self._bad_cells(spec, person_ids)
        return Fetched(spec, tuple(names), rows, bad)

    def concepts(self, ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """``concept_id -> (concept_name, vocabulary_id, concept_code)`` for ids."""
        if not ids or not self._vocabulary_ok("concept"):
            return {}
        cols = self.columns["concept"]
        names = [
            self._cast(cols[c], k)
            for c, k in (
                ("concept_id", "id"),
                ("concept_name", "text"),
                ("vocabulary_id", "text"),
                ("concept_code", "text"),
            )
        ]
        sql = (
            f"SELECT {', '.join(names)} FROM {self._table('concept')} "
            f"WHERE {self._in_list(self._cast(cols['concept_id'], 'id'))}"
        )
        return {row[0]: row[1:] for row in self._query(sql, [list(ids)])}

    def concept_ids_of(self, vocabulary: str, codes: Sequence[str]) -> dict[int, str]:
        """``concept_id -> concept_code`` of ``codes`` in ``vocabulary``."""
        if not codes or not self._vocabulary_ok("concept"):
            return {}
        cols = self.columns["concept"]
        cid = self._cast(cols["concept_id"], "id")
        code = self._cast(cols["concept_code"], "text")
        vocab = self._cast(cols["vocabulary_id"], "text")
        sql = (
            f"SELECT {cid}, {code} FROM {self._table('concept')} "
            f"WHERE {vocab} = ? AND {self._in_list(code)}"
        )
        return dict(self._query(sql, [vocabulary, list(codes)]))

    def ancestors(
        self, descendants: Sequence[int], ancestors: Sequence[int]
    ) -> list[tuple[int, int, int]]:
        """``(descendant, ancestor, levels)`` rows linking the two id sets."""
        if not descendants or not ancestors:
            return []
        if not self._vocabulary_ok("concept_ancestor"):
            return []
        cols = self.columns["concept_ancestor"]
        desc = self._cast(cols["descendant_concept_id"], "id")
        anc = self._cast(cols["ancestor_concept_id"], "id")
        levels = self._cast(cols["min_levels_of_separation"], "id")
        sql = (
            f"SELECT {desc}, {anc}, {levels} FROM {self._table('concept_ancestor')} "
            f"WHERE {self._in_list(desc)} AND {self._in_list(anc)} "
            f"AND {desc} <> {anc}"
        )
        return self._query(sql, [list(descendants), list(ancestors)])

    def _vocabulary_ok(self, table: str) -> bool:
        return self.has(table) and not self.missing_columns(
            table, VOCABULARY_COLUMNS[table]
        )

    # -- dialect --------------------------------------------------------------
    def _query(self, sql: str, params: list) -> list[tuple]:  # pragma: no cover
        raise NotImplementedError

    def _bad_cells(self, spec: TableSpec, person_ids) -> tuple[BadCell, ...]:
        return ()

    def _cast(self, column: tuple[str, str] | None, kind: str) -> str:
        raise NotImplementedError  # pragma: no cover

    def _unparsed(self, column: tuple[str, str] | None, kind: str) -> str:
        return "NULL"

    def _table(self, table: str) -> str:
        raise NotImplementedError  # pragma: no cover

    def _person(self, table: str) -> str:
        """SQL of ``table.person_id`` as BIGINT."""
        return f"CAST({quote(self.columns[table]['person_id'][0])} AS BIGINT)"

    def _filter_params(self, person_ids) -> list:
        return [] if person_ids is None else [[int(p) for p in person_ids]]

    def _in_list(self, expression: str) -> str:
        raise NotImplementedError  # pragma: no cover


def quote(identifier: str) -> str:
    """Double-quoted SQL identifier (valid in DuckDB and PostgreSQL)."""
    return '"' + identifier.replace('"', '""') + '"'


class DuckSource(OmopSource):
    """A DuckDB file, or a CSV folder read through an in-memory DuckDB."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, name: str, kind: str, schema: str
    ) -> None:
        self.con, self.name, self.kind, self.schema = con, name, kind, schema
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? ORDER BY table_name, ordinal_position",
            [schema],
        ).fetchall()
        self.tables, self.columns = _catalogue(rows)

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def _query(self, sql: str, params: list) -> list[tuple]:
        try:
            return self.con.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise DataError(f"OMOP source {self.name}: {_first_line(exc)}") from None

    def _table(self, table: str) -> str:
        return f"{quote(self.schema)}.{quote(self.tables[table])}"

    def _cast(self, column, kind: str) -> str:
        if column is None:
            return f"CAST(NULL AS {_DUCK_TYPES[kind]})"
        return f"TRY_CAST({quote(column[0])} AS {_DUCK_TYPES[kind]})"

    def _unparsed(self, column, kind: str) -> str:
        if column is None or _native(column[1], kind):
            return "CAST(NULL AS VARCHAR)"
        name = quote(column[0])
        return (
            f"CASE WHEN TRY_CAST({name} AS DOUBLE) IS NULL AND "
            f"nullif(trim(CAST({name} AS VARCHAR)), '') IS NOT NULL "
            f"THEN CAST({name} AS VARCHAR) END"
        )

    def _in_list(self, expression: str) -> str:
        return f"{expression} IN (SELECT unnest(?))"

    def _bad_cells(self, spec: TableSpec, person_ids) -> tuple[BadCell, ...]:
        """Cells of non-numeric-value columns whose text does not cast.

        At most 1000 rows are listed: one is enough to fail the import, and
        the list is for finding the pattern, not every row.
        """
        present = self.columns[spec.table]
        checked = [
            (c, present[c.name])
            for c in spec.columns
            if c.name in present
            and c.kind not in ("num", "text")
            and not _native(present[c.name][1], c.kind)
        ]
        if not checked:
            return ()
        key = f"CAST({quote(present[spec.key][0])} AS VARCHAR)"
        flags = [self._failed(stored, c.kind) for c, (stored, _) in checked]
        texts = [f"CAST({quote(stored)} AS VARCHAR)" for _, (stored, _) in checked]
        where = " OR ".join(flags)
        if person_ids is not None:
            where = f"({where}) AND {self._in_list(self._person(spec.table))}"
        sql = (
            f"SELECT {key}, {', '.join(texts)}, {', '.join(flags)} "
            f"FROM {self._table(spec.table)} WHERE {where} LIMIT 1000"
        )
        found = []
        for row in self._query(sql, self._filter_params(person_ids)):
            n = len(checked)
            texts_flags = zip(checked, row[1 : 1 + n], row[1 + n :], strict=True)
            for (column, _), text, bad in texts_flags:
                if bad:
                    found.append(
                        BadCell(spec.table, row[0], column.name, text, column.kind)
                    )
        return tuple(found)

    def _failed(self, stored: str, kind: str) -> str:
        name = quote(stored)
        return (
            f"(TRY_CAST({name} AS {_DUCK_TYPES[kind]}) IS NULL AND "
            f"nullif(trim(CAST({name} AS VARCHAR)), '') IS NOT NULL)"
        )


class PostgresSource(OmopSource):
    """A schema of a PostgreSQL database, read with psycopg 3."""

    def __init__(self, url: str, schema: str) -> None:
        self.name, self.kind, self.schema = redact_url(url), "postgresql", schema
        self.con = _pg_connect(url, self.name)
        rows = self._query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            [schema],
        )
        self.tables, self.columns = _catalogue(rows)

    def close(self) -> None:
        """Close the PostgreSQL connection (its read-only transaction ends)."""
        self.con.close()

    def _query(self, sql: str, params: list) -> list[tuple]:
        import psycopg

        try:
            with self.con.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall()
        except psycopg.Error as exc:
            raise DataError(f"OMOP source {self.name}: {_first_line(exc)}") from None

    def _table(self, table: str) -> str:
        return f"{quote(self.schema)}.{quote(self.tables[table])}"

    def _cast(self, column, kind: str) -> str:
        if column is None:
            return f"CAST(NULL AS {_PG_TYPES[kind]})"
        if column[1].lower() in _PG_NATIVE[kind]:
            return quote(column[0])  # no cast, so that an index can serve a filter
        return f"CAST({quote(column[0])} AS {_PG_TYPES[kind]})"

    def _in_list(self, expression: str) -> str:
        return f"{expression} = ANY(?)"


def _pg_connect(url: str, shown: str):
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the installation
        raise DataError(
            "reading OMOP from PostgreSQL needs psycopg 3: "
            "pip install 'psycopg[binary]'"
        ) from None
    try:
        con = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        raise DataError(
            f"cannot connect to OMOP source {shown}: {_first_line(exc)}"
        ) from None
    con.read_only = True
    con.execute("SET TIME ZONE 'UTC'")
    return con


def _catalogue(rows) -> tuple[dict, dict]:
    tables: dict[str, str] = {}
    columns: dict[str, dict[str, tuple[str, str]]] = {}
    for table, column, data_type in rows:
        key = table.lower()
        tables.setdefault(key, table)
        columns.setdefault(key, {})[column.lower()] = (column, str(data_type).upper())
    return tables, columns


def _native(data_type: str, kind: str) -> bool:
    allowed = _DUCK_NATIVE[kind]
    if allowed is None:
        return True
    return data_type.split("(")[0] in allowed


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def redact_url(url: str) -> str:
    """A connection URL without its password (safe for messages and logs).

    Examples
    --------
    >>> redact_url("postgresql://ann:secret@db:5432/cdm")
    'postgresql://ann@db:5432/cdm'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_CSV_TABLES = (*TABLE_SPECS, *VOCABULARY_COLUMNS)


def open_source(source: str | os.PathLike, *, schema: str | None = None) -> OmopSource:
    """Open an OMOP source: PostgreSQL URL, CSV folder or DuckDB file.

    Raises
    ------
    DataError
        When the path does not exist, is neither a folder nor a DuckDB file,
        a CSV file cannot be read, or the database cannot be reached.
    """
    text = os.fspath(source)
    if re.match(r"^postgres(ql)?://", text):
        return PostgresSource(text, schema or "public")
    path = Path(text)
    if path.is_dir():
        return _csv_source(path)
    if not path.is_file():
        raise DataError(f"OMOP source {path} does not exist")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise DataError(
            f"OMOP source {path} is neither a CSV folder nor a DuckDB file "
            f"({_first_line(exc)})"
        ) from None
    return DuckSource(con, str(path), "duckdb", schema or "main")


def _csv_source(folder: Path) -> DuckSource:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        table = path.stem.lower()
        if path.suffix.lower() != ".csv" or table not in _CSV_TABLES:
            continue
        if table in files:
            raise DataError(
                f"OMOP source {folder}: {files[table].name} and {path.name} are both "
                f"table {table}; keep one"
            )
        files[table] = path
    con = duckdb.connect(":memory:")
    for table, path in files.items():
        literal = "'" + str(path).replace("'", "''") + "'"
        try:
            con.execute(
                f"CREATE VIEW {quote(table)} AS SELECT * FROM read_csv({literal}, "
                "header = true, all_varchar = true)"
            ).fetchall()
        except duckdb.Error as exc:
            con.close()
            raise DataError(f"cannot read {path}: {_first_line(exc)}") from None
    return DuckSource(con, str(folder), "csv", "main")
