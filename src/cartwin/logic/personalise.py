"""Personalise the T-cell fate model from a patient's single-cell data.

A PROFILE-style mapping (Béal et al. 2019 [1]_): normalised expression sets
node activities, which set the initial states (and optionally the transition
rates) of the logical model; simulating it gives the patient's distribution
over T-cell fates.

Mapping, step by step
---------------------
1. **Genes.** Each personalisable node has genes in the gene map
   (:mod:`cartwin.logic.genes`), found case-insensitively with aliases.
   Input nodes (antigen, co-stimulation, cytokines, PD-L1: the scenario) and
   fate nodes (the read-out) are never personalised.
2. **Gene activity.** Per gene, the quantile of each cell's value among the
   reference cells (default: the patient's own cells):
   :func:`~cartwin.logic.expression.lower_quantiles`. Undetected cells get
   0, the highest get 1. Being rank-based, it works on counts, log-normalised
   or scaled matrices alike.
3. **Node activity.** The mean activity of the node's genes found in the data.
4. **Initial states.**
   ``mode="cells"``: each cell's node is on when its activity is at least
   ``threshold`` (0.5: above the reference median); the empirical joint
   distribution of these on/off profiles over the cells is the initial state
   distribution (one MaBoSS joint ``istate``), so co-expression is kept.
   ``mode="clusters"``: the mean node activity of a group's cells is the
   probability that the node starts on, independently per node.
5. **Rates (optional,** ``rates=True`` **).** With mean activity ``a`` of a
   node over the group's cells, ``$u_NODE`` is multiplied and ``$d_NODE``
   divided by ``amplification ** (2a - 1)``; ``a = 0.5`` keeps the model's
   rates. This follows PROFILE's idea of activity-scaled rates with an
   amplification factor; the exact form is cartwin's.
6. **Fates.** Each group (``groupby``; default all cells together) is
   simulated under the :class:`~cartwin.logic.fates.Stimulation`; the
   patient's fractions are the cell-count-weighted mean over groups.

Nodes without any of their genes in the data keep the model's default
initial state; they are listed in the result and a
:class:`~cartwin.errors.DataQualityWarning` names them.

Assumptions
-----------
- mRNA level stands for node activity; for signalling nodes (NFAT, NF-kB)
  that is only a proxy, and markers/targets are proxies of a state.
- Quantiles are relative to the reference: with the patient's own cells as
  reference, two patients with the same cell-to-cell spread look alike.
  Give a cohort or atlas as ``reference`` to compare patients.
- Only the initial (and optionally rate) personalisation is data-driven; the
  rules are the same for every patient.

References
----------
.. [1] Béal J, et al. PROFILE personalisation of logical models, npj Syst
   Biol Appl 2019. doi:10.1038/s41540-019-0090-3 (as cited in cartwin issue
   4; title not checked here). The method is also described in Béal J,
   Montagud A, Traynard P, Barillot E, Calzone L. Personalization of logical
   models with multi-omics data allows clinical stratification of patients.
   Front Physiol 2019;9:1965. doi:10.3389/fphys.2018.01965
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from cartwin.errors import (
    DataQualityWarning,
    MissingInputError,
    ModelSpecificationError,
)
from cartwin.logic.engine import SimulationSettings
from cartwin.logic.expression import (
    expression_matrix,
    gene_values,
    group_labels,
    lower_quantiles,
)
from cartwin.logic.fates import (
    DEFAULT_FATES,
    Stimulation,
    load_tcell_model,
    simulate_fates,
)
from cartwin.logic.genes import GeneMap, load_gene_map, match_genes
from cartwin.logic.network import InitialCondition, LogicalModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonalisationOptions:
    """How expression becomes model inputs (see the module notes).

    Attributes
    ----------
    source : str
        ``"X"``, ``"raw"`` or a layer name of the AnnData.
    gene_symbols : str or None
        ``var`` column with gene symbols (default: ``var_names``).
    mode : {'cells', 'clusters'}
        Joint per-cell profiles, or independent per-group mean activities.
    groupby : str or None
        ``obs`` column defining groups (clusters); None: one group.
    threshold : float
        Activity at or above which a node is on (``mode="cells"``), in (0, 1).
    rates : bool
        Also scale the node rates by activity.
    amplification : float
        Rate factor at activity 1 (its inverse at 0), >= 1.
    """

    source: str = "X"
    gene_symbols: str | None = None
    mode: Literal["cells", "clusters"] = "cells"
    groupby: str | None = None
    threshold: float = 0.5
    rates: bool = False
    amplification: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in ("cells", "clusters"):
            raise ModelSpecificationError(
                f"mode={self.mode!r}; allowed: cells, clusters"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ModelSpecificationError(
                f"threshold={self.threshold!r}; must be in (0, 1)"
            )
        if not (math.isfinite(self.amplification) and self.amplification >= 1.0):
            raise ModelSpecificationError(
                f"amplification={self.amplification!r}; must be a finite number >= 1"
            )


@dataclass(frozen=True)
class NodeActivities:
    """Per-cell node activities in [0, 1] and what they were built from.

    Attributes
    ----------
    nodes : tuple of str
        Personalised nodes (columns of ``values``).
    values : ndarray, shape (cells, nodes)
        Node activity of each cell.
    groups : ndarray of str, shape (cells,)
        Group of each cell.
    genes_used : Mapping[str, tuple of str]
        Node -> gene names (as in the data) that informed it.
    genes_missing : tuple of str
        Approved symbols of personalisable nodes not found in the data.
    nodes_default : tuple of str
        Personalisable nodes with no gene found (model default kept).
    """

    nodes: tuple[str, ...]
    values: np.ndarray
    groups: np.ndarray
    genes_used: Mapping[str, tuple[str, ...]]
    genes_missing: tuple[str, ...]
    nodes_default: tuple[str, ...]


@dataclass(frozen=True)
class GroupFates:
    """Fate distribution of one group of cells.

    Attributes
    ----------
    group : str
        Group label (``"all"`` without ``groupby``).
    n_cells : int
        Cells in the group.
    fates : Mapping[str, float]
        Fraction per fate.
    initial : Mapping[str, float]
        Probability that each personalised node starts on.
    parameters : Mapping[str, float]
        Rate variables set from the data (empty unless ``rates=True``).
    """

    group: str
    n_cells: int
    fates: Mapping[str, float]
    initial: Mapping[str, float]
    parameters: Mapping[str, float]


@dataclass(frozen=True)
class PatientFates:
    """A patient's personalised T-cell fate distribution and its provenance.

    Attributes
    ----------
    fates : Mapping[str, float]
        Fraction per fate (cell-count weighted over groups); sums to 1.
    groups : tuple of GroupFates
        Per-group results.
    n_cells : int
        Cells used.
    genes_used, genes_missing, nodes_default : see :class:`NodeActivities`.
    nodes_personalised : tuple of str
        Nodes whose initial state came from the data.
    mode : str
        ``"cells"`` or ``"clusters"``.
    """

    fates: Mapping[str, float]
    groups: tuple[GroupFates, ...]
    n_cells: int
    genes_used: Mapping[str, tuple[str, ...]]
    genes_missing: tuple[str, ...]
    nodes_personalised: tuple[str, ...]
    nodes_default: tuple[str, ...]
    mode: str

    def as_dict(self) -> dict[str, float]:
        """The fate distribution as a plain ``{fate: fraction}`` dict."""
        return dict(self.fates)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data."""
        return {
            "fates": dict(self.fates),
            "n_cells": self.n_cells,
            "mode": self.mode,
            "groups": [
                {
                    "group": g.group,
                    "n_cells": g.n_cells,
                    "fates": dict(g.fates),
                    "initial": dict(g.initial),
                    "parameters": dict(g.parameters),
                }
                for g in self.groups
            ],
            "genes_used": {k: list(v) for k, v in self.genes_used.items()},
            "genes_missing": list(self.genes_missing),
            "nodes_personalised": list(self.nodes_personalised),
            "nodes_default": list(self.nodes_default),
        }


def personalisable_nodes(model: LogicalModel, gene_map: GeneMap) -> tuple[str, ...]:
    """Gene-mapped nodes of ``model`` that are neither inputs nor fates."""
    excluded = set(Stimulation().initial()) | {n for _, n in DEFAULT_FATES.priority}
    return tuple(
        n for n in gene_map.nodes if n in model.node_names and n not in excluded
    )


def node_activities(
    cells: Any,
    *,
    model: LogicalModel | None = None,
    options: PersonalisationOptions | None = None,
    gene_map: GeneMap | None = None,
    reference: Any | None = None,
) -> NodeActivities:
    """Node activities of every cell (steps 1-3 of the module notes).

    Raises
    ------
    ExpressionDataError
        No cells, non-finite values, ambiguous gene names.
    MissingInputError
        Missing layer, ``raw``, symbol or group column, or none of the
        model's genes in the data.
    """
    model = model or load_tcell_model()
    options = options or PersonalisationOptions()
    gene_map = gene_map or load_gene_map()
    nodes = personalisable_nodes(model, gene_map)
    wanted = [g for n in nodes for g in gene_map.genes_of(n)]
    matrix, names = expression_matrix(cells, options.source, options.gene_symbols)
    match = match_genes(names, wanted, gene_map.aliases)
    if not match.columns:
        raise MissingInputError(
            f"none of the {len(wanted)} model genes is in the data "
            f"(looked for {', '.join(wanted)} and their aliases)"
        )
    values = gene_values(matrix, match.columns)
    ref_values = (
        values if reference is None else _reference_values(reference, options, match)
    )
    gene_activity = lower_quantiles(values, ref_values)
    return _assemble(
        nodes, gene_map, match, gene_activity, group_labels(cells, options.groupby)
    )


def _reference_values(
    reference: Any, options: PersonalisationOptions, match: Any
) -> np.ndarray:
    matrix, names = expression_matrix(reference, options.source, options.gene_symbols)
    ref_match = match_genes(names, list(match.columns), {})
    lost = [g for g in match.columns if g not in ref_match.columns]
    if lost:
        raise MissingInputError(f"reference AnnData lacks gene(s) {', '.join(lost)}")
    return gene_values(matrix, ref_match.columns)


def _assemble(
    nodes: tuple[str, ...],
    gene_map: GeneMap,
    match: Any,
    gene_activity: np.ndarray,
    groups: np.ndarray,
) -> NodeActivities:
    order = list(match.columns)
    used_nodes, columns, used = [], [], {}
    for node in nodes:
        found = [g for g in gene_map.genes_of(node) if g in match.columns]
        if found:
            used_nodes.append(node)
            columns.append(
                gene_activity[:, [order.index(g) for g in found]].mean(axis=1)
            )
            used[node] = tuple(match.names[g] for g in found)
    values = np.column_stack(columns)
    values.setflags(write=False)
    default = tuple(n for n in nodes if n not in used)
    return NodeActivities(
        tuple(used_nodes),
        values,
        groups,
        MappingProxyType(used),
        match.missing,
        default,
    )


def personalise(
    cells: Any,
    *,
    model: LogicalModel | None = None,
    stimulation: Stimulation | None = None,
    options: PersonalisationOptions | None = None,
    settings: SimulationSettings | None = None,
    reference: Any | None = None,
    gene_map: GeneMap | None = None,
) -> PatientFates:
    """The patient's T-cell fate distribution from their single-cell data.

    Parameters
    ----------
    cells : AnnData
        The patient's T cells (cells x genes), e.g. leukapheresis or product.
    model : LogicalModel, optional
        Default: the shipped T-cell fate model.
    stimulation : Stimulation, optional
        Scenario simulated (default: chronic antigen, 4-1BB CAR).
    options : PersonalisationOptions, optional
        Data source, mode, groups, threshold, rate scaling.
    settings : SimulationSettings, optional
        Seed, sample count, horizon.
    reference : AnnData, optional
        Cells defining the quantiles (cohort or atlas); default ``cells``.
    gene_map : GeneMap, optional
        Default: the shipped gene map and aliases.

    Returns
    -------
    PatientFates

    Warns
    -----
    DataQualityWarning
        When some nodes keep the model default (no gene in the data).
    """
    model = model or load_tcell_model()
    options = options or PersonalisationOptions()
    gene_map = gene_map or load_gene_map()
    DEFAULT_FATES.check(model)
    activity = node_activities(
        cells, model=model, options=options, gene_map=gene_map, reference=reference
    )
    _warn_defaults(activity, gene_map)
    groups = tuple(
        _simulate_group(model, activity, name, stimulation, options, settings)
        for name in dict.fromkeys(activity.groups)
    )
    n = int(activity.values.shape[0])
    fates = {
        f: sum(g.fates[f] * g.n_cells for g in groups) / n for f in DEFAULT_FATES.fates
    }
    return PatientFates(
        fates=MappingProxyType(fates),
        groups=groups,
        n_cells=n,
        genes_used=activity.genes_used,
        genes_missing=activity.genes_missing,
        nodes_personalised=activity.nodes,
        nodes_default=activity.nodes_default,
        mode=options.mode,
    )


def _warn_defaults(activity: NodeActivities, gene_map: GeneMap) -> None:
    if not activity.nodes_default:
        return
    detail = "; ".join(
        f"{n} ({', '.join(gene_map.genes_of(n))})" for n in activity.nodes_default
    )
    message = (
        f"{len(activity.nodes_default)} node(s) keep the model's default "
        f"initial state, none of their genes is in the data: {detail}"
    )
    log.info(message)
    warnings.warn(message, DataQualityWarning, stacklevel=3)


def _simulate_group(
    model: LogicalModel,
    activity: NodeActivities,
    name: str,
    stimulation: Stimulation | None,
    options: PersonalisationOptions,
    settings: SimulationSettings | None,
) -> GroupFates:
    values = activity.values[activity.groups == name]
    if options.mode == "cells":
        conditions = (_joint_profile(activity.nodes, values >= options.threshold),)
    else:
        conditions = tuple(
            InitialCondition.single(n, float(p))
            for n, p in zip(activity.nodes, values.mean(axis=0))
        )
    parameters = _rate_parameters(model, activity.nodes, values.mean(axis=0), options)
    fates = simulate_fates(
        model,
        stimulation=stimulation,
        settings=settings,
        initial=conditions,
        parameters=parameters,
    )
    initial = {n: c.marginal(n) for c in conditions for n in c.nodes}
    return GroupFates(
        str(name),
        int(values.shape[0]),
        MappingProxyType(fates),
        MappingProxyType(initial),
        MappingProxyType(parameters),
    )


def _joint_profile(nodes: tuple[str, ...], on: np.ndarray) -> InitialCondition:
    # Encode each cell's on/off profile as one integer (bit j = node j) and
    # count the distinct codes: the empirical joint distribution.
    weights = np.left_shift(1, np.arange(len(nodes), dtype=np.int64))
    codes, counts = np.unique(on.astype(np.int64) @ weights, return_counts=True)
    total = int(counts.sum())
    entries = tuple(
        (tuple(int(code >> j) & 1 for j in range(len(nodes))), int(count) / total)
        for code, count in zip(codes.tolist(), counts.tolist())
    )
    return InitialCondition(nodes, entries)


def _rate_parameters(
    model: LogicalModel,
    nodes: tuple[str, ...],
    mean_activity: np.ndarray,
    options: PersonalisationOptions,
) -> dict[str, float]:
    if not options.rates:
        return {}
    out: dict[str, float] = {}
    for node, a in zip(nodes, mean_activity):
        up, down = f"u_{node}", f"d_{node}"
        if up not in model.variables or down not in model.variables:
            raise ModelSpecificationError(
                f"rates=True needs variables ${up} and ${down} in model {model.name!r}"
            )
        factor = options.amplification ** (2.0 * float(a) - 1.0)
        out[up] = model.variables[up] * factor
        out[down] = model.variables[down] / factor
    return out
