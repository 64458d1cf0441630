"""Fixtures of the scheduler tests: a store on each backend.

``backend`` is ``"duckdb"`` (a file in a temporary folder) or ``"postgres"`` (a
fresh schema on the session's throwaway server, see tests/pg_fixture.py;
skipped when PostgreSQL is not installed, failed under ``CI=true``).
"""

from __future__ import annotations

import pytest

from cartwin.store import open_store


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_url(backend, tmp_path, request) -> str:
    """A new empty store's location: DuckDB file path or PostgreSQL URL."""
    if backend == "duckdb":
        return str(tmp_path / "twin.duckdb")
    return request.getfixturevalue("postgres").new_schema("sched")


@pytest.fixture
def store(store_url):
    with open_store(store_url) as opened:
        yield opened
