"""The command line with hostile data: markup, JSON errors, failing patients."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cartwin.cli import app
from cartwin.demo import demo_bundle_path


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTWIN_PSEUDONYM_KEY", "hardening-test-key")
    monkeypatch.setenv("CARTWIN_STORE", str(tmp_path / "s.duckdb"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _bundle_with_product(display: str) -> str:
    bundle = json.loads(demo_bundle_path().read_text())
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "MedicationAdministration":
            for coding in resource.get("medicationCodeableConcept", {}).get("coding", []):
                if coding["code"] == "axicabtagene-ciloleucel":
                    coding["display"] = display
    return json.dumps(bundle)


def test_markup_in_a_product_display_breaks_nothing(env):
    path = env / "markup.json"
    path.write_text(_bundle_with_product("axi-cel [/] [red]x"))
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(app, ["patients"])
    assert listed.exit_code == 0, listed.output
    # The listing works (it used to crash with a MarkupError) and shows either
    # the code table's product name or the source text literally, unparsed.
    assert "ciloleuc" in listed.output or "[/]" in listed.output


def test_json_errors_are_json_on_stdout(env):
    path = env / "broken.json"
    path.write_text('{"resourceType": "Bundle", "entry": [')
    result = CliRunner().invoke(app, ["import", str(path), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert "broken.json" in error["error"]
    assert error["type"].endswith("Error")


def test_error_text_with_brackets_is_not_swallowed(env):
    path = env / "odd.json"
    path.write_text('{"resourceType": "Observation", "id": "[red]x", "status": "final"}')
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 2
    assert "[red]x" in result.output


def test_report_to_a_folder_is_a_clear_error(env):
    CliRunner().invoke(app, ["import", str(demo_bundle_path())])
    pseudonym = json.loads(CliRunner().invoke(app, ["patients", "--json"]).stdout)[0]["pseudonym"]
    assert CliRunner().invoke(app, ["twin", "update", pseudonym]).exit_code == 0
    (env / "out").mkdir()
    result = CliRunner().invoke(app, ["report", pseudonym, "-o", str(env / "out")])
    assert result.exit_code == 2
    assert "is a folder" in result.output
    assert not list(env.glob("out*.tmp"))
