"""Cross-scale link: T-cell fate distribution -> CAR T / tumour model inputs.

The intracellular scale (:mod:`cartwin.logic`, a stochastic Boolean T-cell
model personalised from the patient's single-cell data) gives a distribution
over five fates: ``effector``, ``memory_like``, ``exhausted``, ``apoptotic``
and ``quiescent`` (:meth:`cartwin.logic.PatientFates.as_dict`). This module
turns it into two things the CAR T / tumour model
(:class:`cartwin.models.cart_tumour.CarTumourModel`) reads:

1. **Product memory fraction** (declared edge :data:`FATE_EDGE`,
   ``logic.tcell_fates -> cart_tumour`` on coupling
   ``product_memory_fraction``, a constant exogenous channel; the graph
   accepts it as an edge from an external source,
   :data:`cartwin.graph.graph.EXTERNAL_SOURCES`)::

       f_M = memory_like / (effector + memory_like + exhausted)

   the share of infused CAR T cells that enter the model's memory
   compartment ``M`` instead of the effector compartment ``E``.
2. **Expansion capacity**, a shift of the prior median of
   ``cart_tumour.k_exp`` (antigen-driven proliferation of effectors)::

       x      = exhausted / (effector + memory_like + exhausted)
       scale  = max(1 - x, MIN_EXPANSION_SCALE)
       median = 0.6 /d (population prior) * scale

   with the prior's log-SD unchanged (a
   :class:`~cartwin.graph.calibrate.PriorShift`, recorded in the fit).

Use :func:`calibrate_with_fates` to fit a patient's own data under the
shifted prior (MAP + Laplace with ``z ~ Normal(mu, I)``), or
:func:`shift_prior` for a ``prior_only`` fit (prior-predictive forecasts of a
virtual or new patient). Two patients with the same CAR T data whose
products differ in exhaustion then get different posteriors of ``k_exp`` and
different kinetics forecasts; :func:`explain` gives the report's "why".

Assumptions (each one a choice, not a published fact)
----------------------------------------------------
- assumption: apoptotic cells are lost and quiescent cells have no resolved
  fate, so both are left out of the denominator; the remaining three fates
  stand for the composition of the living, activated product.
- assumption: the fate model's ``memory_like`` share equals the share of
  infused cells in the CAR T model's memory compartment (one-to-one; no
  calibration of the Boolean model's probabilities against flow phenotypes
  of products has been done).
- assumption: expansion capacity falls in proportion to the exhausted share
  (linear, floor :data:`MIN_EXPANSION_SCALE` so that the prior stays
  positive). The direction, not the slope, has clinical support: CLL
  patients whose CAR T products were enriched in memory-like
  (CD27+CD45RO-CD8+) cells expanded and responded, while products with
  exhaustion signatures (PD-1, LAG-3, TIM-3) expanded poorly (Fraietta 2018
  [1]_); in LBCL treated with axi-cel, a CD8 memory signature of the product
  was associated with complete response and an exhausted CD8 phenotype with
  poor response (Deng 2020 [2]_).

Known limits
------------
- The mapping (memory share one-to-one, expansion linear in the exhausted
  share) is an assumption; neither rule has been calibrated against products
  with known fates and measured expansion, so the size of the effect on a
  forecast is not validated, only its direction.
- The fates move a prior, so they matter where the patient's data say
  little: before the expansion peak has been measured, and for virtual
  patients. Once CAR T values through the peak are in the record, the data
  dominate ``k_exp`` and the forecasts of two such products converge (other
  parameters may even compensate for the different memory fraction).
- Only ``k_exp`` is shifted; other fate-dependent rates (exhaustion
  ``k_ex``, effector death ``d_e``) keep their population priors. The prior
  SD is not narrowed: the fates move the prior median, they are not treated
  as data about the patient.
- The link is static: the fate distribution of the product at infusion, not
  fates that change in vivo. A calibrated posterior is not re-centred after
  the fact: :func:`shift_prior` refuses it; refit with
  :func:`calibrate_with_fates`.
- The fates reach a twin through :class:`cartwin.twin.build.TwinSettings`
  (``fates``, with ``graph=True``), on the command line ``cartwin twin update
  P --graph --fates FATES.json`` (the JSON of ``cartwin logic personalise
  --json``); the personalisation is not re-run when the product's cells
  change.

References
----------
.. [1] Fraietta JA, Lacey SF, Orlando EJ, et al. Determinants of response and
   resistance to CD19 chimeric antigen receptor (CAR) T cell therapy of
   chronic lymphocytic leukemia. Nat Med 2018;24(5):563-571.
   doi:10.1038/s41591-018-0010-1
.. [2] Deng Q, Han G, Puebla-Osorio N, et al. Characteristics of anti-CD19
   CAR T cell infusion products associated with efficacy and toxicity in
   patients with large B cell lymphomas. Nat Med 2020;26(12):1878-1887.
   doi:10.1038/s41591-020-1061-7
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cartwin.errors import CalibrationError, DataError, ModelSpecificationError
from cartwin.graph.calibrate import (
    CalibrationSettings,
    GraphFit,
    PriorShift,
    calibrate_graph,
    prior_mean_z,
)
from cartwin.graph.graph import FATE_SOURCE, ModelGraph
from cartwin.graph.inputs import InputSchedule, schedule_from_record
from cartwin.graph.spec import Edge, Parameter
from cartwin.record.model import PatientRecord

#: Fates of the T-cell model (same order as :data:`cartwin.logic.FATES`).
FATES = ("effector", "memory_like", "exhausted", "apoptotic", "quiescent")

#: Fates that make up the living, activated product (the denominator).
ACTIVE_FATES = ("effector", "memory_like", "exhausted")

#: The declared cross-scale edge for the memory fraction.
FATE_EDGE = Edge(FATE_SOURCE, "cart_tumour", "product_memory_fraction")

#: Qualified name of the expansion parameter whose prior is shifted.
EXPANSION_PARAMETER = "cart_tumour.k_exp"

#: Smallest expansion scale (assumption: keeps the prior median positive).
MIN_EXPANSION_SCALE = 0.05

#: Tolerance on the fates summing to 1.
SUM_TOLERANCE = 1e-3

_ASSUMPTION = (
    "assumption (cartwin): expansion capacity scales with 1 - exhausted share "
    "of the active product; direction from Fraietta 2018 "
    "(doi:10.1038/s41591-018-0010-1) and Deng 2020 "
    "(doi:10.1038/s41591-020-1061-7), slope not published"
)


@dataclass(frozen=True)
class FateLink:
    """What the T-cell fate distribution sets in the CAR T / tumour model.

    Attributes
    ----------
    fates : dict[str, float]
        The fate distribution read (fractions, sum 1).
    memory_fraction : float
        ``product_memory_fraction`` (dimensionless, [0, 1]).
    exhausted_share : float
        Exhausted share of the active product (dimensionless, [0, 1]).
    expansion_scale : float
        Factor on the prior median of ``cart_tumour.k_exp`` (dimensionless).
    edges : tuple of Edge
        Declared edges (:data:`FATE_EDGE`).
    n_cells : int or None
        Cells the fate distribution was personalised from (None: unknown or
        a synthetic distribution).
    source : str
        Where the fates come from, for reports.
    notes : tuple of str
        The rules and assumptions used (shown in reports).
    """

    fates: Mapping[str, float]
    memory_fraction: float
    exhausted_share: float
    expansion_scale: float
    edges: tuple[Edge, ...] = (FATE_EDGE,)
    n_cells: int | None = None
    source: str = "the T-cell fate model"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def expansion_prior(self, base: Parameter) -> Parameter:
        """``base`` (the population prior of ``k_exp``) with its median scaled.

        The median is clipped to the parameter's bounds; the log-SD, unit and
        bounds are kept, and the source names the assumption.
        """
        median = min(max(base.median * self.expansion_scale, base.lower), base.upper)
        return replace(base, median=median, source=f"{base.source}; {_ASSUMPTION}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for the twin's provenance."""
        return {
            "fates": dict(self.fates),
            "memory_fraction": self.memory_fraction,
            "exhausted_share": self.exhausted_share,
            "expansion_scale": self.expansion_scale,
            "edges": [vars(e).copy() for e in self.edges],
            "n_cells": self.n_cells,
            "source": self.source,
            "notes": list(self.notes),
        }


def fates_to_inputs(
    fates: Mapping[str, float],
    *,
    n_cells: int | None = None,
    source: str = "the T-cell fate model",
) -> FateLink:
    """Map a T-cell fate distribution to CAR T / tumour model inputs.

    Parameters
    ----------
    fates : mapping
        Fate -> fraction (dimensionless), keys from :data:`FATES`; at least
        the three of :data:`ACTIVE_FATES`; values finite, >= 0, summing to 1
        within :data:`SUM_TOLERANCE` (e.g. ``PatientFates.as_dict()``).
    n_cells : int, optional
        Number of cells personalised (for :func:`explain`).
    source : str
        Where the fates come from (for :func:`explain`).

    Returns
    -------
    FateLink
        ``memory_fraction = memory_like / (effector + memory_like +
        exhausted)``; ``expansion_scale = max(1 - exhausted / (effector +
        memory_like + exhausted), MIN_EXPANSION_SCALE)`` (module docstring).

    Raises
    ------
    DataError
        Unknown or missing fates, non-finite or negative values, a sum away
        from 1, or no active fate (effector + memory_like + exhausted = 0).
    """
    values = _checked(fates)
    active = sum(values[name] for name in ACTIVE_FATES)
    if not active > 0:
        raise DataError(
            f"fate distribution from {source}: effector + memory_like + exhausted "
            f"= {active}; no active product to set the CAR T model from"
        )
    memory = values["memory_like"] / active
    exhausted = values["exhausted"] / active
    scale = max(1.0 - exhausted, MIN_EXPANSION_SCALE)
    if n_cells is not None and not n_cells > 0:
        raise DataError(f"fate distribution from {source}: n_cells = {n_cells}")
    notes = (
        (
            "product_memory_fraction = memory_like / (effector + memory_like + "
            "exhausted); assumption (cartwin): one-to-one with the CAR T model's "
            "memory compartment"
        ),
        _ASSUMPTION,
    )
    return FateLink(
        values, memory, exhausted, scale, (FATE_EDGE,), n_cells, source, notes
    )


def _checked(fates: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(fates) - set(FATES))
    missing = [name for name in ACTIVE_FATES if name not in fates]
    if unknown or missing:
        raise DataError(
            f"fate distribution: unknown fates {unknown}, missing {missing}; "
            f"expected keys from {FATES}"
        )
    values = {name: float(fates[name]) for name in FATES if name in fates}
    bad = {k: v for k, v in values.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise DataError(f"fate distribution: non-finite or negative fractions {bad}")
    total = sum(values.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise DataError(
            f"fate distribution: fractions sum to {total:.6g}, not 1 "
            f"(tolerance {SUM_TOLERANCE})"
        )
    return values


def apply_fate_link(schedule: InputSchedule, link: FateLink) -> InputSchedule:
    """``schedule`` with ``product_memory_fraction`` set from ``link``.

    The original schedule is unchanged; a note records where the value came
    from (a recorded product composition is replaced).
    """
    updated = schedule.with_constant("product_memory_fraction", link.memory_fraction)
    note = (
        f"product_memory_fraction {link.memory_fraction:.3g} from {link.source} "
        f"(edge {FATE_SOURCE} -> cart_tumour)"
    )
    return replace(updated, notes=(*updated.notes, note))


def expansion_shift(graph: ModelGraph, link: FateLink) -> PriorShift:
    """The :class:`PriorShift` of ``cart_tumour.k_exp`` that ``link`` sets.

    The new median is :meth:`FateLink.expansion_prior` of the graph's
    population prior; the evidence is the fate distribution and the
    exhausted share, so that the fit's provenance says where it came from.

    Raises
    ------
    ModelSpecificationError
        When the graph has no free ``cart_tumour.k_exp``.
    """
    if EXPANSION_PARAMETER not in graph.free_parameter_names:
        raise ModelSpecificationError(
            f"graph {graph.name!r} has no free parameter {EXPANSION_PARAMETER!r}"
        )
    base = dict(zip(graph.parameter_names, graph.parameter_specs))
    median = link.expansion_prior(base[EXPANSION_PARAMETER]).median
    evidence = (
        *((f"fate.{name}", float(v)) for name, v in link.fates.items()),
        ("exhausted_share", link.exhausted_share),
        ("expansion_scale", link.expansion_scale),
    )
    return PriorShift(EXPANSION_PARAMETER, median, link.source, evidence)


def _require_edge(graph: ModelGraph) -> None:
    if FATE_EDGE not in graph.external_edges:
        raise ModelSpecificationError(
            f"graph {graph.name!r} does not declare the edge {FATE_SOURCE} -> "
            "cart_tumour (product_memory_fraction); declared external edges: "
            f"{list(graph.external_edges)} (a model that writes "
            "product_memory_fraction replaces the fate link)"
        )


def calibrate_with_fates(
    graph: ModelGraph,
    record: PatientRecord,
    link: FateLink,
    *,
    schedule: InputSchedule | None = None,
    settings: CalibrationSettings | None = None,
) -> GraphFit:
    """Calibrate ``record`` with the product memory fraction and ``k_exp``
    prior set by the T-cell fates.

    Parameters
    ----------
    graph : ModelGraph
        Must declare :data:`FATE_EDGE` (as :func:`standard_graph` does) and
        have a free ``cart_tumour.k_exp``.
    record : PatientRecord
        The patient; needs an infusion event.
    link : FateLink
        From :func:`fates_to_inputs`.
    schedule : InputSchedule, optional
        Inputs before the link; default
        :func:`~cartwin.graph.inputs.schedule_from_record`.
    settings : CalibrationSettings, optional
        Numerical settings (default ``CalibrationSettings()``).

    Returns
    -------
    GraphFit
        As :func:`~cartwin.graph.calibrate.calibrate_graph`, with
        ``product_memory_fraction`` in ``schedule.constants`` and the
        ``k_exp`` shift in ``prior_shifts``.

    Raises
    ------
    ModelSpecificationError
        When the graph lacks the edge or the parameter.
    CartwinError
        When the record cannot be read (as ``calibrate_graph``).
    """
    _require_edge(graph)
    shift = expansion_shift(graph, link)
    base = schedule if schedule is not None else schedule_from_record(record)
    return calibrate_graph(
        graph,
        record,
        apply_fate_link(base, link),
        settings=settings or CalibrationSettings(),
        prior_shifts=(shift,),
    )


def shift_prior(fit: GraphFit, graph: ModelGraph, link: FateLink) -> GraphFit:
    """A ``prior_only`` fit whose ``k_exp`` prior median is scaled by ``link``.

    On the standardised scale ``z = ln(value / median) / log_sd`` the shift is
    ``ln(expansion_scale) / log_sd`` in the mean of ``k_exp``'s ``z``; the
    prior SD is unchanged, so draws from the returned fit are log-normal
    around the shifted median. ``parameter_specs`` keep the population prior
    (``z`` is relative to it); the shift is recorded in ``prior_shifts``.

    Parameters
    ----------
    fit : GraphFit
        From :func:`cartwin.graph.calibrate.prior_fit` on ``graph``.
    graph : ModelGraph
        A graph with the free parameter :data:`EXPANSION_PARAMETER`.
    link : FateLink
        From :func:`fates_to_inputs`.

    Raises
    ------
    CalibrationError
        When ``fit`` is not ``prior_only`` (a posterior is not re-centred:
        refit with :func:`calibrate_with_fates`), or its ``k_exp`` prior is
        already shifted.
    ModelSpecificationError
        When the graph has no free ``cart_tumour.k_exp``.
    """
    if fit.status != "prior_only":
        raise CalibrationError(
            f"shift_prior needs a prior_only fit, got status {fit.status!r}; a "
            "calibrated posterior is not shifted (use calibrate_with_fates)"
        )
    if any(s.parameter == EXPANSION_PARAMETER for s in fit.prior_shifts):
        raise CalibrationError(
            f"the prior of {EXPANSION_PARAMETER} in this fit is already shifted"
        )
    _, (shift,) = prior_mean_z(graph, (expansion_shift(graph, link),))
    z = np.array(fit.map_z, dtype=float)
    z[tuple(fit.free_names).index(EXPANSION_PARAMETER)] += shift.offset_z
    natural = np.asarray(graph.natural_from_z(z))
    return replace(
        fit,
        reason=f"{fit.reason}; k_exp prior median x{link.expansion_scale:.3g} "
        f"from {link.source}",
        map_z=z,
        parameters=dict(zip(graph.parameter_names, map(float, natural))),
        prior_shifts=(*fit.prior_shifts, shift),
    )


def explain(link: FateLink, fit: GraphFit | None = None) -> list[str]:
    """Readable lines for a report: what the fates set and why.

    Parameters
    ----------
    link : FateLink
        The link used.
    fit : GraphFit, optional
        A fit made with the link: adds the ``k_exp`` prior shift it recorded
        (population and shifted prior median) and its fitted value.

    Examples
    --------
    ``"product memory-like fraction 0.42 from the T-cell fate model
    (personalised from 2 000 cells): sets the initial memory fraction of the
    CAR T model"``
    """
    origin = link.source
    if link.n_cells is not None:
        origin += f" (personalised from {_thousands(link.n_cells)} cells)"
    fates = ", ".join(f"{k} {v:.2f}" for k, v in link.fates.items())
    memory = (
        f"product memory-like fraction {link.memory_fraction:.2f} from {origin}: "
        "sets the initial memory fraction of the CAR T model "
        f"(edge {FATE_SOURCE} -> cart_tumour, product_memory_fraction)"
    )
    expansion = (
        f"exhausted share {link.exhausted_share:.2f} of the active product: "
        f"CAR T expansion capacity (k_exp prior median) x{link.expansion_scale:.2f}"
    )
    return [
        f"T-cell fate distribution from {origin}: {fates}",
        memory,
        expansion,
        *(_fit_lines(fit) if fit is not None else []),
        *link.notes,
    ]


def _fit_lines(fit: GraphFit) -> list[str]:
    lines = []
    for shift in fit.prior_shifts:
        spec = fit.parameter_specs.get(shift.parameter)
        unit = f" {spec.unit}" if spec is not None else ""
        line = (
            f"{shift.parameter} prior median {shift.prior_median:.3g}{unit} "
            f"(population) -> {shift.median:.3g}{unit} for this product"
        )
        fitted = fit.parameters.get(shift.parameter)
        if fit.status != "prior_only" and fitted is not None:
            line += f"; fitted to the patient's data: {fitted:.3g}{unit}"
        lines.append(line)
    return lines


def fate_link_summary(link: FateLink, fit: GraphFit | None = None) -> dict[str, Any]:
    """JSON-ready record of a fate link for ``TwinVersion.outputs["graph"]``.

    Returns
    -------
    dict
        ``link`` (:meth:`FateLink.to_dict`), ``prior_shifts`` (each
        :meth:`~cartwin.graph.calibrate.PriorShift.to_dict`, empty without a
        fit) and ``explain`` (:func:`explain` lines, for the report).
    """
    return {
        "link": link.to_dict(),
        "prior_shifts": [s.to_dict() for s in (fit.prior_shifts if fit else ())],
        "explain": explain(link, fit),
    }


def _thousands(count: int) -> str:
    # digits grouped by a plain space: 2 000, 10 000
    return f"{int(count):,}".replace(",", " ")
