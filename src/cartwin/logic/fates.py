"""The shipped T-cell fate model, its scenarios and the fate read-out.

:func:`load_tcell_model` loads ``cartwin/data/logic/tcell_fate.bnd`` and
``.cfg`` (rules and references are in the ``.bnd`` file). A
:class:`Stimulation` sets its inputs: antigen (none, acute or chronic), the
CAR's co-stimulatory domain (none, CD28, 4-1BB or both), cytokines and
PD-L1. :func:`fate_distribution` turns a simulated final state distribution
into fractions per fate; :func:`simulate_fates` does both in one call and
returns a plain ``dict`` so that another model (the CAR T / tumour model
graph) can read it without knowing this package.

Fates
-----
A final state is assigned one fate by priority (:class:`FateRules`):
``apoptotic`` (node Apoptosis) > ``exhausted`` (Exhausted) > ``effector``
(Effector) > ``memory_like`` (Memory) > ``quiescent`` (none of them: naive,
resting or anergic). A cell that is both effector and memory-like at the end
counts as effector.

Known limits
------------
- Rates are relative and uncalibrated, so fractions are qualitative: they
  rank scenarios and patients, they are not measured proportions.
- No FAS/FASL activation-induced death, no Treg or CD4 help, no tonic
  4-1BB toxicity (Gomes-Silva 2017, doi:10.1016/j.celrep.2017.09.015).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from cartwin.errors import ModelSpecificationError
from cartwin.logic.engine import LogicResult, SimulationSettings, simulate
from cartwin.logic.maboss_io import load_maboss
from cartwin.logic.network import InitialCondition, LogicalModel

FATES = ("effector", "memory_like", "exhausted", "apoptotic", "quiescent")
_COSTIM = {"none": (0, 0), "CD28": (1, 0), "4-1BB": (0, 1), "both": (1, 1)}
_ANTIGEN = ("none", "acute", "chronic")


def tcell_model_paths() -> tuple[Path, Path]:
    """Paths of the shipped ``tcell_fate.bnd`` and ``tcell_fate.cfg``."""
    folder = resources.files("cartwin.data.logic")
    return Path(str(folder / "tcell_fate.bnd")), Path(str(folder / "tcell_fate.cfg"))


@functools.cache
def load_tcell_model() -> LogicalModel:
    """Load the shipped T-cell fate model (see ``tcell_fate.bnd``).

    The model is immutable, so it is read once per process and shared.
    """
    bnd, cfg = tcell_model_paths()
    return load_maboss(bnd, cfg)


@dataclass(frozen=True)
class FateRules:
    """Priority list mapping a final state to one fate.

    Attributes
    ----------
    priority : tuple of (fate, node)
        The first fate whose node is active in a state wins.
    default : str
        Fate of a state with none of those nodes active.
    """

    priority: tuple[tuple[str, str], ...] = (
        ("apoptotic", "Apoptosis"),
        ("exhausted", "Exhausted"),
        ("effector", "Effector"),
        ("memory_like", "Memory"),
    )
    default: str = "quiescent"

    @property
    def fates(self) -> tuple[str, ...]:
        """All fates, in priority order, the default last."""
        return tuple(f for f, _ in self.priority) + (self.default,)

    def classify(self, state: frozenset[str]) -> str:
        """The fate of one state (a set of active nodes)."""
        for fate, node in self.priority:
            if node in state:
                return fate
        return self.default

    def check(self, model: LogicalModel) -> None:
        """Raise unless every fate node is a reported node of ``model``."""
        missing = [n for _, n in self.priority if n not in model.node_names]
        hidden = [n for _, n in self.priority if n in model.internal]
        if missing or hidden:
            raise ModelSpecificationError(
                f"model {model.name!r} cannot give fates: fate node(s) "
                f"{', '.join(missing + hidden)} missing or internal; need "
                f"{', '.join(n for _, n in self.priority)} as reported nodes"
            )


DEFAULT_FATES = FateRules()


def fate_distribution(
    result: LogicResult, rules: FateRules = DEFAULT_FATES
) -> dict[str, float]:
    """Fraction of simulated cells in each fate at the end of ``result``.

    Returns
    -------
    dict
        ``{fate: fraction}`` for every fate of ``rules`` (zeros included);
        the fractions sum to 1.
    """
    fractions = dict.fromkeys(rules.fates, 0.0)
    for state, prob in zip(result.states, result.probabilities[-1]):
        fractions[rules.classify(state)] += float(prob)
    return fractions


@dataclass(frozen=True)
class Stimulation:
    """Inputs of the T-cell fate model for one scenario.

    Attributes
    ----------
    antigen : {'none', 'acute', 'chronic'}
        No antigen; antigen cleared at ``antigen_clearance``; antigen that
        never goes away (tumour, tonic CAR signalling).
    costimulation : {'none', 'CD28', '4-1BB', 'both'}
        Co-stimulatory domain(s) of the CAR.
    il2, il7, il15, pdl1 : bool
        Exogenous IL-2, IL-7, IL-15; PD-L1 on the targets.
    antigen_clearance : float
        Rate of antigen loss for ``'acute'``, per model time unit (> 0).
    """

    antigen: Literal["none", "acute", "chronic"] = "chronic"
    costimulation: Literal["none", "CD28", "4-1BB", "both"] = "4-1BB"
    il2: bool = False
    il7: bool = True
    il15: bool = False
    pdl1: bool = True
    antigen_clearance: float = 0.1

    def __post_init__(self) -> None:
        if self.antigen not in _ANTIGEN:
            raise ModelSpecificationError(
                f"antigen={self.antigen!r}; allowed: {', '.join(_ANTIGEN)}"
            )
        if self.costimulation not in _COSTIM:
            raise ModelSpecificationError(
                f"costimulation={self.costimulation!r}; allowed: {', '.join(_COSTIM)}"
            )
        if not self.antigen_clearance > 0:
            raise ModelSpecificationError(
                f"antigen_clearance={self.antigen_clearance!r}; must be > 0"
            )

    def initial(self) -> dict[str, float]:
        """Initial values (probability of 1) of the model's input nodes."""
        cd28, bb = _COSTIM[self.costimulation]
        return {
            "Antigen": float(self.antigen != "none"),
            "CD28": float(cd28),
            "TNFRSF9": float(bb),
            "IL2": float(self.il2),
            "IL7": float(self.il7),
            "IL15": float(self.il15),
            "PDL1": float(self.pdl1),
        }

    def parameters(self) -> dict[str, float]:
        """Variable values: the antigen clearance rate (0 unless acute)."""
        acute = self.antigen == "acute"
        return {"antigen_clearance": self.antigen_clearance if acute else 0.0}


def simulate_fates(
    model: LogicalModel | None = None,
    *,
    stimulation: Stimulation | None = None,
    settings: SimulationSettings | None = None,
    initial: Mapping[str, float] | tuple[InitialCondition, ...] = (),
    parameters: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Simulate the T-cell model and return its fate distribution.

    Parameters
    ----------
    model : LogicalModel, optional
        Default: the shipped model (:func:`load_tcell_model`).
    stimulation : Stimulation, optional
        Scenario; default ``Stimulation()`` (chronic antigen, 4-1BB CAR).
    settings : SimulationSettings, optional
        Run settings (seed, sample count, horizon).
    initial : mapping or InitialCondition tuple
        Initial states of internal nodes (for example from
        :func:`cartwin.logic.personalise`); inputs come from ``stimulation``.
    parameters : mapping, optional
        Extra variable values (rates), applied after the scenario's.

    Returns
    -------
    dict
        ``{fate: fraction}``; the entry point for the CAR T / tumour model.
    """
    model = model or load_tcell_model()
    stimulation = stimulation or Stimulation()
    DEFAULT_FATES.check(model)
    conditions = _merge_initial(stimulation.initial(), initial)
    result = simulate(
        model,
        settings=settings,
        initial=conditions,
        parameters={**stimulation.parameters(), **(parameters or {})},
        final_only=True,
    )
    return fate_distribution(result)


def _merge_initial(
    inputs: Mapping[str, float],
    initial: Mapping[str, float] | tuple[InitialCondition, ...],
) -> tuple[InitialCondition, ...]:
    if isinstance(initial, Mapping):
        extra = tuple(InitialCondition.single(n, p) for n, p in initial.items())
    else:
        extra = tuple(initial)
    clash = {n for c in extra for n in c.nodes} & set(inputs)
    if clash:
        raise ModelSpecificationError(
            f"initial states set input node(s) {', '.join(sorted(clash))}; "
            "inputs are set by the Stimulation"
        )
    return tuple(InitialCondition.single(n, p) for n, p in inputs.items()) + extra
