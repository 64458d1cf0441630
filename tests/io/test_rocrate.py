"""RO-Crate reproducibility package: content, checksums, reproduction, tampering."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import pytest

from cartwin import __version__
from cartwin.errors import DataError
from cartwin.io.rocrate import (
    METADATA_FILE,
    CrateChecksumError,
    export_rocrate,
    record_from_dict,
    reproduce_rocrate,
)
from cartwin.record.hashing import record_hash, record_to_dict
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY
from cartwin.twin.version import TwinVersion

UTC = dt.timezone.utc
FILES = ("record.json", "settings.json", "twin_version.json")


@pytest.fixture(scope="module")
def demo():
    from cartwin.demo import demo_bundle_path
    from cartwin.io.fhir import import_fhir
    from cartwin.twin.build import TwinSettings, build_twin

    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    settings = TwinSettings(n_draws=200, seed=7)
    version = build_twin(
        record, settings=settings, now=dt.datetime(2024, 3, 11, 12, tzinfo=UTC)
    )
    return record, version


@pytest.fixture
def crate(demo, tmp_path) -> Path:
    return export_rocrate(*demo, tmp_path / "crate")


def _graph(crate: Path) -> dict[str, dict]:
    document = json.loads((crate / METADATA_FILE).read_text(encoding="utf-8"))
    return {e["@id"]: e for e in document["@graph"]}


def _set_checksum(crate: Path, name: str) -> None:
    document = json.loads((crate / METADATA_FILE).read_text(encoding="utf-8"))
    for entity in document["@graph"]:
        if entity["@id"] == name:
            entity["sha256"] = hashlib.sha256((crate / name).read_bytes()).hexdigest()
    (crate / METADATA_FILE).write_text(json.dumps(document), encoding="utf-8")


# -- record round trip --------------------------------------------------------
def test_record_from_dict_inverts_record_to_dict(demo):
    record, _ = demo
    again = record_from_dict(record_to_dict(record))
    assert again == record
    assert record_hash(again) == record_hash(record)


def test_record_from_dict_keeps_nan_none_and_offsets():
    start = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    record = PatientRecord(
        PatientFacts(pseudonym="0123456789abcdef", age_years=58, sex="other"),
        observations=(
            Observation(
                "crp", start, 5.0, "mg/L", censored="below", source_utc_offset_min=-300
            ),
        ),
        events=(
            Event("tocilizumab", start, dose=None),
            Event(
                "oxygen", start, end=start + dt.timedelta(hours=2), detail="high_flow"
            ),
        ),
        site_utc_offset_min=-300,
    )
    again = record_from_dict(json.loads(json.dumps(record_to_dict(record))))
    assert again == record
    assert math.isnan(again.observations[0].source_value)


def test_record_from_dict_names_the_bad_field():
    data = record_to_dict(
        PatientRecord(
            PatientFacts(pseudonym="0123456789abcdef"),
            observations=(
                Observation("crp", dt.datetime(2024, 1, 2, tzinfo=UTC), 1.0, "mg/L"),
            ),
        )
    )
    data["observations"][0]["colour"] = "red"
    with pytest.raises(
        DataError, match=r"record: observations\[0\]: unknown field\(s\) colour"
    ):
        record_from_dict(data)
    data["observations"][0].pop("colour")
    data["observations"][0]["time"] = "2024-01-02T00:00:00"
    with pytest.raises(DataError, match=r"observations\[0\].time .* has no UTC offset"):
        record_from_dict(data)


# -- crate content ------------------------------------------------------------
def test_crate_files_and_checksums(crate, demo):
    _, version = demo
    assert sorted(p.name for p in crate.iterdir()) == sorted((*FILES, METADATA_FILE))
    graph = _graph(crate)
    assert graph["./"]["hasPart"] == [{"@id": name} for name in FILES]
    for name in FILES:
        data = (crate / name).read_bytes()
        assert graph[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert graph[name]["contentSize"] == str(len(data))
    # record.json is the canonical record, so its SHA-256 is the version's data hash
    assert graph["record.json"]["sha256"] == version.data_hash


def test_crate_metadata_describes_the_run(crate, demo):
    _, version = demo
    document = json.loads((crate / METADATA_FILE).read_text(encoding="utf-8"))
    assert document["@context"][0] == "https://w3id.org/ro/crate/1.1/context"
    graph = _graph(crate)
    assert graph[METADATA_FILE]["conformsTo"] == {
        "@id": "https://w3id.org/ro/crate/1.1"
    }
    assert graph["./"]["conformsTo"] == {"@id": "https://w3id.org/ro/wfrun/process/0.5"}
    action = graph["#build"]
    assert action["@type"] == "CreateAction" and action["result"] == {
        "@id": "twin_version.json"
    }
    assert {"@id": "record.json"} in action["object"]
    assert graph["#cartwin"]["softwareVersion"] == version.package_version
    assert (graph["#model"]["name"], graph["#model"]["softwareVersion"]) == (
        version.model_name,
        version.model_version,
    )
    assert (
        graph["#setting-n_draws"]["value"] == 200
        and graph["#setting-seed"]["value"] == 7
    )
    saved = json.loads((crate / "twin_version.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(version.to_dict()))
    assert json.loads((crate / "settings.json").read_text()) == version.settings


def test_export_refuses_a_non_empty_folder_and_foreign_data(demo, tmp_path):
    record, version = demo
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="not an empty folder"):
        export_rocrate(record, version, tmp_path / "used")
    other = PatientRecord(record.facts, record.observations[1:], record.events)
    with pytest.raises(DataError, match="would not reproduce"):
        export_rocrate(other, version, tmp_path / "new")


# -- reproduce ------------------------------------------------------------------------
def test_reproduce_demo_exactly(crate, demo):
    _, version = demo
    result = reproduce_rocrate(crate)
    assert result.ok, result.summary()
    assert result.differences == ()
    assert result.reproduced_version_id == result.version_id == version.version_id


def test_tampered_record_reports_the_data_hash(crate):
    data = json.loads((crate / "record.json").read_text(encoding="utf-8"))
    crp = next(o for o in data["observations"] if o["quantity"] == "crp")
    crp["value"] += 1.0
    (crate / "record.json").write_text(json.dumps(data), encoding="utf-8")
    _set_checksum(crate, "record.json")  # a consistent edit passes the checksums
    result = reproduce_rocrate(crate)
    assert not result.ok
    assert result.differences[0].startswith(
        "data_hash (first difference at data_hash: "
    )
    assert result.reproduced_version_id != result.version_id
    assert "NOT reproduced" in result.summary()


def test_tampered_file_fails_its_checksum(crate):
    path = crate / "twin_version.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"seed": 7', '"seed": 8'))
    with pytest.raises(CrateChecksumError, match="twin_version.json: sha256 is "):
        reproduce_rocrate(crate)


def test_tampered_checksum_is_a_clear_error(crate):
    document = json.loads((crate / METADATA_FILE).read_text(encoding="utf-8"))
    for entity in document["@graph"]:
        if entity["@id"] == "settings.json":
            entity["sha256"] = entity["sha256"][:-1] + "x"
    (crate / METADATA_FILE).write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(
        CrateChecksumError, match="sha256 of settings.json = .* is not 64"
    ):
        reproduce_rocrate(crate)


def test_missing_file_is_a_clear_error(crate):
    (crate / "settings.json").unlink()
    with pytest.raises(CrateChecksumError, match="settings.json cannot be read"):
        reproduce_rocrate(crate)


def test_changed_settings_without_checksums_are_named(crate, demo):
    _, version = demo
    settings = dict(version.settings, seed=8)
    (crate / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    result = reproduce_rocrate(crate, verify_checksums=False)
    assert not result.ok
    assert (
        "settings: settings.json differs from twin_version.json" in result.differences
    )
    assert any(d.startswith("outputs.kinetics") for d in result.differences)
    assert not any(d.startswith("data_hash") for d in result.differences)


def test_twin_version_from_crate_round_trips(crate, demo):
    _, version = demo
    data = json.loads((crate / "twin_version.json").read_text(encoding="utf-8"))
    assert TwinVersion.from_dict(data).version_id == version.version_id


def test_other_package_version_is_noted(crate):
    path = crate / "twin_version.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["package_version"] = "0.0.9"
    path.write_text(json.dumps(data), encoding="utf-8")
    _set_checksum(crate, "twin_version.json")
    result = reproduce_rocrate(crate)
    assert result.ok  # same outputs, parameters, posterior and data hash
    assert result.reproduced_version_id != result.version_id
    assert result.notes == (f"cartwin package: crate 0.0.9, this run {__version__}",)
