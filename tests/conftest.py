"""Fixtures shared by every test folder: a throwaway PostgreSQL server.

The server code lives in ``tests/pg_fixture.py`` (this folder is on
``sys.path`` because pytest inserts the folder of a ``conftest.py`` that is
not inside a package).
"""

from __future__ import annotations

import pytest
from pg_fixture import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """A PostgreSQL server for the session; skipped (failed under CI) when absent."""
    with postgres_server() as server:
        yield server
