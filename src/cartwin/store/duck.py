"""TwinStore: patient records, imports and twin versions in one DuckDB file.

Where the store lives is decided, in this order, by the ``path`` argument, the
environment variable ``CARTWIN_STORE``, and the default ``./cartwin.duckdb``
(relative to the working directory). ``":memory:"`` gives a store that lives
only as long as the process.

The layout is described in :mod:`cartwin.store.schema`; it holds pseudonyms
only, never names, birth dates or addresses. Every import is one transaction:
it either writes everything or, on any exception, nothing. Importing the same
file (same SHA-256) twice changes nothing; rows already present from another
file are recognised and skipped (see :mod:`cartwin.store._writes`). Twin
versions are only ever appended.

Known limits
------------
* DuckDB lets one process write a file at a time. A second process that opens
  a store in use gets a :class:`~cartwin.errors.StoreError`; two processes can
  share a store only when both open it with ``read_only=True``.
* One :class:`TwinStore` holds one connection and is not meant to be shared
  between threads.
* ``source_name`` is stored as given; do not pass file names that contain
  patient identifiers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import duckdb

from cartwin import __version__
from cartwin.errors import DataError, StoreError
from cartwin.record.model import Observation, PatientRecord
from cartwin.record.pseudonym import (
    KEY_ENV,
    KEY_FILE_ENV,
    looks_like_pseudonym,
    pseudonymise,
)
from cartwin.store import _append, _writes
from cartwin.store._append import AppendSummary
from cartwin.store._pg_url import is_postgres_url
from cartwin.store._writes import first_row
from cartwin.store._columns import (
    MEASUREMENT_COLUMNS,
    PERSON_COLUMNS,
    event_from_row,
    facts_from_row,
    observation_from_row,
    person_id,
    validate_events,
    validate_observations,
)
from cartwin.store._versions import (
    INSERT_VERSION,
    VERSION_COLUMNS,
    check_storable,
    version_from_row,
    version_row,
)
from cartwin.store.schema import EVENT_TABLES, SCHEMA_VERSION, TABLES, ddl
from cartwin.twin.version import TwinVersion

logger = logging.getLogger(__name__)

#: Environment variable naming the store file.
STORE_ENV = "CARTWIN_STORE"
#: Store file used when neither an argument nor ``CARTWIN_STORE`` names one.
DEFAULT_STORE = "cartwin.duckdb"
#: Path that opens a store held in memory only.
MEMORY = ":memory:"

_SHA256 = re.compile(r"[0-9a-f]{64}")


def resolve_store_path(path: str | os.PathLike | None = None) -> str:
    """Store location: ``path`` > ``$CARTWIN_STORE`` > ``./cartwin.duckdb``.

    A PostgreSQL URL (``postgresql://...``, see
    :mod:`cartwin.store.postgres`) is returned unchanged.

    Examples
    --------
    >>> resolve_store_path("/data/site.duckdb")
    '/data/site.duckdb'
    """
    chosen = path if path is not None else os.environ.get(STORE_ENV) or DEFAULT_STORE
    if str(chosen) == MEMORY:
        return MEMORY
    if is_postgres_url(chosen):
        return str(chosen)
    return str(Path(chosen).expanduser())


@dataclass(frozen=True)
class ImportSummary:
    """What one call of :meth:`TwinStore.import_records` did.

    Attributes
    ----------
    import_id : int
        Id of the import in ``import_log`` (of the earlier one when
        ``already_imported``).
    source_name, source_sha256 : str
        The imported file's name and SHA-256 as given by the caller.
    already_imported : bool
        The same ``source_sha256`` was imported before; nothing was written.
    n_records : int
        Records passed in.
    n_persons_new, n_persons_updated : int
        Persons inserted, and persons whose missing facts were filled.
    n_observations, n_observations_duplicate : int
        Measurements written, and skipped because already present.
    n_events, n_events_duplicate : int
        Events written, and skipped because already present.
    seconds : float
        Wall-clock time of the call, in seconds.
    """

    import_id: int
    source_name: str
    source_sha256: str
    already_imported: bool = False
    n_records: int = 0
    n_persons_new: int = 0
    n_persons_updated: int = 0
    n_observations: int = 0
    n_observations_duplicate: int = 0
    n_events: int = 0
    n_events_duplicate: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """The ``n_*`` counts, as stored in ``import_log.counts``."""
        return {k: v for k, v in asdict(self).items() if k.startswith("n_")}

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (for ``--json`` output)."""
        return asdict(self)


@dataclass(frozen=True)
class PersonSummary:
    """One patient in the store: data volume and twin versions.

    Attributes
    ----------
    pseudonym : str
        Keyed hash of the patient's source id.
    person_id : int
        OMOP ``person_id`` derived from the pseudonym.
    n_observations, n_events : int
        Rows stored for the patient.
    n_twin_versions : int
        Twin versions saved for the patient.
    latest_version : str or None
        ``version_id`` of the latest twin version, ``None`` when there is none.
    disease, product : str or None
        Disease group and CAR T product, when known.
    """

    pseudonym: str
    person_id: int
    n_observations: int
    n_events: int
    n_twin_versions: int
    latest_version: str | None
    disease: str | None = None
    product: str | None = None


def _store_errors(method):
    """Turn DuckDB errors raised by ``method`` into StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(self: TwinStore, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except duckdb.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    return wrapper


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    if read_only and path != MEMORY and not Path(path).exists():
        raise StoreError(f"store {path} does not exist (opened read-only)")
    # No extension is ever fetched or loaded on its own: a store must never
    # reach the network (an untrusted file could name a SQLite scanner, say).
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    try:
        return duckdb.connect(path, read_only=read_only, config=config)
    except duckdb.Error as exc:
        raise StoreError(_open_failure(path, exc)) from exc


def _open_failure(path: str, exc: duckdb.Error) -> str:
    text = str(exc)
    if "lock" in text.lower():
        return (
            f"store {path} is in use by another process and cannot be opened "
            f"({text}); close that process (processes that only read can share it "
            "when all open it read-only)"
        )
    if "not a valid DuckDB database" in text:
        return f"{path} is not a cartwin store: not a DuckDB file, or a corrupt one"
    return f"cannot open store {path}: {text}"


class TwinStore:
    """Patient records, imports and twin versions in a DuckDB file.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Store file; see :func:`resolve_store_path` for the default.
    read_only : bool
        Open without write access (several processes may then share it).

    Raises
    ------
    StoreError
        When the file is locked by another process, is not a DuckDB file, is
        a DuckDB file without cartwin tables, or was written by a newer
        cartwin (higher schema version).
    """

    def __init__(
        self, path: str | os.PathLike | None = None, *, read_only: bool = False
    ) -> None:
        self.path = resolve_store_path(path)
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = _connect(self.path, read_only)
        try:
            self._con.execute("SET TimeZone = 'UTC'")
            self._prepare_schema()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._con is None else "open"
        return f"TwinStore({self.path!r}, {state})"

    def __enter__(self) -> TwinStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def _row(self, sql: str, params: Sequence = ()) -> tuple | None:
        return first_row(self.con.execute(sql, params))

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open DuckDB connection (read it; write through the methods)."""
        if self._con is None:
            raise StoreError(f"store {self.path} is closed")
        return self._con

    # -- schema ---------------------------------------------------------------
    @_store_errors
    def _prepare_schema(self) -> None:
        tables = {
            name
            for (name,) in self.con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
        }
        if not tables:
            self._create_schema()
        elif "cartwin_meta" not in tables:
            raise StoreError(
                f"{self.path} is a DuckDB database but not a cartwin store "
                f"(no cartwin_meta table; it holds {', '.join(sorted(tables))})"
            )
        else:
            self._check_schema(tables)

    def _create_schema(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.path} is empty and was opened read-only")
        self.con.begin()
        try:
            for statement in ddl():
                self.con.execute(statement)
            self.con.executemany(
                "INSERT INTO cartwin_meta VALUES (?, ?)",
                [["schema_version", str(SCHEMA_VERSION)], ["created_by", __version__]],
            )
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise
        logger.info("created store %s (schema version %d)", self.path, SCHEMA_VERSION)

    def _check_schema(self, tables: set[str]) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than "
                f"version {SCHEMA_VERSION} that cartwin {__version__} reads; "
                "upgrade cartwin to open it"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}; cartwin "
                f"{__version__} has no migration to version {SCHEMA_VERSION}"
            )
        missing = [t for t in TABLES if t not in tables]
        if missing:
            raise StoreError(f"store {self.path} lacks tables {', '.join(missing)}")

    @_store_errors
    def schema_version(self) -> int:
        """Schema version recorded in the store's ``cartwin_meta`` table."""
        row = self._row("SELECT value FROM cartwin_meta WHERE key = 'schema_version'")
        if row is None or not row[0].isdigit():
            raise StoreError(f"store {self.path} has no valid schema_version")
        return int(row[0])

    # -- key check ------------------------------------------------------------
    @_store_errors
    def check_key(self, fingerprint: str, *, record: bool = True) -> None:
        """Refuse a pseudonymisation key other than the one the store was made with.

        The store keeps only a fingerprint of the key (an HMAC of a fixed text,
        :func:`cartwin.record.pseudonym.key_fingerprint`), never the key. The
        first writer records it (``record=True``; pass ``False`` to check only,
        before an import that may still fail); a later import under another
        key would give the same patients new pseudonyms, so it is refused.

        Raises
        ------
        StoreError
            When ``fingerprint`` differs from the one recorded.
        """
        row = self._row("SELECT value FROM cartwin_meta WHERE key = 'key_fingerprint'")
        if row is None:
            if record and not self.read_only:
                self.con.execute(
                    "INSERT INTO cartwin_meta VALUES ('key_fingerprint', ?)",
                    [fingerprint],
                )
            return
        if row[0] != fingerprint:
            raise StoreError(
                f"store {self.path} was written with another pseudonymisation key "
                "(its key fingerprint differs); the same patients would get new "
                "pseudonyms. Use the key the store was made with."
            )

    # -- import ---------------------------------------------------------------
    @_store_errors
    def import_records(
        self,
        records: Sequence[PatientRecord],
        *,
        source_name: str,
        source_sha256: str,
        report: dict[str, Any] | None = None,
    ) -> ImportSummary:
        """Write the records of one source file, all or nothing.

        Parameters
        ----------
        records : sequence of PatientRecord
            Records read from the file; several may share a pseudonym.
        source_name : str
            Name of the file or source, stored in ``import_log``.
        source_sha256 : str
            SHA-256 (64 hex digits) of the file's bytes; identifies the import.
        report : dict, optional
            The reader's report (skipped rows, warnings), stored as JSON.

        Returns
        -------
        ImportSummary
            With ``already_imported=True`` and nothing written when the same
            ``source_sha256`` was imported before.

        Raises
        ------
        DataError
            When a record cannot be stored faithfully (pseudonym not 16 hex
            digits, non-finite value, unknown censoring flag, naive end time,
            non-finite dose); nothing is written.
        StoreError
            When the store cannot be written; nothing is written.

        Warns
        -----
        DataQualityWarning
            When a patient fact (sex, age, diagnosis, ...) disagrees with the
            one stored or given earlier in the file; the first one is kept.

        Notes
        -----
        A later file for a known patient adds its new rows and fills facts
        still unknown. Rows already stored, or repeated within the file, are
        skipped and counted as duplicates: a measurement repeats when patient,
        ``source_id``, quantity and instant agree; an event when patient,
        kind, start, name, detail and ``source_id`` agree.
        """
        started = time.perf_counter()
        sha = _check_sha256(source_sha256)
        earlier = self._row(
            "SELECT import_id FROM import_log WHERE source_sha256 = ?", [sha]
        )
        if earlier is not None:
            return ImportSummary(earlier[0], source_name, sha, already_imported=True)
        records = list(records)
        _validate(records)
        self.con.begin()
        try:
            summary = self._write_import(records, source_name, sha, report, started)
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise
        logger.info("imported %s into %s: %s", source_name, self.path, summary)
        return summary

    def _write_import(
        self, records: list, source_name: str, sha: str, report, started: float
    ) -> ImportSummary:
        import_id = _writes.next_id(self.con, "import_log", "import_id")
        persons = _writes.write_persons(self.con, records, import_id)
        observations = _writes.write_measurements(self.con, records, import_id)
        events = _writes.write_events(self.con, records, import_id)
        summary = ImportSummary(
            import_id, source_name, sha, False, len(records),
            *persons, *observations, *events, time.perf_counter() - started,
        )  # fmt: skip
        self.con.execute(
            "INSERT INTO import_log VALUES (?, ?, ?, now(), ?, ?, ?)",
            [
                import_id, source_name, sha, __version__,
                json.dumps(summary.counts(), sort_keys=True),
                None if report is None else json.dumps(report, default=str),
            ],
        )  # fmt: skip
        return summary

    # -- live append ------------------------------------------------------------
    #: Whether no other process can write this store while it is open: a
    #: DuckDB file takes one writing process, so a caller that writes through
    #: this object only and remembers what it wrote knows every stored row
    #: (see ``check_stored`` of :meth:`append_observations`).
    sole_writer = True

    @_store_errors
    def append_observations(
        self,
        batch: Mapping[str, Sequence[Observation]],
        *,
        source_name: str,
        check_stored: bool = True,
        before_commit: Callable[[], None] | None = None,
    ) -> AppendSummary:
        """Append measurements of stored patients in one short transaction.

        The cheap write path for live data (see :mod:`cartwin.store._append`):
        no fact merging, no events, one ``import_log`` row per call. Ids follow
        the order of the patients in ``batch`` and, within a patient, time
        order (as for imports: a record keeps its observations sorted).

        Parameters
        ----------
        batch : mapping of str to sequence of Observation
            Pseudonym of a patient already in the store to its observations.
        source_name : str
            Stored in the ``import_log`` row naming the append.
        check_stored : bool
            Skip observations already in the store (same patient, quantity,
            instant and ``source_id``), which scans the ``measurement`` table.
            Pass ``False`` only when the caller knows none is stored (it holds
            the store's only writer, :attr:`sole_writer`, and remembers what it
            wrote); repeats within ``batch`` are always dropped.
        before_commit : callable, optional
            Called with no arguments after the rows are written, before the
            commit; an exception from it rolls the append back.

        Returns
        -------
        AppendSummary
            Rows written and skipped, and the ``import_log`` id.

        Raises
        ------
        DataError
            When a pseudonym is malformed or a value not finite; nothing is
            written.
        StoreError
            When a patient is not in the store, or the store cannot be
            written; nothing is written.
        """
        records, repeated = _append.append_records(batch)
        if not records:
            return AppendSummary(None, 0, repeated)
        self.con.begin()
        try:
            summary = self._write_append(records, repeated, source_name, check_stored)
            if before_commit is not None:
                before_commit()
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise
        return summary

    def _write_append(
        self, records: list, repeated: int, source_name: str, check_stored: bool
    ) -> AppendSummary:
        columns = _append.stage_columns(records)
        import_id, last_id = first_row(self.con.execute(_append.NEXT_IDS))
        view = "_cartwin_append_stage"
        sql = _append.insert_sql(_append.DUCK_SOURCE.format(view=view), check_stored)
        with _writes.staged(self.con, view, columns):
            rows = self.con.execute(sql, [last_id, import_id]).fetchall()
        return self._log_append(
            records, repeated, source_name, import_id, rows if check_stored else None,
            written=len(rows) if check_stored else int(rows[0][0]),
        )  # fmt: skip

    def _log_append(
        self, records: list, repeated: int, source_name: str, import_id: int,
        keys: list | None, *, written: int,
    ) -> AppendSummary:  # fmt: skip
        """Check every patient was stored; add the ``import_log`` row.

        ``keys`` are the rows the insert returned (``check_stored``), else None.
        """
        given = sum(len(r.observations) for r in records)
        if written < given:
            stored = _append.stored_person_ids(self.con, records)
            if len(stored) < len(records):
                raise _append.missing_persons(records, stored)
        before = () if keys is None else _append.stored_before(records, keys)
        skipped = given - written + repeated
        if written == 0:
            return AppendSummary(None, 0, skipped, before)
        counts = json.dumps(
            _append.log_counts(len(records), written, skipped), sort_keys=True
        )
        sha = _append.append_digest(records)
        self.con.execute(
            _append.INSERT_LOG, [import_id, source_name, sha, __version__, counts]
        )
        return AppendSummary(import_id, written, skipped, before)

    # -- reading --------------------------------------------------------------
    @_store_errors
    def load_record(self, pseudonym: str) -> PatientRecord:
        """All stored data of one patient as a :class:`PatientRecord`.

        Raises
        ------
        StoreError
            When no patient with this pseudonym is in the store.
        """
        pid = self._person_id(pseudonym)
        row = self._row(
            f"SELECT {PERSON_COLUMNS} FROM person WHERE person_id = ?", [pid]
        )
        if row is None:
            raise StoreError(self._not_found(pseudonym))
        facts, site_offset = facts_from_row(row)
        observations = self.con.execute(
            f"SELECT {MEASUREMENT_COLUMNS} FROM measurement "
            "WHERE person_id = ? ORDER BY measurement_id",
            [pid],
        ).fetchall()
        events = self.con.execute(_EVENT_SELECT, [pid] * len(EVENT_TABLES)).fetchall()
        return PatientRecord(
            facts=facts,
            observations=tuple(map(observation_from_row, observations)),
            events=tuple(event_from_row(row[2:]) for row in events),
            site_utc_offset_min=site_offset,
        )

    def _person_id(self, pseudonym: str) -> int:
        try:
            return person_id(pseudonym)
        except DataError:
            raise StoreError(self._not_found(pseudonym)) from None

    def _not_found(self, pseudonym: str) -> str:
        shown = str(pseudonym)
        if not looks_like_pseudonym(shown):
            shown = "(not a pseudonym)"
        return (
            f"patient {shown} is not in store {self.path}; list the stored "
            "patients with `cartwin patients` or TwinStore.persons()"
        )

    @_store_errors
    def persons(self) -> list[PersonSummary]:
        """Every patient in the store, ordered by pseudonym."""
        rows = self.con.execute(_PERSONS_SELECT).fetchall()
        return [PersonSummary(*row) for row in rows]

    @_store_errors
    def resolve_patient(self, name: str, key: bytes | None = None) -> str:
        """Pseudonym of the patient called ``name``.

        Parameters
        ----------
        name : str
            A pseudonym present in the store, or the patient's source id.
        key : bytes, optional
            Pseudonymisation key, needed to look up a source id.

        Raises
        ------
        StoreError
            When no stored patient matches; the message says how to name one.
            A source id is never echoed in the message.
        """
        if looks_like_pseudonym(name) and self._has_person(name):
            return name
        if key is not None:
            hashed = pseudonymise(name, key)
            if self._has_person(hashed):
                return hashed
        raise StoreError(self._unresolved(name, key))

    def _has_person(self, pseudonym: str) -> bool:
        row = self._row(
            "SELECT 1 FROM person WHERE person_source_value = ?", [pseudonym]
        )
        return row is not None

    def _unresolved(self, name: str, key: bytes | None) -> str:
        shown = repr(name) if looks_like_pseudonym(name) else "with the given source id"
        tried = (
            "its pseudonym under the given key is not stored either (wrong key?)"
            if key is not None
            else f"no key was given to hash it as a source id ({KEY_ENV} or "
            f"{KEY_FILE_ENV})"
        )
        return (
            f"no patient {shown} in store {self.path}: {tried}. Name a patient by "
            "its pseudonym (16 hex digits, see `cartwin patients`) or by its "
            "source id together with the pseudonymisation key"
        )

    # -- twin versions ----------------------------------------------------------
    @_store_errors
    def save_twin_version(self, version: TwinVersion) -> str:
        """Append a twin version; return its ``version_id``.

        Saving a version whose id is already stored does nothing. There is no
        way to update or delete a version.

        Raises
        ------
        StoreError
            When the patient is not in the store, the parent version is not a
            stored version of the same patient, or the version would not read
            back under its id (see :func:`~cartwin.store._versions.check_storable`).
        """
        vid = version.version_id
        if self._version_exists(vid):
            return vid
        check_storable(version)
        if not self._has_person(version.pseudonym):
            raise StoreError(
                f"twin version {vid}: {self._not_found(version.pseudonym)}; "
                "import the patient's data first"
            )
        self._check_parent(version)
        seq = _writes.next_id(self.con, "twin_version", "seq")
        row = version_row(version, seq, person_id(version.pseudonym))
        self.con.execute(INSERT_VERSION, row)
        return vid

    def _version_exists(self, vid: str) -> bool:
        row = self._row(
            "SELECT 1 FROM twin_version WHERE version_id = ?", [vid]
        )
        return row is not None

    def _check_parent(self, version: TwinVersion) -> None:
        if version.parent_id is None:
            return
        row = self._row(
            "SELECT pseudonym FROM twin_version WHERE version_id = ?",
            [version.parent_id],
        )
        if row is None or row[0] != version.pseudonym:
            raise StoreError(
                f"twin version {version.version_id}: parent {version.parent_id} is "
                f"not a stored version of patient {version.pseudonym}"
            )

    @_store_errors
    def twin_versions(self, pseudonym: str) -> list[TwinVersion]:
        """All twin versions of a patient, oldest first (by ``created_at``).

        Versions read back equal to the ones saved when their JSON fields hold
        plain JSON values (dicts with string keys, lists, numbers, strings);
        tuples come back as lists.
        """
        rows = self.con.execute(
            f"SELECT {VERSION_COLUMNS} FROM twin_version WHERE pseudonym = ? "
            "ORDER BY created_at, seq",
            [pseudonym],
        ).fetchall()
        return [version_from_row(row, self.path) for row in rows]

    def latest_twin_version(self, pseudonym: str) -> TwinVersion | None:
        """The newest twin version of a patient, or ``None``."""
        versions = self.twin_versions(pseudonym)
        return versions[-1] if versions else None

    # -- inspection -------------------------------------------------------------
    @_store_errors
    def table_counts(self) -> dict[str, int]:
        """Number of rows in every table of the store."""
        return {
            table: self._row(f"SELECT count(*) FROM {table}")[0]
            for table in TABLES
        }

    @_store_errors
    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every table, sorted: equal snapshots, equal contents."""
        return {
            table: self.con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in TABLES
        }


def open_store(
    path: str | os.PathLike | None = None, *, read_only: bool = False
) -> TwinStore:
    """Open (and on first use create) a twin store; usable in ``with``.

    ``path`` (or ``$CARTWIN_STORE``) names a DuckDB file, ``":memory:"``, or a
    PostgreSQL URL ``postgresql://user@host:port/database``, which opens a
    :class:`~cartwin.store.postgres.PostgresTwinStore` (same API).

    Examples
    --------
    >>> with open_store(":memory:") as store:
    ...     store.table_counts()["person"]
    0
    """
    location = resolve_store_path(path)
    if is_postgres_url(location):
        from cartwin.store.postgres import PostgresTwinStore

        return PostgresTwinStore(location, read_only=read_only)
    return TwinStore(path, read_only=read_only)


def _check_sha256(source_sha256: str) -> str:
    sha = str(source_sha256).lower()
    if not _SHA256.fullmatch(sha):
        raise DataError(
            f"source_sha256 {source_sha256!r} is not a SHA-256 hex digest "
            "(64 hex digits)"
        )
    return sha


def _validate(records: list) -> None:
    for record in records:
        if not isinstance(record, PatientRecord):
            raise DataError(
                f"expected PatientRecord objects, got {type(record).__name__}"
            )
        person_id(record.facts.pseudonym)
        validate_observations(record)
        validate_events(record)


def _event_select() -> str:
    parts = [
        f"SELECT {spec.id_col} AS event_id, '{spec.table}' AS source_table, "
        f"cartwin_kind, epoch_us({spec.start_col}) AS start_us, "
        f"epoch_us({spec.end_col}), cartwin_name, {spec.dose_col}, "
        f"{spec.dose_unit_col}, cartwin_detail, {spec.source_col}, source_id, "
        f"source_utc_offset_min FROM {spec.table} WHERE person_id = ?"
        for spec in EVENT_TABLES
    ]
    return " UNION ALL ".join(parts) + " ORDER BY start_us, event_id"


_EVENT_SELECT = _event_select()


def _count_events() -> str:
    parts = [
        f"SELECT person_id, count(*) AS n FROM {spec.table} GROUP BY person_id"
        for spec in EVENT_TABLES
    ]
    return " UNION ALL ".join(parts)


_PERSONS_SELECT = f"""
WITH obs AS (SELECT person_id, count(*) AS n FROM measurement GROUP BY person_id),
     ev AS (SELECT person_id, sum(n) AS n FROM ({_count_events()}) GROUP BY person_id),
     tv AS (SELECT person_id, count(*) AS n,
                   arg_max(version_id, (created_at, seq)) AS latest
            FROM twin_version GROUP BY person_id)
SELECT p.person_source_value, p.person_id, coalesce(obs.n, 0)::BIGINT,
       coalesce(ev.n, 0)::BIGINT, coalesce(tv.n, 0)::BIGINT, tv.latest,
       p.disease, p.product
FROM person p
LEFT JOIN obs USING (person_id) LEFT JOIN ev USING (person_id)
LEFT JOIN tv USING (person_id)
ORDER BY p.person_source_value
"""
