"""CAR T product manufacturing: from leukapheresis to the infused product.

A graph node (:class:`cartwin.graph.spec.ScaleModel`) for the product scale,
and functions for the decisions before infusion: will the culture reach the
target dose, and when will the product be ready?

Culture model (days since the start of culture; every form is an assumption)::

    N0      = min(CD3 x viability, seed_cap)          viable T cells seeded
    N(t)    = N0                                       t <= lag (activation)
    N(t)    = K N0 e^(r s) / (K + N0 (e^(r s) - 1))    s = t - lag > 0 (logistic)
    f_M(t)  = f_M0 e^(-k_diff s)                       memory-like share
    CAR+(t) = eta N(t)                                 transduced cells

Memory-like (naive, stem-cell memory, central memory) and effector-like
cells expand at the same rate; memory-like cells differentiate to
effector-like at ``k_diff``. At harvest (``culture_days``) the product's
memory share ``f_M`` is the coupling ``product_memory_fraction`` that the CAR
T model reads as the memory share of the infused cells.

Assumptions (each a choice, not a published fact)
-------------------------------------------------
1. Exponential phase doubling time 1 d (``r`` = 0.69/d, log-SD 0.25), lag
   2 d (activation, transduction), capacity ``K`` 2e10 cells, seeding cap
   1e8 viable T cells; transduction efficiency ``eta`` 0.5 (log-SD 0.3).
2. ``k_diff`` 0.1/d (log-SD 0.5): a 6-day culture after a 2-day lag keeps
   about 2/3 of the seeded memory-like share.
3. The CD4/CD8 ratio does not change expansion (no source found); it passes
   to the product unchanged (``product_cd4_fraction``).
4. When not known: viability 0.9, memory-like share 0.4, CD4/CD8 ratio 1.5.
5. Vein-to-vein time = culture days + release testing + logistics (shipping
   both ways, scheduling), release and logistics log-normal with medians 8
   and 3 days (log-SD 0.3 each); a culture that misses the target dose is
   manufactured once more (another full vein-to-vein time). With the
   axi-cel process (6 culture days) the typical median is 17 days.

Published numbers relied on (not in ``reference/clinical-facts.md``; [U],
as recalled, verify before using as test oracles):

- axicabtagene ciloleucel target dose 2 x 10^6 CAR-positive viable T cells
  per kg, at most 2 x 10^8 (US prescribing information);
- ZUMA-1 (Neelapu 2017, doi:10.1056/NEJMoa1707447): product manufactured for
  110 of 111 enrolled patients (99%); median 17 days from leukapheresis to
  delivery of the product to the treatment site. The culture and release
  medians of assumption 5 are chosen so that the typical patient matches it.

Known limits
------------
- No patient data inform the culture parameters: the model is a prior
  (population) model with covariates, not fitted to any manufacturing record.
- Failure other than too few cells (sterility, potency, out-of-specification
  release tests) is not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import DataError, ModelSpecificationError
from cartwin.graph.spec import Coupling, Parameter, State, check_model

configure_jax()

_ASSUMED = "assumption (cartwin.models.manufacturing): "

#: Culture and release parameters (see module assumptions).
MANUFACTURING_PARAMETERS = (
    Parameter(
        "growth_rate",
        "/d",
        math.log(2.0),
        0.25,
        0.05,
        3.0,
        _ASSUMED + "doubling time 1 d in the exponential phase",
    ),
    Parameter(
        "lag_days", "d", 2.0, 0.2, 0.2, 8.0, _ASSUMED + "activation/transduction"
    ),
    Parameter(
        "capacity", "{cells}", 2e10, 0.5, 1e8, 1e12, _ASSUMED + "culture capacity"
    ),
    Parameter(
        "seed_cap",
        "{cells}",
        1e8,
        0.0,
        source=_ASSUMED + "viable T cells seeded at most",
    ),
    Parameter("transduction", "1", 0.5, 0.3, 0.01, 1.0, _ASSUMED + "CAR+ share"),
    Parameter(
        "k_diff", "/d", 0.1, 0.5, 1e-4, 2.0, _ASSUMED + "memory -> effector-like"
    ),
    Parameter("release_days", "d", 8.0, 0.3, 1.0, 60.0, _ASSUMED + "release testing"),
    Parameter(
        "logistics_days", "d", 3.0, 0.3, 0.5, 30.0, _ASSUMED + "shipping, scheduling"
    ),
)

#: Values used when a leukapheresis characteristic is unknown (assumption 4).
DEFAULT_VIABILITY = 0.9
DEFAULT_MEMORY_FRACTION = 0.4
DEFAULT_CD4_CD8_RATIO = 1.5


@dataclass(frozen=True)
class Leukapheresis:
    """What the apheresis product tells about the starting material.

    Attributes
    ----------
    cd3_cells : float
        CD3+ T cells collected, cells (> 0).
    viability : float or None
        Viable share of the cells, in (0, 1].
    cd4_cd8_ratio : float or None
        CD4+/CD8+ ratio of the T cells, > 0.
    memory_fraction : float or None
        Naive + stem-cell memory + central memory share of the T cells, (0, 1).
    weight_kg : float
        Patient's weight, kg (> 0), for doses per kg.
    """

    cd3_cells: float
    viability: float | None = None
    cd4_cd8_ratio: float | None = None
    memory_fraction: float | None = None
    weight_kg: float = 70.0

    def __post_init__(self) -> None:
        checks = {
            "cd3_cells": (self.cd3_cells, 0.0, math.inf),
            "viability": (self.viability, 0.0, 1.0),
            "cd4_cd8_ratio": (self.cd4_cd8_ratio, 0.0, math.inf),
            "memory_fraction": (self.memory_fraction, 0.0, 1.0),
            "weight_kg": (self.weight_kg, 0.0, 500.0),
        }
        for name, (value, low, high) in checks.items():
            if value is not None and not (low < value <= high and math.isfinite(value)):
                raise DataError(
                    f"Leukapheresis.{name} = {value!r} is outside ({low}, {high}]"
                )

    def covariates(self) -> dict[str, float]:
        """Covariates for :meth:`ManufacturingModel.initial_state` (defaults filled)."""
        return {
            "leukapheresis_cd3_cells": self.cd3_cells,
            "leukapheresis_viability": _or(self.viability, DEFAULT_VIABILITY),
            "leukapheresis_memory_fraction": _or(
                self.memory_fraction, DEFAULT_MEMORY_FRACTION
            ),
            "leukapheresis_cd4_cd8_ratio": _or(
                self.cd4_cd8_ratio, DEFAULT_CD4_CD8_RATIO
            ),
        }


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass(frozen=True)
class Process:
    """A manufacturing process and its product's dose specification.

    Attributes
    ----------
    product : str
        Product name.
    culture_days : float
        Planned days from culture start to harvest.
    target_per_kg : float
        Target dose, CAR+ viable T cells per kg.
    max_cells : float
        Largest dose, CAR+ cells.
    """

    product: str
    culture_days: float
    target_per_kg: float
    max_cells: float = math.inf

    def target_cells(self, weight_kg: float) -> float:
        """Target dose in CAR+ cells for a patient of ``weight_kg``."""
        return min(self.target_per_kg * weight_kg, self.max_cells)


#: Axi-cel: 2e6 CAR+ cells/kg, at most 2e8 (label, [U]); 6 culture days (assumption).
AXI_CEL_PROCESS = Process("axicabtagene ciloleucel", 6.0, 2e6, 2e8)

#: CD3+ cells assumed collected when the count is unknown (assumption 4).
DEFAULT_CD3_CELLS = 5e9

#: ZUMA-1 median days from leukapheresis to product delivery ([U], see module).
ZUMA1_VEIN_TO_VEIN_DAYS = 17.0


def culture(
    params: Mapping[str, Any], covariates: Mapping[str, Any], t_days: Any
) -> tuple[Any, Any]:
    """Viable T cells and memory-like share after ``t_days`` of culture.

    Parameters
    ----------
    params : mapping
        :data:`MANUFACTURING_PARAMETERS` by name (arrays broadcast).
    covariates : mapping
        ``leukapheresis_cd3_cells`` (cells), ``leukapheresis_viability``,
        ``leukapheresis_memory_fraction``; missing ones take the defaults.
    t_days : array
        Days since culture start, >= 0.

    Returns
    -------
    total : jax.Array
        Viable T cells in culture.
    memory_fraction : jax.Array
        Memory-like share of them.
    """
    seeded = jnp.minimum(
        covariates.get("leukapheresis_cd3_cells", DEFAULT_CD3_CELLS)
        * covariates.get("leukapheresis_viability", DEFAULT_VIABILITY),
        params["seed_cap"],
    )
    since_lag = jnp.maximum(jnp.asarray(t_days) - params["lag_days"], 0.0)

    # logistic growth after the lag, written to avoid overflow of e^(r s)
    decay = jnp.exp(-params["growth_rate"] * since_lag)
    capacity = params["capacity"]
    total = capacity * seeded / (capacity * decay + seeded * (1.0 - decay))

    # memory-like cells differentiate while everything expands alike
    start = covariates.get("leukapheresis_memory_fraction", DEFAULT_MEMORY_FRACTION)
    return total, start * jnp.exp(-params["k_diff"] * since_lag)


@dataclass(frozen=True)
class ManufacturingModel:
    """The product as a graph node: its composition is fixed at infusion.

    States are the CAR+ CD4 and CD8 cells, each memory-like or effector-like,
    harvested after :attr:`Process.culture_days`; they do not change after
    infusion (``rhs`` is zero). Output ``product_memory_fraction`` is their
    memory-like share, read by the CAR T model; ``product_cd4_fraction`` is
    the CD4 share (assumption 3). Covariates as
    :meth:`Leukapheresis.covariates`; missing ones take the defaults.
    """

    process: Process = AXI_CEL_PROCESS
    name: str = "manufacturing"
    version: str = "1.0"
    references: tuple[str, ...] = ("doi:10.1056/NEJMoa1707447",)
    parameters: tuple[Parameter, ...] = MANUFACTURING_PARAMETERS
    states: tuple[State, ...] = tuple(
        State(
            f"{subset}_{kind}",
            "{cells}",
            description=f"CAR+ {subset.upper()} {kind}-like",
        )
        for subset in ("cd4", "cd8")
        for kind in ("memory", "effector")
    )
    observables: tuple = ()
    inputs: tuple[Coupling, ...] = ()
    outputs: tuple[Coupling, ...] = (
        Coupling("product_memory_fraction", "1", "memory-like share of the product"),
        Coupling("product_cd4_fraction", "1", "CD4+ share of the product"),
    )

    def __post_init__(self) -> None:
        check_model(self)

    def initial_state(
        self, params: Mapping[str, Any], covariates: Mapping[str, Any]
    ) -> Any:
        """CAR+ cells at harvest: CD4 memory, CD4 effector, CD8 memory, CD8 effector."""
        total, memory = culture(params, covariates, self.process.culture_days)
        car = params["transduction"] * total
        ratio = covariates.get("leukapheresis_cd4_cd8_ratio", DEFAULT_CD4_CD8_RATIO)
        cd4 = ratio / (1.0 + ratio)
        cells = [
            car * share * kind
            for share in (cd4, 1.0 - cd4)
            for kind in (memory, 1.0 - memory)
        ]
        return jnp.stack(jnp.broadcast_arrays(*cells), axis=-1)

    def rhs(
        self, t: Any, y: Any, params: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Any:
        """No change after infusion."""
        return jnp.zeros_like(y)

    def couplings(self, t: Any, y: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """Memory-like share and CD4 share of the product."""
        total = jnp.sum(y, axis=-1)
        return {
            "product_memory_fraction": (y[..., 0] + y[..., 2]) / total,
            "product_cd4_fraction": (y[..., 0] + y[..., 1]) / total,
        }

    def observe(self, quantity: str, t: Any, y: Any, params: Mapping[str, Any]) -> Any:
        """The product model explains no patient observation."""
        raise ModelSpecificationError(
            f"model {self.name} has no observable {quantity!r}"
        )


# -- decisions before infusion ------------------------------------------------


def sample_parameters(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` draws from the log-normal priors, clipped to bounds."""
    return {
        p.name: np.clip(
            p.median * np.exp(p.log_sd * rng.standard_normal(n)), p.lower, p.upper
        )
        for p in MANUFACTURING_PARAMETERS
    }


@dataclass(frozen=True)
class ManufacturingOutlook:
    """What the leukapheresis predicts for the product (prior draws).

    Attributes
    ----------
    probability_target : float
        Probability that the harvest holds at least the target CAR+ dose.
    car_cells_median, car_cells_interval : float, tuple
        CAR+ cells at harvest: median and 90% interval.
    memory_fraction_median : float
        Memory-like share of the product (median over draws).
    vein_to_vein_median, vein_to_vein_interval : float, tuple
        Days from leukapheresis to the product ready at the site: median and
        90% interval (a missed target adds another manufacturing run).
    target_cells : float
        Target dose for this patient, CAR+ cells.
    n_draws : int
        Number of prior draws.
    """

    probability_target: float
    car_cells_median: float
    car_cells_interval: tuple[float, float]
    memory_fraction_median: float
    vein_to_vein_median: float
    vein_to_vein_interval: tuple[float, float]
    target_cells: float
    n_draws: int


def forecast_manufacturing(
    leukapheresis: Leukapheresis,
    process: Process = AXI_CEL_PROCESS,
    *,
    rng: np.random.Generator,
    n_draws: int = 20_000,
) -> ManufacturingOutlook:
    """Probability of the target dose and vein-to-vein time from leukapheresis.

    Parameters
    ----------
    leukapheresis : Leukapheresis
        Starting material and the patient's weight.
    process : Process
        Culture days and dose specification.
    rng : numpy.random.Generator
        Source of the prior draws (seed it for reproducible numbers).
    n_draws : int
        Monte Carlo draws; the probability's SD is at most 0.5/sqrt(n).

    Returns
    -------
    ManufacturingOutlook
    """
    params = sample_parameters(rng, n_draws)
    covariates = leukapheresis.covariates()
    total, memory = culture(params, covariates, process.culture_days)
    car = np.asarray(params["transduction"] * total)
    target = process.target_cells(leukapheresis.weight_kg)
    reached = car >= target

    # one run: culture + release + logistics; a missed target runs again
    first = process.culture_days + params["release_days"] + params["logistics_days"]
    again = sample_parameters(rng, n_draws)
    second = process.culture_days + again["release_days"] + again["logistics_days"]
    vein_to_vein = np.where(reached, first, first + second)
    return ManufacturingOutlook(
        probability_target=float(np.mean(reached)),
        car_cells_median=float(np.median(car)),
        car_cells_interval=_interval(car),
        memory_fraction_median=float(np.median(np.asarray(memory))),
        vein_to_vein_median=float(np.median(vein_to_vein)),
        vein_to_vein_interval=_interval(vein_to_vein),
        target_cells=target,
        n_draws=n_draws,
    )


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, (0.05, 0.95))
    return float(low), float(high)
