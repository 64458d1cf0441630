"""`cartwin export`, `cartwin reproduce` and imports of the other formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartwin.cli import app
from cartwin.store import open_store


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--json", "-o", str(folder)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _export(demo, fmt, dest, *extra):
    result = CliRunner().invoke(app, [
        "export", demo["pseudonym"], "--format", fmt, "-o", str(dest),
        "--store", demo["store"], "--json", *extra,
    ])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fhir_export_is_a_transaction_bundle(demo, tmp_path):
    out = _export(demo, "fhir", tmp_path / "twin.json")
    bundle = json.loads(Path(out["path"]).read_text())
    assert bundle["type"] == "transaction"
    assert out["resources"]["RiskAssessment"] >= 3
    assert out["version_id"] == demo["version_id"]


def test_ro_crate_reproduces_and_detects_tampering(demo, tmp_path):
    crate = Path(_export(demo, "ro-crate", tmp_path / "crate")["path"])
    runner = CliRunner()
    ok = runner.invoke(app, ["reproduce", str(crate), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    record = crate / "record.json"
    record.write_text(record.read_text().replace('"crp"', '"ldh"', 1))
    bad = runner.invoke(app, ["reproduce", str(crate)])
    assert bad.exit_code != 0
    assert "record.json" in bad.output


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_table_export_reimports_into_a_new_store(demo, tmp_path, monkeypatch, fmt):
    table = Path(_export(demo, fmt, tmp_path / f"data.{fmt}")["path"])
    mapping = tmp_path / "map.toml"
    from cartwin.io.tabular import export_tabular  # writes the matching mapping
    with open_store(demo["store"], read_only=True) as store:
        export_tabular(store, tmp_path / f"again.{fmt}", file_format=fmt,
                       mapping_path=mapping, patients=[demo["pseudonym"]])
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", "k")
    result = CliRunner().invoke(app, [
        "import", str(table), "--mapping", str(mapping),
        "--store", str(tmp_path / "new.duckdb"), "--json",
    ])
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["patients"] == [demo["pseudonym"]]
    with open_store(demo["store"], read_only=True) as old, \
            open_store(tmp_path / "new.duckdb", read_only=True) as new:
        before = old.load_record(demo["pseudonym"]).quantities()
        after = new.load_record(demo["pseudonym"]).quantities()
    assert after == before


def test_phenopacket_export_imports_back(demo, tmp_path, monkeypatch):
    packet = Path(_export(demo, "phenopacket", tmp_path / "p.json")["path"])
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", "k")
    result = CliRunner().invoke(app, [
        "import", str(packet), "--store", str(tmp_path / "pp.duckdb"), "--json",
    ])
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["patients"] == [demo["pseudonym"]]


def test_unknown_export_format_is_refused(demo, tmp_path):
    result = CliRunner().invoke(app, [
        "export", demo["pseudonym"], "--format", "pdf", "-o", str(tmp_path / "x"),
        "--store", demo["store"],
    ])
    assert result.exit_code == 2
    assert "unknown export format 'pdf'" in result.output


_OMOP = Path(__file__).resolve().parents[2].parent / "shared/data/real/omop/synthea27nj-cdm54"


@pytest.mark.skipif(not _OMOP.is_dir(), reason=f"shared OMOP sample not found at {_OMOP}")
def test_omop_folder_imports_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", "k")
    args = ["import", str(_OMOP), "--store", str(tmp_path / "o.duckdb"), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    (item,) = json.loads(first.stdout)
    assert len(item["patients"]) == 28  # persons in the OHDSI Synthea sample
    assert item["store"]["already_imported"] is False
    second = CliRunner().invoke(app, args)
    assert json.loads(second.stdout)[0]["store"]["already_imported"] is True
