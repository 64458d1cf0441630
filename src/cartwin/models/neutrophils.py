"""Neutrophil recovery after lymphodepletion: the Friberg transit model.

A graph node (:class:`cartwin.graph.spec.ScaleModel`) for the organ scale.
Friberg et al. 2002 [1]_ (``reference/clinical-facts.md`` §6): a
proliferating pool, three transit compartments and circulating neutrophils,
with feedback of the circulating count on proliferation::

    k_tr = 4 / MTT                 (n = 3 transit compartments, k_prol = k_circ = k_tr)
    E    = s * slope_ld * L(t)                               drug effect
    dProl/dt = k_tr Prol (1 - E) (Circ0 / Circ)^gamma - k_tr Prol
    dTr_i/dt = k_tr (Tr_(i-1) - Tr_i),  Tr_0 = Prol,   i = 1..3
    dCirc/dt = k_tr Tr3 - k_tr Circ

``Circ`` is the absolute neutrophil count (ANC, 10^9/L); every compartment
starts at ``Circ0`` (steady state without drug). ``L(t)`` is the exogenous
coupling input ``ld_exposure`` of the model graph
(:data:`cartwin.graph.inputs.CHANNELS`): one unit is one day of fludarabine
30 mg/m² + cyclophosphamide 500 mg/m² (half each; bendamustine 90 mg/m² is
one unit), given as a bolus whose exposure decays with a 1-day half-life. No
flu/cy plasma concentrations are available, so the effect is driven by this
dose-derived exposure (the K-PD approach of Jacqmin 2007 [3]_). For
simulations outside a graph, :class:`Regimen` computes the same exposure
from doses in mg/m² with the graph's reference doses and half-life.

Glossary and sources
--------------------

===========  ================================  ======  ============================
name         meaning                           unit    source
===========  ================================  ======  ============================
circ0        baseline ANC                      10*9/L  [2]_: 5.22, ω² 0.0640
mtt          mean transit time                 d       [2]_: 84.2 h, ω² 0.0192
gamma        feedback exponent                 1       [2]_: 0.145
sensitivity  patient's marrow sensitivity s    1       1; [2]_'s slope ω² 0.128
slope_ld     effect per unit of ld_exposure    1       calibrated (see below)
===========  ================================  ======  ============================

The Netterberg 2017 values are the docetaxel **neutrophil** parameterisation
of the Friberg model (DDMODEL00000224, via nlmixr2lib; [S] in
clinical-facts.md). IIV variances ω² are read as variances (nlmixr2lib's
convention), so the prior SD of the log is ω. The residual error is Netterberg's
log-additive SD 0.424.

Calibration of the drug effect
------------------------------
**No published Friberg parameterisation of fludarabine/cyclophosphamide
lymphodepletion exists** (clinical-facts.md §6, open item 7). ``slope_ld`` is
set so that the typical patient (prior medians) given the axicabtagene
ciloleucel regimen (fludarabine 30 mg/m² and cyclophosphamide 500 mg/m² daily
on days -5, -4, -3) spends 9.0 days with ANC < 0.5 ×10^9/L between day 0 and
day 60: Rejeski 2021 Table 2, median duration of severe neutropenia, 9 (95%
CI 8-10) days pooled and 9 (8-10) days for axi-cel
(doi:10.1182/blood.2020010543). :func:`calibrate_drug_effect` repeats the
calculation; ``tests/models/test_neutrophils.py`` checks that the constant
reproduces 9 days within 0.05 d. As a check on another regimen, tisa-cel's
lower doses (flu 25 + cy 250 mg/m²) give 7.2 days, inside Rejeski's tisa-cel
median 9.5 (95% CI 6-12) days.

Known limits
------------
- Post-CAR-T neutrophil recovery is often biphasic (Rejeski 2021); a single
  lymphodepletion course in a Friberg chain gives one nadir and one recovery.
  No CRS- or CAR T-driven second suppression term is included: a late second
  dip in a patient's ANC will show as misfit, not be explained.
- The exposure half-life (1 d) and the equal weight of fludarabine and
  cyclophosphamide are the graph's assumptions (``ld_exposure``); the
  calibration absorbs them into ``slope_ld`` for the axi-cel regimen, so they
  matter mainly for other schedules.
- Doses are per m² of body surface area; a dose in mg must be divided by
  the patient's BSA before it becomes an input.
- The model starts at the pre-lymphodepletion steady state: a simulation
  must start before the first lymphodepletion dose (the graph's ``t0``).

References
----------
.. [1] Friberg LE, Henningsson A, Maas H, Nguyen L, Karlsson MO. Model of
   chemotherapy-induced myelosuppression with parameter consistency across
   drugs. J Clin Oncol 2002;20(24):4713-4721. doi:10.1200/JCO.2002.02.140
.. [2] Kloft 2006 docetaxel neutrophil parameters as encoded by Netterberg
   et al. 2017 in DDMORE DDMODEL00000224 (nlmixr2lib
   ``inst/modeldb/ddmore/Netterberg_2017_docetaxel.R``, commit 01483597;
   clinical-facts.md §6 [S]). Netterberg I, Nielsen EI, Friberg LE,
   Karlsson MO. Cancer Chemother Pharmacol 2017;80(2):343-353; the DOI was
   not verified here.
.. [3] Jacqmin P, Snoeck E, van Schaick EA, et al. Modelling response time
   profiles in the absence of drug concentrations: definition and
   performance evaluation of the K-PD model. J Pharmacokinet Pharmacodyn
   2007;34(1):57-85. doi:10.1007/s10928-006-9035-z
.. [4] Rejeski K, et al. CAR-HEMATOTOX: a model for CAR T-cell-related
   hematologic toxicity in relapsed/refractory large B-cell lymphoma. Blood
   2021;138(24):2499-2513. doi:10.1182/blood.2020010543
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import DataError, ModelSpecificationError
from cartwin.graph.graph import SolverSettings
from cartwin.graph.inputs import CHANNELS, LD_REFERENCE
from cartwin.graph.spec import Coupling, Observable, Parameter, State, check_model
from cartwin.models.sbml import solve_ode
from cartwin.record.model import PatientRecord

configure_jax()

#: Coupling input of the model: lymphodepletion exposure (graph channel).
LD_INPUT = "ld_exposure"

#: Number of transit compartments of the Friberg model.
N_TRANSIT = 3

#: Index of the circulating neutrophils (ANC) in the state vector.
ANC_INDEX = N_TRANSIT + 1

#: Severe neutropenia threshold, 10^9/L (Rejeski 2021: ANC < 500/µL).
SEVERE_ANC = 0.5

#: Calibrated effect per unit of ``ld_exposure`` (module docstring).
SLOPE_LD = 2.05908

#: Rejeski 2021 Table 2: median days with ANC < 0.5 (d0-d60), axi-cel/pooled.
TARGET_SEVERE_DAYS = 9.0

_NETTERBERG = (
    "Kloft 2006 docetaxel neutrophils as encoded by Netterberg 2017, DDMORE "
    "DDMODEL00000224 via nlmixr2lib (clinical-facts.md §6 [S])"
)


@dataclass(frozen=True)
class Dose:
    """One lymphodepleting dose.

    Attributes
    ----------
    drug : str
        A drug of :data:`cartwin.graph.inputs.LD_REFERENCE` (``"fludarabine"``,
        ``"cyclophosphamide"``, ``"bendamustine"``).
    day : float
        Start of the administration, days since CAR T infusion (negative before).
    amount_mg_m2 : float
        Dose, mg per m² body surface area, > 0.
    """

    drug: str
    day: float
    amount_mg_m2: float

    def __post_init__(self) -> None:
        if self.drug not in LD_REFERENCE:
            raise ModelSpecificationError(
                f"Dose.drug {self.drug!r} not in {sorted(LD_REFERENCE)}"
            )
        if not (self.amount_mg_m2 > 0 and math.isfinite(self.day)):
            raise ModelSpecificationError(
                f"Dose of {self.drug} on day {self.day}: amount must be > 0 and the "
                f"day finite, got {self.amount_mg_m2} mg/m2"
            )

    @property
    def exposure_units(self) -> float:
        """Units of ``ld_exposure`` this dose adds (graph reference doses)."""
        reference, weight = LD_REFERENCE[self.drug]
        return weight * self.amount_mg_m2 / reference


@dataclass(frozen=True)
class Regimen:
    """A lymphodepletion regimen: doses of fludarabine, cyclophosphamide, ..."""

    name: str
    doses: tuple[Dose, ...]

    def __post_init__(self) -> None:
        if not self.doses:
            raise ModelSpecificationError(f"regimen {self.name!r} has no doses")

    @property
    def start_day(self) -> float:
        """Day of the first dose."""
        return min(d.day for d in self.doses)

    @property
    def jump_days(self) -> tuple[float, ...]:
        """Dose times (discontinuities of the exposure)."""
        return tuple(sorted({d.day for d in self.doses}))

    def arrays(self) -> dict[str, jax.Array]:
        """Dose table (start days, exposure units) for :func:`ld_exposure`."""
        return {
            "start": jnp.asarray([d.day for d in self.doses]),
            "units": jnp.asarray([d.exposure_units for d in self.doses]),
        }


def ld_exposure(t: Any, table: Mapping[str, jax.Array]) -> Any:
    """``ld_exposure`` at ``t`` days, as the graph computes it from pulses."""
    rate = math.log(2.0) / CHANNELS[LD_INPUT].half_life_days
    since = jnp.maximum(t - table["start"], 0.0)
    active = t >= table["start"]
    return jnp.sum(jnp.where(active, table["units"] * jnp.exp(-rate * since), 0.0))


def daily_regimen(
    name: str, flu_mg_m2: float, cy_mg_m2: float, days: tuple[float, ...]
) -> Regimen:
    """Fludarabine and cyclophosphamide once daily on ``days``."""
    doses = [Dose("fludarabine", day, flu_mg_m2) for day in days]
    doses += [Dose("cyclophosphamide", day, cy_mg_m2) for day in days]
    return Regimen(name, tuple(doses))


def regimen_from_record(record: PatientRecord) -> Regimen:
    """Lymphodepletion doses of a patient's record.

    Reads ``lymphodepletion`` events named like a drug of
    :data:`cartwin.graph.inputs.LD_REFERENCE` with a dose in ``mg/m2``; each
    dose counts at the event's start (as in the graph's ``ld_exposure``).

    Raises
    ------
    DataError
        When the record has no such dose, or a dose lacks an amount or is in
        another unit (a dose in mg needs the body surface area first).
    """
    doses = []
    for event in record.events_of("lymphodepletion"):
        drug = event.name.strip().lower()
        if drug not in LD_REFERENCE:
            raise DataError(
                f"patient {record.facts.pseudonym}: lymphodepletion drug "
                f"{event.name!r} ({event.source_id}) is not modelled; only "
                f"{sorted(LD_REFERENCE)}"
            )
        if event.dose is None or event.dose_unit != "mg/m2":
            raise DataError(
                f"patient {record.facts.pseudonym}: {drug} dose {event.dose!r} "
                f"{event.dose_unit!r} ({event.source_id}) must be given in mg/m2"
            )
        doses.append(Dose(drug, record.t_days(event.start), event.dose))
    if not doses:
        raise DataError(
            f"patient {record.facts.pseudonym} has no lymphodepletion doses"
        )
    return Regimen(f"patient {record.facts.pseudonym}", tuple(doses))


#: Axi-cel label regimen: flu 30 + cy 500 mg/m²/d on days -5, -4, -3.
AXI_CEL_REGIMEN = daily_regimen("axi-cel", 30.0, 500.0, (-5.0, -4.0, -3.0))

#: Tisa-cel label regimen: flu 25 + cy 250 mg/m²/d for 3 days (days assumed).
TISA_CEL_REGIMEN = daily_regimen("tisa-cel", 25.0, 250.0, (-5.0, -4.0, -3.0))


_CALIBRATED = (
    "calibrated here: typical patient 9 d ANC < 0.5 after the axi-cel regimen "
    "(Rejeski 2021 Table 2, doi:10.1182/blood.2020010543)"
)

#: Parameters of :class:`NeutrophilModel` (see module glossary).
NEUTROPHIL_PARAMETERS = (
    Parameter("circ0", "10*9/L", 5.22, math.sqrt(0.0640), 0.05, 50.0, _NETTERBERG),
    Parameter("mtt", "d", 84.2 / 24.0, math.sqrt(0.0192), 0.5, 20.0, _NETTERBERG),
    Parameter("gamma", "1", 0.145, 0.0, 0.0, 1.0, _NETTERBERG),
    Parameter(
        "sensitivity",
        "1",
        1.0,
        math.sqrt(0.128),
        0.01,
        100.0,
        "assumption: IIV of the drug slope from " + _NETTERBERG,
    ),
    Parameter("slope_ld", "1", SLOPE_LD, 0.0, source=_CALIBRATED),
)

_STATES = (
    State("prol", "10*9/L", description="proliferating precursors (ANC equivalents)"),
    *(
        State(f"transit{i}", "10*9/L", description=f"transit compartment {i}")
        for i in range(1, N_TRANSIT + 1)
    ),
    State("circ", "10*9/L", description="circulating neutrophils (ANC)"),
)


@dataclass(frozen=True)
class NeutrophilModel:
    """Friberg neutrophil model driven by the lymphodepletion exposure (module)."""

    name: str = "neutrophils"
    version: str = "1.0"
    references: tuple[str, ...] = (
        "doi:10.1200/JCO.2002.02.140",
        "DDMORE DDMODEL00000224 (Netterberg 2017, docetaxel neutrophils)",
        "doi:10.1007/s10928-006-9035-z",
        "doi:10.1182/blood.2020010543",
    )
    parameters: tuple[Parameter, ...] = NEUTROPHIL_PARAMETERS
    states: tuple[State, ...] = _STATES
    observables: tuple[Observable, ...] = (
        Observable("anc", "10*9/L", "log_additive", 0.424),
    )
    inputs: tuple[Coupling, ...] = (
        Coupling(LD_INPUT, "1", "lymphodepletion exposure (standard days)"),
    )
    outputs: tuple[Coupling, ...] = (
        Coupling("anc", "10*9/L", "absolute neutrophil count"),
    )

    def __post_init__(self) -> None:
        check_model(self)

    def initial_state(
        self, params: Mapping[str, Any], covariates: Mapping[str, Any]
    ) -> Any:
        """Steady state without drug: every compartment at ``circ0``."""
        circ0 = jnp.asarray(params["circ0"], dtype=float)
        return jnp.stack([circ0] * (N_TRANSIT + 2), axis=-1)

    def rhs(
        self, t: Any, y: Any, params: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Any:
        """Friberg chain driven by the lymphodepletion exposure, per day."""
        prol, circ = y[..., 0], y[..., N_TRANSIT + 1]
        k_tr = (N_TRANSIT + 1) / params["mtt"]
        effect = params["sensitivity"] * params["slope_ld"] * inputs[LD_INPUT]

        # proliferation with feedback, then the transit chain
        feedback = (params["circ0"] / circ) ** params["gamma"]
        d_prol = k_tr * prol * (1.0 - effect) * feedback - k_tr * prol
        chain = [y[..., i] for i in range(N_TRANSIT + 2)]
        d_chain = [k_tr * (chain[i] - chain[i + 1]) for i in range(N_TRANSIT + 1)]
        return jnp.stack([d_prol, *d_chain], axis=-1)

    def linear_decay_rates(self, params: Mapping[str, Any], y: Any) -> Any:
        """First-order loss rate of every compartment, ``k_tr`` per day (any ``y``).

        Fixed-step solvers of large cohorts (:mod:`cartwin.trial.engine`)
        integrate these losses exactly and the rest of :meth:`rhs` explicitly.
        """
        k_tr = (N_TRANSIT + 1) / jnp.asarray(params["mtt"], dtype=float)
        return jnp.stack([k_tr] * (N_TRANSIT + 2), axis=-1)

    def couplings(self, t: Any, y: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ANC, for models that read it."""
        return {"anc": y[..., ANC_INDEX]}

    def observe(self, quantity: str, t: Any, y: Any, params: Mapping[str, Any]) -> Any:
        """ANC in 10^9/L."""
        if quantity != "anc":
            raise ModelSpecificationError(
                f"model {self.name} explains 'anc' only, not {quantity!r}"
            )
        return y[..., ANC_INDEX]

    def typical_params(self) -> dict[str, float]:
        """Prior medians of every parameter."""
        return {p.name: p.median for p in self.parameters}

    # -- SBML export (cartwin.graph.sbml_export) ---------------------------
    def sbml_rates(self) -> dict[str, str]:
        """Each state's derivative as an SBML L3 infix formula, per day.

        The same Friberg chain as :meth:`rhs`, for ``libsbml.parseL3Formula``;
        ``tests/graph/test_sbml_export.py`` checks it against :meth:`rhs`.
        """
        names = [s.name for s in self.states]
        k_tr = f"({N_TRANSIT + 1} / mtt)"
        effect = f"(sensitivity * slope_ld * {LD_INPUT})"
        feedback = "((circ0 / circ)^gamma)"
        rates = {
            names[0]: f"{k_tr} * {names[0]} * (1 - {effect}) * {feedback}"
            f" - {k_tr} * {names[0]}"
        }
        for i in range(1, len(names)):
            rates[names[i]] = f"{k_tr} * ({names[i - 1]} - {names[i]})"
        return rates

    def sbml_couplings(self) -> dict[str, str]:
        """The ANC coupling as an SBML L3 infix formula."""
        return {"anc": self.states[ANC_INDEX].name}

    def sbml_initial_state(self) -> dict[str, str]:
        """:meth:`initial_state` (every compartment at ``circ0``) as formulas."""
        return {s.name: "circ0" for s in self.states}


#: The model instance the functions below simulate.
MODEL = NeutrophilModel()

#: Solver for ANC trajectories: non-stiff (rates of order 1/d), tight tolerances.
ANC_SOLVER = SolverSettings(solver="tsit5", rtol=1e-8, atol=1e-10)


def _vector_field(
    t: Any, y: Any, args: tuple[Mapping[str, Any], Mapping[str, Any]]
) -> Any:
    params, table = args
    return MODEL.rhs(t, y, params, {LD_INPUT: ld_exposure(t, table)})


def anc_trajectory(
    params: Mapping[str, Any],
    t_days: Any,
    regimen: Regimen = AXI_CEL_REGIMEN,
    *,
    t0: float | None = None,
    settings: SolverSettings = ANC_SOLVER,
) -> jax.Array:
    """ANC (10^9/L) at ``t_days``; JAX-traceable (``vmap`` over ``params``).

    Parameters
    ----------
    params : mapping
        Every parameter of :data:`NEUTROPHIL_PARAMETERS` by name.
    t_days : array
        Increasing days since CAR T infusion, ``>= t0``.
    regimen : Regimen
        Lymphodepletion doses.
    t0 : float, optional
        Start of the simulation (pre-lymphodepletion steady state), days;
        at most the first dose's day. Default: one day before the first dose.
    settings : SolverSettings
        Default :data:`ANC_SOLVER`.

    Returns
    -------
    jax.Array
        ANC at each time; NaN where the solver failed.
    """
    start = regimen.start_day - 1.0 if t0 is None else t0
    if start > regimen.start_day:
        raise ModelSpecificationError(
            f"simulation start t0 = {start} d is after the first lymphodepletion "
            f"dose on day {regimen.start_day}"
        )
    y0 = MODEL.initial_state(params, {})
    ys = solve_ode(
        _vector_field,
        y0,
        t_days,
        (dict(params), regimen.arrays()),
        t0=start,
        jumps=regimen.jump_days,
        settings=settings,
    )
    return ys[:, ANC_INDEX]


def simulate_anc(
    t_days: Any,
    *,
    params: Mapping[str, float] | None = None,
    regimen: Regimen = AXI_CEL_REGIMEN,
    settings: SolverSettings = ANC_SOLVER,
) -> np.ndarray:
    """ANC (10^9/L) of one patient at ``t_days`` (default: typical patient).

    Examples
    --------
    >>> from cartwin.models.neutrophils import simulate_anc
    >>> round(float(simulate_anc([-5.5])[0]), 2)   # before the first dose
    5.22
    """
    values = {**MODEL.typical_params(), **(params or {})}
    return np.asarray(anc_trajectory(values, t_days, regimen, settings=settings))


def sample_parameters(
    rng: np.random.Generator, n: int, model: NeutrophilModel = MODEL
) -> dict[str, np.ndarray]:
    """``n`` draws from the log-normal population prior, clipped to bounds."""
    draws = {}
    for p in model.parameters:
        values = p.median * np.exp(p.log_sd * rng.standard_normal(n))
        draws[p.name] = np.clip(values, p.lower, p.upper)
    return draws


# -- derived clinical quantities --------------------------------------------

#: Output grid of the derived quantities: day 0 to 60 every 0.02 d.
METRIC_GRID_DAYS = np.linspace(0.0, 60.0, 3001)


def days_below(
    t_days: np.ndarray, anc: np.ndarray, threshold: float, until: float
) -> np.ndarray:
    """Days in ``[t_days[0], until]`` with ANC below ``threshold``.

    ``anc`` has shape (..., len(t_days)). ln ANC is interpolated linearly
    between grid points, so a crossing inside an interval counts the part of
    the interval below the threshold.
    """
    t, log_anc = _window(t_days, anc, until)
    log_thr = math.log(threshold)
    left, right = log_anc[..., :-1], log_anc[..., 1:]
    width = np.diff(t)

    # fraction of each interval below the threshold (linear in ln ANC)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (log_thr - left) / (right - left)
    fraction = np.where(left < log_thr, np.where(right < log_thr, 1.0, cross), 0.0)
    fraction = np.where((left >= log_thr) & (right < log_thr), 1.0 - cross, fraction)
    return np.sum(fraction * width, axis=-1)


def recovery_day(
    t_days: np.ndarray, anc: np.ndarray, threshold: float, until: float
) -> np.ndarray:
    """Day from which ANC stays >= ``threshold`` up to ``until``.

    0 when ANC is never below the threshold in the window; ``inf`` when it
    is still below at ``until`` (not recovered within the window).
    """
    t, log_anc = _window(t_days, anc, until)
    log_thr = math.log(threshold)
    below = log_anc < log_thr
    last = np.where(
        below.any(axis=-1), t.size - 1 - np.argmax(below[..., ::-1], axis=-1), -1
    )
    inner = np.clip(last, 0, t.size - 2)
    left = np.take_along_axis(log_anc, inner[..., None], -1)[..., 0]
    right = np.take_along_axis(log_anc, inner[..., None] + 1, -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = t[inner] + (log_thr - left) / (right - left) * (
            t[inner + 1] - t[inner]
        )
    result = np.where(last < 0, 0.0, crossing)
    return np.where(last == t.size - 1, np.inf, result)


def _window(
    t_days: np.ndarray, anc: np.ndarray, until: float
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t_days, dtype=float)
    keep = t <= until + 1e-12
    return t[keep], np.log(np.asarray(anc, dtype=float)[..., keep])


@dataclass(frozen=True)
class NeutropeniaMetrics:
    """Neutrophil recovery quantities of one or many trajectories.

    Attributes
    ----------
    severe_days_to_30 : numpy.ndarray
        Days with ANC < 0.5 ×10^9/L from day 0 to 30 (the early-ICAHT window
        of the CAR-HEMATOTOX literature).
    severe_days_to_60 : numpy.ndarray
        Days with ANC < 0.5 ×10^9/L from day 0 to 60 (Rejeski 2021's end point).
    recovery_0_5_day, recovery_1_0_day : numpy.ndarray
        Day from which ANC stays > 0.5 (resp. 1.0) ×10^9/L up to day 60;
        ``inf`` when not recovered by then.
    nadir_anc : numpy.ndarray
        Lowest ANC from day 0 to 60, 10^9/L.
    nadir_day : numpy.ndarray
        Day of the nadir.
    """

    severe_days_to_30: np.ndarray
    severe_days_to_60: np.ndarray
    recovery_0_5_day: np.ndarray
    recovery_1_0_day: np.ndarray
    nadir_anc: np.ndarray
    nadir_day: np.ndarray


def neutropenia_metrics(t_days: np.ndarray, anc: np.ndarray) -> NeutropeniaMetrics:
    """Derived quantities from ANC on a fine grid covering day 0 to 60.

    A trajectory with any NaN (a failed solve) gives NaN for every quantity.
    """
    t = np.asarray(t_days, dtype=float)
    anc = np.asarray(anc, dtype=float)
    window = (t >= 0.0) & (t <= 60.0 + 1e-12)
    t, anc = t[window], anc[..., window]
    failed = np.isnan(anc).any(axis=-1)
    safe = np.where(failed[..., None], 1.0, anc)

    def mark(values: np.ndarray) -> np.ndarray:
        return np.where(failed, np.nan, values)

    return NeutropeniaMetrics(
        severe_days_to_30=mark(days_below(t, safe, SEVERE_ANC, 30.0)),
        severe_days_to_60=mark(days_below(t, safe, SEVERE_ANC, 60.0)),
        recovery_0_5_day=mark(recovery_day(t, safe, 0.5, 60.0)),
        recovery_1_0_day=mark(recovery_day(t, safe, 1.0, 60.0)),
        nadir_anc=mark(np.min(safe, axis=-1)),
        nadir_day=mark(t[np.argmin(safe, axis=-1)]),
    )


def typical_metrics(regimen: Regimen = AXI_CEL_REGIMEN) -> NeutropeniaMetrics:
    """Derived quantities of the typical patient (prior medians)."""
    return neutropenia_metrics(
        METRIC_GRID_DAYS, simulate_anc(METRIC_GRID_DAYS, regimen=regimen)
    )


# -- intervals from parameter draws -----------------------------------------


@dataclass(frozen=True)
class Interval:
    """Median and central interval of a derived quantity over draws."""

    median: float
    lower: float
    upper: float
    level: float


@dataclass(frozen=True)
class NeutropeniaOutlook:
    """Derived quantities over parameter draws: median and interval of each.

    ``inf`` bounds mean that at least that share of draws had not recovered
    by day 60.
    """

    severe_days_to_30: Interval
    severe_days_to_60: Interval
    recovery_0_5_day: Interval
    recovery_1_0_day: Interval
    n_draws: int
    n_failed: int


def forecast_neutropenia(
    draws: Mapping[str, Any],
    regimen: Regimen = AXI_CEL_REGIMEN,
    *,
    level: float = 0.9,
) -> NeutropeniaOutlook:
    """Median and ``level`` interval of the recovery quantities over draws.

    Parameters
    ----------
    draws : mapping
        Parameter name -> array of draws (prior: :func:`sample_parameters`;
        posterior: the calibration's samples). Missing names take the prior
        median.
    regimen : Regimen
        Lymphodepletion doses.
    level : float
        Central interval probability, in (0, 1).

    Returns
    -------
    NeutropeniaOutlook
        Draws whose solve failed are left out and counted in ``n_failed``.
    """
    if not 0.0 < level < 1.0:
        raise ModelSpecificationError(f"interval level must be in (0, 1), got {level}")
    n = len(next(iter(draws.values())))
    batch = {
        p: jnp.broadcast_to(jnp.asarray(draws.get(p, m), dtype=float), (n,))
        for p, m in MODEL.typical_params().items()
    }
    anc = np.asarray(_batched_anc(batch, regimen))
    ok = np.all(np.isfinite(anc), axis=-1)
    metrics = neutropenia_metrics(METRIC_GRID_DAYS, anc[ok])
    tails = ((1.0 - level) / 2.0, 0.5, (1.0 + level) / 2.0)

    def interval(values: np.ndarray) -> Interval:
        low, mid, high = np.quantile(values, tails) if values.size else (np.nan,) * 3
        return Interval(float(mid), float(low), float(high), level)

    return NeutropeniaOutlook(
        severe_days_to_30=interval(metrics.severe_days_to_30),
        severe_days_to_60=interval(metrics.severe_days_to_60),
        recovery_0_5_day=interval(metrics.recovery_0_5_day),
        recovery_1_0_day=interval(metrics.recovery_1_0_day),
        n_draws=n,
        n_failed=int(np.sum(~ok)),
    )


def _batched_anc(batch: Mapping[str, jax.Array], regimen: Regimen) -> jax.Array:
    return _vmapped(regimen)(batch, jnp.asarray(METRIC_GRID_DAYS))


_VMAPPED: dict[Regimen, Any] = {}


def _vmapped(regimen: Regimen) -> Any:
    # one compiled batch solver per regimen
    if regimen not in _VMAPPED:

        def one(params: Mapping[str, Any], t_days: jax.Array) -> jax.Array:
            return anc_trajectory(params, t_days, regimen)

        _VMAPPED[regimen] = jax.jit(jax.vmap(one, in_axes=(0, None)))
    return _VMAPPED[regimen]


# -- calibration of the drug effect and the CAR-HEMATOTOX comparison ---------


def calibrate_drug_effect(
    target_days: float = TARGET_SEVERE_DAYS, regimen: Regimen = AXI_CEL_REGIMEN
) -> float:
    """``slope_ld`` giving the typical patient ``target_days`` of ANC < 0.5.

    Brent's method on the typical patient's days with ANC < 0.5 ×10^9/L from
    day 0 to day 60 (Rejeski 2021's end point) after ``regimen``.
    """
    from scipy.optimize import brentq

    def excess(slope: float) -> float:
        params = {**MODEL.typical_params(), "slope_ld": slope}
        anc = simulate_anc(METRIC_GRID_DAYS, params=params, regimen=regimen)
        return float(days_below(METRIC_GRID_DAYS, anc, SEVERE_ANC, 60.0)) - target_days

    return float(brentq(excess, 0.05, 5.0, xtol=1e-6))


#: Rejeski 2021 Table 3, pooled validation cohort (n = 97 low, 83 high):
#: median (95% CI) days with ANC < 500/µL from day 0 to day 60.
HEMATOTOX_SEVERE_DAYS = {"low": (5.5, 5.0, 8.0), "high": (12.0, 10.0, 16.0)}


@dataclass(frozen=True)
class HematotoxComparison:
    """Model-predicted duration of severe neutropenia beside CAR-HEMATOTOX's.

    The reference is the median of the patient's CAR-HEMATOTOX risk group in
    Rejeski 2021 (doi:10.1182/blood.2020010543) Table 3, pooled validation.
    A group median describes many patients; agreement of one patient's
    prediction with it is context, not validation.
    """

    risk_group: str
    predicted_days: float
    predicted_interval: tuple[float, float] | None
    reference_median_days: float
    reference_ci_days: tuple[float, float]

    @property
    def difference_days(self) -> float:
        """Predicted minus the group's median, days."""
        return self.predicted_days - self.reference_median_days

    @property
    def within_reference_ci(self) -> bool:
        """Whether the prediction lies in the 95% CI of the group's median."""
        low, high = self.reference_ci_days
        return low <= self.predicted_days <= high

    def summary(self) -> str:
        """One line for the report."""
        low, high = self.reference_ci_days
        spread = ""
        if self.predicted_interval is not None:
            spread = (
                f" ({self.predicted_interval[0]:.1f}-{self.predicted_interval[1]:.1f})"
            )
        return (
            f"model: {self.predicted_days:.1f}{spread} days ANC < 0.5 (d0-d60); "
            f"CAR-HEMATOTOX {self.risk_group}: median {self.reference_median_days:g} "
            f"({low:g}-{high:g}) days, Rejeski 2021 Table 3"
        )


def compare_with_hematotox(
    predicted: float | NeutropeniaOutlook, risk_group: str | int
) -> HematotoxComparison:
    """Compare a predicted duration of severe neutropenia with CAR-HEMATOTOX.

    Parameters
    ----------
    predicted : float or NeutropeniaOutlook
        Days with ANC < 0.5 ×10^9/L from day 0 to 60, or an outlook whose
        median and interval are used.
    risk_group : str or int
        ``"low"``/``"high"``, or the CAR-HEMATOTOX total (0-1 low, >= 2 high).

    Returns
    -------
    HematotoxComparison
    """
    group = risk_group
    if not isinstance(group, str):
        group = "low" if int(group) <= 1 else "high"
    if group not in HEMATOTOX_SEVERE_DAYS:
        raise ModelSpecificationError(
            f"CAR-HEMATOTOX risk group {risk_group!r} is not 'low', 'high' or a score"
        )
    interval = None
    days = predicted
    if isinstance(predicted, NeutropeniaOutlook):
        days = predicted.severe_days_to_60.median
        interval = (
            predicted.severe_days_to_60.lower,
            predicted.severe_days_to_60.upper,
        )
    median, low, high = HEMATOTOX_SEVERE_DAYS[group]
    return HematotoxComparison(group, float(days), interval, median, (low, high))
