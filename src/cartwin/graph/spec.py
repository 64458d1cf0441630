"""What a scale model declares so that a model graph can join it.

A model of one biological scale (CAR T / tumour, cytokines, neutrophils,
manufacturing, an imported SBML model, ...) declares

* its **parameters**, each with a unit, bounds and a log-normal population
  prior (median and SD of the natural log), and the source of the numbers;
* its **states**, each with a unit and a non-negativity flag;
* the **observables** it can explain, named by cartwin quantity (see
  ``data/codes/quantities.csv``), each with an error model;
* the **coupling variables** it reads (``inputs``) and writes (``outputs``).
  Outputs are algebraic functions of the model's own states and parameters,
  so a graph can evaluate every output first and then every right-hand side,
  without algebraic loops. Exogenous inputs (drug doses, lymphodepletion, a
  scenario's changes) are coupling variables that no model writes; the graph
  takes them from the patient's events or the scenario.

The right-hand side, initial state, outputs and observation functions are pure
JAX functions of ``(t, y, params, inputs)``, where ``params`` and ``inputs`` are
mappings from name to scalar, so that the graph can differentiate, vectorise
and compile the whole system. Time is in days since infusion throughout.

Two optional attributes are used when a model has them: ``observed_from``
(quantity -> first study day from which the model explains it, e.g. CAR T
levels only after infusion) and ``forecast_summaries(t_days, draws,
origin_day)`` (model-specific derived endpoints for reports).

This module holds only declarations; :mod:`cartwin.graph.graph` joins them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cartwin.errors import ModelSpecificationError

#: Error models an observable may use.
ERROR_MODELS = ("log_additive", "additive", "proportional")


@dataclass(frozen=True)
class Parameter:
    """One model parameter with its unit, bounds and population prior.

    Attributes
    ----------
    name : str
        Unique within its model; the graph prefixes it with the model name.
    unit : str
        UCUM unit (``"1/d"``, ``"{cells}"``, ``"pg/mL"``, ``"1"``).
    median : float
        Median of the log-normal population prior (the typical value).
    log_sd : float
        SD of the natural log of the parameter in the population (0 = fixed).
    lower, upper : float
        Hard bounds of the natural-scale value (> 0 for log-normal priors).
    source : str
        Where the value comes from (paper with DOI, or "assumption: ...").
    """

    name: str
    unit: str
    median: float
    log_sd: float
    lower: float = 0.0
    upper: float = math.inf
    source: str = ""

    def __post_init__(self) -> None:
        if not self.median > 0 or not math.isfinite(self.median):
            raise ModelSpecificationError(
                f"parameter {self.name}: median must be positive and finite, "
                f"got {self.median}"
            )
        if self.log_sd < 0 or not math.isfinite(self.log_sd):
            raise ModelSpecificationError(
                f"parameter {self.name}: log_sd must be >= 0, got {self.log_sd}"
            )
        if not self.lower <= self.median <= self.upper:
            raise ModelSpecificationError(
                f"parameter {self.name}: median {self.median} outside bounds "
                f"[{self.lower}, {self.upper}]"
            )

    @property
    def fixed(self) -> bool:
        """Whether the parameter is held at its median during calibration."""
        return self.log_sd == 0.0


@dataclass(frozen=True)
class State:
    """One state variable of a model."""

    name: str
    unit: str
    non_negative: bool = True
    description: str = ""


@dataclass(frozen=True)
class Observable:
    """A quantity a model can explain, with its error model.

    Attributes
    ----------
    quantity : str
        cartwin quantity key (``"cart_flow"``, ``"il6"``, ``"anc"``, ``"ldh"``).
    unit : str
        Canonical unit of the quantity (the prediction is in this unit).
    error_model : str
        One of :data:`ERROR_MODELS`. ``log_additive``: log(y) ~ N(log f, sigma).
    sigma : float
        Residual SD on the scale of the error model.
    """

    quantity: str
    unit: str
    error_model: str = "log_additive"
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.error_model not in ERROR_MODELS:
            raise ModelSpecificationError(
                f"observable {self.quantity}: error model {self.error_model!r} "
                f"not in {ERROR_MODELS}"
            )
        if not self.sigma > 0:
            raise ModelSpecificationError(
                f"observable {self.quantity}: sigma must be > 0, got {self.sigma}"
            )


@dataclass(frozen=True)
class Coupling:
    """A coupling variable a model reads or writes (a scalar at each instant)."""

    name: str
    unit: str
    description: str = ""


Scalars = Mapping[str, Any]


@runtime_checkable
class ScaleModel(Protocol):
    """The interface every node of a model graph implements.

    All functions are pure and JAX-traceable. ``params`` maps this model's own
    parameter names to values on the natural scale; ``inputs`` maps the
    coupling names in :attr:`inputs` to scalars; ``covariates`` holds
    patient facts (dose in cells, baseline labs, ...) known before day 0.
    """

    name: str
    version: str
    references: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    states: tuple[State, ...]
    observables: tuple[Observable, ...]
    inputs: tuple[Coupling, ...]
    outputs: tuple[Coupling, ...]

    def initial_state(self, params: Scalars, covariates: Scalars) -> Any:
        """State vector at t = 0 (array of len(states))."""

    def rhs(self, t: Any, y: Any, params: Scalars, inputs: Scalars) -> Any:
        """Time derivative of the state vector, per day."""

    def couplings(self, t: Any, y: Any, params: Scalars) -> dict[str, Any]:
        """Values of every coupling in :attr:`outputs`."""

    def observe(self, quantity: str, t: Any, y: Any, params: Scalars) -> Any:
        """Predicted value of an observable in its canonical unit."""


@dataclass(frozen=True)
class Edge:
    """A declared link: ``source`` model's output feeds ``target``'s input."""

    source: str
    target: str
    coupling: str


@dataclass(frozen=True)
class ModelCard:
    """Summary of a model for reports and provenance (no functions)."""

    name: str
    version: str
    references: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    states: tuple[State, ...]
    observables: tuple[Observable, ...]
    inputs: tuple[Coupling, ...]
    outputs: tuple[Coupling, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def model_card(model: ScaleModel) -> ModelCard:
    """Declarations of ``model`` without its functions."""
    return ModelCard(
        name=model.name,
        version=model.version,
        references=tuple(model.references),
        parameters=tuple(model.parameters),
        states=tuple(model.states),
        observables=tuple(model.observables),
        inputs=tuple(model.inputs),
        outputs=tuple(model.outputs),
    )


def check_model(model: ScaleModel) -> None:
    """Raise :class:`ModelSpecificationError` when declarations are inconsistent."""
    for kind, items in (
        ("parameter", model.parameters),
        ("state", model.states),
        ("output", model.outputs),
        ("input", model.inputs),
    ):
        names = [item.name for item in items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ModelSpecificationError(
                f"model {model.name}: duplicate {kind} names {duplicates}"
            )
    overlap = {c.name for c in model.inputs} & {c.name for c in model.outputs}
    if overlap:
        raise ModelSpecificationError(
            f"model {model.name}: couplings both read and written: {sorted(overlap)}"
        )


ObserveFn = Callable[[str, Any, Any, Scalars], Any]
