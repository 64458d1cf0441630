"""Twin versions are appended, never changed; patients are found by name."""

from __future__ import annotations

import datetime as dt

import pytest

from cartwin.errors import StoreError
from cartwin.record.pseudonym import KEY_ENV
from cartwin.twin.version import TwinVersion

from store_samples import KEY, T0, pseudonym, sample_record, sha


@pytest.fixture
def filled(store):
    store.import_records([sample_record()], source_name="a", source_sha256=sha("a"))
    return store


def _version(hours, parent=None, **changes):
    fields = dict(
        pseudonym=pseudonym(), created_at=T0 + dt.timedelta(hours=hours),
        data_hash="d" * 64, model_name="multiphasic-kinetics", model_version="1",
        package_version="0.1.0", settings={"seed": 7, "interval": 0.9},
        parameters={"k_exp_per_day": [0.9, "1/d"]},
        posterior={"method": "laplace", "cov": [[0.1, 0.0], [0.0, 0.2]]},
        outputs={"crs": {"max_grade": 2}}, parent_id=parent,
    )  # fmt: skip
    fields.update(changes)
    return TwinVersion(**fields)


def test_versions_read_back_in_created_order(filled):
    first = _version(1)
    second = _version(30, parent=first.version_id)
    early = _version(0.5)  # saved last, created first
    ids = [filled.save_twin_version(v) for v in (first, second, early)]
    assert ids == [first.version_id, second.version_id, early.version_id]
    assert filled.twin_versions(pseudonym()) == [early, first, second]
    assert filled.latest_twin_version(pseudonym()) == second


def test_saving_again_is_a_no_op(filled):
    version = _version(1)
    filled.save_twin_version(version)
    before = filled.snapshot()
    assert filled.save_twin_version(version) == version.version_id
    assert filled.snapshot() == before


def test_store_has_no_update_or_delete(filled):
    public = [name for name in dir(filled) if not name.startswith("_")]
    assert not [n for n in public if n.startswith(("update", "delete", "remove"))]


def test_created_at_offset_and_id_survive(filled):
    zone = dt.timezone(dt.timedelta(hours=2))
    version = _version(2, created_at=dt.datetime(2025, 3, 10, 13, 5, tzinfo=zone))
    filled.save_twin_version(version)
    (loaded,) = filled.twin_versions(pseudonym())
    assert loaded == version
    assert loaded.created_at.isoformat() == "2025-03-10T13:05:00+02:00"
    assert loaded.version_id == version.version_id


def test_edited_row_is_detected(filled):
    filled.save_twin_version(_version(1))
    filled.con.execute("UPDATE twin_version SET model_version = '2'")
    with pytest.raises(StoreError, match="does not hash to its id"):
        filled.twin_versions(pseudonym())


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (_version(1, pseudonym=pseudonym("absent")), "import the patient's data"),
        (_version(1, parent="0123456789abcdef"), "parent 0123456789abcdef"),
        (_version(1, created_at=dt.datetime(2025, 3, 10)), "time zone"),
        (_version(1, outputs={1: "a", 10: "b", 9: "c"}), "not plain JSON"),
    ],
)
def test_unstorable_versions_are_refused(filled, version, message):
    with pytest.raises(StoreError, match=message):
        filled.save_twin_version(version)
    assert filled.table_counts()["twin_version"] == 0


def test_persons_summary(filled):
    filled.import_records(
        [sample_record("MRN-0002", disease="MM", product="ciltacabtagene autoleucel")],
        source_name="b", source_sha256=sha("b"),
    )  # fmt: skip
    version = _version(1)
    filled.save_twin_version(version)
    by_pseudonym = {p.pseudonym: p for p in filled.persons()}
    first = by_pseudonym[pseudonym()]
    assert (first.n_observations, first.n_events) == (6, 12)
    assert (first.n_twin_versions, first.latest_version) == (1, version.version_id)
    second = by_pseudonym[pseudonym("MRN-0002")]
    assert (second.n_twin_versions, second.latest_version) == (0, None)
    assert (second.disease, second.product) == ("MM", "ciltacabtagene autoleucel")
    assert [p.pseudonym for p in filled.persons()] == sorted(by_pseudonym)


def test_resolve_by_pseudonym_or_source_id(filled):
    assert filled.resolve_patient(pseudonym()) == pseudonym()
    assert filled.resolve_patient("MRN-0001", KEY) == pseudonym()


def test_resolve_failure_explains_and_hides_source_id(filled):
    with pytest.raises(StoreError, match=KEY_ENV) as without_key:
        filled.resolve_patient("MRN-0001")
    with pytest.raises(StoreError, match="wrong key") as wrong_key:
        filled.resolve_patient("MRN-0001", b"another key")
    for error in (without_key, wrong_key):
        assert "MRN-0001" not in str(error.value)
        assert "pseudonym (16 hex digits" in str(error.value)
