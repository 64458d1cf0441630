"""Forecasts of a calibrated graph: every observable and coupling, with intervals.

Parameters are drawn from the fit's Laplace posterior (normal in the
standardised log scale ``z``; the prior itself for ``prior_only``), the whole
graph is simulated for every draw in one vectorised, compiled call, and
pointwise quantiles give the median and the interval (90% by default) of
every observable and every coupling. By default the interval is for the
latent value; ``include_residual=True`` adds each observable's residual
error, giving the interval of a new measurement.

A **scenario** (:class:`cartwin.graph.inputs.Scenario`) is the same twin under
changed exogenous inputs: :func:`compare_scenarios` simulates the *same*
parameter draws under each scenario's inputs (common random numbers), so
that differences between scenarios are due to the inputs alone.

Models may add their own summaries of the draws through an optional
``forecast_summaries(t_days, draws, origin_day)`` method (CRS grade
probabilities, response probabilities); ``draws`` maps every observable,
coupling and qualified state name to a (draws x times) array and every
qualified parameter name to the draws' values. Forecasting itself never
special-cases a model.

:func:`graph_summary` turns a fit and a forecast into the JSON that goes into
``TwinVersion.outputs["graph"]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import CalibrationError, ModelSpecificationError
from cartwin.graph.calibrate import GraphFit
from cartwin.graph.graph import (
    ModelGraph,
    SolverSettings,
    _simulate_kernel,
    pack_inputs,
    solver_grid,
)
from cartwin.graph.inputs import InputSchedule, Scenario

configure_jax()

#: Days a default forecast grid reaches.
DEFAULT_HORIZON_DAYS = 180.0


@dataclass(frozen=True)
class Band:
    """Pointwise median and interval of one series on the forecast grid."""

    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    unit: str
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists (NaN as None)."""
        return {
            "median": _listed(self.median),
            "lower": _listed(self.lower),
            "upper": _listed(self.upper),
            "unit": self.unit,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class GraphForecast:
    """Forecast of every observable and coupling of a graph for one twin.

    Attributes
    ----------
    scenario : str
        ``"as recorded"`` or the scenario's name.
    t_days : numpy.ndarray
        Grid, days since infusion.
    bands : dict[str, Band]
        By quantity (observables) and coupling name.
    draws : dict[str, numpy.ndarray]
        The simulated draws (n_draws x n_t) of every band and every state
        (qualified name), and the parameter values of each draw (qualified
        name, n_draws).
    interval : float
        Mass of the interval (0.9: 5th to 95th percentile).
    n_draws, n_failed : int
        Draws simulated; of those, solver failures (left out of the bands).
    origin_day : float
        Start of the model summaries' look-ahead windows.
    summaries : dict
        ``forecast_summaries`` of each model that has one, by model name.
    basis : str
        ``"posterior"`` or ``"prior"``.
    schedule : InputSchedule
        Inputs simulated.
    seed : int
        Seed of the parameter draws.
    include_residual : bool
        Whether observables include residual error.
    """

    scenario: str
    t_days: np.ndarray
    bands: dict[str, Band]
    draws: dict[str, np.ndarray]
    interval: float
    n_draws: int
    n_failed: int
    origin_day: float
    summaries: dict[str, Any]
    basis: str
    schedule: InputSchedule
    seed: int
    include_residual: bool = False

    def to_dict(self, *, with_series: bool = True) -> dict[str, Any]:
        """JSON-ready forecast (series optional to keep scenario tables short)."""
        out = {
            "scenario": self.scenario,
            "interval": self.interval,
            "n_draws": self.n_draws,
            "n_failed": self.n_failed,
            "origin_day": self.origin_day,
            "basis": self.basis,
            "seed": self.seed,
            "include_residual": self.include_residual,
            "summaries": self.summaries,
            "inputs": self.schedule.to_dict(),
        }
        if with_series:
            out["t_days"] = _listed(self.t_days)
            out["series"] = {name: band.to_dict() for name, band in self.bands.items()}
        return out


def default_grid(t_start: float, horizon: float = DEFAULT_HORIZON_DAYS) -> np.ndarray:
    """Daily from day -14 (or the start), every 6 h to day 30, then every 2 days."""
    before = np.arange(max(math.ceil(t_start), -14), 0, 1.0)
    acute = np.arange(0.0, min(30.0, horizon), 0.25)
    late = np.arange(30.0, horizon + 1e-9, 2.0)
    return np.unique(np.concatenate([before, acute, late]))


def draw_parameters(
    graph: ModelGraph, fit: GraphFit, n_draws: int, rng: np.random.Generator
) -> np.ndarray:
    """Natural-scale parameter vectors from the fit's posterior (n_draws x P)."""
    if not fit.usable or fit.cov_z is None:
        raise CalibrationError(
            f"fit of {fit.pseudonym or 'patient'} has status {fit.status!r} "
            f"({fit.reason}); no posterior to draw from"
        )
    if tuple(fit.free_names) != graph.free_parameter_names:
        raise ModelSpecificationError(
            f"fit is for graph {fit.graph_name!r}, whose free parameters differ "
            f"from {graph.name!r}'s"
        )
    eigval, eigvec = np.linalg.eigh(0.5 * (fit.cov_z + fit.cov_z.T))
    root = eigvec * np.sqrt(np.clip(eigval, 0.0, None))
    z = fit.map_z + rng.standard_normal((n_draws, fit.map_z.size)) @ root.T
    return np.asarray(graph.natural_from_z(jnp.asarray(z)))


def _batched(graph: ModelGraph, settings: SolverSettings):
    kernel = functools.partial(_simulate_kernel, graph, settings=settings)
    return jax.jit(jax.vmap(kernel, in_axes=(0, None, None)))


def simulate_draws(
    graph: ModelGraph,
    vectors: np.ndarray,
    schedule: InputSchedule,
    t_days: np.ndarray,
    settings: SolverSettings = SolverSettings(),
) -> dict[str, np.ndarray]:
    """Simulate many parameter vectors under one schedule in one compiled call.

    Returns
    -------
    dict
        Observables, couplings and states (qualified) as draws x times, NaN
        before ``schedule.t_start`` and for draws whose solve failed; key
        ``"_ok"`` holds the success flag of each draw.
    """
    grid, keep = solver_grid(t_days, schedule.t_start)
    run = graph.compiled(
        ("draws", settings.structure), lambda: _batched(graph, settings)
    )
    arrays = pack_inputs(graph, schedule, settings)
    ys, obs, cpl, ok = jax.device_get(
        run(jnp.asarray(vectors), arrays, jnp.asarray(grid))
    )
    ok = np.asarray(ok, dtype=bool)

    def expand(block):
        return np.where(ok[:, None] & keep[None, :], block, np.nan)

    series = {q: expand(obs[:, i]) for i, q in enumerate(graph.quantities)}
    series.update({c: expand(cpl[:, i]) for i, c in enumerate(graph.coupling_names)})
    series.update({s: expand(ys[:, :, i]) for i, s in enumerate(graph.state_names)})
    series["_ok"] = ok
    return series


def forecast_graph(
    graph: ModelGraph,
    fit: GraphFit,
    *,
    schedule: InputSchedule | None = None,
    scenario: Scenario | None = None,
    t_days: Sequence[float] | None = None,
    n_draws: int = 200,
    seed: int = 0,
    interval: float = 0.9,
    origin_day: float | None = None,
    include_residual: bool = False,
    settings: SolverSettings = SolverSettings(),
) -> GraphForecast:
    """Forecast every observable and coupling of ``graph`` for a fitted twin.

    Parameters
    ----------
    graph : ModelGraph
        The graph the fit was made with.
    fit : GraphFit
        A usable fit (``converged`` or ``prior_only``).
    schedule : InputSchedule, optional
        Inputs; default the fit's.
    scenario : Scenario, optional
        Applied to the schedule.
    t_days : sequence, optional
        Grid; default :func:`default_grid`.
    n_draws : int
        Posterior draws (>= 20).
    seed : int
        Seed of the draws; equal seeds give equal forecasts.
    interval : float
        Interval mass in (0, 1).
    origin_day : float, optional
        Start of look-ahead windows; default the latest observation (day 0
        when none).
    include_residual : bool
        Add residual error to observables (interval for a new measurement).
    settings : SolverSettings
        Solver settings.

    Raises
    ------
    CalibrationError
        When the fit is not usable.
    """
    if not 0 < interval < 1 or n_draws < 20:
        raise ModelSpecificationError(
            f"interval must be in (0, 1) and n_draws >= 20; got {interval}, {n_draws}"
        )
    rng = np.random.default_rng(seed)
    vectors = draw_parameters(graph, fit, n_draws, rng)
    base = schedule if schedule is not None else fit.schedule
    if base is None:
        raise CalibrationError("the fit has no input schedule; pass schedule=")
    return _forecast_from(
        graph,
        fit,
        vectors,
        base,
        scenario,
        t_days,
        interval,
        origin_day,
        include_residual,
        settings,
        seed,
        rng,
    )


def _forecast_from(
    graph,
    fit,
    vectors,
    base,
    scenario,
    t_days,
    interval,
    origin_day,
    include_residual,
    settings,
    seed,
    rng,
) -> GraphForecast:
    schedule = scenario.apply(base) if scenario is not None else base
    grid = np.asarray(t_days if t_days is not None else default_grid(schedule.t_start))
    draws = simulate_draws(graph, vectors, schedule, grid, settings)
    ok = draws.pop("_ok")
    draws.update({name: vectors[:, k] for k, name in enumerate(graph.parameter_names)})
    if include_residual:
        _add_residual(graph, draws, rng)
    if origin_day is None:
        origin_day = 0.0 if math.isnan(fit.last_day) else max(0.0, fit.last_day)
    return GraphForecast(
        scenario=scenario.name if scenario is not None else "as recorded",
        t_days=grid,
        bands=_bands(graph, draws, interval),
        draws=draws,
        interval=interval,
        n_draws=int(ok.size),
        n_failed=int((~ok).sum()),
        origin_day=float(origin_day),
        summaries=_summaries(graph, grid, draws, float(origin_day)),
        basis="prior" if fit.status == "prior_only" else "posterior",
        schedule=schedule,
        seed=seed,
        include_residual=include_residual,
    )


def _add_residual(graph: ModelGraph, draws: dict, rng: np.random.Generator) -> None:
    # each observable's error model, drawn on top of the latent value
    for quantity in graph.quantities:
        obs = graph.observables[quantity][1]
        latent = draws[quantity]
        noise = rng.standard_normal(latent.shape) * obs.sigma
        if obs.error_model == "log_additive":
            draws[quantity] = latent * np.exp(noise)
        elif obs.error_model == "additive":
            draws[quantity] = latent + noise
        else:
            draws[quantity] = latent * (1.0 + noise)


def _bands(graph: ModelGraph, draws: dict, interval: float) -> dict[str, Band]:
    tail = 0.5 * (1.0 - interval)
    units = {q: graph.observables[q][1].unit for q in graph.quantities}
    units.update({c.name: c.unit for m in graph.models for c in m.outputs})
    bands = {}
    for name, unit in units.items():
        values = draws[name]
        with np.errstate(all="ignore"):
            low, mid, high = _quantile(values, [tail, 0.5, 1.0 - tail])
        kind = "observable" if name in graph.observables else "coupling"
        bands[name] = Band(mid, low, high, unit, kind)
    return bands


def _quantile(values: np.ndarray, probs: list[float]) -> np.ndarray:
    # nanquantile that returns NaN silently for all-NaN columns
    finite = np.isfinite(values)
    out = np.full((len(probs), values.shape[1]), np.nan)
    columns = finite.any(axis=0)
    if columns.any():
        out[:, columns] = np.nanquantile(values[:, columns], probs, axis=0)
    return out


def _summaries(graph: ModelGraph, grid, draws, origin_day) -> dict[str, Any]:
    out = {}
    for model in graph.models:
        method = getattr(model, "forecast_summaries", None)
        if method is not None:
            out[model.name] = method(grid, draws, origin_day)
    return out


@dataclass(frozen=True)
class ScenarioComparison:
    """Forecasts of one twin under several input scenarios, same draws.

    Attributes
    ----------
    forecasts : dict[str, GraphForecast]
        ``"as recorded"`` first, then each scenario by name.
    scenarios : tuple of Scenario
        The scenarios compared.
    endpoints : dict[str, dict]
        Per forecast: peak and day-28/90 value (median and interval) of every
        observable and coupling after the origin.
    """

    forecasts: dict[str, GraphForecast]
    scenarios: tuple[Scenario, ...]
    endpoints: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready side-by-side table (summaries and endpoints, no series)."""
        return {
            "scenarios": [s.to_dict() for s in self.scenarios],
            "forecasts": {
                name: f.to_dict(with_series=False) for name, f in self.forecasts.items()
            },
            "endpoints": self.endpoints,
        }


def compare_scenarios(
    graph: ModelGraph,
    fit: GraphFit,
    scenarios: Sequence[Scenario],
    *,
    t_days: Sequence[float] | None = None,
    n_draws: int = 200,
    seed: int = 0,
    interval: float = 0.9,
    origin_day: float | None = None,
    settings: SolverSettings = SolverSettings(),
) -> ScenarioComparison:
    """The twin as recorded and under each scenario, with the same draws.

    Names must be unique. The grid is shared (default: from the earliest
    scenario start) so that series line up side by side. The origin of
    endpoints and look-ahead windows defaults to day 0 (the whole course).
    """
    origin_day = 0.0 if origin_day is None else origin_day
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names) or "as recorded" in names:
        raise ModelSpecificationError(f"scenario names must be unique: {names}")
    if fit.schedule is None:
        raise CalibrationError("the fit has no input schedule")
    rng = np.random.default_rng(seed)
    vectors = draw_parameters(graph, fit, n_draws, rng)
    starts = [fit.schedule.t_start] + [s.apply(fit.schedule).t_start for s in scenarios]
    grid = np.asarray(t_days if t_days is not None else default_grid(min(starts)))
    forecasts = {}
    for scenario in (None, *scenarios):
        forecast = _forecast_from(
            graph,
            fit,
            vectors,
            fit.schedule,
            scenario,
            grid,
            interval,
            origin_day,
            False,
            settings,
            seed,
            rng,
        )
        forecasts[forecast.scenario] = forecast
    endpoints = {name: _endpoints(f) for name, f in forecasts.items()}
    return ScenarioComparison(forecasts, tuple(scenarios), endpoints)


def _endpoints(forecast: GraphForecast) -> dict[str, Any]:
    # per series: peak after the origin, values at days 28 and 90
    t = forecast.t_days
    after = t >= forecast.origin_day
    out = {}
    for name, band in forecast.bands.items():
        values = forecast.draws[name]
        entry = {"unit": band.unit}
        if after.any():
            entry["peak"] = _summary(
                np.nanmax(values[:, after], axis=1, initial=-np.inf), forecast.interval
            )
        for day in (28.0, 90.0):
            if t[0] <= day <= t[-1]:
                at = np.array([np.interp(day, t, row) for row in values])
                entry[f"day_{int(day)}"] = _summary(at, forecast.interval)
        out[name] = entry
    return out


def _summary(values: np.ndarray, interval: float) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"median": None, "lower": None, "upper": None}
    tail = 0.5 * (1.0 - interval)
    low, mid, high = np.quantile(values, [tail, 0.5, 1.0 - tail])
    return {"median": float(mid), "lower": float(low), "upper": float(high)}


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else float(v) for v in np.ravel(values)]


def graph_summary(fit: GraphFit, forecast: GraphForecast | None) -> dict[str, Any]:
    """JSON-ready summary of a graph twin for ``TwinVersion.outputs["graph"]``.

    Parameters
    ----------
    fit : GraphFit
        Any status; a failed fit gives status and reason only.
    forecast : GraphForecast or None
        The forecast made from ``fit`` (None when the fit is not usable).

    Returns
    -------
    dict
        ``graph`` (name, version), ``status``, ``reason``, ``pseudonym``,
        ``n_obs``, ``n_censored``, ``n_ignored``, ``n_iter``,
        ``parameters`` (per free parameter: MAP, 90% Laplace interval on the
        natural scale, unit, prior median, SD ratio and verdict), ``fixed``
        (values of fixed parameters), ``forecast`` (series, intervals, model
        summaries, inputs) or None.
    """
    out: dict[str, Any] = {
        "graph": {"name": fit.graph_name, "version": fit.graph_version},
        "status": fit.status,
        "reason": fit.reason,
        "pseudonym": fit.pseudonym,
        "n_obs": dict(fit.n_obs),
        "n_censored": dict(fit.n_censored),
        "n_ignored": dict(fit.n_ignored),
        "n_iter": int(fit.n_iter),
        "neg_log_posterior": None
        if math.isnan(fit.neg_log_posterior)
        else float(fit.neg_log_posterior),
        "parameters": _parameter_table(fit),
        "fixed": {},
        "forecast": forecast.to_dict() if forecast is not None else None,
    }
    free = set(fit.free_names)
    out["fixed"] = {k: v for k, v in fit.parameters.items() if k not in free}
    return out


def _parameter_table(fit: GraphFit) -> dict[str, dict[str, Any]]:
    verdicts = fit.identifiability()
    table = {}
    for k, name in enumerate(fit.free_names):
        spec = fit.parameter_specs.get(name)
        entry = {
            "map": fit.parameters.get(name),
            "unit": spec.unit if spec else "",
            "prior_median": spec.median if spec else None,
            "source": spec.source if spec else "",
        }
        if fit.cov_z is not None and spec is not None:
            sd = math.sqrt(max(fit.cov_z[k, k], 0.0)) * spec.log_sd
            centre = math.log(spec.median) + spec.log_sd * fit.map_z[k]
            entry["lower"] = math.exp(centre - _Z95 * sd)
            entry["upper"] = math.exp(centre + _Z95 * sd)
        entry.update(verdicts.get(name, {}))
        table[name] = entry
    return table


#: Standard normal 95th percentile (90% two-sided interval).
_Z95 = 1.6448536269514722
