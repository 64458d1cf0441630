"""``cartwin twin update --graph --fates FILE.json``: reading, errors, settings.

The expensive graph calibration is replaced by a stand-in for ``build_twin``
that records the settings it was given and stops with a calibration error
(reported per patient, exit code 2), so the tests see exactly what would be
calibrated without compiling the graph.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartwin.cli import app
from cartwin.demo import demo_bundle_path
from cartwin.errors import CalibrationError
from cartwin.logic.personalise import GroupFates, PatientFates

runner = CliRunner()
SHARED = Path(os.environ.get("CARTWIN_SHARED",
                             Path(__file__).resolve().parents[3] / "shared"))
STOP = "stand-in build stopped after reading the settings"
# A product with a fifth of its active cells exhausted (fractions sum to 1).
FATES = {"effector": 0.5, "memory_like": 0.3, "exhausted": 0.2, "apoptotic": 0.0,
         "quiescent": 0.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding the demo patient: (store path, pseudonym)."""
    path = tmp_path_factory.mktemp("fates") / "s.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARTWIN_PSEUDONYM_KEY", "fates-test-key")
        done = runner.invoke(app, ["import", str(demo_bundle_path()), "--store",
                                   str(path)])
        assert done.exit_code == 0, done.output
        listed = runner.invoke(app, ["patients", "--store", str(path), "--json"])
    return str(path), json.loads(listed.stdout)[0]["pseudonym"]


@pytest.fixture()
def built(monkeypatch):
    """Settings each ``build_twin`` call received (the build itself stops)."""
    seen = []

    def stand_in(record, *, settings=None, parent=None, now=None):
        seen.append(settings)
        raise CalibrationError(STOP)

    monkeypatch.setattr("cartwin.twin.build.build_twin", stand_in)
    return seen


def _update(store, fates_path, *extra):
    path, pseudonym = store
    return runner.invoke(app, ["twin", "update", pseudonym, "--store", path,
                               "--fates", str(fates_path), *extra])


def _write(tmp_path, content, name="fates.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# -- a good file reaches the twin settings --------------------------------------
def test_plain_mapping_reaches_twin_settings(store, built, tmp_path):
    path = _write(tmp_path, FATES)
    result = _update(store, path, "--graph", "--json")
    assert result.exit_code == 2  # the stand-in's per-patient stop, nothing else
    assert json.loads(result.stdout)[0]["error"] == STOP
    (settings,) = built
    assert settings.graph and dict(settings.fates) == FATES
    assert settings.fates_n_cells == 0  # a plain mapping says nothing of cells


def test_personalise_json_round_trip(store, built, tmp_path):
    # The shape `cartwin logic personalise --json` prints: PatientFates.to_dict()
    # plus the warnings and the cells file.
    fates = PatientFates(
        fates=FATES, groups=(GroupFates("all", 97, FATES, {}, {}),), n_cells=97,
        genes_used={"TCF7": ("CCR7",)}, genes_missing=("TOX",),
        nodes_personalised=("TCF7",), nodes_default=("TOX",), mode="cells")
    payload = {**fates.to_dict(), "warnings": ["w"], "cells_file": "cells.h5ad"}
    result = _update(store, _write(tmp_path, payload), "--graph", "--json")
    assert json.loads(result.stdout)[0]["error"] == STOP
    (settings,) = built
    assert dict(settings.fates) == fates.as_dict() and settings.fates_n_cells == 97


def test_real_personalise_output_round_trip(store, built, tmp_path):
    pytest.importorskip("cmaboss", reason="cmaboss (MaBoSS engine) not installed")
    pytest.importorskip("anndata", reason="anndata is needed for single-cell input")
    cells = SHARED / "data" / "real" / "singlecell" / "10x_pbmc68k_reduced.h5ad"
    if not cells.is_file():
        pytest.skip(f"PBMC h5ad not found at {cells}; set CARTWIN_SHARED")
    printed = runner.invoke(app, [
        "logic", "personalise", "tcell", "--cells", str(cells), "--subset",
        "bulk_labels=CD8+ Cytotoxic T,CD8+/CD45RA+ Naive Cytotoxic",
        "--samples", "200", "--json"])
    assert printed.exit_code == 0, printed.output
    data = json.loads(printed.stdout)
    _update(store, _write(tmp_path, printed.stdout), "--graph")
    (settings,) = built
    assert dict(settings.fates) == pytest.approx(data["fates"])
    assert settings.fates_n_cells == data["n_cells"] == 54 + 43  # the two CD8 labels


# -- a bad file is a clear error before any patient ------------------------------
BAD = [
    ({**FATES, "exhausted": -0.1}, "exhausted = -0.1: must be a finite number >= 0"),
    ('{"effector": NaN}', "effector = nan: must be a finite number >= 0"),
    ({**FATES, "effector": "0.5"}, "effector = '0.5': must be a finite number"),
    ({k: v for k, v in FATES.items() if k != "apoptotic"}, "apoptotic is missing"),
    ({**FATES, "naive": 0.0}, "naive = 0.0: unknown fate"),
    ({"fates": {**FATES, "memory_like": math.inf}, "n_cells": 9},
     "fates.memory_like = inf: must be a finite number >= 0"),
    ({"fates": FATES, "n_cells": -3}, "n_cells = -3: must be an integer >= 0"),
    ({"fates": [0.5, 0.5]}, "fates = [0.5, 0.5]: must be a JSON object"),
    ([0.5, 0.3, 0.2], "top level is list: must be a JSON object"),
    ('{"effector": 0.5,\n', ("not valid JSON: Expecting property name enclosed "
                             "in double quotes (line 2, column 1)")),
    ({**FATES, "effector": 0.6}, "fractions sum to 1.1, not 1"),
]


@pytest.mark.parametrize(("content", "message"), BAD)
def test_bad_file_names_file_field_and_value(store, built, tmp_path, content,
                                              message):
    path = _write(tmp_path, content)
    result = _update(store, path, "--graph", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["type"] == "DataError"
    assert error["error"].startswith(f"--fates {path}: ")
    assert message in error["error"]
    assert built == []  # refused before any patient was calibrated


def test_missing_file_is_named(store, built, tmp_path):
    result = _update(store, tmp_path / "absent.json", "--graph")
    assert result.exit_code == 2
    assert f"--fates {tmp_path / 'absent.json'}: file not found" in result.output
    assert built == []


def test_fates_without_graph_is_refused(store, built, tmp_path):
    result = _update(store, _write(tmp_path, FATES), "--json")
    assert result.exit_code == 2
    assert "add --graph" in json.loads(result.stdout)["error"] and built == []
