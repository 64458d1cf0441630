"""Intracellular scale: stochastic Boolean (MaBoSS) models of cell state.

* Model I/O: :func:`load_maboss` (``.bnd`` + ``.cfg``), :func:`load_sbmlqual`
  and :func:`to_sbmlqual` (SBML-qual).
* Simulation with cmaboss: :func:`simulate` -> :class:`LogicResult`.
* Fixed points and attractors with mpbn: :func:`fixed_points`,
  :func:`attractors`.
* The shipped T-cell fate model: :func:`load_tcell_model`,
  :class:`Stimulation`, :func:`simulate_fates`, :func:`fate_distribution`.
* Personalisation from single-cell data (PROFILE-style):
  :func:`personalise` -> :class:`PatientFates` (``.as_dict()`` gives the
  plain ``{fate: fraction}`` dict meant for the CAR T / tumour model).
* Target cells: :func:`antigen_from_anndata`, :func:`antigen_from_flow`
  -> :class:`AntigenProfile` (antigen-escape risk).

Cross-scale link: :meth:`PatientFates.as_dict` is the input of
:mod:`cartwin.graph.fates_link`, which sets the CAR T / tumour model's
product memory fraction (declared graph edge ``logic.tcell_fates ->
cart_tumour``) and the prior median of its expansion rate ``k_exp``;
:func:`cartwin.graph.fates_link.calibrate_with_fates` fits a patient under
that prior and :func:`cartwin.graph.fates_link.explain` gives the report's
reasons. A twin uses it when ``TwinSettings(graph=True, fates=...)`` is set.
Not done: the mapping from fates to model inputs is an assumption (direction
from Fraietta 2018 and Deng 2020, size not calibrated); no command-line
option passes a personalisation result into ``twin build``; fates are those
of the product at infusion, not simulated in vivo.
"""

from __future__ import annotations

from cartwin.logic.antigen import (
    AntigenProfile,
    antigen_from_anndata,
    antigen_from_flow,
    antigen_profile,
    threshold_from_control,
)
from cartwin.logic.attractors import attractors, boolean_network, fixed_points
from cartwin.logic.engine import (
    LogicResult,
    SimulationSettings,
    replicate_seeds,
    simulate,
)
from cartwin.logic.errors import (
    ExpressionDataError,
    LogicSyntaxError,
    SimulationError,
    UnknownNodeError,
)
from cartwin.logic.expression import read_h5ad, select_cells
from cartwin.logic.fates import (
    FATES,
    FateRules,
    Stimulation,
    fate_distribution,
    load_tcell_model,
    simulate_fates,
)
from cartwin.logic.genes import GeneMap, load_gene_map, match_genes
from cartwin.logic.maboss_io import load_maboss, parse_maboss
from cartwin.logic.network import InitialCondition, LogicalModel, LogicalNode
from cartwin.logic.personalise import (
    NodeActivities,
    PatientFates,
    PersonalisationOptions,
    node_activities,
    personalise,
)
from cartwin.logic.sbmlqual import load_sbmlqual, parse_sbmlqual, to_sbmlqual

__all__ = [
    "FATES",
    "AntigenProfile",
    "ExpressionDataError",
    "FateRules",
    "GeneMap",
    "InitialCondition",
    "LogicResult",
    "LogicSyntaxError",
    "LogicalModel",
    "LogicalNode",
    "NodeActivities",
    "PatientFates",
    "PersonalisationOptions",
    "SimulationError",
    "SimulationSettings",
    "Stimulation",
    "UnknownNodeError",
    "antigen_from_anndata",
    "antigen_from_flow",
    "antigen_profile",
    "attractors",
    "boolean_network",
    "fate_distribution",
    "fixed_points",
    "load_gene_map",
    "load_maboss",
    "load_sbmlqual",
    "load_tcell_model",
    "match_genes",
    "node_activities",
    "parse_maboss",
    "parse_sbmlqual",
    "personalise",
    "read_h5ad",
    "replicate_seeds",
    "select_cells",
    "simulate",
    "simulate_fates",
    "threshold_from_control",
    "to_sbmlqual",
]
