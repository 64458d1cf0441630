"""Personalisation from single-cell data: mapping, real PBMC data, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cartwin.errors import (
    DataQualityWarning,
    MissingInputError,
    ModelSpecificationError,
)
from cartwin.logic import (
    ExpressionDataError,
    PersonalisationOptions,
    SimulationSettings,
    Stimulation,
    load_gene_map,
    match_genes,
    node_activities,
    personalise,
    select_cells,
)
from cartwin.logic.expression import lower_quantiles

pytest.importorskip("cmaboss", reason="cmaboss (MaBoSS engine) not installed")
pytest.importorskip("anndata", reason="anndata is needed for single-cell input")

SETTINGS = SimulationSettings(seed=2, sample_count=2000)
T_CELLS = [
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
    "CD4+/CD45RO+ Memory",
    "CD4+/CD45RA+/CD25- Naive T",
    "CD4+/CD25 T Reg",
]
PROFILE_GENES = ["TCF7", "LEF1", "CCR7", "SELL", "EOMES", "BCL2", "IL7R"]
EXHAUSTED_GENES = ["TOX", "PDCD1", "HAVCR2", "NR4A1", "NFATC1", "GZMB", "PRDM1"]


def _quiet(**kwargs):
    with pytest.warns(DataQualityWarning):
        return personalise(**kwargs)


def test_lower_quantiles_by_hand():
    values = np.array([[0.0], [0.0], [1.0], [2.0], [3.0]])
    # Strictly lower reference values / (n - 1): 0, 0, 2/4, 3/4, 4/4.
    assert lower_quantiles(values, values)[:, 0].tolist() == [0, 0, 0.5, 0.75, 1.0]


def test_lower_quantiles_ignore_monotone_transforms():
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, size=(50, 3)).astype(float)
    scaled = (np.log1p(counts) - 0.3) / 1.7
    assert np.array_equal(
        lower_quantiles(counts, counts), lower_quantiles(scaled, scaled)
    )


def test_gene_matching_ignores_case_and_uses_aliases():
    aliases = load_gene_map().aliases
    match = match_genes(
        ["tcf-1", "Pdcd1", "CD127", "ACTB"], ["TCF7", "PDCD1", "IL7R", "TOX"], aliases
    )
    assert dict(match.names) == {"TCF7": "tcf-1", "PDCD1": "Pdcd1", "IL7R": "CD127"}
    assert match.missing == ("TOX",)


def test_approved_symbol_wins_over_alias():
    match = match_genes(["PD-1", "PDCD1"], ["PDCD1"], load_gene_map().aliases)
    assert match.columns["PDCD1"] == 1


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["TCF7", "tcf7"], "same when case is ignored"),
        (["PD-1", "CD279"], "several columns"),
    ],
)
def test_ambiguous_gene_names_are_errors(names, fragment):
    with pytest.raises(ExpressionDataError, match=fragment):
        match_genes(names, ["TCF7", "PDCD1"], load_gene_map().aliases)


def _patient(make_cells, high: list[str], n: int = 300, seed: int = 0):
    genes = sorted(set(PROFILE_GENES + EXHAUSTED_GENES))
    rng = np.random.default_rng(seed)
    values = rng.poisson(0.2, size=(n, len(genes))).astype(float)
    for gene in high:
        values[:, genes.index(gene)] += rng.poisson(5.0, size=n)
    return make_cells(values, genes)


def test_exhausted_product_gives_more_exhaustion_than_memory_product(make_cells):
    import anndata

    exhausted = _patient(make_cells, EXHAUSTED_GENES, seed=1)
    memory = _patient(make_cells, PROFILE_GENES, seed=2)
    cohort = anndata.concat([exhausted, memory], index_unique="-")
    a = _quiet(cells=exhausted, reference=cohort, settings=SETTINGS)
    b = _quiet(cells=memory, reference=cohort, settings=SETTINGS)
    # Chronic 4-1BB scenario: TOX/NFAT-high cells lock into exhaustion.
    assert a.fates["exhausted"] - b.fates["exhausted"] > 0.2
    acute = Stimulation(antigen="acute")
    a = _quiet(cells=exhausted, reference=cohort, stimulation=acute, settings=SETTINGS)
    b = _quiet(cells=memory, reference=cohort, stimulation=acute, settings=SETTINGS)
    assert b.fates["memory_like"] - a.fates["memory_like"] > 0.2


def test_cells_mode_uses_the_empirical_joint_profile(make_cells):
    # TCF7 5, 4, 3, 0 -> quantiles 1, 2/3, 1/3, 0: on (>= 0.5) in cells 0-1.
    # TOX 0, 0, 0, 6 -> on in cell 3 only.
    values = np.array([[5, 0], [4, 0], [3, 0], [0, 6]], dtype=float)
    cells = make_cells(values, ["TCF7", "TOX"])
    result = _quiet(cells=cells, settings=SETTINGS)
    initial = result.groups[0].initial
    assert initial["TCF7"] == pytest.approx(0.5) and initial["TOX"] == pytest.approx(
        0.25
    )
    assert result.nodes_personalised == ("TOX", "TCF7")
    assert sum(result.fates.values()) == pytest.approx(1.0)


def test_clusters_mode_uses_mean_activity_per_group(make_cells):
    values = np.array([[5, 0], [0, 0], [3, 0], [0, 6]], dtype=float)
    cells = make_cells(values, ["TCF7", "TOX"], cluster=["a", "a", "b", "b"])
    options = PersonalisationOptions(mode="clusters", groupby="cluster")
    result = _quiet(cells=cells, options=options, settings=SETTINGS)
    groups = {g.group: g for g in result.groups}
    # TCF7 quantiles over 4 cells: 5 -> 3/3, 0 -> 0, 3 -> 2/3, 0 -> 0.
    assert groups["a"].initial["TCF7"] == pytest.approx(0.5)
    assert groups["b"].initial["TCF7"] == pytest.approx(1 / 3)
    weighted = (groups["a"].fates["exhausted"] + groups["b"].fates["exhausted"]) / 2
    assert result.fates["exhausted"] == pytest.approx(weighted)


def test_rates_follow_the_amplification_rule(tcell, make_cells):
    cells = make_cells(np.array([[5.0], [0.0], [3.0], [1.0]]), ["TCF7"])
    options = PersonalisationOptions(rates=True, amplification=10.0)
    result = _quiet(cells=cells, options=options, settings=SETTINGS)
    a = float(np.mean([1.0, 0.0, 2 / 3, 1 / 3]))  # mean TCF7 activity = 0.5
    params = result.groups[0].parameters
    assert params["u_TCF7"] == pytest.approx(
        tcell.variables["u_TCF7"] * 10 ** (2 * a - 1)
    )
    assert params["d_TCF7"] == pytest.approx(tcell.variables["d_TCF7"])


def test_missing_genes_are_reported_and_warned(make_cells):
    cells = make_cells(np.array([[1.0], [0.0]]), ["TCF7"])
    with pytest.warns(DataQualityWarning, match=r"TOX \(TOX, TOX2\)"):
        result = personalise(cells, settings=SETTINGS)
    assert "TOX" in result.nodes_default and "TOX2" in result.genes_missing
    assert dict(result.genes_used) == {"TCF7": ("TCF7",)}


def test_personalise_does_not_touch_the_input(make_cells):
    cells = make_cells(np.array([[1.0, 2.0], [0.0, 3.0]]), ["TCF7", "TOX"])
    before = cells.copy()
    _quiet(cells=cells, settings=SETTINGS)
    assert np.array_equal(cells.X, before.X)
    assert list(cells.obs.columns) == list(before.obs.columns) and not cells.uns


def test_pbmc_t_cells_markers_make_sense(pbmc):
    # Zheng 2017 (doi:10.1038/ncomms14049) sorted populations: cytotoxic CD8
    # cells express GZMB/PRF1 (TBET read-out), naive CD8 cells CCR7 (TCF7).
    cells = select_cells(pbmc, "bulk_labels", T_CELLS)
    options = PersonalisationOptions(groupby="bulk_labels")
    act = node_activities(cells, options=options)
    mean = {
        g: dict(zip(act.nodes, act.values[act.groups == g].mean(0))) for g in T_CELLS
    }
    assert (
        mean["CD8+ Cytotoxic T"]["TBET"]
        > 2 * mean["CD8+/CD45RA+ Naive Cytotoxic"]["TBET"]
    )
    assert (
        mean["CD8+/CD45RA+ Naive Cytotoxic"]["TCF7"]
        > 2 * mean["CD8+ Cytotoxic T"]["TCF7"]
    )


def test_pbmc_scaled_and_raw_matrices_give_the_same_activities(pbmc):
    # X is the per-gene scaled version of .raw and quantiles are rank-based,
    # so both give the same activities, except where X's 3-decimal storage
    # merges neighbouring values (a tie moves a quantile by 1/(n - 1)).
    cells = select_cells(pbmc, "bulk_labels", T_CELLS)
    x = node_activities(cells, options=PersonalisationOptions(source="X"))
    raw = node_activities(cells, options=PersonalisationOptions(source="raw"))
    diff = np.abs(x.values - raw.values)
    assert x.nodes == raw.nodes
    assert (diff == 0).mean() > 0.97
    assert diff.max() <= 2 / (cells.n_obs - 1) + 1e-12


def test_pbmc_personalisation_reports_genes(pbmc):
    cells = select_cells(pbmc, "bulk_labels", T_CELLS)
    options = PersonalisationOptions(groupby="bulk_labels")
    result = _quiet(cells=cells, options=options, settings=SETTINGS)
    assert result.n_cells == 192  # 54 + 43 + 19 + 8 + 68 (PROVENANCE.md)
    assert {"FOS", "JUNB"} == set(result.genes_used["AP1"])
    assert result.genes_used["TCF7"] == ("CCR7",)
    assert "TOX" in result.genes_missing and "TOX" in result.nodes_default
    assert sum(result.fates.values()) == pytest.approx(1.0)
    sizes = {g.group: g.n_cells for g in result.groups}
    assert sizes == {
        "CD4+/CD25 T Reg": 68,
        "CD8+ Cytotoxic T": 54,
        "CD8+/CD45RA+ Naive Cytotoxic": 43,
        "CD4+/CD45RO+ Memory": 19,
        "CD4+/CD45RA+/CD25- Naive T": 8,
    }


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        (
            PersonalisationOptions(source="counts"),
            MissingInputError,
            "no layer 'counts'",
        ),
        (PersonalisationOptions(source="raw"), MissingInputError, "no .raw"),
        (
            PersonalisationOptions(groupby="louvain"),
            MissingInputError,
            "no column 'louvain'",
        ),
        (PersonalisationOptions(gene_symbols="symbol"), MissingInputError, "no column"),
    ],
)
def test_missing_layers_and_columns(make_cells, options, error, fragment):
    cells = make_cells(np.array([[1.0], [0.0]]), ["TCF7"])
    with pytest.raises(error, match=fragment):
        personalise(cells, options=options, settings=SETTINGS)


def test_non_finite_values_name_the_gene(make_cells):
    cells = make_cells(np.array([[1.0, np.nan], [0.0, np.inf]]), ["TCF7", "TOX"])
    with pytest.raises(ExpressionDataError, match=r"TOX \(2 cells\)"):
        personalise(cells, settings=SETTINGS)


def test_zero_cells_is_an_error(make_cells):
    cells = make_cells(np.zeros((0, 1)), ["TCF7"])
    with pytest.raises(ExpressionDataError, match="0 cells"):
        personalise(cells, settings=SETTINGS)


def test_no_model_gene_at_all_is_an_error(make_cells):
    cells = make_cells(np.array([[1.0], [0.0]]), ["ACTB"])
    with pytest.raises(MissingInputError, match="none of the"):
        personalise(cells, settings=SETTINGS)


@pytest.mark.parametrize(
    "kwargs", [{"mode": "per-cell"}, {"threshold": 1.0}, {"amplification": 0.5}]
)
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(ModelSpecificationError):
        PersonalisationOptions(**kwargs)
