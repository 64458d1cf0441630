"""Endpoints of an in silico trial: proportions, PFS, arm comparisons, sizes.

:func:`compute_endpoints` turns the per-patient outcome table (one row per
virtual patient, written by ``simulate.py``) into a JSON-ready dict::

    {"arms": {arm: {"n", "n_eligible", "n_analysed", "n_failed", "observed",
                    endpoint: {...}}},
     "comparisons": [{"endpoint", "arm", "reference", "measure", "estimate",
                      "low", "high", "p_value", "method", "note"}],
     "km": {arm: {"t_days", "survival", "low", "high"}},
     "sample_size": [{"endpoint", "arm", "reference", "effect", "per_arm",
                      "events", "method", "note"}],
     "alpha": float}

Only rows with ``eligible & solve_ok`` are analysed. Endpoint definitions
(clinical-facts §4 for the ASTCT grades, §8 for the published cohorts):

=========================  ================================================
``orr``                    ``best_response`` is CR or PR
``cr``                     ``best_response`` is CR
``cr_m3``                  ``response_d90`` is CR (month-3 complete response)
``crs_ge3``, ``crs_any``   ``crs_grade`` >= 3, >= 1 (ASTCT, Lee 2019)
``icans_ge3``, ...any      ``icans_grade`` >= 3, >= 1
``severe_neutropenia_...`` ``anc_days_below_500`` > 14 days (ANC < 0.5e9/L)
``pfs``                    Kaplan-Meier of ``pfs_days`` / ``pfs_event``
=========================  ================================================

Statistics, at level 1 - ``trial.alpha``:

* proportions: Wilson score interval [1]_ [2]_. With calibration weights that
  are not all 1 the estimate is the weighted mean and the interval uses the
  Kish effective sample size ``n_eff = (sum w)^2 / sum w^2`` [5]_ in place of
  n (a design-effect approximation, not an exact interval).
* risk differences (arm - reference): Newcombe's hybrid score interval,
  method 10 of [3]_, with the pooled two-proportion z-test p-value; same
  n_eff rule when weighted.
* PFS: Kaplan-Meier with Greenwood's variance and lifelines' log(-log)
  ("exponential Greenwood") pointwise interval; median with the interval
  where the pointwise band crosses 0.5 (``lifelines.utils.median_survival_times``
  on the band); survival at 182.6 and 365.25 days. Hazard ratio arm vs
  reference from a Cox model with the arm as only covariate (Wald interval;
  robust sandwich variance when weighted) and the log-rank p-value [4]_.
* sample sizes: see :func:`sample_size` and :func:`schoenfeld_events`.

Observed arms (synthetic control mode) contribute ``events = round(n * rate)``
of the published ``n``; every simulated arm is compared with each observed
arm (simulated - observed), and every other simulated arm with the reference.

References
----------
.. [1] Wilson EB. Probable inference, the law of succession, and statistical
   inference. J Am Stat Assoc 1927;22:209-212. doi:10.1080/01621459.1927.10502953
.. [2] Newcombe RG. Two-sided confidence intervals for the single proportion:
   comparison of seven methods. Stat Med 1998;17:857-872.
   doi:10.1002/(SICI)1097-0258(19980430)17:8<857::AID-SIM777>3.0.CO;2-E
.. [3] Newcombe RG. Interval estimation for the difference between independent
   proportions: comparison of eleven methods. Stat Med 1998;17:873-890.
   doi:10.1002/(SICI)1097-0258(19980430)17:8<873::AID-SIM779>3.0.CO;2-I
.. [4] Davidson-Pilon C. lifelines: survival analysis in Python. J Open Source
   Softw 2019;4(40):1317. doi:10.21105/joss.01317
.. [5] Kish L. Survey Sampling. New York: Wiley; 1965.
.. [6] Fleiss JL, Tytun A, Ury HK. A simple approximation for calculating
   sample sizes for comparing independent proportions. Biometrics
   1980;36:343-346. doi:10.2307/2529990
.. [7] Schoenfeld D. Sample-size formula for the proportional-hazards
   regression model. Biometrics 1983;39:499-503. doi:10.2307/2531021
.. [8] Fleiss JL, Levin B, Paik MC. Statistical Methods for Rates and
   Proportions. 3rd ed. Hoboken: Wiley; 2003. doi:10.1002/0471445428
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import (
    ConvergenceError,
    ConvergenceWarning,
    StatisticalWarning,
)
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times
from scipy.stats import norm

from cartwin.errors import DataError
from cartwin.trial.config import Arm, Trial

#: Landmarks of PFS, days (6 and 12 months of 30.4375 days).
PFS_LANDMARKS_DAYS = {"at_6_months": 182.6, "at_12_months": 365.25}

#: A landmark this far past the last follow-up time still reads the last value.
LANDMARK_GRACE_DAYS = 1.0

#: Largest number of points of an exported Kaplan-Meier curve.
MAX_KM_POINTS = 1000

#: |log HR| beyond this is treated as a fit without a finite maximum.
MAX_ABS_LOG_HR = 20.0

#: Columns every outcome table needs.
REQUIRED_COLUMNS = ("arm", "eligible", "solve_ok")

#: Endpoint -> (column, rule turning the column into a boolean Series).
PROPORTION_RULES: dict[str, tuple[str, Callable[[pd.Series], pd.Series]]] = {
    "orr": ("best_response", lambda s: s.isin(["CR", "PR"])),
    "cr": ("best_response", lambda s: s == "CR"),
    "cr_m3": ("response_d90", lambda s: s == "CR"),
    "crs_ge3": ("crs_grade", lambda s: s >= 3),
    "crs_any": ("crs_grade", lambda s: s >= 1),
    "icans_ge3": ("icans_grade", lambda s: s >= 3),
    "icans_any": ("icans_grade", lambda s: s >= 1),
    "severe_neutropenia_gt14d": ("anc_days_below_500", lambda s: s > 14),
}

METHODS = {
    "proportion": "Wilson score interval (Kish n_eff when weighted)",
    "risk difference": "Newcombe hybrid score interval (method 10); "
    "pooled two-proportion z-test",
    "hazard ratio": "Cox proportional hazards (lifelines), Wald interval; "
    "log-rank p-value",
    "survival": "Kaplan-Meier, Greenwood log(-log) pointwise interval",
}


# -- interval and test formulas -------------------------------------------------


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(norm.ppf(1.0 - alpha / 2.0))


def wilson_interval(events: float, n: float, *, alpha: float = 0.05
                    ) -> tuple[float, float]:
    """Wilson score interval of a proportion ``events / n``.

    Parameters
    ----------
    events, n : float
        Successes and trials; real numbers are allowed (weighted data:
        ``p * n_eff`` and ``n_eff``), 0 <= events <= n, n > 0.
    alpha : float
        Two-sided level; the interval covers 1 - alpha.

    Returns
    -------
    (low, high) : tuple of float

    Notes
    -----
    ``(p + z^2/2n +/- z sqrt(p q / n + z^2 / 4n^2)) / (1 + z^2/n)`` [1]_;
    Newcombe's worked example 81/263 gives 0.2553-0.3662 ([2]_, Table I).
    """
    if not n > 0 or not 0 <= events <= n:
        raise ValueError(f"need n > 0 and 0 <= events <= n, got {events}/{n}")
    z = _z(alpha)
    p = events / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)


def newcombe_difference(events1: float, n1: float, events2: float, n2: float,
                        *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Difference ``p1 - p2`` with Newcombe's hybrid score interval.

    Method 10 of Newcombe 1998 [3]_: with Wilson limits (l_i, u_i) of each
    proportion, ``low = d - sqrt((p1-l1)^2 + (u2-p2)^2)`` and
    ``high = d + sqrt((u1-p1)^2 + (p2-l2)^2)``.

    Returns
    -------
    (difference, low, high) : tuple of float
    """
    p1, p2 = events1 / n1, events2 / n2
    l1, u1 = wilson_interval(events1, n1, alpha=alpha)
    l2, u2 = wilson_interval(events2, n2, alpha=alpha)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


def two_proportion_p_value(events1: float, n1: float, events2: float,
                           n2: float) -> float:
    """Two-sided p-value of the pooled z-test of ``p1 == p2``.

    ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with the pooled ``p``;
    1.0 when both proportions are 0 or both 1.
    """
    pooled = (events1 + events2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 1.0
    z = (events1 / n1 - events2 / n2) / math.sqrt(variance)
    return float(2 * norm.sf(abs(z)))


def sample_size(p_arm: float, p_reference: float, *, alpha: float = 0.05,
                power: float = 0.8, continuity_correction: bool = False) -> int:
    """Patients per arm for a two-sided test of two proportions (1:1).

    Normal approximation ([8]_, chapter 4)::

        n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / d^2

    and, with ``continuity_correction``, Fleiss-Tytun-Ury [6]_:
    ``n' = n/4 (1 + sqrt(1 + 4 / (n |d|)))^2``. Rounded up. The trial tables
    use the uncorrected formula. 0.6 vs 0.4 at alpha 0.05, power 0.8: 97
    (107 corrected).

    Raises
    ------
    ValueError
        When a proportion is outside (0, 1) or the two are equal.
    """
    if not (0 < p_arm < 1 and 0 < p_reference < 1) or p_arm == p_reference:
        raise ValueError(f"need two different proportions in (0, 1), got "
                         f"{p_arm} and {p_reference}")
    z_a, z_b = _z(alpha), float(norm.ppf(power))
    pbar = (p_arm + p_reference) / 2
    spread = p_arm * (1 - p_arm) + p_reference * (1 - p_reference)
    diff = abs(p_arm - p_reference)
    n = (z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(spread)) ** 2
    n /= diff**2
    if continuity_correction:
        n = n / 4 * (1 + math.sqrt(1 + 4 / (n * diff))) ** 2
    return math.ceil(n - 1e-9)


def schoenfeld_events(hazard_ratio: float, *, alpha: float = 0.05,
                      power: float = 0.8) -> int:
    """Events needed by a two-sided log-rank test, 1:1 allocation [7]_.

    ``D = 4 (z_{1-a/2} + z_{1-b})^2 / ln(HR)^2``, rounded up; HR 0.7 at
    alpha 0.05 and power 0.8 needs 247.

    Raises
    ------
    ValueError
        When the hazard ratio is not finite, > 0 and != 1.
    """
    if not (math.isfinite(hazard_ratio) and hazard_ratio > 0) or hazard_ratio == 1:
        raise ValueError(f"need a hazard ratio > 0 and != 1, got {hazard_ratio}")
    z_sum = _z(alpha) + float(norm.ppf(power))
    return math.ceil(4 * z_sum**2 / math.log(hazard_ratio) ** 2 - 1e-9)


# -- outcome table -> per-arm data ------------------------------------------------


def _analysed(outcomes: pd.DataFrame, arm: Arm) -> tuple[pd.DataFrame, dict]:
    # rows of one arm that enter the analysis, and the arm's head counts
    rows = outcomes[outcomes["arm"] == arm.name]
    if rows.empty:
        raise DataError(f"outcome table: no row for simulated arm {arm.name!r}")
    eligible = rows["eligible"].to_numpy(dtype=bool)
    solved = rows["solve_ok"].to_numpy(dtype=bool)
    counts = {"n": len(rows), "n_eligible": int(eligible.sum()),
              "n_analysed": int((eligible & solved).sum()),
              "n_failed": int((eligible & ~solved).sum()), "observed": False,
              "product": arm.product}
    return rows[eligible & solved], counts


def _weights(frame: pd.DataFrame) -> np.ndarray:
    if "weight" not in frame.columns:
        return np.ones(len(frame))
    weight = frame["weight"].to_numpy(dtype=float)
    if not (np.isfinite(weight).all() and (weight >= 0).all()):
        raise DataError("outcome table: column 'weight' must be finite and >= 0")
    return weight


def _check_table(outcomes: pd.DataFrame, trial: Trial) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in outcomes.columns]
    if missing:
        raise DataError(f"outcome table: missing column(s) {missing}")
    known = {a.name for a in trial.simulated_arms}
    extra = sorted(set(outcomes["arm"].astype(str)) - known)
    if extra:
        raise DataError(f"outcome table: arm(s) {extra} are not simulated arms of "
                        f"trial {trial.name!r} ({sorted(known)})")


def _unavailable(kind: str, reason: str) -> dict[str, Any]:
    return {"kind": kind, "available": False, "reason": reason, "estimate": None,
            "low": None, "high": None, "events": None, "n": 0}


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# -- proportions --------------------------------------------------------------------


def _proportion(events: np.ndarray, weight: np.ndarray, alpha: float) -> dict:
    # weighted mean and Wilson interval at the Kish effective sample size
    weighted = not np.all(weight == 1.0)
    if weighted:
        if weight.sum() <= 0:
            return _unavailable("proportion", "all calibration weights are 0")
        p = float(np.sum(weight * events) / weight.sum())
        n_eff = float(weight.sum() ** 2 / np.sum(weight**2))
    else:
        p, n_eff = float(events.mean()), float(len(events))
    low, high = wilson_interval(p * n_eff, n_eff, alpha=alpha)
    return {"kind": "proportion", "available": True, "estimate": p, "low": low,
            "high": high, "events": int(events.sum()), "n": len(events),
            "n_effective": n_eff, "weighted": weighted}


def _simulated_proportion(frame: pd.DataFrame, endpoint: str, alpha: float) -> dict:
    column, rule = PROPORTION_RULES[endpoint]
    if column not in frame.columns:
        return _unavailable("proportion", f"column {column!r} is not in the "
                            "outcome table")
    if frame.empty:
        return _unavailable("proportion", "no eligible patient with a "
                            "successful solve")
    values = frame[column]
    valid = values.notna().to_numpy()
    if not valid.any():
        return _unavailable("proportion", f"column {column!r} has no value (e.g. "
                            "the model graph has no model for it)")
    events = rule(values[valid]).to_numpy(dtype=bool)
    entry = _proportion(events, _weights(frame)[valid], alpha)
    if not valid.all():
        entry["note"] = f"{int((~valid).sum())} patient(s) without {column} left out"
    return entry


def _observed_proportion(observed: dict, endpoint: str, alpha: float) -> dict:
    # published rates are rounded counts: events = round(n * rate)
    if endpoint not in observed:
        return _unavailable("proportion", "not published for this arm")
    n = int(observed["n"])
    events = math.floor(n * observed[endpoint] + 0.5)
    low, high = wilson_interval(events, n, alpha=alpha)
    return {"kind": "proportion", "available": True, "estimate": events / n,
            "low": low, "high": high, "events": events, "n": n,
            "n_effective": float(n), "weighted": False,
            "published": observed[endpoint]}


# -- progression-free survival ---------------------------------------------------


def _pfs_data(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    # (days, event, weight) of patients with a PFS time, or why there are none
    if not {"pfs_days", "pfs_event"} <= set(frame.columns):
        return "columns 'pfs_days' and 'pfs_event' are not in the outcome table"
    days = frame["pfs_days"].to_numpy(dtype=float, na_value=np.nan)
    valid = np.isfinite(days)
    if not valid.any():
        return "no eligible patient with a successful solve and a PFS time"
    if (days[valid] < 0).any():
        raise DataError("outcome table: pfs_days must be >= 0 (days since "
                        f"infusion); got {days[valid][days[valid] < 0][:3]}")
    event = frame["pfs_event"].to_numpy(dtype=bool)[valid]
    return days[valid], event, _weights(frame)[valid]


def _kaplan_meier(days, event, weight, alpha: float) -> KaplanMeierFitter:
    # lifelines warns that non-integer weights make the Greenwood variance
    # naive (weights treated as frequencies); that limit is stated in the
    # entry's note, so this one warning is silenced on purpose
    fitter = KaplanMeierFitter(alpha=alpha)
    weighted = not np.all(weight == 1.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "It looks like your weights",
                                StatisticalWarning)
        fitter.fit(days, event, weights=weight if weighted else None)
    return fitter


def _step_value(frame: pd.DataFrame, t: float) -> np.ndarray:
    # value of a step function (rows indexed by time) at time t
    return frame[frame.index <= t].iloc[-1].to_numpy(dtype=float)


def _landmarks(fitter: KaplanMeierFitter, t_max: float) -> dict[str, float | None]:
    # S(t) with its interval; a landmark within LANDMARK_GRACE_DAYS after the
    # last follow-up reads the last value (12 months = 365.25 d vs a 365 d
    # horizon), a later one is not estimable (None)
    out: dict[str, float | None] = {}
    for key, t in PFS_LANDMARKS_DAYS.items():
        values = [None, None, None]
        if t <= t_max + LANDMARK_GRACE_DAYS:
            at = min(t, t_max)
            values = [_num(_step_value(fitter.survival_function_, at)[0]),
                      *map(_num, _step_value(fitter.confidence_interval_, at))]
        out[key], out[f"{key}_low"], out[f"{key}_high"] = values
    return out


def _curve(fitter: KaplanMeierFitter) -> dict[str, list]:
    # the step function, sampled on a grid when it has too many steps
    table = pd.concat([fitter.survival_function_, fitter.confidence_interval_],
                      axis=1)
    times = table.index.to_numpy(dtype=float)
    if len(times) > MAX_KM_POINTS:
        grid = np.linspace(0.0, times.max(), MAX_KM_POINTS)
        table = table.iloc[np.searchsorted(times, grid, side="right") - 1]
        times = grid
    values = table.to_numpy(dtype=float)
    return {"t_days": times.tolist(),
            "survival": [_num(v) for v in values[:, 0]],
            "low": [_num(v) for v in values[:, 1]],
            "high": [_num(v) for v in values[:, 2]]}


def _survival(pfs, alpha: float) -> tuple[dict, dict | None]:
    # the "pfs" entry of an arm and its Kaplan-Meier curve
    if isinstance(pfs, str):
        return _unavailable("survival", pfs), None
    days, event, weight = pfs
    fitter = _kaplan_meier(days, event, weight, alpha)
    band = median_survival_times(fitter.confidence_interval_)
    median = _num(fitter.median_survival_time_)
    entry = {"kind": "survival", "available": True, "median_days": median,
             "median_reached": median is not None,
             "low": _num(band.iloc[0, 0]), "high": _num(band.iloc[0, 1]),
             **_landmarks(fitter, float(days.max())),
             "events": int(event.sum()), "n": len(days)}
    if not np.all(weight == 1.0):
        entry["note"] = ("weighted Kaplan-Meier; the Greenwood interval treats "
                         "the calibration weights as frequencies (too narrow)")
    return entry, _curve(fitter)


def _fit_cox(days, event, group, weight, alpha: float):
    # Cox model with the arm indicator; returns (fitter or None, notes)
    weighted = not np.all(weight == 1.0)
    data = pd.DataFrame({"t": days, "event": event, "arm": group})
    if weighted:
        data["w"] = weight
    fitter = CoxPHFitter(alpha=alpha)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            fitter.fit(data, "t", "event", weights_col="w" if weighted else None,
                       robust=weighted)
        except ConvergenceError as exc:
            return None, [f"Cox fit failed: {str(exc).splitlines()[0]}"]
    notes = []
    for item in caught:
        if issubclass(item.category, ConvergenceWarning):
            notes.append(str(item.message).splitlines()[0])
        else:
            warnings.warn_explicit(item.message, item.category, item.filename,
                                   item.lineno)
    return fitter, notes


def _hazard_ratio(arm_pfs, ref_pfs, names: tuple[str, str], alpha: float) -> dict:
    """HR arm vs reference (Cox) and the log-rank p-value.

    An arm without any progression event has no finite Cox estimate (the
    partial likelihood grows without bound as log HR -> -inf or +inf), and
    lifelines would warn and return a meaningless number; that case is
    detected before fitting and reported with ``estimate`` None and a note.
    Any other lifelines ConvergenceWarning becomes a note instead of a warning.
    """
    (t_a, e_a, w_a), (t_r, e_r, w_r) = arm_pfs, ref_pfs
    row = {"estimate": None, "low": None, "high": None, "p_value": None,
           "note": None}
    weighted = not (np.all(w_a == 1.0) and np.all(w_r == 1.0))
    if e_a.any() or e_r.any():
        weights = {"weights_A": w_a, "weights_B": w_r} if weighted else {}
        test = logrank_test(t_a, t_r, e_a, e_r, **weights)
        row["p_value"] = _num(test.p_value)
    empty = [n for n, e in zip(names, (e_a, e_r)) if not e.any()]
    if empty:
        row["note"] = (f"no progression event in {' and '.join(map(repr, empty))}: "
                       "hazard ratio undefined (no finite Cox estimate)")
        return row
    group = np.r_[np.ones(len(t_a)), np.zeros(len(t_r))]
    fitter, notes = _fit_cox(np.r_[t_a, t_r], np.r_[e_a, e_r], group,
                             np.r_[w_a, w_r], alpha)
    if fitter is None or not abs(fitter.params_["arm"]) < MAX_ABS_LOG_HR:
        row["note"] = "; ".join(notes) or "no finite Cox estimate"
        return row
    low, high = np.exp(fitter.confidence_intervals_.loc["arm"].to_numpy(dtype=float))
    row.update(estimate=_num(fitter.hazard_ratios_["arm"]), low=_num(low),
               high=_num(high), note="; ".join(notes) or None)
    return row


# -- arms, comparisons, sample sizes ------------------------------------------------


def _simulated_arm(outcomes: pd.DataFrame, arm: Arm, trial: Trial):
    frame, entry = _analysed(outcomes, arm)
    curve, pfs = None, _pfs_data(frame)
    for endpoint in trial.endpoints:
        if endpoint == "pfs":
            entry["pfs"], curve = _survival(pfs, trial.alpha)
        else:
            entry[endpoint] = _simulated_proportion(frame, endpoint, trial.alpha)
    return entry, curve, (None if isinstance(pfs, str) else pfs)


def _observed_arm(arm: Arm, trial: Trial) -> dict[str, Any]:
    n = int(arm.observed["n"])
    entry: dict[str, Any] = {"n": n, "n_eligible": n, "n_analysed": n,
                             "n_failed": 0, "observed": True,
                             "product": arm.product}
    for endpoint in trial.endpoints:
        entry[endpoint] = (
            _unavailable("survival", "an observed arm gives no PFS data")
            if endpoint == "pfs"
            else _observed_proportion(arm.observed, endpoint, trial.alpha)
        )
    return entry


def _pairs(trial: Trial) -> list[tuple[str, str]]:
    # simulated arms vs the reference; every simulated arm vs each observed arm
    simulated = [a.name for a in trial.simulated_arms]
    pairs = [(a, trial.reference_arm) for a in simulated if a != trial.reference_arm]
    for observed in (a.name for a in trial.arms if not a.simulated):
        pairs += [(a, observed) for a in simulated]
    return pairs


def _difference(a: dict, r: dict, alpha: float) -> dict[str, Any]:
    x_a, n_a = a["estimate"] * a["n_effective"], a["n_effective"]
    x_r, n_r = r["estimate"] * r["n_effective"], r["n_effective"]
    d, low, high = newcombe_difference(x_a, n_a, x_r, n_r, alpha=alpha)
    return {"estimate": d, "low": low, "high": high,
            "p_value": two_proportion_p_value(x_a, n_a, x_r, n_r), "note": None}


def _comparisons(arms: dict, pfs: dict, trial: Trial) -> list[dict[str, Any]]:
    rows = []
    for name, reference in _pairs(trial):
        for endpoint in trial.endpoints:
            a, r = arms[name][endpoint], arms[reference][endpoint]
            if not (a["available"] and r["available"]):
                continue
            measure = "hazard ratio" if endpoint == "pfs" else "risk difference"
            values = (
                _hazard_ratio(pfs[name], pfs[reference], (name, reference),
                              trial.alpha)
                if endpoint == "pfs" else _difference(a, r, trial.alpha)
            )
            rows.append({"endpoint": endpoint, "arm": name, "reference": reference,
                         "measure": measure, **values,
                         "method": METHODS[measure]})
    return rows


def _proportion_size(row: dict, arms: dict, trial: Trial) -> dict[str, Any]:
    p_a = arms[row["arm"]][row["endpoint"]]["estimate"]
    p_r = arms[row["reference"]][row["endpoint"]]["estimate"]
    out = {"per_arm": None, "events": None, "note": None,
           "method": "two-sided z-test of two proportions, 1:1, normal "
           "approximation without continuity correction (Fleiss 2003)"}
    if p_a == p_r:
        out["note"] = "no difference to detect"
    elif not (0 < p_a < 1 and 0 < p_r < 1):
        out["note"] = "a proportion of 0 or 1: the normal approximation fails"
    else:
        out["per_arm"] = sample_size(p_a, p_r, alpha=trial.alpha, power=trial.power)
    return out


def _survival_size(row: dict, arms: dict, trial: Trial) -> dict[str, Any]:
    # Schoenfeld events; patients = events / pooled probability of an event
    a, r = arms[row["arm"]]["pfs"], arms[row["reference"]]["pfs"]
    out = {"per_arm": None, "events": None, "note": None,
           "method": "Schoenfeld 1983 log-rank events, 1:1; patients = events / "
           f"pooled event probability by day {trial.horizon_days:g}"}
    if row["estimate"] == 1.0:
        out["note"] = "no difference to detect"
        return out
    out["events"] = schoenfeld_events(row["estimate"], alpha=trial.alpha,
                                      power=trial.power)
    probability = (a["events"] + r["events"]) / (a["n"] + r["n"])
    out["per_arm"] = math.ceil(out["events"] / probability / 2 - 1e-9)
    return out


#: Largest per-arm size reported; above it the difference is too small for
#: any practical trial and the row says so instead of printing the number.
PRACTICAL_PER_ARM = 100_000


def _practical(out: dict[str, Any]) -> dict[str, Any]:
    if out["per_arm"] is not None and out["per_arm"] > PRACTICAL_PER_ARM:
        out["note"] = (
            f"over {PRACTICAL_PER_ARM:,} patients per arm ({out['per_arm']:,}): "
            "the simulated difference is too small for a practical trial"
        )
        out["per_arm"] = out["events"] = None
    return out


def _sample_sizes(comparisons: list[dict], arms: dict, trial: Trial) -> list[dict]:
    rows = []
    for row in comparisons:
        if row["estimate"] is None:
            continue
        size = _practical((_survival_size if row["measure"] == "hazard ratio"
                           else _proportion_size)(row, arms, trial))
        rows.append({"endpoint": row["endpoint"], "arm": row["arm"],
                     "reference": row["reference"], "effect": row["estimate"],
                     **size})
    return rows


def compute_endpoints(outcomes: pd.DataFrame, trial: Trial) -> dict[str, Any]:
    """Endpoints per arm, comparisons, Kaplan-Meier curves and sample sizes.

    Parameters
    ----------
    outcomes : pandas.DataFrame
        Per-patient outcome table (columns in ``cartwin.trial`` contract:
        ``arm``, ``eligible``, ``solve_ok``, ``weight`` and the endpoint
        columns). Only ``eligible & solve_ok`` rows are analysed.
    trial : Trial
        The trial whose arms, endpoints, alpha and power apply.

    Returns
    -------
    dict
        JSON-ready (no NaN: a value that cannot be estimated is None); see the
        module docstring. Endpoints whose column is absent or all NaN are
        reported with ``available`` False and a ``reason``.

    Raises
    ------
    DataError
        When a required column is missing, a simulated arm has no row, the
        table has rows of an arm the trial does not simulate, or weights or
        PFS times are invalid.
    """
    _check_table(outcomes, trial)
    arms: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    pfs: dict[str, tuple] = {}
    for arm in trial.arms:
        if not arm.simulated:
            arms[arm.name] = _observed_arm(arm, trial)
            continue
        arms[arm.name], curve, data = _simulated_arm(outcomes, arm, trial)
        if curve is not None:
            curves[arm.name], pfs[arm.name] = curve, data
    comparisons = _comparisons(arms, pfs, trial)
    return {"arms": arms, "comparisons": comparisons, "km": curves,
            "sample_size": _sample_sizes(comparisons, arms, trial),
            "alpha": trial.alpha, "methods": dict(METHODS)}


# -- flat rows ------------------------------------------------------------------


_ROW_KEYS = ("arm", "endpoint", "measure", "estimate", "low", "high", "events",
             "n", "reference", "p_value", "note")


def _arm_rows(arm: str, endpoint: str, entry: dict) -> list[dict[str, Any]]:
    base = {"arm": arm, "endpoint": endpoint, "events": entry.get("events"),
            "n": entry.get("n"), "note": entry.get("reason") or entry.get("note")}
    if entry["kind"] == "proportion":
        return [{**base, "measure": "proportion", "estimate": entry["estimate"],
                 "low": entry["low"], "high": entry["high"]}]
    if not entry["available"]:
        return [{**base, "measure": "median PFS (days)", "estimate": None,
                 "low": None, "high": None}]
    rows = [{**base, "measure": "median PFS (days)", "estimate": entry["median_days"],
             "low": entry["low"], "high": entry["high"]}]
    for key in PFS_LANDMARKS_DAYS:
        label = "PFS " + key.replace("_", " ")
        rows.append({**base, "measure": label, "estimate": entry[key],
                     "low": entry[f"{key}_low"], "high": entry[f"{key}_high"]})
    return rows


def endpoint_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of a :func:`compute_endpoints` result, for a table or the CLI.

    One row per arm and proportion endpoint, three per arm for PFS (median,
    6 and 12 months), then one per comparison. Every row has the keys
    ``arm, endpoint, measure, estimate, low, high, events, n, reference,
    p_value, note`` (None where they do not apply).
    """
    rows = []
    for arm, entry in result["arms"].items():
        for endpoint, value in entry.items():
            if isinstance(value, dict) and "kind" in value:
                rows += _arm_rows(arm, endpoint, value)
    rows += [dict(c) for c in result["comparisons"]]
    return [{key: row.get(key) for key in _ROW_KEYS} for row in rows]
