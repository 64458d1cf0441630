"""The model graph: scale models joined by coupling names into one ODE system.

A :class:`ModelGraph` takes models that implement
:class:`cartwin.graph.spec.ScaleModel` and joins them by the names of their
coupling variables: an input of one model that another model lists as an
output is an internal link (an :class:`~cartwin.graph.spec.Edge`); an input
that no model writes is **exogenous** and is computed from the patient's
events or a scenario through the channels of :mod:`cartwin.graph.inputs`.
The joined right-hand side evaluates every model's outputs first, then every
model's derivative, so there are no algebraic loops. The state vector is the
models' states concatenated in model order; parameters are named
``"<model>.<parameter>"``.

The system is solved with diffrax [1]_ (Tsit5 by default, adaptive step with
a PID controller; discontinuities of the inputs, such as the start and end of
an infusion or a drug bolus, are passed as ``jump_ts`` so that the solver
steps exactly to them). Solving is compiled once per graph, solver kind and
input shape, and reused for other patients, scenarios and tolerances.

Stable API for other models
---------------------------
- Implement ``ScaleModel`` (``spec.py``). Optional extras the graph uses when
  present: ``observed_from`` (mapping quantity -> first study day the model
  explains it; earlier observations are ignored by the calibration) and
  ``forecast_summaries(t_days, draws, origin_day) -> dict`` (JSON-ready
  model-specific summaries of forecast draws, e.g. CRS grade probabilities).
- Exogenous inputs must be channels of :data:`cartwin.graph.inputs.CHANNELS`
  (``cart_infusion_rate``, ``ld_exposure``, ``bridging_exposure``,
  ``steroid_exposure``, ``toci_exposure``, ``product_memory_fraction``).
- Couplings written by cartwin's models: ``cart_total``, ``tumour_burden``,
  ``tumour_kill_rate``, ``normal_t_cells`` (CAR T / tumour) and
  ``il6_signal``, ``crp_level`` (cytokines).
- ``initial_state`` receives the covariates of :data:`COVARIATE_KEYS`
  (NaN when unknown). The initial state is the state at
  ``InputSchedule.t_start`` (<= 0: a week before the first bridging or
  lymphodepletion event), not at infusion; time is days since infusion.
- External model sources (:data:`EXTERNAL_SOURCES`): models that are not
  ODE nodes, such as the T-cell fate model of :mod:`cartwin.logic`, may be
  the source of a declared edge into a **constant** exogenous channel (the
  value is computed once, outside the ODE, and enters through the channel:
  ``Edge("logic.tcell_fates", "cart_tumour", "product_memory_fraction")``).
  The graph checks that the target reads the coupling, that no model writes
  it and that its channel is constant; :meth:`ModelGraph.describe` lists
  such edges under ``external_edges``. The value itself is set on the
  :class:`~cartwin.graph.inputs.InputSchedule` by the linking code
  (:func:`cartwin.graph.fates_link.apply_fate_link`).
- A graph for a patient: ``standard_graph(disease, extra_models=(...))``
  (extra models hashable, e.g. frozen dataclasses, so that the graph and its
  compiled programs are shared). New exogenous channels: register them with
  :func:`cartwin.graph.inputs.register_channel` before building the graph.
- Importing this module sets ``EQX_ON_ERROR=nan`` unless already set (see
  the comment at the imports): solver-internal errors become NaN, reported
  as a failed solve, and compiled programs can be cached on disk.

References
----------
.. [1] Kidger P. On Neural Differential Equations. PhD thesis, University of
   Oxford, 2021 (diffrax). arXiv:2202.02435
.. [2] Tsitouras Ch. Runge-Kutta pairs of order 5(4) satisfying only the
   first column simplifying assumption. Comput Math Appl 2011;62(2):770-775.
   doi:10.1016/j.camwa.2011.06.002
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Equinox (under diffrax) checks runtime errors with host callbacks by
# default; programs with callbacks are left out of JAX's persistent
# compilation cache. "nan" turns such errors into NaN (which the solve's
# ``ok`` flag reports) and lets compiled programs be cached. Set before
# equinox is first imported; a value the user set is kept.
os.environ.setdefault("EQX_ON_ERROR", "nan")

import itertools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import ModelSpecificationError
from cartwin.graph.inputs import CHANNELS, FAR_FUTURE_DAY, InputChannel, InputSchedule
from cartwin.graph.spec import (
    Edge,
    ModelCard,
    Parameter,
    ScaleModel,
    check_model,
    model_card,
)

configure_jax()

#: Source name of edges whose value comes from events or scenarios.
EXOGENOUS = "exogenous"

#: The T-cell fate model (:mod:`cartwin.logic`) as an external source.
FATE_SOURCE = "logic.tcell_fates"

#: Models outside the ODE that may feed constant exogenous channels through
#: declared edges (name -> description).
EXTERNAL_SOURCES: dict[str, str] = {
    FATE_SOURCE: (
        "T-cell fate distribution of the CAR T product (cartwin.logic, "
        "stochastic Boolean model personalised from single-cell data)"
    ),
}

#: Covariates passed to every ``initial_state`` (NaN when unknown).
COVARIATE_KEYS = ("body_weight_kg", "body_height_cm", "bsa_m2")

#: ODE solvers that :class:`SolverSettings` accepts.
SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "kvaerno5": diffrax.Kvaerno5,
}


@dataclass(frozen=True)
class SolverSettings:
    """Numerical settings of the ODE solve (immutable, part of provenance).

    Attributes
    ----------
    rtol, atol : float
        Relative and absolute tolerances of the PID step-size controller.
    solver : str
        ``"tsit5"`` (default, explicit 5(4)), ``"dopri5"`` or ``"kvaerno5"``
        (implicit, for stiff settings).
    max_steps : int
        Largest number of steps; a solve that needs more fails (status, no
        exception).
    dt0 : float
        First step, days.
    """

    rtol: float = 1e-6
    atol: float = 1e-9
    solver: str = "tsit5"
    max_steps: int = 20000
    dt0: float = 0.01

    @property
    def structure(self) -> tuple[str, int, float]:
        """The settings that shape the compiled program (tolerances do not:
        they are passed as values, so changing them does not recompile)."""
        return (self.solver, self.max_steps, self.dt0)

    def __post_init__(self) -> None:
        rules = {
            "rtol": 0 < self.rtol < 1,
            "atol": self.atol > 0,
            "solver": self.solver in SOLVERS,
            "max_steps": self.max_steps >= 16,
            "dt0": self.dt0 > 0,
        }
        for name, ok in rules.items():
            if not ok:
                raise ModelSpecificationError(
                    f"SolverSettings.{name} = {getattr(self, name)!r} is not allowed"
                )


@dataclass(frozen=True)
class Trajectory:
    """A simulated course: states, couplings and observables on a time grid.

    Attributes
    ----------
    t_days : numpy.ndarray
        Days since infusion.
    states, couplings, observables : dict[str, numpy.ndarray]
        Series by (qualified state / coupling / quantity) name.
    success : bool
        Whether the solver reached the last time without failure.
    """

    t_days: np.ndarray
    states: dict[str, np.ndarray]
    couplings: dict[str, np.ndarray]
    observables: dict[str, np.ndarray]
    success: bool


class ModelGraph:
    """Scale models joined by coupling names into one ODE system.

    Parameters
    ----------
    models : sequence of ScaleModel
        Nodes; names must be unique, each quantity explained by one model,
        each coupling written by at most one model.
    edges : sequence of Edge, optional
        Declared links, checked against the joined graph (a declared edge
        that does not exist raises). Use ``source="exogenous"`` for inputs
        from events, or the name of an external source (below) for a
        constant channel that a model outside the ODE sets.
    channels : mapping, optional
        Exogenous channel definitions (default
        :data:`cartwin.graph.inputs.CHANNELS`).
    external_sources : mapping, optional
        Name -> description of models outside the ODE (default
        :data:`EXTERNAL_SOURCES`); their names may not be model names.
    name, version : str
        Identify the graph in twin versions and reports.

    Raises
    ------
    ModelSpecificationError
        On any inconsistency; the message names the models and couplings.
    """

    def __init__(
        self,
        models: Sequence[ScaleModel],
        edges: Sequence[Edge] = (),
        *,
        channels: Mapping[str, InputChannel] = CHANNELS,
        name: str = "cartwin-graph",
        version: str = "1.0",
        external_sources: Mapping[str, str] = EXTERNAL_SOURCES,
    ) -> None:
        self.models = tuple(models)
        self.name, self.version = name, version
        self.channels = dict(channels)
        self.external_sources = dict(external_sources)
        self._check_models()
        self._index_parameters()
        self._index_states()
        self._join()
        self.declared_edges = tuple(edges)
        self._check_declared()
        self._cache: dict[Any, Callable] = {}

    # -- construction --------------------------------------------------------
    def _check_models(self) -> None:
        if not self.models:
            raise ModelSpecificationError("a ModelGraph needs at least one model")
        names = [m.name for m in self.models]
        for model in self.models:
            if not isinstance(model, ScaleModel):
                raise ModelSpecificationError(
                    f"{model!r} does not implement the ScaleModel protocol"
                )
            check_model(model)
        reserved = {EXOGENOUS, *self.external_sources}
        duplicates = sorted({n for n in names if names.count(n) > 1 or n in reserved})
        if duplicates:
            raise ModelSpecificationError(
                f"model names not unique or reserved: {duplicates}"
            )

    def _index_parameters(self) -> None:
        table = [(f"{m.name}.{p.name}", p) for m in self.models for p in m.parameters]
        self.parameter_names = tuple(name for name, _ in table)
        self.parameter_specs: tuple[Parameter, ...] = tuple(p for _, p in table)
        self.medians = np.array([p.median for p in self.parameter_specs])
        self.log_sd = np.array([p.log_sd for p in self.parameter_specs])
        self.lower = np.array([p.lower for p in self.parameter_specs])
        self.upper = np.array([p.upper for p in self.parameter_specs])
        self.free_index = np.flatnonzero(self.log_sd > 0)
        sizes = [len(m.parameters) for m in self.models]
        self._param_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def _index_states(self) -> None:
        sizes = [len(m.states) for m in self.models]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._state_slices = tuple(
            slice(int(a), int(b)) for a, b in itertools.pairwise(offsets)
        )
        self.state_names = tuple(
            f"{m.name}.{s.name}" for m in self.models for s in m.states
        )

    def _join(self) -> None:
        # who writes each coupling, who explains each quantity
        writers: dict[str, str] = {}
        for model in self.models:
            for coupling in model.outputs:
                if coupling.name in writers:
                    raise ModelSpecificationError(
                        f"coupling {coupling.name!r} written by both "
                        f"{writers[coupling.name]} and {model.name}"
                    )
                writers[coupling.name] = model.name
        self.observables: dict[str, tuple[int, Any]] = {}
        for index, model in enumerate(self.models):
            for obs in model.observables:
                if obs.quantity in self.observables:
                    other = self.models[self.observables[obs.quantity][0]].name
                    raise ModelSpecificationError(
                        f"quantity {obs.quantity!r} explained by both {other} "
                        f"and {model.name}"
                    )
                self.observables[obs.quantity] = (index, obs)
        self.quantities = tuple(self.observables)

        # inputs: internal edges or exogenous channels
        edges, exogenous = [], set()
        for model in self.models:
            for coupling in model.inputs:
                source = writers.get(coupling.name)
                if source is None:
                    self._require_channel(model.name, coupling.name)
                    exogenous.add(coupling.name)
                    source = EXOGENOUS
                edges.append(Edge(source, model.name, coupling.name))
        self.edges = tuple(edges)
        self.exogenous = tuple(sorted(exogenous))
        self.coupling_names = tuple(c.name for m in self.models for c in m.outputs)

    def _require_channel(self, model: str, name: str) -> None:
        if name not in self.channels:
            raise ModelSpecificationError(
                f"model {model} reads {name!r}, which no model writes and no "
                f"input channel defines; channels: {sorted(self.channels)}"
            )

    def _check_declared(self) -> None:
        known = set(self.edges)
        external = [e for e in self.declared_edges if self._is_external(e, known)]
        missing = [
            e for e in self.declared_edges if e not in known and e not in external
        ]
        self.external_edges = tuple(external)
        if missing:
            raise ModelSpecificationError(
                f"declared edges not in the joined graph: {missing}; the graph "
                f"has {sorted((e.source, e.target, e.coupling) for e in known)}; "
                f"external sources {sorted(self.external_sources)} may only feed "
                "constant exogenous channels"
            )

    def _is_external(self, edge: Edge, known: set[Edge]) -> bool:
        # an external source feeding a constant exogenous channel
        return (
            edge.source in self.external_sources
            and Edge(EXOGENOUS, edge.target, edge.coupling) in known
            and self.channels[edge.coupling].kind == "constant"
        )

    # -- parameters ------------------------------------------------------------
    def model_params(self, vector: Any) -> list[dict[str, Any]]:
        """Split a natural-scale parameter vector into one dict per model."""
        out = []
        for index, model in enumerate(self.models):
            start = self._param_offsets[index]
            out.append(
                {p.name: vector[start + k] for k, p in enumerate(model.parameters)}
            )
        return out

    def parameter_vector(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """Population medians, with ``values`` (qualified names) replacing some."""
        vector = self.medians.copy()
        for name, value in (values or {}).items():
            if name not in self.parameter_names:
                raise ModelSpecificationError(
                    f"unknown parameter {name!r}; graph parameters are "
                    f"'<model>.<name>', e.g. {self.parameter_names[0]!r}"
                )
            vector[self.parameter_names.index(name)] = float(value)
        return vector

    def natural_from_z(self, z: Any) -> Any:
        """Free parameters from standardised log scale ``z`` to natural values.

        ``value = median * exp(log_sd * z)``, clipped to the bounds; fixed
        parameters stay at their median. Works on the last axis of ``z``.
        """
        z = jnp.asarray(z)
        free = jnp.asarray(self.free_index)
        values = self.medians[self.free_index] * jnp.exp(
            self.log_sd[self.free_index] * z
        )
        values = jnp.clip(
            values, self.lower[self.free_index], self.upper[self.free_index]
        )
        base = jnp.broadcast_to(
            jnp.asarray(self.medians), z.shape[:-1] + self.medians.shape
        )
        return base.at[..., free].set(values)

    @property
    def free_parameter_names(self) -> tuple[str, ...]:
        """Qualified names of the parameters calibration estimates."""
        return tuple(self.parameter_names[i] for i in self.free_index)

    # -- the joined system ---------------------------------------------------
    def initial_state(self, vector: Any, covariates: Mapping[str, Any]) -> Any:
        """Concatenated initial states of all models."""
        params = self.model_params(vector)
        parts = [
            jnp.asarray(m.initial_state(p, covariates), dtype=float).reshape(-1)
            for m, p in zip(self.models, params)
        ]
        return jnp.concatenate(parts)

    def exogenous_values(self, t: Any, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Every exogenous input at time ``t`` from packed input arrays."""
        values = {}
        for name in self.exogenous:
            channel = self.channels[name]
            if channel.kind == "constant":
                values[name] = arrays["constants"][name]
                continue
            start, end, amount = arrays["pulses"][name]
            if channel.kind == "rate":
                width = jnp.maximum(end - start, 1e-9)
                inside = (t >= start) & (t < start + width)
                values[name] = jnp.sum(jnp.where(inside, amount / width, 0.0))
            else:
                rate = math.log(2.0) / channel.half_life_days
                since = jnp.maximum(t - start, 0.0)
                values[name] = jnp.sum(
                    jnp.where(t >= start, amount * jnp.exp(-rate * since), 0.0)
                )
        return values

    def all_couplings(self, t: Any, y: Any, params: list[dict]) -> dict[str, Any]:
        """Outputs of every model at one instant."""
        values = {}
        for model, part, p in zip(self.models, self._state_slices, params):
            values.update(model.couplings(t, y[part], p))
        return values

    def vector_field(self, t: Any, y: Any, args: tuple) -> Any:
        """dy/dt of the joined system; ``args = (parameter vector, input arrays)``."""
        vector, arrays = args
        params = self.model_params(vector)
        values = self.exogenous_values(t, arrays)
        values.update(self.all_couplings(t, y, params))
        rates = []
        for model, part, p in zip(self.models, self._state_slices, params):
            inputs = {c.name: values[c.name] for c in model.inputs}
            rates.append(jnp.reshape(model.rhs(t, y[part], p, inputs), (-1,)))
        return jnp.concatenate(rates)

    def observe_all(self, ts: Any, ys: Any, vector: Any) -> Any:
        """Predictions of every quantity on the grid; shape (n_quantities, n_t)."""
        params = self.model_params(vector)
        rows = []
        for quantity in self.quantities:
            index = self.observables[quantity][0]
            model, part, p = (
                self.models[index],
                self._state_slices[index],
                params[index],
            )

            def one(t, y, model=model, part=part, p=p, quantity=quantity):
                return model.observe(quantity, t, y[part], p)

            rows.append(jax.vmap(one)(ts, ys))
        return jnp.stack(rows)

    def couplings_on_grid(self, ts: Any, ys: Any, vector: Any) -> Any:
        """Every coupling on the grid; shape (n_couplings, n_t)."""
        params = self.model_params(vector)

        def one(t, y):
            values = self.all_couplings(t, y, params)
            return jnp.stack([values[name] for name in self.coupling_names])

        if not self.coupling_names:
            return jnp.zeros((0, jnp.shape(ts)[0]))
        return jax.vmap(one)(ts, ys).T

    # -- solving ---------------------------------------------------------------
    def solve(
        self, vector: Any, arrays: Mapping[str, Any], ts: Any, settings: SolverSettings
    ) -> tuple[Any, Any]:
        """States at ``ts`` (non-decreasing, >= ``t_start``); traceable.

        Tolerances are read from ``arrays`` (:func:`pack_inputs`), the solver
        kind, step limit and first step from ``settings``.

        Returns
        -------
        (ys, ok)
            ``ys`` of shape (len(ts), n_states); ``ok`` False when the solver
            failed (``ys`` is then not to be trusted).
        """
        t0 = arrays["t_start"]
        t1 = jnp.maximum(ts[-1], t0 + 1e-6)
        y0 = self.initial_state(vector, arrays["covariates"])
        controller = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=arrays["rtol"], atol=arrays["atol"]),
            jump_ts=arrays["jump_ts"],
        )
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(self.vector_field),
            SOLVERS[settings.solver](),
            t0,
            t1,
            settings.dt0,
            y0,
            args=(vector, arrays),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=controller,
            max_steps=settings.max_steps,
            throw=False,
            adjoint=diffrax.ForwardMode(),
        )
        ok = solution.result == diffrax.RESULTS.successful
        ok = ok & jnp.all(jnp.isfinite(solution.ys))
        return solution.ys, ok

    def compiled(self, key: Any, build: Callable[[], Callable]) -> Callable:
        """A jitted function cached on this graph under ``key``."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def simulate(
        self,
        schedule: InputSchedule,
        t_days: Sequence[float],
        params: Mapping[str, float] | np.ndarray | None = None,
        *,
        settings: SolverSettings = SolverSettings(),
    ) -> Trajectory:
        """Simulate one course on a grid (points before ``t_start`` are NaN).

        Parameters
        ----------
        schedule : InputSchedule
            Exogenous inputs (a patient's, or a scenario's).
        t_days : sequence of float
            Output grid, days since infusion, non-decreasing.
        params : mapping or array, optional
            Natural-scale values by qualified name (others at the median), or
            a full parameter vector; default: population medians.
        settings : SolverSettings
            Solver settings.
        """
        vector = (
            np.asarray(params, float)
            if isinstance(params, np.ndarray)
            else self.parameter_vector(params)
        )
        grid, keep = solver_grid(t_days, schedule.t_start)
        arrays = pack_inputs(self, schedule, settings)
        run = self.compiled(
            ("simulate", settings.structure),
            lambda: jax.jit(
                functools.partial(_simulate_kernel, self, settings=settings)
            ),
        )
        ys, obs, cpl, ok = jax.device_get(run(vector, arrays, jnp.asarray(grid)))
        return _trajectory(
            self, np.asarray(t_days, float), keep, ys, obs, cpl, bool(ok)
        )

    # -- description ---------------------------------------------------------
    def cards(self) -> tuple[ModelCard, ...]:
        """Model cards of all nodes."""
        return tuple(model_card(m) for m in self.models)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: models, edges, exogenous inputs, parameters.

        ``external_edges`` lists the declared edges from external sources
        (each with the source's description).
        """
        return {
            "name": self.name,
            "version": self.version,
            "models": [
                {"name": m.name, "version": m.version, "references": list(m.references)}
                for m in self.models
            ],
            "edges": [vars(e).copy() for e in self.edges],
            "external_edges": [
                {**vars(e), "description": self.external_sources[e.source]}
                for e in self.external_edges
            ],
            "exogenous": list(self.exogenous),
            "states": list(self.state_names),
            "quantities": list(self.quantities),
            "couplings": list(self.coupling_names),
            "n_parameters": len(self.parameter_names),
            "n_free_parameters": int(self.free_index.size),
        }

    def observed_from(self, quantity: str) -> float:
        """First study day at which the model explaining ``quantity`` applies."""
        model = self.models[self.observables[quantity][0]]
        return float(getattr(model, "observed_from", {}).get(quantity, -math.inf))


def _simulate_kernel(graph: ModelGraph, vector, arrays, ts, *, settings):
    ys, ok = graph.solve(vector, arrays, ts, settings)
    return (
        ys,
        graph.observe_all(ts, ys, vector),
        graph.couplings_on_grid(ts, ys, vector),
        ok,
    )


def solver_grid(
    t_days: Sequence[float], t_start: float
) -> tuple[np.ndarray, np.ndarray]:
    """Times clamped to ``t_start`` (same shape), and the mask of real ones.

    Clamping rather than dropping keeps array shapes, and so compiled
    programs, the same for patients whose simulations start on other days.
    """
    grid = np.asarray(t_days, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) < 0):
        raise ModelSpecificationError(
            "t_days must be a non-empty, non-decreasing 1-D grid"
        )
    keep = grid >= t_start
    if not keep.any():
        raise ModelSpecificationError(
            f"every time in t_days precedes the simulation start {t_start}"
        )
    return np.maximum(grid, t_start), keep


def _trajectory(graph, grid, keep, ys, obs, cpl, ok) -> Trajectory:
    def expand(row):
        return np.where(keep, row, np.nan)

    return Trajectory(
        t_days=grid,
        states={n: expand(ys[:, i]) for i, n in enumerate(graph.state_names)},
        couplings={n: expand(cpl[i]) for i, n in enumerate(graph.coupling_names)},
        observables={q: expand(obs[i]) for i, q in enumerate(graph.quantities)},
        success=ok,
    )


def _capacity(count: int, minimum: int = 8) -> int:
    # padded to a power of two (>= minimum): shared compiled shapes
    return max(minimum, 1 << max(count - 1, 0).bit_length())


def pack_inputs(
    graph: ModelGraph,
    schedule: InputSchedule,
    settings: SolverSettings = SolverSettings(),
) -> dict[str, Any]:
    """Arrays of ``schedule`` for the compiled solver (padded, fixed shapes).

    Returns
    -------
    dict
        ``pulses`` (name -> (start, end, amount) arrays), ``constants``,
        ``jump_ts`` (discontinuities), ``t_start``, ``covariates`` and the
        solver tolerances ``rtol`` and ``atol``.
    """
    pulses, jumps = {}, []
    for name in graph.exogenous:
        channel = graph.channels[name]
        if channel.kind == "constant":
            continue
        rows = schedule.of(name)
        size = _capacity(len(rows))
        table = np.array([[FAR_FUTURE_DAY, FAR_FUTURE_DAY, 0.0]] * size)
        for k, pulse in enumerate(rows):
            table[k] = (pulse.start_day, pulse.end_day, pulse.amount)
            jumps.append(pulse.start_day)
            if channel.kind == "rate":
                jumps.append(max(pulse.end_day, pulse.start_day + 1e-9))
        pulses[name] = tuple(jnp.asarray(table[:, j]) for j in range(3))
    size = _capacity(len(jumps), minimum=32)
    jump_ts = np.full(size, FAR_FUTURE_DAY)
    jump_ts[: len(jumps)] = sorted(jumps)
    constants = {
        name: jnp.asarray(
            float(schedule.constants.get(name, graph.channels[name].default))
        )
        for name in graph.exogenous
        if graph.channels[name].kind == "constant"
    }
    covariates = {
        key: jnp.asarray(float(schedule.covariates.get(key, math.nan)))
        for key in COVARIATE_KEYS
    }
    return {
        "pulses": pulses,
        "constants": constants,
        "jump_ts": jnp.asarray(jump_ts),
        "t_start": jnp.asarray(float(schedule.t_start)),
        "covariates": covariates,
        "rtol": jnp.asarray(settings.rtol),
        "atol": jnp.asarray(settings.atol),
    }


@functools.lru_cache(maxsize=8)
def standard_graph(disease: str = "LBCL", extra_models: tuple = ()) -> ModelGraph:
    """cartwin's graph for a disease: CAR T / tumour + cytokines (+ extras).

    Parameters
    ----------
    disease : str
        ``"LBCL"`` or ``"MM"`` (see
        :class:`~cartwin.models.cart_tumour.CarTumourModel`).
    extra_models : tuple of ScaleModel
        More nodes (neutrophils, manufacturing, SBML); hashable so that the
        graph, and its compiled programs, are shared.

    Returns
    -------
    ModelGraph
        The same instance for equal arguments. Declared edges: CAR T killing
        drives IL-6 (``tumour_kill_rate``); lymphodepletion, infusion, product
        composition, bridging and drugs enter from events; the T-cell fate
        model may set the product's memory fraction (external edge
        ``logic.tcell_fates -> cart_tumour``) unless an extra model writes
        ``product_memory_fraction``.
    """
    from cartwin.models.cart_tumour import CarTumourModel
    from cartwin.models.cytokines import CytokineModel

    models = (CarTumourModel(disease), CytokineModel(), *extra_models)
    writers = {c.name: m.name for m in extra_models for c in m.outputs}
    declared = tuple(
        Edge(writers.get(coupling, EXOGENOUS), target, coupling)
        for target, coupling in (
            ("cart_tumour", "ld_exposure"),
            ("cart_tumour", "cart_infusion_rate"),
            ("cart_tumour", "product_memory_fraction"),
            ("cytokines", "toci_exposure"),
        )
    ) + (Edge("cart_tumour", "cytokines", "tumour_kill_rate"),)
    if "product_memory_fraction" not in writers:
        declared += (Edge(FATE_SOURCE, "cart_tumour", "product_memory_fraction"),)
    return ModelGraph(
        models, declared, name=f"cartwin-{disease.lower()}", version="1.0"
    )
