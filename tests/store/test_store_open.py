"""Opening a store: where it lives, schema versions, locks and foreign files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cartwin.errors import StoreError
from cartwin.store import (
    DEFAULT_STORE,
    SCHEMA_VERSION,
    STORE_ENV,
    TwinStore,
    open_store,
    resolve_store_path,
)
from cartwin.store.schema import TABLES


def test_path_argument_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "env.duckdb"))
    assert resolve_store_path(tmp_path / "arg.duckdb") == str(tmp_path / "arg.duckdb")
    assert resolve_store_path() == str(tmp_path / "env.duckdb")


def test_default_is_cartwin_duckdb_in_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_STORE == "cartwin.duckdb"
    with open_store() as store:
        assert store.path == "cartwin.duckdb"
    assert (tmp_path / "cartwin.duckdb").is_file()


def test_environment_variable_opens_that_file(monkeypatch, tmp_path):
    target = tmp_path / "site" / "twins.duckdb"
    target.parent.mkdir()
    monkeypatch.setenv(STORE_ENV, str(target))
    with open_store() as store:
        assert store.path == str(target)
    assert target.is_file()


def test_new_store_has_schema(store):
    assert store.schema_version() == SCHEMA_VERSION == 1
    assert set(store.table_counts()) == set(TABLES)
    assert store.table_counts()["cartwin_meta"] == 2


def test_newer_schema_is_refused(store_path):
    with open_store(store_path) as store:
        store.con.execute(
            "UPDATE cartwin_meta SET value = '7' WHERE key = 'schema_version'"
        )
    with pytest.raises(StoreError, match=r"schema version 7, newer than version 1"):
        open_store(store_path)


def test_not_a_database_names_the_file(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("patient notes, not a database\n" * 100)
    with pytest.raises(StoreError, match=f"{path} is not a cartwin store"):
        open_store(path)


def test_foreign_duckdb_file_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE patients (mrn VARCHAR)")
    with pytest.raises(StoreError, match=r"not a cartwin store \(no cartwin_meta"):
        open_store(path)


def test_read_only_needs_existing_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.duckdb", read_only=True)


_HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("ready", flush=True)
sys.stdin.read()
"""


def test_store_locked_by_another_process(tmp_path):
    store_path = tmp_path / "twin.duckdb"
    open_store(store_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=f"store {store_path} is in use"):
            open_store(store_path)
    finally:
        holder.communicate("", timeout=30)
    open_store(store_path).close()  # free again once the other process ends


def test_closed_store_says_so(store_path):
    with open_store(store_path) as store:
        pass
    with pytest.raises(StoreError, match="is closed"):
        store.table_counts()
    store.close()  # a second close is harmless


def test_memory_store(monkeypatch):
    monkeypatch.setenv(STORE_ENV, ":memory:")
    with TwinStore() as store:
        assert store.path == ":memory:"
        assert store.table_counts()["person"] == 0
    assert not Path(":memory:").exists()
