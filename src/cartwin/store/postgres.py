"""TwinStore on PostgreSQL: the DuckDB store's tables, API and guarantees.

:func:`cartwin.store.open_store` opens this store when given a libpq URL
(``postgresql://user@host:port/database``, also through ``CARTWIN_STORE``).
:class:`PostgresTwinStore` is a :class:`~cartwin.store.duck.TwinStore`: it
creates the same tables (:func:`cartwin.store.schema.ddl`, with the type names
PostgreSQL spells differently, see :func:`pg_ddl`) in the connection's current
schema, converts rows with the same code (:mod:`cartwin.store._columns`), runs
the same duplicate-skipping statements (:mod:`cartwin.store._pg_writes`, bulk
data sent with ``COPY``) and reads records and twin versions with the same
queries, so a record reads back equal from both stores.

Guarantees, as for DuckDB: one transaction per import (all or nothing);
importing the same file (same SHA-256) twice changes nothing; rows already
stored are skipped; twin versions are only appended; the pseudonymisation key
fingerprint is checked by :meth:`~PostgresTwinStore.check_key`. Unlike DuckDB,
several processes may write at once: every write transaction first takes one
transaction-scoped advisory lock (:data:`WRITE_LOCK`), so imports and version
saves run one after another and ids stay dense, while reads never wait.

Known limits
------------
* PostgreSQL 14 or newer (``extract(epoch ...)`` must return an exact
  ``numeric`` for microsecond instants); an older server is refused.
* PostgreSQL text cannot hold the NUL character (``"\\x00"``); a record with
  one in any text field is refused with a :class:`~cartwin.errors.DataError`
  (DuckDB stores it).
* JSON columns (``import_log.counts``/``report``, the twin version's settings,
  parameters, posterior and outputs) are ``TEXT``: PostgreSQL's ``json`` type
  rejects the ``NaN``/``Infinity`` tokens Python writes for non-finite floats.
* One :class:`PostgresTwinStore` holds one connection; give each thread or
  process its own store.
* ``store.con`` is a small DuckDB-like facade over the psycopg connection:
  ``execute(sql, params)`` accepts DuckDB's ``?`` placeholders (when ``params``
  is given, ``%`` in ``sql`` is taken literally) and returns a psycopg cursor.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from cartwin import __version__
from cartwin.errors import DataError, StoreError
from cartwin.record.model import Observation, PatientRecord
from cartwin.store import _append, _pg_writes
from cartwin.store._append import AppendSummary
from cartwin.store._pg_url import is_postgres_url, mask_url
from cartwin.store._pg_writes import qmark
from cartwin.store.duck import (
    ImportSummary,
    PersonSummary,
    TwinStore,
    _check_sha256,
    _count_events,
    _validate,
)
from cartwin.store.schema import SCHEMA_VERSION, TABLES, ddl
from cartwin.twin.version import TwinVersion

logger = logging.getLogger(__name__)

#: Advisory lock key held by every write transaction (``b"cartwin\x01"``).
WRITE_LOCK = int.from_bytes(b"cartwin\x01", "big")
#: Advisory lock key held while the schema is checked or created.
SCHEMA_LOCK = int.from_bytes(b"cartwin\x00", "big")
#: Oldest PostgreSQL server version accepted (``server_version_num``).
MIN_SERVER_VERSION = 140000

#: ``epoch_us`` as the DuckDB store's queries use it: exact microseconds since
#: 1970-01-01T00:00Z (``extract`` returns ``numeric`` since PostgreSQL 14).
_EPOCH_US = """
CREATE FUNCTION epoch_us(timestamptz) RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM $1) * 1000000)::bigint $$
"""

#: DuckDB type names of :func:`~cartwin.store.schema.ddl` and their PostgreSQL
#: spelling (JSON columns become TEXT, see the module notes).
_TYPE_NAMES = {r"\bDOUBLE\b": "DOUBLE PRECISION", r"\bJSON\b": "TEXT"}


def pg_ddl() -> tuple[str, ...]:
    """The store's ``CREATE`` statements for PostgreSQL.

    The tables of :func:`cartwin.store.schema.ddl` with ``DOUBLE`` written
    ``DOUBLE PRECISION`` and ``JSON`` written ``TEXT``, then the ``epoch_us``
    function the shared queries call.
    """
    statements = []
    for statement in ddl():
        for duck, pg in _TYPE_NAMES.items():
            statement = re.sub(duck, pg, statement)
        statements.append(statement)
    return (*statements, _EPOCH_US)


class PgConnection:
    """DuckDB-like facade over a psycopg connection (see the module notes).

    Errors of the server become :class:`~cartwin.errors.StoreError` naming the
    store (its URL without password).
    """

    def __init__(self, raw: psycopg.Connection, where: str) -> None:
        self.raw, self.where = raw, where

    def execute(self, sql: str, params: Sequence | None = None) -> psycopg.Cursor:
        """Run one statement; ``?`` placeholders; return the cursor."""
        try:
            if params is None:
                return self.raw.execute(sql)
            return self.raw.execute(qmark(sql), params)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.where}: {exc}") from exc

    def begin(self) -> None:
        """Open a transaction (``BEGIN``)."""
        self.execute("BEGIN")

    def commit(self) -> None:
        """Commit the open transaction."""
        self.execute("COMMIT")

    def rollback(self) -> None:
        """Roll the open transaction back."""
        self.execute("ROLLBACK")

    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back."""
        self.raw.close()


def _pg_errors(method):
    """Turn psycopg errors raised by ``method`` into StoreError naming the store."""

    @functools.wraps(method)
    def wrapper(self: PostgresTwinStore, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    return wrapper


def _connect(url: str, read_only: bool) -> psycopg.Connection:
    where = mask_url(url)
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to store {where}: {exc}") from exc
    try:
        if raw.info.server_version < MIN_SERVER_VERSION:
            raise StoreError(
                f"store {where}: PostgreSQL {raw.info.server_version} is too old; "
                f"cartwin needs version {MIN_SERVER_VERSION // 10000} or newer"
            )
        raw.execute("SET TimeZone = 'UTC'")
        if read_only:
            raw.execute("SET default_transaction_read_only = on")
    except BaseException:
        raw.close()
        raise
    return raw


class PostgresTwinStore(TwinStore):
    """Patient records, imports and twin versions in a PostgreSQL database.

    Parameters
    ----------
    url : str
        libpq connection URL, ``postgresql://user[:password]@host[:port]/db``;
        the tables live in the connection's current schema (set another with
        ``?options=-csearch_path%3Dname``).
    read_only : bool
        Open a session whose transactions are read-only.

    Attributes
    ----------
    path : str
        The URL with its password masked; used in every message.

    Raises
    ------
    StoreError
        When the server cannot be reached or is older than PostgreSQL 14, when
        the schema holds tables but no ``cartwin_meta`` (not a cartwin store),
        or when the store was written by a newer cartwin.
    """

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        if not is_postgres_url(url):
            raise StoreError(
                f"{url!r} is not a PostgreSQL URL (postgresql://user@host/db)"
            )
        self.path = mask_url(url)
        self.read_only = read_only
        self._con = PgConnection(_connect(url, read_only), self.path)
        try:
            self._prepare_schema()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._con is None else "open"
        return f"PostgresTwinStore({self.path!r}, {state})"

    @property
    def _raw(self) -> psycopg.Connection:
        return self.con.raw

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[psycopg.Cursor]:
        """A transaction (a savepoint inside an open one) holding the write lock."""
        with self._raw.transaction():
            cur = self._raw.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
            yield cur

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Read in one repeatable-read snapshot (unless a transaction is open)."""
        if self.con.in_transaction():
            yield
            return
        with self._raw.transaction():
            self._raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    # -- schema ---------------------------------------------------------------
    @_pg_errors
    def _prepare_schema(self) -> None:
        with self._raw.transaction():
            self._raw.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
            tables = {
                name
                for (name,) in self._raw.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                ).fetchall()
            }
            if not tables:
                self._create_schema()
            elif "cartwin_meta" not in tables:
                raise StoreError(
                    f"{self.path} is a PostgreSQL database but not a cartwin store "
                    f"(no cartwin_meta table in its current schema; it holds "
                    f"{', '.join(sorted(tables))})"
                )
            else:
                self._check_schema(tables)

    def _create_schema(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.path} is empty and was opened read-only")
        for statement in pg_ddl():
            self._raw.execute(statement)
        with self._raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO cartwin_meta VALUES (%s, %s)",
                [["schema_version", str(SCHEMA_VERSION)], ["created_by", __version__]],
            )
        logger.info("created store %s (schema version %d)", self.path, SCHEMA_VERSION)

    # -- key check ------------------------------------------------------------
    @_pg_errors
    def check_key(self, fingerprint: str, *, record: bool = True) -> None:
        """Refuse a pseudonymisation key other than the one the store was made with.

        See :meth:`TwinStore.check_key` (``record=False`` checks only); the
        first writer records the fingerprint, also when several processes
        race to be first.

        Raises
        ------
        StoreError
            When ``fingerprint`` differs from the one recorded.
        """
        if record and not self.read_only:
            self._raw.execute(
                "INSERT INTO cartwin_meta VALUES ('key_fingerprint', %s) "
                "ON CONFLICT (key) DO NOTHING",
                [fingerprint],
            )
        super().check_key(fingerprint, record=record)

    # -- import ---------------------------------------------------------------
    @_pg_errors
    def import_records(
        self,
        records: Sequence[PatientRecord],
        *,
        source_name: str,
        source_sha256: str,
        report: dict[str, Any] | None = None,
    ) -> ImportSummary:
        """Write the records of one source file, all or nothing.

        Parameters, result, errors and duplicate rules are those of
        :meth:`TwinStore.import_records`. The check for an earlier import of
        the same ``source_sha256`` runs under the write lock, so two processes
        importing one file at once write it once.

        Raises
        ------
        DataError
            As for DuckDB, and when a text field holds the NUL character.
        StoreError
            When the store cannot be written; nothing is written.
        """
        started = time.perf_counter()
        sha = _check_sha256(source_sha256)
        records = list(records)
        with self._write_transaction() as cur:
            earlier = cur.execute(
                "SELECT import_id FROM import_log WHERE source_sha256 = %s", [sha]
            ).fetchone()
            if earlier is not None:
                return ImportSummary(
                    earlier[0], source_name, sha, already_imported=True
                )
            _validate(records)
            _refuse_nul(records)
            summary = self._write_import(
                cur, records, source_name, sha, report, started
            )
        logger.info("imported %s into %s: %s", source_name, self.path, summary)
        return summary

    def _write_import(
        self, cur, records: list, source_name: str, sha: str, report, started: float
    ) -> ImportSummary:
        import_id = _pg_writes.next_id(cur, "import_log", "import_id")
        persons = _pg_writes.write_persons(cur, records, import_id)
        observations = _pg_writes.write_measurements(cur, records, import_id)
        events = _pg_writes.write_events(cur, records, import_id)
        summary = ImportSummary(
            import_id, source_name, sha, False, len(records),
            *persons, *observations, *events, time.perf_counter() - started,
        )  # fmt: skip
        cur.execute(
            "INSERT INTO import_log VALUES (%s, %s, %s, now(), %s, %s, %s)",
            [
                import_id, source_name, sha, __version__,
                json.dumps(summary.counts(), sort_keys=True),
                None if report is None else json.dumps(report, default=str),
            ],
        )  # fmt: skip
        return summary

    # -- live append ------------------------------------------------------------
    #: Other processes may write the same database (see the module notes).
    sole_writer = False

    @_pg_errors
    def append_observations(
        self,
        batch: Mapping[str, Sequence[Observation]],
        *,
        source_name: str,
        check_stored: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> AppendSummary:
        """Append measurements of stored patients in one short transaction.

        See :meth:`TwinStore.append_observations`. Runs under the write lock;
        the columns travel as arrays of one ``INSERT ... SELECT FROM unnest``.
        Other processes may write the same patients, so keep ``check_stored``
        unless every writer of the database is known.

        Raises
        ------
        DataError
            As for DuckDB, and when a text field holds the NUL character.
        StoreError
            When a patient is not in the store, or the store cannot be
            written; nothing is written.
        """
        records, repeated = _append.append_records(batch)
        if not records:
            return AppendSummary(None, 0, repeated)
        _refuse_nul(records)
        with self._write_transaction() as cur:
            summary = self._write_append(
                cur, records, repeated, source_name, check_stored
            )
            if before_commit is not None:
                before_commit()
        return summary

    def _write_append(
        self, cur, records: list, repeated: int, source_name: str, check_stored: bool
    ) -> AppendSummary:
        columns = _append.stage_columns(records)
        import_id, last_id = cur.execute(_append.NEXT_IDS).fetchone()
        arrays = [_pg_writes._values(columns[name]) for name in _append.PG_COLUMNS]
        operator = _append.PG_COLUMNS.index("operator")
        arrays[operator] = [None if v is None else int(v) for v in arrays[operator]]
        sql = qmark(_append.insert_sql(_append.PG_SOURCE, check_stored))
        cur.execute(sql, [last_id, import_id, *arrays])
        keys = cur.fetchall() if check_stored else None
        return self._log_append(
            records, repeated, source_name, import_id, keys, written=cur.rowcount
        )

    # -- reading and versions -----------------------------------------------------
    @_pg_errors
    def load_record(self, pseudonym: str) -> PatientRecord:
        """All stored data of one patient, read in one consistent snapshot.

        See :meth:`TwinStore.load_record`.
        """
        with self._snapshot():
            return super().load_record(pseudonym)

    @_pg_errors
    def persons(self) -> list[PersonSummary]:
        """Every patient in the store, ordered by pseudonym."""
        rows = self._raw.execute(_PERSONS_SELECT).fetchall()
        return [PersonSummary(*row) for row in rows]

    @_pg_errors
    def save_twin_version(self, version: TwinVersion) -> str:
        """Append a twin version; return its ``version_id``.

        See :meth:`TwinStore.save_twin_version`. Runs under the write lock;
        inside a transaction the caller opened (``store.con.begin()``) it
        becomes part of that transaction.
        """
        with self._write_transaction():
            return super().save_twin_version(version)

    @_pg_errors
    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every table, sorted: equal snapshots, equal contents."""
        with self._snapshot():
            return {table: self._sorted_rows(table) for table in TABLES}

    def _sorted_rows(self, table: str) -> list[tuple]:
        width = len(self._raw.execute(f"SELECT * FROM {table} LIMIT 0").description)
        order = ", ".join(str(i) for i in range(1, width + 1))
        return self._raw.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()


_TEXT_FIELDS = ("quantity", "unit", "source_code", "source_unit", "source_id")
_EVENT_TEXT_FIELDS = ("kind", "name", "dose_unit", "detail", "source_code", "source_id")
_FACT_FIELDS = ("sex", "diagnosis", "diagnosis_code", "disease", "product")


def _refuse_nul(records: Sequence[PatientRecord]) -> None:
    """Raise DataError for a text field holding NUL, which PostgreSQL cannot store."""
    for record in records:
        where = f"patient {record.facts.pseudonym}"
        for name in _FACT_FIELDS:
            _check_text(getattr(record.facts, name), f"{where}: fact {name}")
        for item, fields in [(o, _TEXT_FIELDS) for o in record.observations] + [
            (e, _EVENT_TEXT_FIELDS) for e in record.events
        ]:
            for name in fields:
                _check_text(
                    getattr(item, name), f"{where}: {item.source_id!r} field {name}"
                )


def _check_text(value: Any, where: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise DataError(
            f"{where} holds the NUL character (\\x00), which PostgreSQL text "
            "cannot store; remove it at the source"
        )


_PERSONS_SELECT = f"""
WITH obs AS (SELECT person_id, count(*) AS n FROM measurement GROUP BY person_id),
     ev AS (SELECT person_id, sum(n)::BIGINT AS n FROM ({_count_events()}) c
            GROUP BY person_id),
     tv AS (SELECT DISTINCT ON (person_id) person_id,
                   count(*) OVER (PARTITION BY person_id) AS n, version_id AS latest
            FROM twin_version ORDER BY person_id, created_at DESC, seq DESC)
SELECT p.person_source_value, p.person_id, coalesce(obs.n, 0)::BIGINT,
       coalesce(ev.n, 0)::BIGINT, coalesce(tv.n, 0)::BIGINT, tv.latest,
       p.disease, p.product
FROM person p
LEFT JOIN obs USING (person_id) LEFT JOIN ev USING (person_id)
LEFT JOIN tv USING (person_id)
ORDER BY p.person_source_value COLLATE "C"
"""
