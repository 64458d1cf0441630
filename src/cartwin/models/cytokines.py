"""Cytokine release: IL-6 and CRP driven by CAR T killing, with drug effects.

A graph node (:class:`cartwin.graph.spec.ScaleModel`) at the organ scale,
built on the IL-6 equation of Hardiansyah & Ng 2019 [1]_ (``reference/
clinical-facts.md`` §5.4)::

    dIL6/dt = d_IL6 IL6_0 + P_IL6 B E_pb - d_IL6 IL6       (Hardiansyah)

with the production term ``P_IL6 B E_pb`` (tumour x effector contacts)
replaced by ``p_IL6 K(t)``, where ``K`` is the CAR T-tumour engagement rate
``gamma_B B E / (k_B + E)`` that the CAR T / tumour model writes as the
coupling ``tumour_kill_rate``; for few effectors (``E << k_B``) it is
Hardiansyah's ``B E`` form. Two drugs enter as exogenous inputs:

* **Tocilizumab** blocks the IL-6 receptor. Receptor occupancy is
  ``occ = A / (A + IC50_T)`` for tocilizumab exposure ``A``. The IL-6 signal
  that drives inflammation falls to ``(1 - occ) IL6``, while serum IL-6
  *rises*, because receptor-mediated clearance (a fraction ``f_R`` of
  ``d_IL6``) is blocked; Nishimoto 2008 [2]_ showed this mechanism for the
  rise of serum IL-6 after tocilizumab.
* **Corticosteroids** reduce IL-6 production per engagement by
  ``1 / (1 + S / IC50_S)`` (and, in the CAR T model, antigen-driven
  proliferation); they do not change clearance.

Equations (t in days)::

    dO/dt   = k_O (A / (A + IC50_T) - O)                     receptors blocked
    dIL6/dt = d_IL6 IL6_0 + p_IL6 K / (1 + S / IC50_S)
              - d_IL6 (1 - f_R O) IL6
    signal  = (1 - O) IL6                                    pg/mL
    dCRP/dt = k_CRP (CRP_0 + CRP_max signal / (signal + EC50) - CRP)

The blocked fraction ``O`` is a state that follows the occupancy
``A / (A + IC50_T)`` with rate ``k_O`` = 24 /d (binding within about an
hour; an assumption), so that the IL-6 signal is a function of the model's
own states, as the graph's coupling rule requires.

CRP is the hepatic acute-phase response to IL-6 signalling, cleared with its
plasma half-life of about 19 h [3]_ (k_CRP = ln 2 / (19/24 d) = 0.875 /d); it
falls after tocilizumab although serum IL-6 rises, as seen clinically.

CRS grade link
--------------
The probability that the ASTCT CRS grade [4]_ reaches at least ``k`` within a
window (e.g. the next 24-72 h) is a cumulative logit of the peak rise of the
IL-6 signal above the patient's baseline in that window::

    m = ln(max signal in window / IL6_0)
    P(grade >= k) = 1 / (1 + exp(-(m - c_k) / s)),   k = 1..4

with thresholds ``c_1 < c_2 < c_3 < c_4`` and scale ``s`` fitted by
:func:`fit_crs_link` to three statements over the prior predictive of
ZUMA-1-like patients (axi-cel 1.6e8 cells, flu/cy 30/500 mg/m2 on days -5 to
-3, no bridging, no drugs; peak over days 0-28; 2000 patients, seed
20190101; :func:`zuma1_prior_peaks`):

1. the population rate of CRS of any grade is ZUMA-1's 93% [5]_;
2. the rate of grade >= 3 is ZUMA-1's 13% [5]_;
3. a patient whose IL-6 signal never rises (``m = 0``) has a 5% probability
   of CRS (assumption: fever without a cytokine surge is rarely CRS).

``c_2`` is the midpoint of ``c_1`` and ``c_3`` and ``c_4 = c_3 + (c_3 - c_2)``
(equal spacing; an assumption, since no grade 2 or 4 rates are in
clinical-facts). ``tests/models/test_cytokines_crs_link.py`` redraws another
population and checks the rates. ZUMA-1 graded CRS by Lee 2014, not ASTCT
2019 (clinical-facts §8), and 45% of its patients received tocilizumab, so
the link mixes treated and untreated courses.

Known limits
------------
- IL-6 only: IFN-gamma and IL-10 of Hardiansyah 2019 are not modelled.
- The link ignores the grade already observed and uses the IL-6 signal only
  (no fever, vasopressor or oxygen model); it gives a population-calibrated
  risk, not a grading.
- ``f_R``, ``IC50_T``, ``IC50_S`` and the CRP constants are assumptions
  (stated per parameter in :data:`PARAMETERS`).

References
----------
.. [1] Hardiansyah D, Ng CM. Quantitative systems pharmacology model of
   chimeric antigen receptor T-cell therapy. Clin Transl Sci
   2019;12(4):343-349. doi:10.1111/cts.12636
.. [2] Nishimoto N, Terao K, Mima T, et al. Mechanisms and pathologic
   significances in increase in serum interleukin-6 (IL-6) and soluble IL-6
   receptor after administration of an anti-IL-6 receptor antibody,
   tocilizumab, in patients with rheumatoid arthritis and Castleman disease.
   Blood 2008;112(10):3959-3964. doi:10.1182/blood-2008-05-155846
.. [3] Pepys MB, Hirschfield GM. C-reactive protein: a critical update.
   J Clin Invest 2003;111(12):1805-1812. doi:10.1172/JCI18921
.. [4] Lee DW, Santomasso BD, Locke FL, et al. ASTCT consensus grading for
   cytokine release syndrome and neurologic toxicity associated with immune
   effector cells. Biol Blood Marrow Transplant 2019;25(4):625-638.
   doi:10.1016/j.bbmt.2018.12.758
.. [5] ZUMA-1 (Locke 2018) as tabulated in Ther Adv Hematol 2019, Table 4.
   doi:10.1177/2040620719841581
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import ModelSpecificationError
from cartwin.graph.spec import Coupling, Observable, Parameter, Scalars, State

configure_jax()

#: Hardiansyah 2019 Table S1: IL-6 elimination rate, 1/day (fixed there).
D_IL6_HARDIANSYAH = 3.96

#: CRP elimination rate from its 19 h plasma half-life (Pepys 2003), 1/day.
K_CRP = math.log(2.0) / (19.0 / 24.0)

#: ZUMA-1 CRS rates (clinical-facts §8): any grade, grade >= 3.
ZUMA1_CRS_ANY, ZUMA1_CRS_SEVERE = 0.93, 0.13

_ASSUMED = "assumption (cartwin): "


def _p(name, unit, median, log_sd, source, lower=0.0, upper=float("inf")):
    return Parameter(name, unit, median, log_sd, lower, upper, source)


#: Parameters with units, population priors and sources.
PARAMETERS = (
    _p(
        "il6_base",
        "pg/mL",
        5.0,
        0.7,
        _ASSUMED + "baseline IL-6 near the upper normal limit (~7 pg/mL)",
        0.1,
        1000.0,
    ),
    _p(
        "d_il6",
        "/d",
        D_IL6_HARDIANSYAH,
        0.0,
        "Hardiansyah 2019 Table S1, doi:10.1111/cts.12636",
    ),
    _p(
        "p_il6",
        "pg/mL/(10*9.{cells})",
        10.0,
        1.0,
        _ASSUMED + "typical IL-6 peak of some hundred pg/mL during killing",
        1e-4,
        1e5,
    ),
    _p(
        "f_receptor",
        "1",
        0.8,
        0.0,
        _ASSUMED + "share of IL-6 clearance that "
        "is receptor-mediated (mechanism: Nishimoto 2008, "
        "doi:10.1182/blood-2008-05-155846)",
    ),
    _p(
        "toci_ic50",
        "1",
        0.1,
        0.0,
        _ASSUMED + "one 8 mg/kg dose occupies ~90% of IL-6 receptors",
    ),
    _p(
        "k_block",
        "/d",
        24.0,
        0.0,
        _ASSUMED + "tocilizumab binds IL-6 receptors within about an hour",
    ),
    _p(
        "steroid_ic50",
        "1",
        1.0,
        0.0,
        _ASSUMED + "10 mg dexamethasone equivalent halves IL-6 production",
    ),
    _p("crp_base", "mg/L", 10.0, 0.8, _ASSUMED + "CRP without IL-6 drive", 0.1, 500.0),
    _p(
        "crp_max", "mg/L", 200.0, 0.5, _ASSUMED + "largest IL-6-driven CRP", 1.0, 2000.0
    ),
    _p(
        "crp_ec50",
        "pg/mL",
        100.0,
        0.0,
        _ASSUMED + "IL-6 signal giving half the CRP response",
    ),
    _p(
        "k_crp",
        "/d",
        K_CRP,
        0.0,
        "CRP plasma half-life 19 h, Pepys 2003, doi:10.1172/JCI18921",
    ),
)


@dataclass(frozen=True)
class CrsLink:
    """Cumulative-logit link from the peak IL-6 signal rise to CRS grades.

    Attributes
    ----------
    thresholds : tuple of float
        ``c_1 .. c_4`` in ln(fold rise above baseline), strictly increasing.
    scale : float
        ``s``: ln-units of fold rise per logit unit, > 0.
    source : str
        How the constants were obtained.
    """

    thresholds: tuple[float, float, float, float]
    scale: float = 1.0
    source: str = ""

    def __post_init__(self) -> None:
        c = self.thresholds
        if len(c) != 4 or not all(a < b for a, b in itertools.pairwise(c)):
            raise ModelSpecificationError(
                f"CrsLink.thresholds must be 4 increasing values, got {c}"
            )
        if not self.scale > 0:
            raise ModelSpecificationError(
                f"CrsLink.scale must be > 0, got {self.scale}"
            )

    @classmethod
    def from_any_and_severe(cls, c_any: float, c_severe: float, **kwargs) -> CrsLink:
        """Thresholds from ``c_1`` and ``c_3``: ``c_2`` midway, same step to ``c_4``."""
        c_two = 0.5 * (c_any + c_severe)
        return cls((c_any, c_two, c_severe, 2.0 * c_severe - c_two), **kwargs)


#: Calibrated link (module docstring); constants from
#: ``fit_crs_link(zuma1_prior_peaks(2000, 20190101))``.
CRS_LINK = CrsLink.from_any_and_severe(
    0.7060,
    4.8077,
    scale=0.2398,
    source="fitted to ZUMA-1 CRS any 93%, grade>=3 13% "
    "(doi:10.1177/2040620719841581) over 2000 prior-predictive patients "
    "(seed 20190101) and P(CRS | no IL-6 rise) = 5%",
)


def crs_exceedance(log_rise: Any, link: CrsLink = CRS_LINK) -> np.ndarray:
    """P(grade >= k) for k = 1..4 given the peak ln rise; shape (..., 4)."""
    peak = np.asarray(log_rise, dtype=float)[..., None]
    c = np.asarray(link.thresholds)
    return 1.0 / (1.0 + np.exp(-(peak - c) / link.scale))


def crs_grade_probabilities(log_rise: Any, link: CrsLink = CRS_LINK) -> np.ndarray:
    """Probability of each maximum CRS grade 0..4 in a window; shape (..., 5).

    Parameters
    ----------
    log_rise : array_like
        Peak of ln(IL-6 signal / baseline IL-6) in the window.
    link : CrsLink
        Link constants.

    Returns
    -------
    numpy.ndarray
        Non-negative, summing to 1 along the last axis.
    """
    above = crs_exceedance(log_rise, link)
    ones = np.ones(above.shape[:-1] + (1,))
    zeros = np.zeros(above.shape[:-1] + (1,))
    return np.concatenate([ones, above], -1) - np.concatenate([above, zeros], -1)


def _threshold(peaks: np.ndarray, rate: float, scale: float) -> float:
    # c with mean(sigmoid((peaks - c) / scale)) = rate, by bisection
    low, high = peaks.min() - 60 * scale, peaks.max() + 60 * scale
    for _ in range(200):
        mid = 0.5 * (low + high)
        mean = np.mean(1.0 / (1.0 + np.exp(-(peaks - mid) / scale)))
        low, high = (mid, high) if mean > rate else (low, mid)
    return 0.5 * (low + high)


def fit_crs_link(
    peak_log_rise: np.ndarray,
    any_rate: float = ZUMA1_CRS_ANY,
    severe_rate: float = ZUMA1_CRS_SEVERE,
    *,
    p_any_without_rise: float = 0.05,
) -> CrsLink:
    """Link constants that give the population rates of any and severe CRS.

    Solves, by nested bisection, for the scale ``s`` and thresholds
    ``c_1``, ``c_3`` with ``mean(P(grade >= 1 | m_i)) = any_rate``,
    ``mean(P(grade >= 3 | m_i)) = severe_rate`` and ``P(grade >= 1 | m = 0)
    = p_any_without_rise``, over sampled patients' peak ln rises ``m_i``.

    Parameters
    ----------
    peak_log_rise : numpy.ndarray
        One peak ln(signal / baseline) per sampled patient.
    any_rate, severe_rate : float
        Target rates, ``0 < severe_rate < any_rate < 1``.
    p_any_without_rise : float
        CRS probability of a patient without IL-6 rise, in (0, 0.5).

    Returns
    -------
    CrsLink
    """
    peaks = np.asarray(peak_log_rise, dtype=float)
    peaks = peaks[np.isfinite(peaks)]
    if (
        peaks.size == 0
        or not 0 < severe_rate < any_rate < 1
        or not (0 < p_any_without_rise < 0.5)
    ):
        raise ModelSpecificationError(
            f"fit_crs_link needs finite peaks, 0 < severe < any < 1 and "
            f"0 < p_any_without_rise < 0.5; got {peaks.size} peaks, any "
            f"{any_rate}, severe {severe_rate}, {p_any_without_rise}"
        )
    odds = math.log(1.0 / p_any_without_rise - 1.0)
    low, high = 1e-3, 10.0
    for _ in range(100):
        scale = math.sqrt(low * high)
        # c_1 / s falls as s grows; match it to the log-odds of the m = 0 case
        if _threshold(peaks, any_rate, scale) / scale > odds:
            low = scale
        else:
            high = scale
    return CrsLink.from_any_and_severe(
        _threshold(peaks, any_rate, scale),
        _threshold(peaks, severe_rate, scale),
        scale=scale,
        source=f"fitted to any {any_rate}, severe {severe_rate}, "
        f"P(any | no rise) {p_any_without_rise} over {peaks.size} peaks",
    )


def zuma1_prior_peaks(n_patients: int = 2000, seed: int = 20190101) -> np.ndarray:
    """Peak ln rise of the IL-6 signal, days 0-28, of ZUMA-1-like prior patients.

    Draws ``n_patients`` parameter sets from the population prior of the
    standard LBCL graph (:func:`cartwin.graph.graph.standard_graph`) and
    simulates :func:`cartwin.graph.inputs.typical_schedule` (every 6 h).
    """
    from cartwin.graph.calibrate import prior_fit
    from cartwin.graph.forecast import draw_parameters, simulate_draws
    from cartwin.graph.graph import standard_graph
    from cartwin.graph.inputs import typical_schedule

    graph, schedule = standard_graph("LBCL"), typical_schedule()
    vectors = draw_parameters(
        graph, prior_fit(graph, schedule), n_patients, np.random.default_rng(seed)
    )
    draws = simulate_draws(graph, vectors, schedule, np.arange(0.0, 28.01, 0.25))
    base = vectors[:, graph.parameter_names.index("cytokines.il6_base")]
    return np.log(np.nanmax(draws["il6_signal"], axis=1) / base)


def window_peak(
    t_days: np.ndarray, series: np.ndarray, start: float, hours: float
) -> np.ndarray:
    """Largest value of ``series`` (draws x times) in ``[start, start + hours/24]``.

    Grid points inside the window are used, plus linear interpolation at both
    ends, so that a window between grid points is still covered.
    """
    t_days = np.asarray(t_days, dtype=float)
    series = np.atleast_2d(np.asarray(series, dtype=float))
    end = start + hours / 24.0
    inside = (t_days >= start) & (t_days <= end)
    edges = np.stack(
        [np.array([np.interp(x, t_days, row) for x in (start, end)]) for row in series]
    )
    parts = [edges] + ([series[:, inside]] if inside.any() else [])
    return np.max(np.concatenate(parts, axis=1), axis=1)


def tocilizumab_trigger_day(
    t_days: np.ndarray,
    il6_signal: np.ndarray,
    il6_base: float,
    grade: int,
    link: CrsLink = CRS_LINK,
) -> float | None:
    """First day the IL-6 signal makes ``P(grade >= grade)`` reach 0.5, or None.

    Used to build "tocilizumab at grade 1 vs grade 2" scenarios: the day the
    signal rise ``signal / il6_base`` first reaches ``exp(c_grade)``.
    """
    if grade not in (1, 2, 3, 4):
        raise ModelSpecificationError(f"CRS grade must be 1-4, got {grade}")
    level = il6_base * math.exp(link.thresholds[grade - 1])
    above = np.flatnonzero(np.asarray(il6_signal) >= level)
    return None if above.size == 0 else float(np.asarray(t_days)[above[0]])


def tocilizumab_grade_scenarios(
    graph: Any,
    fit: Any,
    grades: tuple[int, ...] = (1, 2),
    *,
    horizon_days: float = 14.0,
) -> list:
    """Scenarios "tocilizumab when CRS reaches grade g", one per grade.

    The twin's MAP course without tocilizumab is simulated (every hour to
    ``horizon_days``); for each grade the trigger day is when its IL-6 signal
    rise first makes ``P(grade >= g)`` reach 0.5
    (:func:`tocilizumab_trigger_day`). A grade never reached gives a
    scenario without tocilizumab, named accordingly.

    Parameters
    ----------
    graph : ModelGraph
        Graph of the fit (must contain this model as ``"cytokines"``).
    fit : GraphFit
        A usable fit with its schedule.
    grades : tuple of int
        Grades 1-4.
    horizon_days : float
        How far to look for the trigger.

    Returns
    -------
    list of Scenario
    """
    from cartwin.graph.inputs import tocilizumab_scenario

    without = tocilizumab_scenario(None).apply(fit.schedule)
    grid = np.arange(0.0, horizon_days + 1e-9, 1.0 / 24.0)
    vector = graph.parameter_vector(fit.parameters)
    course = graph.simulate(without, grid, vector)
    base = fit.parameters["cytokines.il6_base"]
    scenarios = []
    for grade in grades:
        day = tocilizumab_trigger_day(grid, course.couplings["il6_signal"], base, grade)
        label = (
            f"tocilizumab at grade {grade}"
            if day is not None
            else f"grade {grade} not reached: no tocilizumab"
        )
        scenarios.append(tocilizumab_scenario(day, name=label))
    return scenarios


@dataclass(frozen=True)
class CytokineModel:
    """IL-6 and CRP driven by CAR T killing, with tocilizumab and steroids.

    Notes
    -----
    Implements :class:`cartwin.graph.spec.ScaleModel`. Reads the coupling
    ``tumour_kill_rate`` (written by
    :class:`cartwin.models.cart_tumour.CarTumourModel`) and the exogenous
    inputs ``toci_exposure`` and ``steroid_exposure``; writes ``il6_signal``
    (pg/mL of unblocked IL-6) and ``crp_level``. Its
    :meth:`forecast_summaries` gives CRS grade probabilities for the next
    24, 48 and 72 h (it reads the draws of ``il6_signal`` and of the
    parameter ``cytokines.il6_base``).
    """

    link: CrsLink = CRS_LINK
    name: str = "cytokines"
    version: str = "1.0"

    @property
    def references(self) -> tuple[str, ...]:
        """DOIs of the sources."""
        return (
            "doi:10.1111/cts.12636",
            "doi:10.1182/blood-2008-05-155846",
            "doi:10.1172/JCI18921",
            "doi:10.1016/j.bbmt.2018.12.758",
            "doi:10.1177/2040620719841581",
        )

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """See :data:`PARAMETERS`."""
        return PARAMETERS

    @property
    def states(self) -> tuple[State, ...]:
        """Serum IL-6, CRP and the share of IL-6 receptors blocked."""
        return (
            State("il6", "pg/mL", description="serum IL-6 (total)"),
            State("crp", "mg/L", description="serum C-reactive protein"),
            State(
                "il6r_blocked",
                "1",
                description="IL-6 receptors blocked by tocilizumab (0-1)",
            ),
        )

    @property
    def observables(self) -> tuple[Observable, ...]:
        """IL-6 (wide error: assay and pulsatility) and CRP."""
        return (
            Observable("il6", "pg/mL", "log_additive", 0.7),
            Observable("crp", "mg/L", "log_additive", 0.35),
        )

    @property
    def inputs(self) -> tuple[Coupling, ...]:
        """Killing rate from the CAR T model; drug exposures."""
        return (
            Coupling("tumour_kill_rate", "10*9.{cells}/d", "CAR T engagements"),
            Coupling("toci_exposure", "1", "tocilizumab exposure (8 mg/kg doses)"),
            Coupling("steroid_exposure", "1", "corticosteroid exposure"),
        )

    @property
    def outputs(self) -> tuple[Coupling, ...]:
        """IL-6 signal (drives CRS) and CRP."""
        return (
            Coupling("il6_signal", "pg/mL", "IL-6 not blocked by tocilizumab"),
            Coupling("crp_level", "mg/L", "serum CRP"),
        )

    def initial_state(self, params: Scalars, covariates: Scalars) -> Any:
        """Steady state without killing or drugs."""
        signal = jnp.asarray(params["il6_base"], float)
        crp = params["crp_base"] + params["crp_max"] * signal / (
            signal + params["crp_ec50"]
        )
        return jnp.stack([signal, jnp.asarray(crp, float), jnp.zeros((), float)])

    def rhs(self, t: Any, y: Any, params: Scalars, inputs: Scalars) -> Any:
        """Time derivative of (IL-6, CRP, blocked receptors), per day."""
        p = params
        il6, crp, blocked = y[0], y[1], y[2]
        exposure = inputs["toci_exposure"]
        occupancy = exposure / (exposure + p["toci_ic50"])

        # Hardiansyah production and clearance; drug effects (module doc)
        steroid = 1.0 / (1.0 + inputs["steroid_exposure"] / p["steroid_ic50"])
        made = p["d_il6"] * p["il6_base"] + (
            p["p_il6"] * inputs["tumour_kill_rate"] * steroid
        )
        cleared = p["d_il6"] * (1.0 - p["f_receptor"] * blocked) * il6

        # hepatic CRP response to the unblocked IL-6 signal
        signal = (1.0 - blocked) * il6
        target = p["crp_base"] + p["crp_max"] * signal / (signal + p["crp_ec50"])
        return jnp.stack(
            [
                made - cleared,
                p["k_crp"] * (target - crp),
                p["k_block"] * (occupancy - blocked),
            ]
        )

    def linear_decay_rates(self, params: Scalars, y: Any) -> Any:
        """First-order loss rates of (IL-6, CRP, blocked receptors) at ``y``, /d.

        The stiff part of :meth:`rhs` (receptor binding at ``k_block`` = 24 /d
        and IL-6 clearance ``d_il6 (1 - f_R O)``, up to 3.96 /d): fixed-step
        solvers of large virtual cohorts (:mod:`cartwin.trial.engine`) hold
        these rates at their value at the start of a step, integrate those
        decays exactly and the rest of :meth:`rhs` explicitly.
        """
        p = params
        return jnp.stack(
            [
                p["d_il6"] * (1.0 - p["f_receptor"] * y[2]),
                jnp.asarray(p["k_crp"], float),
                jnp.asarray(p["k_block"], float),
            ]
        )

    def couplings(self, t: Any, y: Any, params: Scalars) -> dict[str, Any]:
        """IL-6 signal ``(1 - O) IL6`` (pg/mL) and CRP level (mg/L)."""
        return {"il6_signal": (1.0 - y[2]) * y[0], "crp_level": y[1]}

    def observe(self, quantity: str, t: Any, y: Any, params: Scalars) -> Any:
        """Serum IL-6 (total, rises under tocilizumab) or CRP."""
        if quantity == "il6":
            return y[0]
        if quantity == "crp":
            return y[1]
        raise ModelSpecificationError(
            f"model {self.name} cannot observe {quantity!r}; it explains ['crp', 'il6']"
        )

    def forecast_summaries(
        self, t_days: np.ndarray, draws: Mapping[str, np.ndarray], origin_day: float
    ) -> dict[str, Any]:
        """CRS grade probabilities for the next 24, 48 and 72 h after ``origin_day``."""
        base = np.asarray(draws[f"{self.name}.il6_base"])[:, None]
        rise = np.log(np.maximum(np.asarray(draws["il6_signal"]), 1e-300) / base)
        windows = []
        for hours in (24, 48, 72):
            peak = window_peak(t_days, rise, origin_day, hours)
            probs = np.nanmean(crs_grade_probabilities(peak, self.link), axis=0)
            windows.append(
                {
                    "hours": hours,
                    "start_day": float(origin_day),
                    "grade_probabilities": {
                        str(g): float(v) for g, v in enumerate(probs)
                    },
                    "p_grade_ge_2": float(probs[2:].sum()),
                }
            )
        return {
            "crs_windows": windows,
            "link": {
                "thresholds": list(self.link.thresholds),
                "scale": self.link.scale,
                "source": self.link.source,
            },
        }

    # -- SBML export (cartwin.graph.sbml_export) ---------------------------
    def sbml_rates(self) -> dict[str, str]:
        """Each state's derivative as an SBML L3 infix formula, per day.

        The same equations as :meth:`rhs`, written for
        ``libsbml.parseL3Formula`` in terms of this model's parameter and
        state names and the input names of :attr:`inputs`;
        ``tests/graph/test_sbml_export.py`` checks them against :meth:`rhs`.
        """
        occupancy = "(toci_exposure / (toci_exposure + toci_ic50))"
        steroid = "(1 / (1 + steroid_exposure / steroid_ic50))"
        made = f"(d_il6 * il6_base + p_il6 * tumour_kill_rate * {steroid})"
        cleared = "(d_il6 * (1 - f_receptor * il6r_blocked) * il6)"
        signal = "((1 - il6r_blocked) * il6)"
        target = f"(crp_base + crp_max * {signal} / ({signal} + crp_ec50))"
        return {
            "il6": f"{made} - {cleared}",
            "crp": f"k_crp * ({target} - crp)",
            "il6r_blocked": f"k_block * ({occupancy} - il6r_blocked)",
        }

    def sbml_couplings(self) -> dict[str, str]:
        """The outputs of :meth:`couplings` as SBML L3 infix formulas."""
        return {"il6_signal": "(1 - il6r_blocked) * il6", "crp_level": "crp"}

    def sbml_initial_state(self) -> dict[str, str]:
        """:meth:`initial_state` as SBML L3 infix formulas of the parameters."""
        return {
            "il6": "il6_base",
            "crp": "crp_base + crp_max * il6_base / (il6_base + crp_ec50)",
            "il6r_blocked": "0",
        }


# -- validation ---------------------------------------------------------------


def _simulate_alone(
    params: Mapping[str, float],
    y0: list[float],
    inputs: Mapping[str, float],
    days: np.ndarray,
) -> np.ndarray:
    # the model on its own, integrated by scipy with the jitted right-hand side
    import jax
    from scipy.integrate import solve_ivp

    model = CytokineModel()
    rhs = jax.jit(lambda t, y: model.rhs(t, y, params, inputs))
    solution = solve_ivp(
        lambda t, y: np.asarray(rhs(t, jnp.asarray(y))),
        (0.0, days[-1]),
        y0,
        method="LSODA",
        t_eval=days,
        rtol=1e-11,
        atol=1e-12,
    )
    return solution.y


def _half_time(days: np.ndarray, excess: np.ndarray) -> float:
    # first time the excess over baseline falls to half, by interpolation
    target = 0.5 * excess[0]
    k = int(np.flatnonzero(excess <= target)[0])
    return float(np.interp(target, [excess[k], excess[k - 1]], [days[k], days[k - 1]]))


def validation_checks(
    n_patients: int = 200, seed: int = 1, *, include_population: bool = True
) -> list:
    """Checks of the cytokine model and its CRS link (see module docstring).

    Parameters
    ----------
    n_patients, seed : int
        Size and seed of the fresh prior-predictive population for the
        ZUMA-1 rate checks (a population other than the one the link was
        fitted on).
    include_population : bool
        Whether to run the population checks (they simulate the graph).
    """
    from cartwin.graph.validation import ValidationCheck

    params = {p.name: p.median for p in PARAMETERS}
    none = {"tumour_kill_rate": 0.0, "toci_exposure": 0.0, "steroid_exposure": 0.0}
    days = np.linspace(0.0, 3.0, 30001)
    checks = []

    # IL-6 and CRP clearance half-lives from the model itself
    il6 = _simulate_alone(params, [1000.0, 200.0, 0.0], none, days)[0]
    checks.append(
        ValidationCheck(
            "IL-6 half-life after production stops",
            "cytokines",
            "Hardiansyah 2019 Table S1 d_IL6 3.96 /d (doi:10.1111/cts.12636): "
            "ln 2 / 3.96",
            math.log(2.0) / D_IL6_HARDIANSYAH,
            _half_time(days, il6 - params["il6_base"]),
            1e-4,
            "d",
            kind="verification",
            note="tolerance: grid spacing 1e-4 d",
        )
    )
    quiet = {**params, "il6_base": 1e-12}
    crp = _simulate_alone(quiet, [0.0, 200.0, 0.0], none, days)[1]
    checks.append(
        ValidationCheck(
            "CRP half-life without IL-6 signal",
            "cytokines",
            "Pepys 2003 (doi:10.1172/JCI18921): plasma half-life ~19 h",
            19.0 / 24.0,
            _half_time(days, crp - quiet["crp_base"]),
            1e-4,
            "d",
            kind="verification",
            note="tolerance: grid spacing 1e-4 d",
        )
    )
    checks += _tocilizumab_checks(params)
    if include_population:
        checks += _zuma1_checks(n_patients, seed)
    return checks


def _tocilizumab_checks(params: dict) -> list:
    from cartwin.graph.validation import ValidationCheck

    # constant exposure of one dose: analytic steady state of IL-6 and signal
    occupancy = 1.0 / (1.0 + params["toci_ic50"])
    expected = params["il6_base"] / (1.0 - params["f_receptor"] * occupancy)
    inputs = {"tumour_kill_rate": 0.0, "toci_exposure": 1.0, "steroid_exposure": 0.0}
    days = np.array([0.0, 20.0])
    state = _simulate_alone(params, [params["il6_base"], 20.0, 0.0], inputs, days)
    source = (
        "Nishimoto 2008 (doi:10.1182/blood-2008-05-155846): serum IL-6 rises "
        "after tocilizumab because receptor-mediated clearance is blocked"
    )
    return [
        ValidationCheck(
            "serum IL-6 under tocilizumab (steady state)",
            "cytokines",
            source + "; analytic steady state",
            expected,
            float(state[0, -1]),
            1e-6,
            "pg/mL",
            relative=True,
            kind="verification",
            note=f"rises {expected / params['il6_base']:.2f}-fold",
        ),
        ValidationCheck(
            "IL-6 signal under tocilizumab (steady state)",
            "cytokines",
            source + "; signal = (1 - occupancy) IL-6",
            (1.0 - occupancy) * expected,
            float((1.0 - state[2, -1]) * state[0, -1]),
            1e-6,
            "pg/mL",
            relative=True,
            kind="verification",
            note="signal falls below baseline while serum IL-6 rises",
        ),
    ]


def _zuma1_checks(n_patients: int, seed: int) -> list:
    from cartwin.graph.validation import ValidationCheck

    rates = crs_exceedance(zuma1_prior_peaks(n_patients, seed)).mean(axis=0)
    source = (
        "ZUMA-1 (Locke 2018), Table 4 of doi:10.1177/2040620719841581; "
        "clinical-facts §8"
    )
    note = (
        f"prior predictive of {n_patients} ZUMA-1-like patients (seed {seed}, "
        "not the fitting population); tolerance ~2-3 standard errors"
    )
    return [
        ValidationCheck(
            "CRS any grade, days 0-28",
            "cytokines",
            source,
            ZUMA1_CRS_ANY,
            float(rates[0]),
            0.05,
            "1",
            note=note,
        ),
        ValidationCheck(
            "CRS grade >= 3, days 0-28",
            "cytokines",
            source,
            ZUMA1_CRS_SEVERE,
            float(rates[2]),
            0.05,
            "1",
            note=note,
        ),
    ]
