"""Cross-scale link: T-cell fate distribution -> CAR T / tumour model inputs.

The intracellular scale (:mod:`cartwin.logic`, a stochastic Boolean T-cell
model personalised from the patient's single-cell data) gives a distribution
over five fates: ``effector``, ``memory_like``, ``exhausted``, ``apoptotic``
and ``quiescent`` (:meth:`cartwin.logic.PatientFates.as_dict`). This module
turns it into two things the CAR T / tumour model
(:class:`cartwin.models.cart_tumour.CarTumourModel`) reads:

1. **Product memory fraction** (declared edge :data:`FATE_EDGE`,
   ``logic.tcell_fates -> cart_tumour`` on coupling
   ``product_memory_fraction``, a constant exogenous channel)::

       f_M = memory_like / (effector + memory_like + exhausted)

   the share of infused CAR T cells that enter the model's memory
   compartment ``M`` instead of the effector compartment ``E``.
2. **Expansion capacity**, a shift of the prior median of
   ``cart_tumour.k_exp`` (antigen-driven proliferation of effectors)::

       x      = exhausted / (effector + memory_like + exhausted)
       scale  = max(1 - x, MIN_EXPANSION_SCALE)
       median = 0.6 /d (population prior) * scale

   with the prior's log-SD unchanged. :func:`shift_prior` applies it to a
   ``prior_only`` fit (prior-predictive forecasts of a virtual or new
   patient).

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
- The prior shift is applied to ``prior_only`` fits (:func:`shift_prior`);
  :func:`cartwin.graph.calibrate.calibrate_graph` still uses the population
  prior ``z ~ Normal(0, I)``, so a fit to the patient's own CAR T data does
  not yet see the shift (it needs a prior-mean hook in the calibration).
- The link is static: the fate distribution of the product at infusion, not
  fates that change in vivo.

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
from cartwin.graph.calibrate import GraphFit
from cartwin.graph.graph import ModelGraph
from cartwin.graph.inputs import InputSchedule
from cartwin.graph.spec import Edge, Parameter

#: Fates of the T-cell model (same order as :data:`cartwin.logic.FATES`).
FATES = ("effector", "memory_like", "exhausted", "apoptotic", "quiescent")

#: Fates that make up the living, activated product (the denominator).
ACTIVE_FATES = ("effector", "memory_like", "exhausted")

#: Source node name of the fate model in the graph's edge list.
FATE_SOURCE = "logic.tcell_fates"

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


def shift_prior(fit: GraphFit, graph: ModelGraph, link: FateLink) -> GraphFit:
    """A ``prior_only`` fit whose ``k_exp`` prior median is scaled by ``link``.

    On the standardised scale ``z = ln(value / median) / log_sd`` the shift is
    ``ln(expansion_scale) / log_sd`` in the mean of ``k_exp``'s ``z``; the
    prior SD is unchanged, so draws from the returned fit are log-normal
    around the shifted median.

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
        When ``fit`` is not ``prior_only`` (a posterior is not re-centred).
    ModelSpecificationError
        When the graph has no free ``cart_tumour.k_exp``.
    """
    if fit.status != "prior_only":
        raise CalibrationError(
            f"shift_prior needs a prior_only fit, got status {fit.status!r}; a "
            "calibrated posterior is not shifted"
        )
    names = tuple(fit.free_names)
    if EXPANSION_PARAMETER not in names:
        raise ModelSpecificationError(
            f"graph {graph.name!r} has no free parameter {EXPANSION_PARAMETER!r}"
        )
    spec = fit.parameter_specs.get(EXPANSION_PARAMETER) or _spec(graph)
    z = np.array(fit.map_z, dtype=float)
    z[names.index(EXPANSION_PARAMETER)] += math.log(link.expansion_scale) / spec.log_sd
    natural = np.asarray(graph.natural_from_z(z))
    specs = {**fit.parameter_specs, EXPANSION_PARAMETER: link.expansion_prior(spec)}
    return replace(
        fit,
        reason=f"{fit.reason}; k_exp prior median x{link.expansion_scale:.3g} "
        f"from {link.source}",
        map_z=z,
        parameters=dict(zip(graph.parameter_names, map(float, natural))),
        parameter_specs=specs,
    )


def _spec(graph: ModelGraph) -> Parameter:
    return dict(zip(graph.parameter_names, graph.parameter_specs))[EXPANSION_PARAMETER]


def explain(link: FateLink) -> list[str]:
    """Readable lines for a report: what the fates set and why.

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
        *link.notes,
    ]


def _thousands(count: int) -> str:
    # digits grouped by a plain space: 2 000, 10 000
    return f"{int(count):,}".replace(",", " ")
