"""A throwaway PostgreSQL server for the tests (used by ``tests/conftest.py``).

``initdb`` into a temporary folder, ``pg_ctl start`` on a free loopback port
with the unix socket in that folder, stopped and removed at the end of the
session. As root, initdb refuses to run, so the server then runs as the
``postgres`` user (runuser, else su). Without the binaries the tests that need
the server are skipped, except under ``CI=true``, where ``.ci/run`` installs
PostgreSQL and its absence must fail.

Durability is switched off (``fsync=off``, ``synchronous_commit=off``,
``full_page_writes=off``): the server is thrown away, and tests that kill a
*client* process still see PostgreSQL's transactional guarantees.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def require_postgres(reason: str):
    """Skip the test, or fail it under ``CI=true``, because PostgreSQL is missing."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(reason)


def _postgres_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _run_as_postgres_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        require_postgres("running as root, and no 'postgres' user to run initdb as")
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_shell_quote, cmd))]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A running throwaway server: ``url``, ``connect()``, new databases and schemas."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.data, self.port = root / "data", _free_port()
        self.url = self.database_url("postgres")
        self._names = itertools.count(1)
        self._schemas_db = False

    def database_url(self, database: str) -> str:
        """URL of ``database`` on this server (user ``cartwin``, no password)."""
        return f"postgresql://cartwin@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = _run_as_postgres_user([str(a) for a in args])
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed: {done.stderr}\n{done.stdout}\n{tail}"
            )

    def start(self) -> PostgresServer:
        self._run(
            self.bindir / "initdb", "-D", self.data, "-U", "cartwin", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self.bindir / "pg_ctl", "-D", self.data, "-o", options,
            "-l", self.root / "server.log", "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        self._run(
            self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"
        )

    def connect(self):
        """An autocommit psycopg connection to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def new_database(self, prefix: str = "cartwin_test") -> str:
        """Create an empty database and return its URL."""
        name = f"{prefix}_{next(self._names)}"
        with self.connect() as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def new_schema(self, prefix: str = "store") -> str:
        """Create an empty schema and return a URL whose search path is it.

        The schemas live in one database, ``cartwin_schemas``, made on first
        use; a new schema is much cheaper than a new database.
        """
        if not self._schemas_db:
            with self.connect() as con:
                con.execute('CREATE DATABASE "cartwin_schemas"')
            self._schemas_db = True
        name = f"{prefix}_{next(self._names)}"
        url = self.database_url("cartwin_schemas")
        import psycopg

        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f'CREATE SCHEMA "{name}"')
        return f"{url}?options=-csearch_path%3D{name}"

    def load_csv_folder(self, folder: Path, schema: str) -> None:
        """Create ``schema`` and load each CSV of ``folder`` into a typed table."""
        import duckdb

        with self.connect() as con:
            con.execute(f'CREATE SCHEMA "{schema}"')
            for csv_path in sorted(folder.glob("*.csv")):
                literal = str(csv_path).replace("'", "''")
                described = duckdb.sql(
                    f"DESCRIBE SELECT * FROM read_csv('{literal}', header = true)"
                ).fetchall()
                table = f'"{schema}"."{csv_path.stem.lower()}"'
                columns = ", ".join(
                    f'"{name}" {_PG_TYPE.get(kind, "text")}'
                    for name, kind, *_ in described
                )
                con.execute(f"CREATE TABLE {table} ({columns})")
                with con.cursor().copy(
                    f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
                ) as copy:
                    copy.write(csv_path.read_bytes())


_PG_TYPE = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "DOUBLE": "double precision",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "VARCHAR": "text",
    "BOOLEAN": "boolean",
}


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway server, yield it, stop and remove it (see module notes)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require_postgres("psycopg 3 is not installed (pip install 'psycopg[binary]')")
    bindir = _postgres_bindir()
    if bindir is None:
        require_postgres(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or "
            "initdb on PATH); install the Debian package postgresql"
        )
    root = Path(tempfile.mkdtemp(prefix="cartwin-pg-"))
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("postgres").pw_uid, -1)
    server = PostgresServer(bindir, root)
    try:
        server.start()
        yield server
    finally:
        try:
            if (server.data / "postmaster.pid").exists():
                server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
