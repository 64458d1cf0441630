"""Run MaBoSS models with the cmaboss engine.

:func:`simulate` builds a ``cmaboss`` simulation from the model's own ``.bnd``
and ``.cfg`` text, applies the requested settings, variables, initial states
and reported nodes through cmaboss' API, runs it and returns a
:class:`LogicResult`: state probability trajectories (with MaBoSS' standard
errors) and node probabilities. A run with the same model, settings and seed
as a direct ``cmaboss`` run of the same files gives identical numbers.

MaBoSS simulates continuous-time Markov dynamics on Boolean states with
Gillespie's algorithm [1]_ [2]_. Times are in the model's own time unit. Each
row of a trajectory is the probability averaged over ``[t, t + time_tick)``,
as MaBoSS reports it; ``final_only=True`` gives instead the exact
distribution of the sampled trajectories at ``max_time``.

Seeds
-----
A seed sets ``seed_pseudorandom`` and switches off MaBoSS' physical random
generator (``use_physrandgen``), which ignores seeds. MaBoSS derives the
generator of each trajectory from the seed, so runs whose seeds differ by less
than ``sample_count`` share trajectories and are **not independent**
(measured here: seeds 1, 2 and 3 gave the same final distribution to 3
decimals on 2000 trajectories). Use :func:`replicate_seeds` for independent
replicates.

Known limits
------------
- Models of more than 1024 nodes are refused (cmaboss' largest build).
- ``statdist`` (stationary-distribution clustering) outputs are not exposed.

References
----------
.. [1] Stoll G, Viara E, Barillot E, Calzone L. Continuous time Boolean
   modeling for biological signaling: application of Gillespie algorithm.
   BMC Syst Biol 2012;6:116. doi:10.1186/1752-0509-6-116
.. [2] Stoll G, Caron B, Viara E, et al. MaBoSS 2.0: an environment for
   stochastic Boolean modeling. Bioinformatics 2017;33(14):2226-2228.
   doi:10.1093/bioinformatics/btx123
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np

from cartwin.errors import ModelSpecificationError
from cartwin.logic.errors import SimulationError
from cartwin.logic.network import InitialCondition, LogicalModel

log = logging.getLogger(__name__)

#: cmaboss builds by largest node count they accept.
_BUILDS = (
    (64, "cmaboss"),
    (128, "cmaboss_128n"),
    (256, "cmaboss_256n"),
    (512, "cmaboss_512n"),
    (1024, "cmaboss_1024n"),
)
NIL = "<nil>"

InitialStates = Mapping[str, float] | Iterable[InitialCondition]


@dataclass(frozen=True)
class SimulationSettings:
    """Run settings that override the model's ``.cfg``; None keeps the file's.

    Attributes
    ----------
    seed : int or None
        Pseudo-random seed (>= 0); also switches off the physical generator.
    sample_count : int or None
        Number of trajectories (>= 1).
    max_time, time_tick : float or None
        Horizon and output step, in the model's time unit (> 0).
    thread_count : int or None
        Threads used by cmaboss (>= 1); results do not depend on it.
    """

    seed: int | None = None
    sample_count: int | None = None
    max_time: float | None = None
    time_tick: float | None = None
    thread_count: int | None = None

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0)
        _check_int("sample_count", self.sample_count, 1)
        _check_int("thread_count", self.thread_count, 1)
        for name in ("max_time", "time_tick"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ModelSpecificationError(
                    f"simulation setting {name}={value!r}; must be a finite number > 0"
                )

    def as_cmaboss(self) -> dict[str, Any]:
        """The settings as cmaboss ``update_parameters`` keywords."""
        out: dict[str, Any] = {}
        if self.seed is not None:
            out.update(seed_pseudorandom=self.seed, use_physrandgen=False)
        for name in ("sample_count", "max_time", "time_tick", "thread_count"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def _check_int(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ModelSpecificationError(
            f"simulation setting {name}={value!r}; need an int"
        )
    if value < minimum:
        raise ModelSpecificationError(
            f"simulation setting {name}={value}; must be >= {minimum}"
        )


def replicate_seeds(seed: int, count: int, sample_count: int) -> tuple[int, ...]:
    """Seeds for ``count`` statistically independent replicate runs.

    Seeds are spaced by ``sample_count`` times a large odd factor, so no two
    replicates share a trajectory generator (see the module notes).
    """
    spacing = int(sample_count) * 1_000_003
    return tuple(int(seed) + k * spacing for k in range(int(count)))


@dataclass(frozen=True)
class LogicResult:
    """Outcome of one MaBoSS run.

    Attributes
    ----------
    model_name : str
        Name of the simulated model.
    times : ndarray, shape (T,)
        Start of each output window (model time unit).
    states : tuple of frozenset of str
        The reported states (sets of active visible nodes), sorted by label.
    probabilities : ndarray, shape (T, S)
        Probability of each state in each window.
    standard_errors : ndarray, shape (T, S), or None
        MaBoSS' standard errors (None for ``final_only`` runs).
    nodes : tuple of str
        Visible nodes.
    node_probabilities : ndarray, shape (T, N)
        Probability that each visible node is active.
    settings : Mapping[str, Any]
        The run settings cmaboss used (after overrides).
    final_only : bool
        True when only the state at ``max_time`` was kept.
    labels : tuple of str
        Label of each state: active visible nodes in model order joined by
        ``" -- "``, or ``"<nil>"`` for the state with none active.
    """

    model_name: str
    times: np.ndarray
    states: tuple[frozenset[str], ...]
    probabilities: np.ndarray
    standard_errors: np.ndarray | None
    nodes: tuple[str, ...]
    node_probabilities: np.ndarray
    settings: Mapping[str, Any]
    final_only: bool
    labels: tuple[str, ...] = ()

    def final_distribution(self) -> dict[str, float]:
        """Probability of each state label (``A -- B``; ``<nil>``) at the end."""
        return {lab: float(p) for lab, p in zip(self.labels, self.probabilities[-1])}

    def final_node_probabilities(self) -> dict[str, float]:
        """Probability that each visible node is active at the end."""
        return {n: float(p) for n, p in zip(self.nodes, self.node_probabilities[-1])}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: trajectories, final distribution, settings."""
        return {
            "model": self.model_name,
            "settings": dict(self.settings),
            "times": self.times.tolist(),
            "states": list(self.labels),
            "probabilities": self.probabilities.tolist(),
            "final_distribution": self.final_distribution(),
            "final_node_probabilities": self.final_node_probabilities(),
        }


def simulate(
    model: LogicalModel,
    *,
    settings: SimulationSettings | None = None,
    initial: InitialStates | None = None,
    parameters: Mapping[str, float] | None = None,
    outputs: Iterable[str] | None = None,
    final_only: bool = False,
) -> LogicResult:
    """Run ``model`` with cmaboss and collect its probability trajectories.

    Parameters
    ----------
    model : LogicalModel
        The model to run.
    settings : SimulationSettings, optional
        Overrides of the ``.cfg`` run settings.
    initial : mapping node -> probability of 1, or InitialCondition list
        Initial states replacing the model's for those nodes. Other nodes of a
        joint model ``istate`` keep their marginal distribution.
    parameters : mapping, optional
        New values of ``$variables`` (name with or without ``$``).
    outputs : iterable of str, optional
        Nodes to report; the others become internal.
    final_only : bool
        Keep only the exact distribution at ``max_time`` (faster).

    Returns
    -------
    LogicResult

    Raises
    ------
    ModelSpecificationError
        Unknown node or variable, non-finite value, bad setting.
    SimulationError
        cmaboss refused the model or the run.
    """
    settings = settings or SimulationSettings()
    module = _module_for(model)
    sim = _build(module, model)
    sim.update_parameters(**settings.as_cmaboss())
    _set_parameters(sim, model, parameters or {})
    _set_initial(sim, model, _conditions(model, initial))
    if outputs is not None:
        sim.network.set_output(_checked_nodes(model, outputs, "outputs"))
    try:
        raw = sim.run(only_last_state=final_only)
    except module.BNException as exc:
        raise SimulationError(
            f"cmaboss failed on model {model.name!r}: {exc}"
        ) from None
    used = MappingProxyType(
        {k: v for k, v in sim.param.items() if not k.startswith("$")}
    )
    return _collect(model, raw, used, final_only)


def _module_for(model: LogicalModel) -> ModuleType:
    count = len(model.nodes)
    for limit, name in _BUILDS:
        if count <= limit:
            return importlib.import_module(name)
    raise SimulationError(
        f"model {model.name!r} has {count} nodes; cmaboss supports at most 1024"
    )


def _build(module: ModuleType, model: LogicalModel) -> Any:
    try:
        return module.MaBoSSSim(network_str=model.bnd_text, config_str=model.cfg_text)
    except module.BNException as exc:
        raise SimulationError(
            f"cmaboss refused model {model.name!r} ({model.bnd_source}, "
            f"{model.cfg_source}): {exc}"
        ) from None


def _set_parameters(sim: Any, model: LogicalModel, values: Mapping[str, float]) -> None:
    checked: dict[str, float] = {}
    for raw_name, value in values.items():
        name = raw_name.removeprefix("$")
        if name not in model.variables:
            raise ModelSpecificationError(
                f"model {model.name!r} has no variable ${name}; variables: "
                f"{', '.join('$' + v for v in model.variables) or 'none'}"
            )
        if not math.isfinite(float(value)):
            raise ModelSpecificationError(f"variable ${name}={value!r} is not finite")
        checked["$" + name] = float(value)
    if checked:
        sim.update_parameters(**checked)


def _checked_nodes(model: LogicalModel, names: Iterable[str], what: str) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in model.node_names]
    if unknown:
        raise ModelSpecificationError(
            f"{what}: model {model.name!r} has no node(s) {', '.join(unknown)}"
        )
    return names


def _conditions(
    model: LogicalModel, initial: InitialStates | None
) -> tuple[InitialCondition, ...]:
    if initial is None:
        return ()
    if isinstance(initial, Mapping):
        conditions = tuple(InitialCondition.single(n, p) for n, p in initial.items())
    else:
        conditions = tuple(initial)
    for condition in conditions:
        _checked_nodes(model, condition.nodes, "initial states")
    return conditions


def _set_initial(
    sim: Any, model: LogicalModel, overrides: tuple[InitialCondition, ...]
) -> None:
    if not overrides:
        return
    # cmaboss drops a whole joint istate when one of its nodes is set again,
    # so re-set the model's remaining nodes (marginalised) first.
    replaced = frozenset(n for c in overrides for n in c.nodes)
    for condition in model.initial:
        if replaced & set(condition.nodes):
            rest = condition.without(replaced)
            if rest is not None:
                sim.network.set_istate(*rest.as_cmaboss())
    for condition in overrides:
        sim.network.set_istate(*condition.as_cmaboss())


def _collect(
    model: LogicalModel, raw: Any, used: Mapping[str, Any], final_only: bool
) -> LogicResult:
    if final_only:
        probs, times, labels = raw.get_last_probtraj()[:3]
        node_probs, _, nodes = raw.get_last_nodes_probtraj()[:3]
        errors = None
    else:
        probs, times, labels, errors = raw.get_probtraj()
        node_probs, _, nodes = raw.get_nodes_probtraj()[:3]
    states = [_state(label) for label in labels]
    order = {n: i for i, n in enumerate(model.node_names)}
    names = [_label(s, order) for s in states]
    perm = sorted(range(len(names)), key=names.__getitem__)
    return LogicResult(
        model_name=model.name,
        times=_frozen(np.asarray(times, dtype=float)),
        states=tuple(states[i] for i in perm),
        probabilities=_frozen(np.asarray(probs, dtype=float)[:, perm]),
        standard_errors=None
        if errors is None
        else _frozen(np.asarray(errors)[:, perm]),
        nodes=tuple(nodes),
        node_probabilities=_frozen(np.asarray(node_probs, dtype=float)),
        settings=used,
        final_only=final_only,
        labels=tuple(names[i] for i in perm),
    )


def _state(label: str) -> frozenset[str]:
    return frozenset() if label == NIL else frozenset(label.split(" -- "))


def _label(state: frozenset[str], order: Mapping[str, int]) -> str:
    return " -- ".join(sorted(state, key=order.__getitem__)) if state else NIL


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
