"""The multi-scale model graph in a twin version: ``outputs["graph"]``.

:func:`graph_outputs` calibrates cartwin's standard model graph (CAR T /
tumour, cytokines and the Friberg neutrophil node) to a patient's record,
forecasts it, compares the standard "what if" scenarios with the same
parameter draws, and returns a compact JSON summary (well under
:data:`MAX_JSON_BYTES`). Nothing here special-cases a model: series are kept
for every observable of the graph, scenario endpoints for every observable,
and model summaries (CRS grade probabilities, response probabilities) come
from each model's own ``forecast_summaries``. The neutropenia outlook is read
from the ``anc`` observable when the graph has one.

Known limits
------------
- 100 posterior draws by default (:data:`GRAPH_N_DRAWS`): intervals are rough
  (5th/95th percentiles of 100 draws move by several percent between seeds).
- Calibration takes seconds to tens of seconds, and the first call in a
  process compiles the graph (about 20 s on a laptop CPU); that is why
  :class:`~cartwin.twin.build.TwinSettings` keeps ``graph=False`` by default.
- The CAR-HEMATOTOX comparison uses the group medians of Rejeski 2021
  (doi:10.1182/blood.2020010543) Table 3; a group median is context for one
  patient, not a validation.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from cartwin.record.model import PatientRecord

#: Posterior draws of the graph forecast and the scenario comparison.
GRAPH_N_DRAWS = 100
#: Budget of the JSON summary, bytes.
MAX_JSON_BYTES = 60_000
#: Stored grid: daily to day 30, then weekly (days since infusion).
DAILY_UNTIL_DAY = 30.0
WEEKLY_STEP_DAYS = 7.0
#: Fine grid (6-hourly) used to compute endpoints and neutropenia metrics.
FINE_STEP_DAYS = 0.25
FINE_UNTIL_DAY = 60.0
#: Scenario median series are stored up to this day (overlay plot).
SCENARIO_SERIES_UNTIL_DAY = 90.0
#: Bridging regimen tried when the record has none (one agent a week, 3 weeks).
BRIDGING_DAYS = (-21.0, -14.0, -7.0)
#: Dose scenario: this multiple of the recorded CAR T dose.
DOSE_FACTOR = 0.5
#: Significant digits kept in the JSON.
DIGITS = 4


def graph_outputs(
    record: PatientRecord, *, seed: int, interval: float = 0.9,
    t_end_days: float = 365.0, n_draws: int = GRAPH_N_DRAWS,
    fate_link: Any = None,
) -> dict[str, Any]:
    """Calibrate, forecast and compare scenarios of the standard graph.

    Parameters
    ----------
    record : PatientRecord
        The patient; ``facts.disease`` selects the graph (LBCL or MM).
    seed : int
        Seed of the posterior draws (same record and seed: same output).
    interval : float
        Central mass of the intervals.
    t_end_days : float
        Last stored day of the series (days since infusion).
    n_draws : int
        Posterior draws.
    fate_link : FateLink, optional
        The product's T-cell fates (:mod:`cartwin.graph.fates_link`): the fit
        is :func:`~cartwin.graph.fates_link.calibrate_with_fates`, and
        ``fate_link`` (link, prior shifts, explanation lines) is added.

    Returns
    -------
    dict
        ``status`` and ``reason`` of the fit always; for a usable fit also
        ``graph``, ``n_obs``, ``basis``, ``interval``, ``n_draws``,
        ``n_failed``, ``origin_day``, ``t_days`` and ``series`` (per
        observable: unit, median, lower, upper on the stored grid),
        ``crs_windows``, ``response``, ``cart_peak``, ``neutropenia``,
        ``scenarios`` (list; per scenario: name, description, endpoints,
        crs_72h, response, neutropenia, medians), ``scenario_t_days``,
        ``identifiability``.

    Raises
    ------
    CartwinError
        When no graph exists for the disease (the caller's ``_guard`` turns
        it into ``status: unavailable``).
    """
    from cartwin.graph.calibrate import calibrate_record
    from cartwin.graph.forecast import compare_scenarios, forecast_graph, graph_summary
    from cartwin.graph.graph import standard_graph
    from cartwin.models.neutrophils import NeutrophilModel

    graph = standard_graph(record.facts.disease or "", (NeutrophilModel(),))
    if fate_link is None:
        fit = calibrate_record(record, graph=graph)
    else:
        from cartwin.graph.fates_link import calibrate_with_fates, fate_link_summary

        fit = calibrate_with_fates(graph, record, fate_link)
    summary = graph_summary(fit, None)
    out: dict[str, Any] = {
        "status": fit.status,
        "reason": fit.reason,
        "graph": summary["graph"],
        "n_obs": summary["n_obs"],
        "identifiability": _identifiability(summary["parameters"]),
    }
    if fate_link is not None:
        out["fate_link"] = _round_tree(fate_link_summary(fate_link, fit))
    if not fit.usable:
        return out
    coarse = _coarse_grid(fit.schedule.t_start, t_end_days)
    fine = np.union1d(coarse, np.arange(0.0, FINE_UNTIL_DAY + 1e-9, FINE_STEP_DAYS))
    forecast = forecast_graph(graph, fit, t_days=fine, n_draws=n_draws, seed=seed,
                              interval=interval)
    comparison = compare_scenarios(graph, fit, standard_scenarios(graph, fit),
                                   t_days=fine, n_draws=n_draws, seed=seed,
                                   interval=interval)
    out.update(_forecast_part(forecast, coarse, record))
    out["scenarios"] = [
        _scenario_part(name, f, comparison, coarse)
        for name, f in comparison.forecasts.items()
    ]
    out["scenario_t_days"] = _rounded(coarse[coarse <= SCENARIO_SERIES_UNTIL_DAY])
    return out


def standard_scenarios(graph: Any, fit: Any) -> list:
    """Tocilizumab at CRS grade 1 vs 2, half the dose, another bridging regimen.

    Bridging: none when the record has bridging, else one agent on each of
    :data:`BRIDGING_DAYS`.
    """
    from cartwin.graph.inputs import bridging_scenario, dose_scenario
    from cartwin.models.cytokines import tocilizumab_grade_scenarios

    scenarios = list(tocilizumab_grade_scenarios(graph, fit, (1, 2)))
    recorded = sum(p.amount for p in fit.schedule.of("cart_infusion_rate"))
    if recorded > 0:
        cells = DOSE_FACTOR * recorded
        scenarios.append(dose_scenario(cells, f"dose ×{DOSE_FACTOR:g} ({cells:.3g} cells)"))
    if fit.schedule.of("bridging_exposure"):
        scenarios.append(bridging_scenario((), name="no bridging"))
    else:
        scenarios.append(bridging_scenario(BRIDGING_DAYS, name="bridging ×3 (weekly)"))
    return scenarios


def _coarse_grid(t_start: float, t_end: float) -> np.ndarray:
    first = max(math.ceil(t_start), -7)
    daily = np.arange(first, min(DAILY_UNTIL_DAY, t_end) + 1e-9, 1.0)
    weekly = np.arange(DAILY_UNTIL_DAY + WEEKLY_STEP_DAYS, t_end + 1e-9, WEEKLY_STEP_DAYS)
    return np.concatenate([daily, weekly]).astype(float)


def _forecast_part(forecast: Any, coarse: np.ndarray, record: PatientRecord) -> dict:
    keep = np.isin(forecast.t_days, coarse)
    series = {
        name: {
            "unit": band.unit,
            "median": _rounded(band.median[keep]),
            "lower": _rounded(band.lower[keep]),
            "upper": _rounded(band.upper[keep]),
        }
        for name, band in forecast.bands.items()
        if band.kind == "observable"
    }
    models = forecast.summaries
    out = {
        "basis": forecast.basis,
        "interval": forecast.interval,
        "n_draws": forecast.n_draws,
        "n_failed": forecast.n_failed,
        "origin_day": _round(forecast.origin_day),
        "t_days": _rounded(forecast.t_days[keep]),
        "series": series,
        "crs_windows": _find(models, "crs_windows"),
        "response": _find(models, "response"),
        "cart_peak": _round_tree(_find(models, "cart_peak")),
        "neutropenia": None,
    }
    if "anc" in forecast.draws:
        outlook = _neutropenia(forecast.t_days, forecast.draws["anc"], forecast.interval)
        outlook["hematotox"] = _hematotox(record, outlook)
        out["neutropenia"] = outlook
    return _round_tree(out)


def _find(summaries: dict, key: str) -> Any:
    # a model summary by key, whichever model provides it
    for values in summaries.values():
        if isinstance(values, dict) and key in values:
            return values[key]
    return None


def _neutropenia(t_days: np.ndarray, anc: np.ndarray, level: float) -> dict:
    from cartwin.models.neutrophils import neutropenia_metrics

    metrics = neutropenia_metrics(t_days, anc)
    return {
        "severe_days_to_30": _interval(metrics.severe_days_to_30, level),
        "severe_days_to_60": _interval(metrics.severe_days_to_60, level),
        "recovery_0_5_day": _interval(metrics.recovery_0_5_day, level),
        "recovery_1_0_day": _interval(metrics.recovery_1_0_day, level),
        "nadir_anc": _interval(metrics.nadir_anc, level),
    }


def _interval(values: np.ndarray, level: float) -> dict[str, Any]:
    """Median and interval; ``None`` bounds mean "not recovered by day 60".

    ``p_beyond_60`` is the share of (solved) draws that had not recovered.
    """
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"median": None, "lower": None, "upper": None, "p_beyond_60": None}
    tails = ((1.0 - level) / 2.0, 0.5, (1.0 + level) / 2.0)
    low, mid, high = np.quantile(values, tails)
    return {
        "median": _round(mid), "lower": _round(low), "upper": _round(high),
        "p_beyond_60": float(np.mean(np.isinf(values))),
    }


def _hematotox(record: PatientRecord, outlook: dict) -> dict[str, Any]:
    from cartwin.models.neutrophils import compare_with_hematotox
    from cartwin.scores.hematotox import hematotox_from_record

    score = hematotox_from_record(record)
    severe = outlook["severe_days_to_60"]
    if score.category is None:
        return {"status": "unavailable", "reason": score.message or "no risk group"}
    if severe["median"] is None:
        return {"status": "unavailable", "reason": "no solved ANC draw"}
    spread = None
    if severe["lower"] is not None and severe["upper"] is not None:
        spread = (severe["lower"], severe["upper"])
    comparison = compare_with_hematotox(severe["median"], score.category)
    comparison = type(comparison)(
        comparison.risk_group, comparison.predicted_days, spread,
        comparison.reference_median_days, comparison.reference_ci_days)
    return {
        "status": "ok",
        "score": score.value,
        "risk_group": comparison.risk_group,
        "predicted_days": comparison.predicted_days,
        "predicted_interval": list(spread) if spread else None,
        "reference_median_days": comparison.reference_median_days,
        "reference_ci_days": list(comparison.reference_ci_days),
        "difference_days": comparison.difference_days,
        "within_reference_ci": comparison.within_reference_ci,
        "summary": comparison.summary(),
    }


def _scenario_part(name: str, forecast: Any, comparison: Any, coarse: np.ndarray) -> dict:
    described = {s.name: s.description for s in comparison.scenarios}
    endpoints = {
        quantity: entry
        for quantity, entry in comparison.endpoints[name].items()
        if forecast.bands[quantity].kind == "observable"
    }
    keep = np.isin(forecast.t_days, coarse) & (forecast.t_days <= SCENARIO_SERIES_UNTIL_DAY)
    windows = _find(forecast.summaries, "crs_windows") or []
    response = _find(forecast.summaries, "response") or []
    part = {
        "name": name,
        "description": described.get(name, "the inputs read from the record"),
        "endpoints": endpoints,
        "crs_72h": next((w for w in windows if w.get("hours") == 72), None),
        "response": next((r for r in response if r.get("day") == 28.0), None),
        "neutropenia": None,
        "medians": {q: _rounded(forecast.bands[q].median[keep]) for q in endpoints},
    }
    if "anc" in forecast.draws:
        part["neutropenia"] = _neutropenia(
            forecast.t_days, forecast.draws["anc"], forecast.interval)
    return _round_tree(part)


def _identifiability(parameters: dict) -> dict[str, dict]:
    keys = ("map", "lower", "upper", "unit", "prior_median", "sd_ratio", "verdict")
    return {
        name: {k: _round(entry[k]) if isinstance(entry.get(k), float) else entry.get(k)
               for k in keys}
        for name, entry in parameters.items()
    }


def _round(value: float) -> float | None:
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{DIGITS}g}")


def _rounded(values: np.ndarray) -> list[float | None]:
    return [_round(v) for v in np.ravel(values)]


def _round_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _round_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_tree(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return _round(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def json_size(outputs: dict) -> int:
    """Bytes of the compact JSON of ``outputs`` (the stored form)."""
    return len(json.dumps(outputs, separators=(",", ":")).encode())
