"""Vectorised fixed-grid solver of the model graph for large virtual cohorts.

One compiled program advances every patient of a chunk together on a step grid
shared by the arm (the protocol's events are grid nodes), and keeps per patient
only the summaries that trial endpoints need: CAR T peak, time of peak and AUC,
the IL-6 signal's peak rise (CRS and ICANS), the tumour at protocol visits,
days with severe neutropenia, and the days drugs were started by a policy.
Nothing of a course is stored, so memory does not grow with the horizon.

Why not the graph's adaptive solver
-----------------------------------
:meth:`cartwin.graph.graph.ModelGraph.solve` (diffrax Tsit5, adaptive, tight
tolerances) is what a single twin uses; run under ``vmap`` over 10^4 prior
patients to day 365 it takes about 13 s on two cores, so 10^6 patients would
take over 20 min. Here the step is fixed per phase of the course and the
stiff first-order losses that models declare (``linear_decay_rates``, e.g.
receptor binding at 24 /d) are integrated exactly:

Exponential time differencing, fourth order (ETDRK4, Cox & Matthews 2002
[1]_). Write ``dy/dt = -lam y + N(t, y)`` with ``lam`` the declared decay
rates (0 for other states; a model's ``linear_decay_rates(params, y)``,
held at the step's start state), ``z = -lam h``, ``E = exp(z)``::

    a  = E^(1/2) y + h/2 phi1(z/2) N(t, y)
    b  = E^(1/2) y + h/2 phi1(z/2) N(t + h/2, a)
    c  = E^(1/2) a + h/2 phi1(z/2) (2 N(t + h/2, b) - N(t, y))
    y' = E y + h (phi1 - 3 phi2 + 4 phi3) N(t, y)
         + 2h (phi2 - 2 phi3) (N(t + h/2, a) + N(t + h/2, b))
         + h (4 phi3 - phi2) N(t + h, c)

with ``phi_k(z) = sum_j z^j / (j + k)!`` (series for ``|z| < 0.5``). It is the
classical fourth-order Runge-Kutta method when ``lam = 0`` and exact for a
decay towards a constant target, so steps of two days stay stable and
bounded although receptor binding has ``k_block h`` = 48 (the integrating-
factor variant of Lawson overshoots such a relaxation by its quadrature
error). A course whose state still goes negative or non-finite is solved
again with the graph's adaptive solver (``adaptive`` counts them).

Inputs on a fixed grid
----------------------
- ``rate`` channels (the infusion): the step's mean rate, so that every cell
  is infused whatever the step (an instantaneous rate evaluated at the stages
  would miss part of a 30-minute infusion).
- ``exposure`` channels (lymphodepletion, bridging, drugs): a pulse acts from
  the step that starts at or after its start day; starts are grid nodes.
- Policy-driven drugs (tocilizumab or dexamethasone when the IL-6 signal
  reaches the level at which ``P(CRS grade >= g)`` is 1/2 under the CRS link
  of :mod:`cartwin.models.cytokines`): the dose starts at the end of the step
  in which the level is first reached, once per course.

Step grid (days; :func:`step_grid`): 0.5 until the first event before
infusion (bridging or lymphodepletion), 0.1 from it to infusion, the infusion as
two steps, 0.25 to day 14 (expansion, cytokine surge), 0.5 to day 30, 1.0
to day 100, then 2.0; every event start/end and visit day is a node.

References
----------
.. [1] Cox SM, Matthews PC. Exponential time differencing for stiff systems.
   J Comput Phys 2002;176(2):430-455. doi:10.1006/jcph.2002.6995
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cartwin.errors import ModelSpecificationError
from cartwin.graph.graph import COVARIATE_KEYS, ModelGraph
from cartwin.graph.inputs import InputSchedule, Pulse

#: Protocol visits (days after infusion) at which the tumour is assessed:
#: day 28, then months 2, 3, 4.5, 6, 9 and 12 (an assumption modelled on the
#: ZUMA-1 schedule of scans at week 4, month 3 and every 3 months after).
VISIT_DAYS = (28.0, 56.0, 90.0, 135.0, 180.0, 270.0, 365.0)

#: Step lengths by phase: (phase end day, step) after infusion.
PHASES = ((14.0, 0.25), (30.0, 0.5), (100.0, 1.0), (math.inf, 2.0))

#: Steps before the first pre-infusion event and from it to infusion, days
#: (lymphodepletion kills normal T cells at up to ~10 /d in the prior).
LEAD_IN_STEP, PRE_INFUSION_STEP = 0.5, 0.1

#: Window of the CAR T AUC and the IL-6 peak, days after infusion.
ACUTE_WINDOW = 28.0

#: Window over which days of ANC < 0.5 x 10^9/L are counted (Rejeski 2021).
NEUTROPENIA_WINDOW = 60.0

#: Severe neutropenia threshold, 10^9/L.
SEVERE_ANC = 0.5

#: How much finer the grid of the second try of a failed course is.
FINE_REFINE = 8

#: Couplings the engine reads; ``anc`` only when a neutrophil model is a node.
REQUIRED_COUPLINGS = ("cart_total", "tumour_burden", "il6_signal")

_NEVER = 1.0e6


@dataclass(frozen=True)
class DrugPolicy:
    """Start a drug when the IL-6 signal rise reaches ``log_rise`` (once).

    Attributes
    ----------
    channel : str
        Exposure channel (``toci_exposure`` or ``steroid_exposure``).
    log_rise : float
        ln(signal / baseline IL-6) that triggers the dose; ``inf`` = never.
    amount : float
        Dose in the channel's units.
    """

    channel: str
    log_rise: float = math.inf
    amount: float = 1.0


@dataclass(frozen=True)
class Protocol:
    """An arm's shared timing: the schedule template and the drug policies.

    ``schedule`` holds every pulse any patient of the arm can get (the
    infusion with amount 1 cell, lymphodepletion, bridging); per patient all
    pulses of a channel are scaled by one factor (``scales`` of
    :meth:`Engine.run`).
    """

    schedule: InputSchedule
    horizon_days: float = 365.0
    policies: tuple[DrugPolicy, ...] = ()
    visits: tuple[float, ...] = VISIT_DAYS

    def __post_init__(self) -> None:
        if not self.horizon_days >= max(self.visits, default=0.0):
            raise ModelSpecificationError(
                f"horizon {self.horizon_days} d ends before the last visit "
                f"{max(self.visits)} d"
            )


def step_grid(
    schedule: InputSchedule,
    horizon: float,
    visits: Sequence[float],
    refine: int = 1,
):
    """Grid nodes from the schedule's start to ``horizon`` (see module doc);
    ``refine`` divides every step."""
    starts = [p.start_day for ps in schedule.pulses.values() for p in ps]
    first = min([0.0, *(d for d in starts if d < 0)])
    nodes = [
        np.arange(schedule.t_start, first, LEAD_IN_STEP / refine),
        np.arange(first, 0.0, PRE_INFUSION_STEP / refine),
    ]
    start = 0.0
    for end, step in PHASES:
        stop = min(end, horizon)
        nodes.append(np.arange(start, stop, step / refine))
        start = stop
        if stop >= horizon:
            break
    events = [horizon, *visits]
    for pulses in schedule.pulses.values():
        for p in pulses:
            events += [p.start_day, p.end_day, 0.5 * (p.start_day + p.end_day)]
    grid = np.unique(np.round(np.concatenate([*nodes, events]), 9))
    return grid[(grid >= schedule.t_start) & (grid <= horizon)]


@dataclass
class _Inputs:
    names: list[str]
    kernels: list[np.ndarray]  # per channel: steps x 3 stages (template amounts)
    constants: dict[str, float] = field(default_factory=dict)


def _kernels(graph: ModelGraph, schedule: InputSchedule, t0s, hs) -> _Inputs:
    # input value per unit amount of each pulse, per step and stage
    stages = np.stack([t0s, t0s + hs / 2, t0s + hs], axis=1)
    out = _Inputs([], [])
    for name in graph.exogenous:
        channel = graph.channels[name]
        if channel.kind == "constant":
            out.constants[name] = float(
                schedule.constants.get(name, channel.default)
            )
            continue
        pulses = schedule.of(name) or ()
        start = np.array([p.start_day for p in pulses], float).reshape(1, -1)
        end = np.array([p.end_day for p in pulses], float).reshape(1, -1)
        if channel.kind == "rate":
            width = np.maximum(end - start, 1e-9)
            lo = np.maximum(start, t0s[:, None])
            hi = np.minimum(end, (t0s + hs)[:, None])
            mean = np.clip(hi - lo, 0.0, None) / width / hs[:, None]
            kernel = np.repeat(mean[:, None, :], 3, axis=1)
        else:
            rate = math.log(2.0) / channel.half_life_days
            active = (t0s[:, None] >= start - 1e-9)[:, None, :]
            since = np.maximum(stages[:, :, None] - start[None], 0.0)
            kernel = np.where(active, np.exp(-rate * since), 0.0)
        amounts = np.array([p.amount for p in pulses], float)
        out.names.append(name)
        out.kernels.append(np.asarray(kernel @ amounts, float).reshape(-1, 3))
    return out


def _phis(z: Any) -> tuple[Any, Any, Any]:
    """phi_1, phi_2, phi_3 of ``z`` (phi_k(z) = sum_j z^j / (j + k)!).

    Direct formulas where ``|z| >= 0.5``; below, the series to ``z^9`` (error
    < 0.5^10 / 10! ~ 3e-10), evaluated by Horner's rule.
    """
    small = jnp.abs(z) < 0.5
    safe = jnp.where(small, 1.0, z)
    e = jnp.exp(safe)
    direct1 = (e - 1.0) / safe
    direct2 = (direct1 - 1.0) / safe
    direct3 = (direct2 - 0.5) / safe
    out = []
    for k, direct in ((1, direct1), (2, direct2), (3, direct3)):
        series = jnp.full_like(z, 1.0 / math.factorial(9 + k))
        for j in range(8, -1, -1):
            series = series * z + 1.0 / math.factorial(j + k)
        out.append(jnp.where(small, series, direct))
    return out[0], out[1], out[2]


def _stiff_states(graph: ModelGraph) -> np.ndarray:
    # indices of the states whose model declares linear decay rates
    index = [
        np.arange(part.start, part.stop)
        for model, part in zip(graph.models, graph._state_slices)
        if hasattr(model, "linear_decay_rates")
    ]
    return np.concatenate(index) if index else np.zeros(0, dtype=int)


def _decay_rates(graph: ModelGraph, params: list[dict], y: Any) -> Any:
    # the declared rates of the stiff states, in the order of _stiff_states
    parts = [
        jnp.reshape(model.linear_decay_rates(p, y[part]), (-1,))
        for model, p, part in zip(graph.models, params, graph._state_slices)
        if hasattr(model, "linear_decay_rates")
    ]
    return jnp.concatenate(parts) if parts else jnp.zeros(0)


def _weights(lam: Any, h: Any, stiff: np.ndarray, size: int) -> tuple:
    # E, E^(1/2), h/2 phi1(z/2), phi1, phi2, phi3 for every state: computed on
    # the stiff states only; the others have lam = 0 (plain RK4 weights)
    z = -lam * h
    values = (jnp.exp(z), jnp.exp(z / 2), h / 2 * _phis(z / 2)[0], *_phis(z))
    plain = (1.0, 1.0, h / 2, 1.0, 0.5, 1.0 / 6.0)
    return tuple(
        jnp.full(size, base).at[stiff].set(value)
        for base, value in zip(plain, values)
    )


class Engine:
    """Simulate an arm's patients on a shared grid and summarise each course.

    Parameters
    ----------
    graph : ModelGraph
        Must write the couplings of :data:`REQUIRED_COUPLINGS`; with a
        neutrophil node (coupling ``anc``) neutropenia is summarised too.
    protocol : Protocol
        Schedule template, horizon, drug policies and visit days.
    """

    def __init__(
        self, graph: ModelGraph, protocol: Protocol, refine: int = 1
    ) -> None:
        missing = [c for c in REQUIRED_COUPLINGS if c not in graph.coupling_names]
        if missing:
            raise ModelSpecificationError(
                f"graph {graph.name} lacks couplings {missing} needed by trials"
            )
        for policy in protocol.policies:
            if policy.channel not in graph.exogenous:
                raise ModelSpecificationError(
                    f"drug policy on {policy.channel!r}: not an input of "
                    f"graph {graph.name} ({sorted(graph.exogenous)})"
                )
        self.graph, self.protocol = graph, protocol
        self.refine = refine
        self.grid = step_grid(
            protocol.schedule, protocol.horizon_days, protocol.visits, refine
        )
        self._finer: Engine | None = None
        t0s, hs = self.grid[:-1], np.diff(self.grid)
        self.inputs = _kernels(graph, protocol.schedule, t0s, hs)
        self.has_anc = "anc" in graph.coupling_names
        self._xs = (t0s, hs, tuple(self.inputs.kernels))
        self._run = jax.jit(jax.vmap(self._one, in_axes=(0, 0, 0, 0, None)))

    @property
    def n_steps(self) -> int:
        """Number of steps per course."""
        return int(self.grid.size - 1)

    # -- one patient (vmapped) ---------------------------------------------------
    def _field(self, t, y, params, exo):
        graph = self.graph
        values = dict(exo)
        values.update(graph.all_couplings(t, y, params))
        rates = []
        for model, part, p in zip(graph.models, graph._state_slices, params):
            inputs = {c.name: values[c.name] for c in model.inputs}
            rates.append(jnp.reshape(model.rhs(t, y[part], p, inputs), (-1,)))
        return jnp.concatenate(rates)

    def _exogenous(self, t, start, stage, kernels, amounts, constants, drugs):
        values = dict(constants)
        for name, kernel, amount in zip(self.inputs.names, kernels, amounts):
            values[name] = kernel[stage] * amount
        for policy, (when, dose) in zip(self.protocol.policies, drugs):
            rate = math.log(2.0) / self.graph.channels[policy.channel].half_life_days
            on = start >= when
            extra = jnp.where(on, dose * jnp.exp(-rate * jnp.maximum(t - when, 0.0)), 0.0)
            values[policy.channel] = values[policy.channel] + extra
        return values

    def _one(self, vector, amounts, constants, covariates, triggers):
        graph = self.graph
        params = graph.model_params(vector)
        y0 = graph.initial_state(vector, covariates)
        il6_base = params[graph.models.index(self._cytokines())]["il6_base"]
        stiff = _stiff_states(graph)
        serum_index = graph.state_names.index("cytokines.il6")
        visits = jnp.asarray(self.protocol.visits)
        doses = jnp.asarray([p.amount for p in self.protocol.policies])

        def step(carry, xs):
            y, acc = carry
            t, h, kernels = xs
            drugs = [(acc["drug_day"][i], doses[i]) for i in range(len(doses))]
            lam = jnp.zeros(y.shape).at[stiff].set(_decay_rates(graph, params, y))

            def exo(stage, time):
                return self._exogenous(
                    time, t, stage, kernels, amounts, constants, drugs
                )

            def n_of(stage, time, state):
                return self._field(time, state, params, exo(stage, time)) + lam * state

            e_full, e_half, half, p1, p2, p3 = _weights(
                lam[stiff], h, stiff, y.shape[0]
            )
            n_y = n_of(0, t, y)
            a = e_half * y + half * n_y
            n_a = n_of(1, t + h / 2, a)
            b = e_half * y + half * n_a
            n_b = n_of(1, t + h / 2, b)
            c = e_half * a + half * (2.0 * n_b - n_y)
            n_c = n_of(2, t + h, c)
            y_new = (
                e_full * y
                + h * (p1 - 3 * p2 + 4 * p3) * n_y
                + 2 * h * (p2 - 2 * p3) * (n_a + n_b)
                + h * (4 * p3 - p2) * n_c
            )
            return (y_new, _accumulate(acc, t + h, h, y_new)), None

        def _accumulate(acc, t_end, h, y_new):
            new = graph.all_couplings(t_end, y_new, params)
            cart, tumour = new["cart_total"], new["tumour_burden"]
            after = t_end > 0.0
            acute = after & (t_end <= ACUTE_WINDOW + 1e-9)
            better = after & (cart > acc["cmax"])
            rise = jnp.log(jnp.maximum(new["il6_signal"], 1e-300) / il6_base)
            serum = jnp.log(jnp.maximum(y_new[serum_index], 1e-300) / il6_base)
            out = dict(acc)
            out["cart"] = cart
            out["cmax"] = jnp.where(better, cart, acc["cmax"])
            out["tmax"] = jnp.where(better, t_end, acc["tmax"])
            out["auc"] = acc["auc"] + jnp.where(
                acute, 0.5 * h * (cart + acc["cart"]), 0.0
            )
            out["il6_rise"] = jnp.where(
                acute, jnp.maximum(acc["il6_rise"], rise), acc["il6_rise"]
            )
            out["il6_serum_rise"] = jnp.where(
                acute, jnp.maximum(acc["il6_serum_rise"], serum), acc["il6_serum_rise"]
            )
            at_zero = jnp.abs(t_end) < 1e-9
            out["tumour0"] = jnp.where(at_zero, tumour, acc["tumour0"])
            out["visits"] = jnp.where(
                jnp.abs(visits - t_end) < 1e-9, tumour, acc["visits"]
            )
            out["finite"] = (
                acc["finite"] & jnp.all(jnp.isfinite(y_new)) & jnp.all(y_new > -1e-6)
            )
            started = []
            for i, level in enumerate(triggers):
                fire = (acc["drug_day"][i] >= _NEVER) & after & (rise >= level)
                started.append(jnp.where(fire, t_end, acc["drug_day"][i]))
            out["drug_day"] = (
                jnp.stack(started) if started else acc["drug_day"]
            )
            if self.has_anc:
                low = after & (t_end <= NEUTROPENIA_WINDOW + 1e-9)
                out["anc_low"] = acc["anc_low"] + jnp.where(
                    low & (new["anc"] < SEVERE_ANC), h, 0.0
                )
            return out

        acc0 = {
            "cart": jnp.zeros(()),
            "cmax": jnp.zeros(()),
            "tmax": jnp.zeros(()),
            "auc": jnp.zeros(()),
            "il6_rise": jnp.full((), -jnp.inf),
            "il6_serum_rise": jnp.full((), -jnp.inf),
            "tumour0": jnp.full((), jnp.nan),
            "visits": jnp.full(visits.shape, jnp.nan),
            "finite": jnp.all(jnp.isfinite(y0)),
            "drug_day": jnp.full((len(self.protocol.policies),), _NEVER),
            "anc_low": jnp.zeros(()),
        }
        (_, acc), _ = jax.lax.scan(step, (y0, acc0), self._xs)
        return acc

    def _cytokines(self):
        for model in self.graph.models:
            if model.name == "cytokines":
                return model
        raise ModelSpecificationError(f"graph {self.graph.name} has no cytokines node")

    # -- public ----------------------------------------------------------------
    def run(
        self,
        vectors: np.ndarray,
        scales: Mapping[str, np.ndarray] | None = None,
        constants: Mapping[str, np.ndarray] | None = None,
        covariates: Mapping[str, np.ndarray] | None = None,
        *,
        fallback: bool = True,
    ) -> dict[str, np.ndarray]:
        """Summaries of ``len(vectors)`` courses.

        Parameters
        ----------
        vectors : numpy.ndarray
            Natural-scale parameter vectors, patients x parameters.
        scales : mapping, optional
            Channel -> per-patient multiplier of the template pulses' amounts
            (default 1): e.g. the infusion's cells when the template infuses
            one cell, 0 for patients who get no bridging.
        constants : mapping, optional
            Constant channel -> per-patient values (e.g.
            ``product_memory_fraction``); default the schedule's value.
        covariates : mapping, optional
            :data:`~cartwin.graph.graph.COVARIATE_KEYS` -> per-patient values.

        Returns
        -------
        dict of numpy.ndarray
            ``cmax`` (/µL), ``tmax`` (d), ``auc`` (cells/µL x d, days 0-28),
            ``il6_rise`` (peak ln rise of the IL-6 signal, days 0-28),
            ``il6_serum_rise`` (the same of serum IL-6, which tocilizumab
            raises while it lowers the signal), ``tumour0`` (10^9 cells
            at day 0), ``visits`` (patients x visits, tumour), ``drug_day``
            (patients x policies; inf = never), ``anc_low`` (days of ANC <
            0.5 over days 0-60; NaN without a neutrophil node), ``ok``,
            ``adaptive`` (True where the course was solved again with the
            graph's adaptive solver because a state of the fixed-grid course
            went negative or non-finite; ``fallback=False`` skips that).
        """
        vectors = np.atleast_2d(np.asarray(vectors, float))
        n = vectors.shape[0]
        scales = dict(scales or {})
        amounts = [
            np.broadcast_to(np.asarray(scales.pop(name, 1.0), float), (n,)).copy()
            for name in self.inputs.names
        ]
        if scales:
            raise ModelSpecificationError(
                f"scales given for channels {sorted(scales)} that have no pulses"
            )
        consts = {
            k: np.broadcast_to(
                np.asarray((constants or {}).get(k, v), float), (n,)
            ).copy()
            for k, v in self.inputs.constants.items()
        }
        covs = {
            k: np.broadcast_to(
                np.asarray(
                    (covariates or {}).get(
                        k, self.protocol.schedule.covariates.get(k, math.nan)
                    ),
                    float,
                ),
                (n,),
            ).copy()
            for k in COVARIATE_KEYS
        }
        triggers = tuple(float(p.log_rise) for p in self.protocol.policies)
        acc = jax.device_get(self._run(vectors, amounts, consts, covs, triggers))
        out = {k: np.array(v) for k, v in acc.items() if k != "cart"}
        out["drug_day"] = np.where(out["drug_day"] >= _NEVER, np.inf, out["drug_day"])
        if not self.has_anc:
            out["anc_low"] = np.full(n, np.nan)
        out["ok"] = out.pop("finite") & np.isfinite(out["cmax"])
        out["adaptive"] = np.zeros(n, dtype=bool)
        failed = np.flatnonzero(~out["ok"])
        if fallback and failed.size and self.refine < FINE_REFINE:
            self._retry_finer(failed, vectors, amounts, consts, covs, out)
            failed = np.flatnonzero(~out["ok"])
        if fallback:
            for i in failed:
                self._resolve(i, vectors[i], amounts, consts, covs, out)
        return out

    def _retry_finer(self, failed, vectors, amounts, consts, covs, out) -> None:
        # the failed courses again, together, on a grid FINE_REFINE x finer
        if self._finer is None:
            self._finer = Engine(self.graph, self.protocol, refine=FINE_REFINE)
        size = max(8, 1 << int(failed.size - 1).bit_length())
        pick = np.concatenate([failed, np.repeat(failed[:1], size - failed.size)])
        again = self._finer.run(
            vectors[pick],
            dict(zip(self.inputs.names, (a[pick] for a in amounts))),
            {k: v[pick] for k, v in consts.items()},
            {k: v[pick] for k, v in covs.items()},
            fallback=False,
        )
        for key, value in again.items():
            if key != "adaptive":
                out[key][failed] = value[: failed.size]

    # -- adaptive fallback -------------------------------------------------------
    def patient_schedule(self, amounts, consts, covs, i: int) -> InputSchedule:
        """Patient ``i``'s schedule: template pulses scaled, its constants."""
        schedule = self.protocol.schedule
        for name, scale in zip(self.inputs.names, amounts):
            pulses = tuple(
                replace(p, amount=p.amount * float(scale[i]))
                for p in schedule.of(name) or ()
            )
            schedule = schedule.with_pulses(name, pulses)
        for name, values in consts.items():
            schedule = schedule.with_constant(name, float(values[i]))
        covariates = {k: float(v[i]) for k, v in covs.items() if np.isfinite(v[i])}
        return replace(schedule, covariates={**schedule.covariates, **covariates})

    def _resolve(self, i, vector, amounts, consts, covs, out) -> None:
        # a course the fixed grid could not follow (a state went negative or
        # non-finite: stiff tails of the prior), solved again adaptively
        from cartwin.graph.forecast import simulate_draws

        schedule = self.patient_schedule(amounts, consts, covs, i)
        base = vector[self.graph.parameter_names.index("cytokines.il6_base")]
        t = self.grid[self.grid >= 0.0]
        days = []
        for policy in self.protocol.policies:
            series = simulate_draws(self.graph, vector[None], schedule, t)
            rise = np.log(np.maximum(series["il6_signal"][0], 1e-300) / base)
            hit = np.flatnonzero((t > 0) & (rise >= policy.log_rise))
            day = float(t[hit[0]]) if hit.size else math.inf
            days.append(day)
            if hit.size:
                pulse = Pulse(day, day + 1.0 / 24.0, policy.amount, "policy")
                pulses = (*schedule.of(policy.channel), pulse)
                schedule = schedule.with_pulses(policy.channel, pulses)
        series = simulate_draws(self.graph, vector[None], schedule, t)
        if not series["_ok"][0]:
            return
        summary = _summaries(t, series, base, self.protocol.visits, self.has_anc)
        for key, value in summary.items():
            out[key][i] = value
        out["drug_day"][i] = days
        out["ok"][i], out["adaptive"][i] = True, True


def _summaries(t, series, il6_base, visits, has_anc) -> dict[str, Any]:
    # the engine's per-course summaries from a dense trajectory (one patient)
    cart = series["cart_total"][0]
    tumour = series["tumour_burden"][0]
    after = t > 0
    acute = after & (t <= ACUTE_WINDOW + 1e-9)
    peak = int(np.argmax(np.where(after, cart, -np.inf)))
    window = (t >= 0) & (t <= ACUTE_WINDOW + 1e-9)
    rise = np.log(np.maximum(series["il6_signal"][0], 1e-300) / il6_base)
    out = {
        "cmax": cart[peak],
        "tmax": t[peak],
        "auc": np.trapezoid(cart[window], t[window]),
        "il6_rise": np.max(rise[acute]),
        "il6_serum_rise": np.max(
            np.log(np.maximum(series["cytokines.il6"][0], 1e-300) / il6_base)[acute]
        ),
        "tumour0": np.interp(0.0, t, tumour),
        "visits": np.interp(np.asarray(visits), t, tumour),
    }
    if has_anc:
        low = after & (t <= NEUTROPENIA_WINDOW + 1e-9)
        steps = np.diff(t, prepend=t[0])
        out["anc_low"] = float(np.sum(steps[low & (series["anc"][0] < SEVERE_ANC)]))
    return out
