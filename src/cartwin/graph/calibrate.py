"""Joint MAP + Laplace calibration of a model graph to one patient's data.

Every free parameter of every model (``log_sd > 0``) is estimated together,
from all of the patient's observations of every quantity the graph explains
(CAR T by flow and qPCR, ALC, LDH, SPD, IL-6, CRP, ...). Parameters are
fitted on the standardised log scale ``z = ln(value / median) / log_sd``, so
that the population prior is ``z ~ Normal(0, I)``.

Shifted priors: a :class:`PriorShift` gives one free parameter a new prior
median ``m'`` with the same log-SD (e.g. the expansion capacity set by the
product's T-cell fates, :mod:`cartwin.graph.fates_link`). On the ``z`` scale
(``z`` stays relative to the graph's population median ``m``) the prior
becomes ``z ~ Normal(mu, I)`` with ``mu_k = ln(m' / m) / log_sd``; the MAP
objective ``(z - mu)^T (z - mu) / 2 - log L`` and the Laplace covariance use
it. Without shifts ``mu = 0`` and the fit is the population-prior fit, bit
for bit. The shifts are kept in :attr:`GraphFit.prior_shifts` (provenance).

Likelihood: each quantity's :class:`~cartwin.graph.spec.Observable` gives the
error model. ``log_additive``: ``ln y ~ Normal(ln f, sigma)``; ``additive``:
``y ~ Normal(f, sigma)``; ``proportional``: ``y ~ Normal(f, sigma f)``. A value
below a limit of quantification contributes ``log Phi`` of its standardised
limit (censored likelihood,
:func:`cartwin.inference.likelihood.censored_log_likelihood`), never a zero
and never dropped. A zero where the error model is on the log scale (an SPD
of 0 cm2 at complete response) is censored below the floor of
:attr:`CalibrationSettings.zero_floors`.

Optimiser, in two phases. First Levenberg-Marquardt on the generalised
Gauss-Newton (GGN) approximation of the Hessian, ``H = I + J^T W J``, with
``J`` the Jacobian of the transformed predictions by forward-mode
sensitivities through the ODE solver (``jax.jacfwd``) and ``W`` the
per-observation curvature of the negative log-likelihood (positive for the
normal and censored terms) [1]_: cheap steps that get close to the optimum.
Then Newton steps on the exact Hessian, by central differences of the exact
gradient (all ``2 P`` gradients in one vectorised call), with eigenvalues
made positive, a backtracking line search and an escape along negative
curvature at saddles: the GGN alone converges only linearly when residuals
are large. The Newton phase solves the ODEs at the tighter tolerance
:attr:`CalibrationSettings.fd_rtol`, so that its small steps are not lost in
the solver's error. The posterior is approximated by
``Normal(z_MAP, H^-1)`` with the exact Hessian at the MAP (Laplace) [2]_.

Statuses (:data:`STATUSES`): ``converged``; ``prior_only`` (no usable
observation: the posterior is the prior); ``not_converged`` (iteration limit
or no descent step); ``indefinite_hessian`` (the search stopped where the
Hessian is not positive definite: no Laplace covariance); ``solver_failed``
(the ODE solve fails at the prior median); ``input_error`` (the record
cannot be turned into a graph problem: no infusion, unreadable dose,
unsupported disease); ``failed`` (any other exception, with its type and
message). :func:`calibrate_records` never raises
for one patient.

Known limits
------------
- Residual SDs are fixed per observable (declared by the models).
- The Hessian is a finite difference (step :attr:`CalibrationSettings.fd_step`)
  of gradients that carry the ODE solver's error; those gradients are
  computed at the tighter tolerance :attr:`CalibrationSettings.fd_rtol`
  (1e-8) so that the error (~rtol x gradient / step) stays far below the
  curvature.
- The Laplace approximation is normal in ``z`` (log-normal in the
  parameters); skewed posteriors are represented by their mode only.
- Observations before the simulation start (``InputSchedule.t_start``) or
  before the day a model applies (``observed_from``) are ignored and counted.

References
----------
.. [1] Nocedal J, Wright SJ. Numerical Optimization, 2nd ed. Springer 2006,
   section 10.3 (Levenberg-Marquardt). doi:10.1007/978-0-387-40065-5
.. [2] Tierney L, Kadane JB. Accurate approximations for posterior moments
   and marginal densities. J Am Stat Assoc 1986;81(393):82-86.
   doi:10.1080/01621459.1986.10478240
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import CartwinError, ModelSpecificationError
from cartwin.graph.graph import ModelGraph, SolverSettings, pack_inputs, standard_graph
from cartwin.graph.inputs import InputSchedule, schedule_from_record
from cartwin.graph.spec import Parameter
from cartwin.inference.likelihood import ABOVE, BELOW, EXACT, censored_log_likelihood
from cartwin.record.model import PatientRecord

configure_jax()

#: Possible values of :attr:`GraphFit.status`.
STATUSES = (
    "converged",
    "prior_only",
    "not_converged",
    "indefinite_hessian",
    "solver_failed",
    "input_error",
    "failed",
)

#: Statuses whose posterior (or prior) a forecast may use.
USABLE_STATUSES = ("converged", "prior_only")

#: Error-model codes in the compiled likelihood.
_KIND = {"log_additive": 0, "additive": 1, "proportional": 2}

#: Smallest prediction on the log scale (a zero prediction stays finite).
_TINY = 1e-200


@dataclass(frozen=True)
class CalibrationSettings:
    """Numerical settings of the graph calibration.

    Attributes
    ----------
    max_iter : int
        Largest number of Levenberg-Marquardt iterations, >= 1.
    switch : float
        GGN Newton decrement below which the Levenberg-Marquardt phase hands
        over to Newton steps on the exact Hessian, > 0.
    max_newton : int
        Largest number of Newton steps, >= 1.
    tol : float
        Convergence threshold on the Newton decrement ``g^T H^-1 g / 2`` with
        the exact Hessian (expected decrease of the negative log posterior),
        > 0.
    fd_step : float
        Step of the central differences of the gradient that give the exact
        Hessian (standardised units), > 0.
    fd_rtol : float
        Relative tolerance of the ODE solves for those gradients (absolute
        tolerance 1e-3 of it): tighter than the fit's, so that the solver's
        error does not swamp the differences.
    min_eigenvalue_ratio : float
        The Hessian counts as positive definite when its smallest eigenvalue
        exceeds this fraction of its largest.
    max_step : float
        Largest change of any ``z`` in one step (standardised units), > 0.
    zero_floors : tuple of (str, float)
        Quantity -> floor below which an exact zero is censored: SPD 1 cm2
        (a 1 x 1 cm lesion, assumption), M-protein 0.1 g/dL (electrophoresis
        detection, assumption), involved FLC 1 mg/L.
    solver : SolverSettings
        ODE solver settings.
    """

    max_iter: int = 60
    switch: float = 0.05
    max_newton: int = 20
    tol: float = 1e-6
    fd_step: float = 1e-3
    fd_rtol: float = 1e-8
    min_eigenvalue_ratio: float = 1e-10
    max_step: float = 2.0
    zero_floors: tuple[tuple[str, float], ...] = (
        ("spd", 1.0),
        ("m_protein", 0.1),
        ("involved_flc", 1.0),
    )
    solver: SolverSettings = SolverSettings()

    def __post_init__(self) -> None:
        rules = {
            "max_iter": self.max_iter >= 1,
            "switch": self.switch > 0,
            "max_newton": self.max_newton >= 1,
            "tol": self.tol > 0,
            "fd_step": self.fd_step > 0,
            "max_step": self.max_step > 0,
            "fd_rtol": 0 < self.fd_rtol < 1,
            "min_eigenvalue_ratio": 0 < self.min_eigenvalue_ratio < 1,
        }
        for name, ok in rules.items():
            if not ok:
                raise ModelSpecificationError(
                    f"CalibrationSettings.{name} = {getattr(self, name)!r} "
                    "is out of range"
                )


@dataclass(frozen=True)
class PriorShift:
    """A new prior median for one free parameter (log-SD unchanged).

    Attributes
    ----------
    parameter : str
        Qualified name (``"<model>.<parameter>"``) of a free parameter.
    median : float
        The new prior median, in the parameter's unit (> 0, within its
        bounds).
    source : str
        Why the prior moved (shown in reports), e.g. "T-cell fate model".
    evidence : tuple of (str, float)
        The numbers the shift was computed from (e.g. the fate distribution).
    prior_median : float
        The population median it replaces; NaN until resolved against a
        graph (:func:`prior_mean_z` fills it in).
    log_sd : float
        The parameter's log-SD (as ``prior_median``).
    """

    parameter: str
    median: float
    source: str = ""
    evidence: tuple[tuple[str, float], ...] = ()
    prior_median: float = math.nan
    log_sd: float = math.nan

    @property
    def offset_z(self) -> float:
        """``ln(median / prior_median) / log_sd``: the prior mean of ``z``."""
        return math.log(self.median / self.prior_median) / self.log_sd

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready provenance (old and new median, offset, evidence)."""
        return {
            "parameter": self.parameter,
            "prior_median": self.prior_median,
            "median": self.median,
            "log_sd": self.log_sd,
            "offset_z": self.offset_z,
            "source": self.source,
            "evidence": {name: value for name, value in self.evidence},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorShift:
        """Inverse of :meth:`to_dict` (``offset_z`` is recomputed)."""
        evidence = data.get("evidence") or {}
        return cls(
            str(data["parameter"]),
            float(data["median"]),
            str(data.get("source", "")),
            tuple((str(k), float(v)) for k, v in evidence.items()),
            float(data.get("prior_median", math.nan)),
            float(data.get("log_sd", math.nan)),
        )


def prior_mean_z(
    graph: ModelGraph, shifts: Sequence[PriorShift] = ()
) -> tuple[np.ndarray, tuple[PriorShift, ...]]:
    """Prior mean of ``z`` (free-parameter order) and the resolved shifts.

    Parameters
    ----------
    graph : ModelGraph
        The graph whose free parameters ``z`` describes.
    shifts : sequence of PriorShift
        At most one per parameter.

    Returns
    -------
    (numpy.ndarray, tuple of PriorShift)
        ``mu`` (zeros where not shifted) and the shifts with
        ``prior_median`` and ``log_sd`` of ``graph`` filled in.

    Raises
    ------
    ModelSpecificationError
        An unknown or fixed parameter, a parameter shifted twice, or a median
        that is not finite, not positive or outside the parameter's bounds.
    """
    names = graph.free_parameter_names
    specs = dict(zip(graph.parameter_names, graph.parameter_specs))
    mean, resolved = np.zeros(len(names)), []
    for shift in shifts:
        if shift.parameter not in names:
            raise ModelSpecificationError(
                f"prior shift of {shift.parameter!r}: not a free parameter of graph "
                f"{graph.name!r} (free: {', '.join(names)})"
            )
        if any(done.parameter == shift.parameter for done in resolved):
            raise ModelSpecificationError(
                f"prior shift of {shift.parameter!r} given twice"
            )
        spec = specs[shift.parameter]
        if not (
            math.isfinite(shift.median)
            and spec.lower <= shift.median <= spec.upper
            and shift.median > 0
        ):
            raise ModelSpecificationError(
                f"prior shift of {shift.parameter!r}: median {shift.median} not "
                f"finite and positive within the bounds [{spec.lower}, {spec.upper}]"
            )
        done = replace(shift, prior_median=spec.median, log_sd=spec.log_sd)
        mean[names.index(shift.parameter)] = done.offset_z
        resolved.append(done)
    return mean, tuple(resolved)


@dataclass(frozen=True)
class GraphData:
    """One patient's observations of the graph's quantities, ready to fit.

    Attributes
    ----------
    t_days : numpy.ndarray
        Days since infusion, sorted.
    quantity : tuple of str
        Quantity of each observation.
    values : numpy.ndarray
        Value (canonical unit), or the limit for a censored one (> 0 for
        log-scale error models).
    censor : numpy.ndarray of int
        ``EXACT``, ``BELOW`` or ``ABOVE`` (:mod:`cartwin.inference.likelihood`).
    ignored : dict[str, int]
        Observations not used, by reason.
    """

    t_days: np.ndarray
    quantity: tuple[str, ...]
    values: np.ndarray
    censor: np.ndarray
    ignored: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.t_days.size)

    def counts(self) -> dict[str, int]:
        """Observations used per quantity."""
        out: dict[str, int] = {}
        for q in self.quantity:
            out[q] = out.get(q, 0) + 1
        return out

    def censored_counts(self) -> dict[str, int]:
        """Censored observations used per quantity."""
        out: dict[str, int] = {}
        for q, c in zip(self.quantity, self.censor):
            if c != EXACT:
                out[q] = out.get(q, 0) + 1
        return out


def graph_data_from_record(
    graph: ModelGraph,
    record: PatientRecord,
    schedule: InputSchedule,
    settings: CalibrationSettings = CalibrationSettings(),
) -> GraphData:
    """Observations of ``record`` that ``graph`` explains, with censoring codes."""
    floors = dict(settings.zero_floors)
    rows, ignored = [], {}

    def skip(reason: str) -> None:
        ignored[reason] = ignored.get(reason, 0) + 1

    for quantity in graph.quantities:
        log_scale = graph.observables[quantity][1].error_model == "log_additive"
        start = max(schedule.t_start, graph.observed_from(quantity))
        for obs in record.observations_of(quantity):
            t, value = record.t_days(obs.time), float(obs.value)
            code = {"below": BELOW, "above": ABOVE}.get(obs.censored, EXACT)
            if t < start:
                skip(f"{quantity} before day {start:g}")
            elif not math.isfinite(value):
                skip(f"{quantity} not finite")
            elif log_scale and value <= 0 and code == EXACT and quantity in floors:
                rows.append((t, quantity, floors[quantity], BELOW))
            elif log_scale and value <= 0:
                skip(f"{quantity} <= 0 without a floor")
            else:
                rows.append((t, quantity, value, code))
    rows.sort(key=lambda r: r[0])
    return GraphData(
        t_days=np.array([r[0] for r in rows], dtype=float),
        quantity=tuple(r[1] for r in rows),
        values=np.array([r[2] for r in rows], dtype=float),
        censor=np.array([r[3] for r in rows], dtype=np.int32),
        ignored=ignored,
    )


@dataclass(frozen=True)
class GraphFit:
    """Result of calibrating a graph to one patient.

    Attributes
    ----------
    status, reason : str
        One of :data:`STATUSES` and a readable explanation.
    pseudonym : str
        Patient pseudonym.
    graph_name, graph_version : str
        The graph calibrated (empty for ``input_error``).
    free_names : tuple of str
        Qualified names of the fitted parameters (order of ``map_z``).
    map_z : numpy.ndarray
        MAP on the standardised log scale (population median = 0).
    cov_z : numpy.ndarray or None
        Laplace covariance of ``z`` (identity for ``prior_only``).
    parameters : dict[str, float]
        All parameters at the MAP, natural scale, qualified names.
    n_obs, n_censored, n_ignored : dict
        Observations used / censored per quantity; ignored by reason.
    n_iter : int
        Iterations run.
    neg_log_posterior : float
        Objective at the MAP (up to a constant).
    schedule : InputSchedule or None
        Exogenous inputs read from the record.
    settings : CalibrationSettings
        Settings used.
    last_day : float
        Latest observation used, days since infusion (NaN when none): the
        default origin of a forecast.
    parameter_specs : dict[str, Parameter]
        Declarations (unit, population prior, source) of every graph
        parameter; ``z`` is relative to these medians.
    prior_shifts : tuple of PriorShift
        Prior medians moved for this patient (empty: population prior); the
        prior of ``z`` is ``Normal(prior_mean_z, I)``.
    """

    status: str
    reason: str
    pseudonym: str = ""
    graph_name: str = ""
    graph_version: str = ""
    free_names: tuple[str, ...] = ()
    map_z: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cov_z: np.ndarray | None = None
    parameters: dict[str, float] = field(default_factory=dict)
    n_obs: dict[str, int] = field(default_factory=dict)
    n_censored: dict[str, int] = field(default_factory=dict)
    n_ignored: dict[str, int] = field(default_factory=dict)
    n_iter: int = 0
    neg_log_posterior: float = math.nan
    schedule: InputSchedule | None = None
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    last_day: float = math.nan
    parameter_specs: dict[str, Parameter] = field(default_factory=dict)
    prior_shifts: tuple[PriorShift, ...] = ()

    @property
    def prior_mean_z(self) -> np.ndarray:
        """Prior mean of ``z`` in ``free_names`` order (zeros: no shift)."""
        mean = np.zeros(len(self.free_names))
        for shift in self.prior_shifts:
            mean[self.free_names.index(shift.parameter)] = shift.offset_z
        return mean

    @property
    def usable(self) -> bool:
        """Whether a forecast may draw from this fit."""
        return self.status in USABLE_STATUSES

    def identifiability(
        self, informed: float = 0.5, weak: float = 0.9
    ) -> dict[str, dict]:
        """Posterior SD / prior SD per free parameter, with a verdict.

        A ratio below ``informed`` is ``"informed"``, below ``weak``
        ``"weakly informed"``, otherwise ``"prior"`` (the data do not inform
        it; report it as the population value, never as learned).
        """
        if self.cov_z is None:
            return {}
        ratios = np.sqrt(np.clip(np.diag(self.cov_z), 0.0, None))
        out = {}
        for name, ratio in zip(self.free_names, ratios):
            verdict = (
                "informed"
                if ratio < informed
                else "weakly informed"
                if ratio < weak
                else "prior"
            )
            out[name] = {"sd_ratio": float(ratio), "verdict": verdict}
        return out


def calibrate_graph(
    graph: ModelGraph,
    record: PatientRecord,
    schedule: InputSchedule | None = None,
    *,
    settings: CalibrationSettings = CalibrationSettings(),
    prior_shifts: Sequence[PriorShift] = (),
) -> GraphFit:
    """MAP + Laplace fit of every free parameter of ``graph`` to ``record``.

    Parameters
    ----------
    graph : ModelGraph
        The joined models.
    record : PatientRecord
        The patient; needs an infusion event.
    schedule : InputSchedule, optional
        Exogenous inputs; default :func:`schedule_from_record`.
    settings : CalibrationSettings
        Numerical settings.
    prior_shifts : sequence of PriorShift
        Patient-specific prior medians (module docstring); empty (default):
        the population prior ``z ~ Normal(0, I)``.

    Returns
    -------
    GraphFit
        Numerical failures are statuses, not exceptions. With no usable
        observation the fit is ``prior_only`` with ``map_z`` the prior mean.

    Raises
    ------
    CartwinError
        When the record cannot be read (no infusion, unreadable dose);
        :func:`calibrate_records` turns this into ``input_error``.
        :class:`ModelSpecificationError` for an invalid prior shift.
    """
    mean, shifts = prior_mean_z(graph, prior_shifts)
    schedule = schedule if schedule is not None else schedule_from_record(record)
    data = graph_data_from_record(graph, record, schedule, settings)
    base = {
        "pseudonym": record.facts.pseudonym,
        "graph_name": graph.name,
        "graph_version": graph.version,
        "free_names": graph.free_parameter_names,
        "n_obs": data.counts(),
        "n_censored": data.censored_counts(),
        "n_ignored": data.ignored,
        "schedule": schedule,
        "settings": settings,
        "last_day": float(data.t_days[-1]) if len(data) else math.nan,
        "parameter_specs": dict(zip(graph.parameter_names, graph.parameter_specs)),
        "prior_shifts": shifts,
    }
    if len(data) == 0:
        return GraphFit(
            "prior_only",
            "no usable observation: the posterior is the prior",
            map_z=mean,
            cov_z=np.eye(mean.size),
            parameters=_named(graph, mean),
            **base,
        )
    return _optimise(graph, data, schedule, settings, base, mean)


def _named(graph: ModelGraph, z: np.ndarray) -> dict[str, float]:
    values = np.asarray(graph.natural_from_z(jnp.asarray(z)))
    return {name: float(v) for name, v in zip(graph.parameter_names, values)}


def _pack_data(graph: ModelGraph, data: GraphData) -> dict[str, jax.Array]:
    # pad to a power of two (>= 16) with masked copies of the last time
    n = len(data)
    width = max(16, 1 << (n - 1).bit_length())
    specs = [graph.observables[q][1] for q in data.quantity]
    kind = np.array([_KIND[s.error_model] for s in specs], dtype=np.int32)
    values = np.where(kind == 0, np.log(np.maximum(data.values, _TINY)), data.values)
    columns = {
        "ts": data.t_days,
        "qidx": np.array([graph.quantities.index(q) for q in data.quantity], np.int32),
        "obs": values,
        "sigma": np.array([s.sigma for s in specs]),
        "kind": kind,
        "censor": data.censor.astype(np.int32),
        "mask": np.ones(n, dtype=bool),
    }
    packed = {}
    for key, column in columns.items():
        fill = {"ts": data.t_days[-1], "mask": False, "sigma": 1.0}.get(key, 0)
        padded = np.full(width, fill, dtype=column.dtype)
        padded[:n] = column
        packed[key] = jnp.asarray(padded)
    return packed


def _evaluator(graph: ModelGraph, solver: SolverSettings):
    # value, gradient and GGN Hessian of the negative log posterior in z, for
    # the prior z ~ Normal(mean, I)
    def transformed(z, data, arrays):
        vector = graph.natural_from_z(z)
        ys, ok = graph.solve(vector, arrays, data["ts"], solver)
        pred = graph.observe_all(data["ts"], ys, vector)
        pred = pred[data["qidx"], jnp.arange(data["ts"].shape[0])]
        eta = jnp.where(data["kind"] == 0, jnp.log(jnp.maximum(pred, _TINY)), pred)
        return eta, ok

    def loglik(obs, eta, sigma, kind, censor):
        sd = jnp.where(kind == 2, sigma * jnp.abs(eta) + _TINY, sigma)
        return censored_log_likelihood(obs, eta, sd, censor)

    grad_ll = jax.grad(loglik, argnums=1)
    curv_ll = jax.grad(grad_ll, argnums=1)

    def evaluate(z, data, arrays, mean):
        jac, (eta, ok) = jax.jacfwd(
            lambda x: _pair(transformed(x, data, arrays)), has_aux=True
        )(z)
        args = (data["obs"], eta, data["sigma"], data["kind"], data["censor"])
        mask = data["mask"]
        terms = jnp.where(mask, jax.vmap(loglik)(*args), 0.0)
        slope = jnp.where(mask, -jax.vmap(grad_ll)(*args), 0.0)
        weight = jnp.where(mask, jnp.maximum(-jax.vmap(curv_ll)(*args), 0.0), 0.0)
        centred = z - mean
        value = 0.5 * centred @ centred - jnp.sum(terms)
        grad = centred + jac.T @ slope
        hess = jnp.eye(z.shape[0]) + jac.T @ (weight[:, None] * jac)
        ok = ok & jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        return value, grad, hess, ok

    return evaluate


def _pair(result):
    eta, ok = result
    return eta, (eta, ok)


def _optimise(graph, data, schedule, settings, base, mean) -> GraphFit:
    structure = settings.solver.structure
    evaluate = graph.compiled(
        ("calibrate", structure), lambda: jax.jit(_evaluator(graph, settings.solver))
    )
    gradients = graph.compiled(
        ("calibrate_fd", structure), lambda: _fd_gradients(graph, settings.solver)
    )
    packed = _pack_data(graph, data)
    arrays = pack_inputs(graph, schedule, settings.solver)
    tight = pack_inputs(
        graph,
        schedule,
        replace(settings.solver, rtol=settings.fd_rtol, atol=settings.fd_rtol * 1e-3),
    )

    prior_mean = jnp.asarray(mean)

    def call(z, inputs=arrays):
        return jax.device_get(evaluate(jnp.asarray(z), packed, inputs, prior_mean))

    def call_tight(z):
        return call(z, tight)

    def hessian(z):
        return _fd_hessian(
            lambda zs: gradients(zs, packed, tight, prior_mean), z, settings
        )

    z = np.array(mean, dtype=float)  # start at the prior median
    first = call(z)
    if not first[3]:
        where = "shifted prior" if base["prior_shifts"] else "population"
        return GraphFit(
            "solver_failed",
            f"the ODE solve or likelihood is not finite at the {where} median",
            map_z=z,
            **base,
        )
    z, _, n_lm = _lm_phase(call, z, first[:3], settings)
    z, value, hess, n_newton, status, reason = _newton_phase(
        call_tight, hessian, z, call_tight(z)[:3], settings
    )
    cov = _inverse(hess) if status == "converged" else None
    return GraphFit(
        status,
        reason,
        map_z=z,
        cov_z=cov,
        parameters=_named(graph, z),
        n_iter=n_lm + n_newton,
        neg_log_posterior=float(value),
        **base,
    )


def _fd_gradients(graph: ModelGraph, solver: SolverSettings):
    # gradients at many points in one compiled call (finite-difference Hessian)
    evaluate = _evaluator(graph, solver)

    def one(z, data, arrays, mean):
        _, grad, _, ok = evaluate(z, data, arrays, mean)
        return jnp.where(ok, grad, jnp.nan)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


def _fd_hessian(gradients, z: np.ndarray, settings: CalibrationSettings) -> np.ndarray:
    # central differences of the exact (forward-sensitivity) gradient
    size, step = z.size, settings.fd_step
    shifts = np.eye(size) * step
    grads = np.asarray(
        jax.device_get(gradients(jnp.asarray(np.vstack([z + shifts, z - shifts]))))
    )
    hess = (grads[:size] - grads[size:]) / (2.0 * step)
    return 0.5 * (hess + hess.T)


def _lm_phase(call, z, current, settings):
    # Levenberg-Marquardt on the GGN until its decrement is small (Nielsen damping)
    value, grad, hess = current
    lam, growth = 1e-3, 2.0
    for iteration in range(1, settings.max_iter + 1):
        if 0.5 * float(grad @ np.linalg.solve(hess, grad)) < settings.switch:
            return z, (value, grad, hess), iteration - 1
        step = -np.linalg.solve(hess + lam * np.diag(np.diag(hess)), grad)
        step *= min(1.0, settings.max_step / max(np.max(np.abs(step)), 1e-300))
        predicted = -(grad @ step + 0.5 * step @ hess @ step)
        trial = call(z + step)
        gain = (value - trial[0]) / max(predicted, 1e-300) if trial[3] else -1.0
        if gain > 0:
            z, (value, grad, hess) = z + step, trial[:3]
            lam *= max(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
            growth = 2.0
        else:
            lam, growth = lam * growth, growth * 2.0
            if lam > 1e10:
                break
    return z, (value, grad, hess), iteration


def _newton_phase(call, hessian, z, current, settings):
    # Newton steps on the finite-difference Hessian (eigenvalues made
    # positive). A Hessian is kept while its steps succeed (chord method) and
    # recomputed to confirm convergence, so few Hessians are needed.
    value, grad, _ = current
    hess, fresh, count = hessian(z), True, 1
    for iteration in range(1, settings.max_newton + 1):
        if not np.all(np.isfinite(hess)):
            return (
                z,
                value,
                hess,
                iteration,
                "not_converged",
                (
                    "the finite-difference Hessian is not finite (solver failure near "
                    "the optimum)"
                ),
            )
        eigval, eigvec = np.linalg.eigh(hess)
        positive = eigval.min() > settings.min_eigenvalue_ratio * eigval.max()
        curvature = np.maximum(np.abs(eigval), 1e-8 * np.abs(eigval).max())
        step = -eigvec @ ((eigvec.T @ grad) / curvature)
        decrement = -0.5 * float(grad @ step)

        # converged only on a fresh, positive definite Hessian
        if decrement < settings.tol and fresh and positive:
            return (
                z,
                value,
                hess,
                iteration - 1,
                "converged",
                (
                    f"Newton decrement {decrement:.2g} < {settings.tol:g}; Hessian "
                    f"positive definite (eigenvalues {eigval.min():.3g} to "
                    f"{eigval.max():.3g}; {count} finite-difference Hessians)"
                ),
            )
        if decrement < settings.tol and fresh:
            z, value, grad, moved = _escape(call, z, value, eigvec[:, 0])
        elif decrement < settings.tol:
            moved = False  # small step on an old Hessian: confirm below
        else:
            z, value, grad, moved = _line_search(call, z, value, grad, step, settings)

        # keep the Hessian after a successful step, otherwise recompute it
        if moved and not (decrement < settings.tol):
            fresh = False
            continue
        if not moved and fresh:
            break
        hess, fresh, count = hessian(z), True, count + 1
    verdict = "indefinite_hessian" if not positive else "not_converged"
    return (
        z,
        value,
        hess,
        settings.max_newton,
        verdict,
        (
            f"Newton phase stopped with decrement {decrement:.3g} (tolerance "
            f"{settings.tol:g}); Hessian eigenvalues {eigval.min():.3g} to "
            f"{eigval.max():.3g}"
        ),
    )


def _escape(call, z, value, direction):
    # try both signs of the negative-curvature direction, shrinking the step
    for length in (1.0, 0.5, 0.25, 0.125):
        for sign in (1.0, -1.0):
            trial = call(z + sign * length * direction)
            if trial[3] and trial[0] < value - 1e-9:
                return z + sign * length * direction, trial[0], trial[1], True
    return z, value, None, False


def _line_search(call, z, value, grad, step, settings):
    # backtracking with the Armijo condition; the step capped in size
    step = step * min(1.0, settings.max_step / max(np.max(np.abs(step)), 1e-300))
    for _ in range(8):
        trial = call(z + step)
        if trial[3] and trial[0] <= value + 1e-4 * float(grad @ step):
            return z + step, trial[0], trial[1], True
        step = 0.5 * step
    return z, value, grad, False


def _inverse(hess: np.ndarray) -> np.ndarray:
    eigval, eigvec = np.linalg.eigh(0.5 * (hess + hess.T))
    return (eigvec / eigval) @ eigvec.T


def prior_fit(
    graph: ModelGraph, schedule: InputSchedule, pseudonym: str = ""
) -> GraphFit:
    """A ``prior_only`` fit: forecasts from it are prior predictive draws.

    Used for virtual patients and for prior-predictive checks (e.g. the CRS
    link against ZUMA-1 rates).
    """
    size = graph.free_index.size
    return GraphFit(
        "prior_only",
        "population prior (no data)",
        pseudonym=pseudonym,
        graph_name=graph.name,
        graph_version=graph.version,
        free_names=graph.free_parameter_names,
        map_z=np.zeros(size),
        cov_z=np.eye(size),
        parameters=_named(graph, np.zeros(size)),
        schedule=schedule,
        parameter_specs=dict(zip(graph.parameter_names, graph.parameter_specs)),
    )


def calibrate_record(
    record: PatientRecord,
    *,
    graph: ModelGraph | None = None,
    settings: CalibrationSettings = CalibrationSettings(),
) -> GraphFit:
    """Calibrate one patient; never raises (failures become statuses).

    Parameters
    ----------
    record : PatientRecord
        The patient. Its disease (``facts.disease``) selects
        :func:`~cartwin.graph.graph.standard_graph` unless ``graph`` is given.
    graph : ModelGraph, optional
        The graph to fit.
    settings : CalibrationSettings
        Numerical settings.
    """
    try:
        chosen = (
            graph if graph is not None else standard_graph(record.facts.disease or "")
        )
        return calibrate_graph(chosen, record, settings=settings)
    except CartwinError as error:
        return GraphFit(
            "input_error",
            f"{type(error).__name__}: {error}",
            pseudonym=record.facts.pseudonym,
            settings=settings,
        )
    except Exception as error:  # a batch must never fail for one patient
        return GraphFit(
            "failed",
            f"{type(error).__name__}: {error}",
            pseudonym=record.facts.pseudonym,
            settings=settings,
        )


def calibrate_records(
    records: Sequence[PatientRecord],
    *,
    graph: ModelGraph | None = None,
    settings: CalibrationSettings = CalibrationSettings(),
) -> list[GraphFit]:
    """Calibrate many patients one after another; each gets status and reason.

    Compiled programs are shared between patients whose graph, settings and
    padded data shapes agree, so a cohort compiles a few times, not once per
    patient.
    """
    return [calibrate_record(r, graph=graph, settings=settings) for r in records]
