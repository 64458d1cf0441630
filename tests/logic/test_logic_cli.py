"""The ``logic`` Typer sub-app: run and personalise, text and JSON, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cartwin.logic import SimulationSettings, load_maboss, simulate
from cartwin.logic.cli import logic_app

pytest.importorskip("cmaboss", reason="cmaboss (MaBoSS engine) not installed")

T_SUBSET = "bulk_labels=CD8+ Cytotoxic T,CD8+/CD45RA+ Naive Cytotoxic"


def _invoke(*args: str):
    return CliRunner().invoke(logic_app, list(args), catch_exceptions=False)


def test_run_json_matches_the_library(maboss_dir):
    bnd, cfg = maboss_dir / "cellfate.bnd", maboss_dir / "cellfate.cfg"
    result = _invoke(
        "run",
        str(bnd),
        str(cfg),
        "--seed",
        "4",
        "--samples",
        "300",
        "--max-time",
        "20",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    settings = SimulationSettings(seed=4, sample_count=300, max_time=20.0)
    expected = simulate(load_maboss(bnd, cfg), settings=settings).final_distribution()
    assert data["final_distribution"] == pytest.approx(expected)
    assert len(data["times"]) == len(data["probabilities"])


def test_run_text_prints_trajectory_and_final_tables(maboss_dir):
    result = _invoke(
        "run",
        str(maboss_dir / "dendritic_cells.bnd"),
        str(maboss_dir / "dendritic_cells.cfg"),
        "--seed",
        "1",
        "--samples",
        "100",
        "--points",
        "3",
    )
    assert result.exit_code == 0
    assert "state probabilities" in result.output
    assert "final state distribution" in result.output
    assert "Maturation" in result.output and "1.0000" in result.output


def test_run_reports_syntax_error_with_position(tmp_path):
    bnd, cfg = tmp_path / "m.bnd", tmp_path / "m.cfg"
    bnd.write_text("Node A {\n  logic = A &;\n}\n", encoding="utf-8")
    cfg.write_text("", encoding="utf-8")
    result = _invoke("run", str(bnd), str(cfg))
    assert result.exit_code == 2
    assert "m.bnd:2:14: expected an operand" in result.output


def test_personalise_json_on_pbmc(pbmc_path):
    pytest.importorskip("anndata", reason="anndata not installed")
    result = _invoke(
        "personalise",
        "tcell",
        "--cells",
        str(pbmc_path),
        "--subset",
        T_SUBSET,
        "--groupby",
        "bulk_labels",
        "--samples",
        "500",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["n_cells"] == 54 + 43
    assert sum(data["fates"].values()) == pytest.approx(1.0)
    assert data["genes_used"]["TCF7"] == ["CCR7"]
    assert "TOX" in data["genes_missing"]
    assert any("keep the model's default" in w for w in data["warnings"])


def test_personalise_text_lists_genes(pbmc_path):
    pytest.importorskip("anndata", reason="anndata not installed")
    result = _invoke(
        "personalise",
        "--cells",
        str(pbmc_path),
        "--subset",
        T_SUBSET,
        "--samples",
        "300",
    )
    assert result.exit_code == 0, result.output
    assert "T-cell fates (97 cells)" in result.output
    assert "genes missing:" in result.output and "CCR7" in result.output


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--subset", "bulk_labels=Martian"], "no cell has obs['bulk_labels']"),
        (["--subset", "nonsense"], "expected KEY=VALUE"),
        (["--layer", "counts"], "no layer 'counts'"),
        (["--costim", "OX40"], "costimulation='OX40'"),
    ],
)
def test_personalise_bad_input_exits_2(pbmc_path, extra, fragment):
    pytest.importorskip("anndata", reason="anndata not installed")
    result = _invoke("personalise", "--cells", str(pbmc_path), *extra)
    assert result.exit_code == 2
    assert fragment in result.output


def test_personalise_missing_file(tmp_path):
    result = _invoke("personalise", "--cells", str(tmp_path / "none.h5ad"))
    assert result.exit_code == 2 and "not found" in result.output
