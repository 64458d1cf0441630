"""Fixtures of the store tests: every test runs on DuckDB and on PostgreSQL.

``backend`` is ``"duckdb"`` (a file in a temporary folder) or ``"postgres"``
(a fresh schema on the session's throwaway server, see tests/pg_fixture.py;
skipped when PostgreSQL is not installed, failed under ``CI=true``).
"""

from __future__ import annotations

import contextlib

import pytest

from cartwin.store import _pg_writes, _writes, open_store

#: Columns of every table, per backend: (table, column) pairs.
_COLUMNS_SQL = {
    "duckdb": "SELECT table_name, column_name FROM duckdb_columns() "
    "WHERE database_name = current_database()",
    "postgres": "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema()",
}


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_path(backend, tmp_path, request):
    """Where a new empty store is: a DuckDB file path or a PostgreSQL URL."""
    if backend == "duckdb":
        return tmp_path / "twin.duckdb"
    return request.getfixturevalue("postgres").new_schema()


@pytest.fixture
def store(store_path):
    with open_store(store_path) as opened:
        yield opened


@pytest.fixture
def writes(backend):
    """The module whose ``write_*`` functions the backend's imports call."""
    return _writes if backend == "duckdb" else _pg_writes


@pytest.fixture
def new_store(backend, request):
    """Factory of fresh empty stores (``with new_store() as store:``)."""
    if backend == "duckdb":
        return lambda: open_store(":memory:")
    server = request.getfixturevalue("postgres")
    return lambda: contextlib.closing(open_store(server.new_schema()))


@pytest.fixture
def store_columns(backend):
    """Function giving the (table, column) pairs of a store."""
    return lambda store: store.con.execute(_COLUMNS_SQL[backend]).fetchall()
