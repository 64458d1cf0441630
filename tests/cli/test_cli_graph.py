"""``cartwin validate`` and the ``--graph`` flags."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cartwin.cli import app
from cartwin.graph.validation import run_validation

runner = CliRunner()


def test_validate_writes_each_check(tmp_path):
    target = tmp_path / "out" / "validation.html"
    result = runner.invoke(app, ["validate", "-o", str(target)])
    checks = run_validation()
    assert result.exit_code == (0 if all(c.passed for c in checks) else 1), result.output
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<tr class="pass">') + page.count('<tr class="fail">') == len(checks)
    assert "Kimmel" in page and "CRS any grade" in page  # both models' checks


def test_validate_json(tmp_path):
    target = tmp_path / "validation.html"
    result = runner.invoke(app, ["validate", "-o", str(target), "--json"])
    data = json.loads(result.stdout)
    assert data["total"] == len(data["checks"]) >= 20
    assert data["passed"] == sum(c["passed"] for c in data["checks"])
    assert target.is_file()


def test_validate_refuses_a_folder(tmp_path):
    result = runner.invoke(app, ["validate", "-o", str(tmp_path)])
    assert result.exit_code == 2


def test_graph_flags_exist():
    for command in (["twin", "update", "--help"], ["demo", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "--graph" in result.output
