"""End to end through the command line: demo, real FHIR bundles, bad input.

The demo runs in a subprocess exactly as the README says; the other commands
run in-process through Typer's runner against a store in a temporary folder.
"""

from __future__ import annotations

import bz2
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartwin.cli import app
from cartwin.demo import demo_bundle_path
from cartwin.store import open_store

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CARTWIN_SHARED", REPO.parent / "shared"))
SYNTHEA = sorted((SHARED / "data/real/fhir/synthea-blaze").glob("*.json.bz2"))
KEY = "test-key-for-cli-tests"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("CARTWIN_STORE", str(tmp_path / "store.duckdb"))
    monkeypatch.setenv("CARTWIN_JAX_CACHE", str(tmp_path / "jax-cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_demo_command_in_subprocess(tmp_path):
    exe = Path(sys.executable).parent / "cartwin"
    env = {**os.environ, "CARTWIN_JAX_CACHE": str(tmp_path / "jax")}
    env.pop("CARTWIN_PSEUDONYM_KEY", None)
    done = subprocess.run(
        [str(exe), "demo", "--json", "-o", str(tmp_path / "demo")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kinetics_status"] == "converged"
    assert result["crs_max_grade"] == 2  # the demo patient has a grade 2 CRS
    html = Path(result["report"]).read_text(encoding="utf-8")
    assert "Synthetic Demo" not in html  # the patient's name never reaches a report
    assert result["pseudonym"] in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    with open_store(result["store"]) as store:
        version = store.latest_twin_version(result["pseudonym"])
        assert version.version_id == result["version_id"]
        assert len(version.data_hash) == 64
        assert version.outputs["kinetics"]["n_censored"] >= 2


def test_demo_twice_keeps_one_import_and_chains_versions(env):
    first = _json(_run("demo", "--json", "-o", "d"))
    second = _json(_run("demo", "--json", "-o", "d"))
    assert second["import"]["already_imported"] is True
    with open_store(first["store"]) as store:
        versions = store.twin_versions(first["pseudonym"])
    assert [v.parent_id for v in versions] == [None, versions[0].version_id]


@pytest.mark.skipif(not SYNTHEA, reason=f"shared real data not found under {SHARED}")
@pytest.mark.parametrize("bundle", SYNTHEA, ids=lambda p: p.name[:8])
def test_real_synthea_bundle_through_cli(env, bundle):
    imported = _json(_run("import", str(bundle), "--json"))
    (item,) = imported
    (pseudonym,) = item["patients"]
    source_id = json.loads(bz2.decompress(bundle.read_bytes()))["entry"][0]["resource"]["id"]
    assert source_id not in json.dumps(imported)

    # The source id works as a name (hashed with the key on the way in).
    updated = _json(_run("twin", "update", source_id, "--json"))
    assert updated[0]["pseudonym"] == pseudonym
    shown = _json(_run("twin", "show", pseudonym, "--json"))
    assert shown["version_id"] == updated[0]["version_id"]
    # Synthea patients never receive CAR T: the twin says so instead of guessing.
    assert shown["kinetics"]["status"] == "unavailable"
    assert "infusion" in shown["kinetics"]["reason"]
    hematotox = next(s for s in shown["scores"] if s["name"] == "CAR-HEMATOTOX")
    assert hematotox["value"] is None and hematotox["message"]

    report = env / "r.html"
    _json(_run("report", pseudonym, "-o", str(report), "--json"))
    assert pseudonym in report.read_text(encoding="utf-8")
    with open_store(os.environ["CARTWIN_STORE"]) as store:
        assert store.latest_twin_version(pseudonym).version_id == shown["version_id"]


def _snapshot():
    with open_store(os.environ["CARTWIN_STORE"]) as store:
        return store.snapshot()


BAD_FILES = {
    "malformed.json": '{"resourceType": "Bundle", "type": "collection", "entry": [',
    "wrong_type.json": '{"resourceType": "Banana", "id": "x"}',
    "not_fhir.json": '[1, 2, 3]',
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_leaves_store_unchanged(env, name):
    _json(_run("import", str(demo_bundle_path()), "--json"))  # something stored first
    before = _snapshot()
    path = env / name
    path.write_text(BAD_FILES[name], encoding="utf-8")
    result = _run("import", str(path))
    assert result.exit_code == 2
    assert name in result.output
    assert _snapshot() == before


def test_unknown_patient_is_a_clear_error(env):
    _run("demo", "-o", "d")
    result = _run("twin", "show", "no-such-patient", "--store", str(env / "d" / "cartwin-demo.duckdb"))
    assert result.exit_code == 2
    assert "no patient with the given source id" in result.output
    # The source id a user typed is not echoed (it may be an MRN).
    assert "no-such-patient" not in result.output


def test_import_without_key_is_refused(env, monkeypatch):
    monkeypatch.delenv("CARTWIN_PSEUDONYM_KEY")
    result = _run("import", "whatever.json")
    assert result.exit_code == 2
    assert "CARTWIN_PSEUDONYM_KEY" in result.output


def test_import_under_another_key_is_refused(env, monkeypatch):
    _json(_run("import", str(demo_bundle_path()), "--json"))
    before = _snapshot()
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", "a-different-key")
    result = _run("import", str(demo_bundle_path()))
    assert result.exit_code == 2
    assert "another pseudonymisation key" in result.output
    assert _snapshot() == before


def test_stored_source_ids_and_file_hash_are_keyed(env):
    import hashlib

    raw_sha = hashlib.sha256(demo_bundle_path().read_bytes()).hexdigest()
    bundle = json.loads(demo_bundle_path().read_text())
    raw_ids = [e["resource"]["id"] for e in bundle["entry"]][:50]
    _json(_run("import", str(demo_bundle_path()), "--json"))
    dump = json.dumps(_snapshot(), default=str)
    assert raw_sha not in dump
    assert not [i for i in raw_ids if i in dump]
    assert "Observation/#" in dump


def test_folder_of_fhir_files_imports_file_by_file(env):
    folder = env / "bundles"
    folder.mkdir()
    (folder / "a.json").write_text(demo_bundle_path().read_text())
    (folder / "notes.txt").write_text("ignored")
    (item,) = _json(_run("import", str(folder), "--json"))
    assert item["file"] == "a.json"
