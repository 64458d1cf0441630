"""Fixtures of the store tests: a store file in a temporary folder."""

from __future__ import annotations

import pytest

from cartwin.store import open_store


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "twin.duckdb"


@pytest.fixture
def store(store_path):
    with open_store(store_path) as opened:
        yield opened
