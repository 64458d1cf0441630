"""Target-antigen read-outs: threshold rule, Wilson interval, real and flow data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from cartwin.errors import DataError, MissingInputError
from cartwin.logic import (
    ExpressionDataError,
    antigen_from_anndata,
    antigen_from_flow,
    antigen_profile,
    select_cells,
    threshold_from_control,
)
from cartwin.logic.antigen import wilson_interval

NON_B = [
    "CD8+ Cytotoxic T",
    "CD4+/CD25 T Reg",
    "CD14+ Monocyte",
    "CD56+ NK",
    "Dendritic",
]


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (62, 95), (95, 95), (1, 1)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_threshold_rule_boundaries():
    values = np.array([0.0, -1.0, 0.5, 1.0, 5.0])
    profile = antigen_profile(
        values, "CD19", negative_threshold=0.0, low_threshold=1.0, unit="ABC"
    )
    # <= 0 negative (2 cells); 0 < x < 1 low (0.5); 1.0 and 5.0 positive.
    assert (profile.n_negative, profile.n_low) == (2, 1)
    assert profile.escape_risk == pytest.approx(3 / 5)
    assert profile.as_dict()["rule"] == "negative if value <= 0 ABC; low if below 1 ABC"


def test_low_threshold_must_exceed_negative_threshold():
    with pytest.raises(ExpressionDataError, match="must be above"):
        antigen_profile(
            np.ones(3), "CD19", negative_threshold=2, low_threshold=1, unit="MFI"
        )


@pytest.mark.parametrize("values", [np.array([]), np.array([1.0, np.nan])])
def test_empty_or_non_finite_values_are_errors(values):
    with pytest.raises(ExpressionDataError):
        antigen_profile(values, "CD19", negative_threshold=0.0, unit="MFI")


def test_pbmc_bcma_rna_is_restricted_to_b_cells(pbmc):
    # BCMA (TNFRSF17) is a B-lineage / plasma-cell antigen; in sorted PBMCs
    # (Zheng 2017, doi:10.1038/ncomms14049) no T, NK or myeloid population
    # should carry its transcript at more than background level.
    b_cells = antigen_from_anndata(
        select_cells(pbmc, "bulk_labels", ["CD19+ B"]), "BCMA", source="raw"
    )
    others = antigen_from_anndata(
        select_cells(pbmc, "bulk_labels", NON_B), "BCMA", source="raw"
    )
    assert b_cells.antigen == "TNFRSF17" and b_cells.n_cells == 95
    assert b_cells.escape_risk < 0.8
    assert others.escape_risk > 0.99
    low, high = b_cells.escape_risk_ci95
    assert low < b_cells.escape_risk < high


def test_pbmc_cd19_is_not_among_the_genes(pbmc):
    # pbmc68k_reduced keeps 765 variable genes; CD19 is not one of them.
    with pytest.raises(MissingInputError, match="antigen CD19 not in the data"):
        antigen_from_anndata(pbmc, "CD19", source="raw")


def test_scaled_matrix_is_refused(pbmc):
    with pytest.raises(ExpressionDataError, match="negative values"):
        antigen_from_anndata(pbmc, "TNFRSF17", source="X")


def test_flow_table_with_alias_column(tmp_path):
    table = tmp_path / "flow.csv"
    rows = ["cell,bcma"] + [
        f"c{i},{v}" for i, v in enumerate([10, 50, 400, 2000, 5000])
    ]
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    profile = antigen_from_flow(
        table, "BCMA", negative_threshold=100.0, low_threshold=1000.0, unit="MFI"
    )
    assert (profile.n_negative, profile.n_low, profile.n_cells) == (2, 1, 5)
    assert profile.fraction_negative == pytest.approx(0.4)


def test_flow_table_errors(tmp_path):
    table = tmp_path / "flow.csv"
    table.write_text("cell,CD19\nc1,12\nc2,abc\n", encoding="utf-8")
    with pytest.raises(ExpressionDataError, match=r"flow.csv:3: antigen value 'abc'"):
        antigen_from_flow(table, "CD19", negative_threshold=10.0)
    with pytest.raises(DataError, match="no column for TNFRSF17"):
        antigen_from_flow(table, "BCMA", negative_threshold=10.0)
    with pytest.raises(DataError, match="not found"):
        antigen_from_flow(tmp_path / "none.csv", "CD19", negative_threshold=10.0)


def test_threshold_from_negative_control():
    control = np.arange(1, 101, dtype=float)  # 1..100
    assert threshold_from_control(control, 0.99) == pytest.approx(99.01)
    with pytest.raises(ExpressionDataError):
        threshold_from_control(np.array([]))
