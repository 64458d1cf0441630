"""The service's own SQLite file: tokens, access lists, audit log, alerts.

Why a separate file and not tables in the twin store
----------------------------------------------------
* The store API offers no place for other tables (``TwinStore.con`` is for
  reading; writes go through its methods), and the store may be DuckDB or
  PostgreSQL, whose SQL dialects and drivers differ. Tokens and the audit log
  must behave the same under both.
* A DuckDB store file is locked by the one process that writes it (the
  running service), so ``cartwin token create`` could not add a token while
  the service runs. SQLite lets several processes share a file; the CLI and
  the service see the same tokens, and a revoked token is refused at once.
* An audit row per request must not queue behind the store's single writer.

The file lives next to a DuckDB store (``<store>.service.sqlite3``), or where
``ServiceSettings.security_db`` says. It holds token hashes, pseudonyms and
route templates only: never a token, a name or a source id.

Durability: WAL journal with ``synchronous=NORMAL``; a committed row survives
the process being killed (SIGKILL); the last commits before a power loss may
not. The audit table is append-only: triggers abort every ``UPDATE`` and
``DELETE``, and each row carries the SHA-256 of the previous row's hash and its
own content, so an edit made outside SQLite's triggers breaks the chain
(:meth:`cartwin.service.audit.AuditLog.verify`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from cartwin.errors import StoreError

#: Version of the layout below, kept in ``service_meta``.
SERVICE_SCHEMA_VERSION = 1

_DDL = (
    """CREATE TABLE IF NOT EXISTS service_meta (
        key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS service_token (
        token_id TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
        label TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        revoked_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS service_token_patient (
        token_id TEXT NOT NULL REFERENCES service_token (token_id),
        pseudonym TEXT NOT NULL,
        PRIMARY KEY (token_id, pseudonym))""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        token_id TEXT,
        method TEXT NOT NULL,
        route TEXT NOT NULL,
        pseudonym TEXT,
        twin_version TEXT,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        row_hash TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TABLE IF NOT EXISTS crs_alert (
        alert_id INTEGER PRIMARY KEY AUTOINCREMENT,
        pseudonym TEXT NOT NULL,
        raised_at TEXT NOT NULL,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS crs_alert_patient ON crs_alert (pseudonym, alert_id)",
)


class ServiceDB:
    """One SQLite connection shared by the service's threads, behind a lock.

    Parameters
    ----------
    path : str
        SQLite file (created on first use) or ``":memory:"``.

    Raises
    ------
    StoreError
        When the file cannot be opened, is not SQLite, or has a newer layout.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
            self._prepare()
        except sqlite3.Error as exc:
            raise StoreError(f"service database {path}: {exc}") from None

    def _prepare(self) -> None:
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as con:
            for statement in _DDL:
                con.execute(statement)
            row = con.execute(
                "SELECT value FROM service_meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is None:
                con.execute(
                    "INSERT INTO service_meta VALUES ('schema_version', ?)",
                    [str(SERVICE_SCHEMA_VERSION)],
                )
            elif int(row[0]) > SERVICE_SCHEMA_VERSION:
                raise StoreError(
                    f"service database {self.path} has layout version {row[0]}, "
                    f"newer than {SERVICE_SCHEMA_VERSION}; upgrade cartwin"
                )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and an immediate (write) transaction for the block."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Rows of one read-only statement."""
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        with self._lock:
            self._con.close()
