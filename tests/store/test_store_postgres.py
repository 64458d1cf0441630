"""What only the PostgreSQL store has to show: URLs, locks, limits, parity.

The shared store tests (test_store_*.py) already run on both backends; these
check dispatch by URL, masked passwords, the schema's parity with DuckDB's,
concurrent writers, the NUL limit, and that both backends return equal data.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from store_samples import T0, pseudonym, sample_record, sha

from cartwin.errors import DataError, StoreError
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.store import (
    STORE_ENV,
    PostgresTwinStore,
    TwinStore,
    is_postgres_url,
    open_store,
    resolve_store_path,
)
from cartwin.store.schema import TABLES
from cartwin.twin.version import TwinVersion

#: DuckDB's information_schema type names and PostgreSQL's for the same column.
_SAME_TYPE = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "VARCHAR": "character varying",
    "DOUBLE": "double precision",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "JSON": "text",  # PostgreSQL json refuses NaN tokens (see postgres.py)
}
_COLUMNS = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
)


@pytest.fixture
def pg_url(postgres):
    return postgres.new_schema()


def _import(store, *records, name="a.json"):
    return store.import_records(records, source_name=name, source_sha256=sha(name))


def test_url_opens_postgres_store(pg_url, monkeypatch):
    assert is_postgres_url(pg_url) and not is_postgres_url("site.duckdb")
    assert resolve_store_path(pg_url) == pg_url  # not mangled into a path
    monkeypatch.setenv(STORE_ENV, pg_url)
    with open_store() as store:
        assert isinstance(store, PostgresTwinStore) and isinstance(store, TwinStore)
        assert store.path == pg_url
        assert repr(store).startswith("PostgresTwinStore(")


def test_password_never_shown(postgres):
    url = f"postgresql://cartwin:hunter2@127.0.0.1:{postgres.port}/no_such_db"
    with pytest.raises(StoreError, match=r"cartwin:\*\*\*@") as error:
        open_store(url)
    assert "hunter2" not in str(error.value)


def test_schema_matches_duckdb(pg_url, tmp_path):
    with open_store(tmp_path / "twin.duckdb") as duck, open_store(pg_url) as pg:
        duck_columns = duck.con.execute(_COLUMNS).fetchall()
        pg_columns = pg.con.execute(_COLUMNS).fetchall()
    assert {t for t, _, _ in pg_columns} == set(TABLES)
    assert [(t, c) for t, c, _ in pg_columns] == [(t, c) for t, c, _ in duck_columns]
    assert [_SAME_TYPE[k] for _, _, k in duck_columns] == [k for _, _, k in pg_columns]


def test_foreign_schema_is_refused(postgres):
    url = postgres.new_schema("foreign")
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE TABLE patients (mrn text)")
    with pytest.raises(StoreError, match=r"not a cartwin store \(no cartwin_meta"):
        open_store(url)


def test_both_backends_read_back_equal(pg_url, tmp_path):
    records = [sample_record("MRN-1"), sample_record("MRN-2", sex="male")]
    version = TwinVersion(
        pseudonym("MRN-1"), T0, "d" * 64, "m", "1", "0.1.0",
        outputs={"kinetics": {"median": [1.5, float("nan")]}},
    )  # fmt: skip
    with open_store(tmp_path / "twin.duckdb") as duck, open_store(pg_url) as pg:
        for store in (duck, pg):
            _import(store, *records)
            store.save_twin_version(version)
        for record in records:
            pid = record.facts.pseudonym
            assert pg.load_record(pid) == duck.load_record(pid) == record
        assert pg.persons() == duck.persons()
        # NaN survives as JSON text in both (not equal to itself, so compare ids)
        assert [v.version_id for v in pg.twin_versions(pseudonym("MRN-1"))] == [
            version.version_id
        ]


def test_instants_before_1970_and_microseconds(pg_url):
    before_epoch = dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    record = PatientRecord(
        PatientFacts(pseudonym()),
        (Observation("crp", before_epoch, 1.0, "mg/L", source_id="o1"),),
    )
    with open_store(pg_url) as store:
        _import(store, record)
        assert store.load_record(pseudonym()) == record


def test_nul_character_is_refused(pg_url):
    bad = sample_record().with_data(
        [Observation("crp", T0, 1.0, "mg/L", source_id="Observation/nul\x00")]
    )
    with open_store(pg_url) as store:
        with pytest.raises(DataError, match=r"field source_id holds the NUL"):
            _import(store, bad)
        assert store.table_counts()["import_log"] == 0


def test_read_only_session_refuses_writes(pg_url):
    open_store(pg_url).close()
    with (
        open_store(pg_url, read_only=True) as store,
        pytest.raises(StoreError, match="read-only transaction"),
    ):
        _import(store, sample_record())


def test_qmark_placeholders_on_the_facade(pg_url):
    with open_store(pg_url) as store:
        _import(store, sample_record())
        (n,) = store.con.execute(
            "SELECT count(*) FROM measurement WHERE cartwin_quantity = ? "
            "AND unit_source_value LIKE '%/L'",
            ["crp"],
        ).fetchone()
    assert n == 2


def test_concurrent_imports_write_each_file_once(pg_url):
    # Four connections import the same two files at once: the advisory lock
    # makes the sha check and the max(id)+1 numbering race-free.
    open_store(pg_url).close()
    results, errors = [], []

    def worker(i):
        try:
            with open_store(pg_url) as store:
                for name in ("a.json", "b.json")[:: 1 if i % 2 else -1]:
                    source = "MRN-A" if name == "a.json" else "MRN-B"
                    results.append(_import(store, sample_record(source), name=name))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(r.already_imported for r in results) == [False] * 2 + [True] * 6
    with open_store(pg_url) as store:
        counts = store.table_counts()
        ids = [i for (i,) in store.con.execute(
            "SELECT measurement_id FROM measurement ORDER BY 1").fetchall()]  # fmt: skip
    assert (counts["import_log"], counts["measurement"], counts["person"]) == (2, 12, 2)
    assert ids == list(range(1, 13))


def test_check_key_records_then_refuses(store):
    store.check_key("fingerprint-1")
    store.check_key("fingerprint-1")
    with pytest.raises(StoreError, match="another pseudonymisation key"):
        store.check_key("fingerprint-2")
