"""Standalone HTML report of an in silico trial.

:func:`render_trial_report` turns a trial result (the ``TrialResult`` of
:mod:`cartwin.trial.runner`, or any object with its attributes ``trial``,
``outcomes``, ``endpoints``, ``validation``, ``population``, ``provenance``)
into one HTML document that opens without network access: CSS is inline and
plots are inline SVG drawn by matplotlib (:mod:`cartwin.trial._report_figures`)
through :func:`cartwin.report.plots.figure_svg` (fixed hash salt, no date), so the
same result gives the same bytes. Every text, arm names from the user's trial file
included, goes through Jinja2 autoescaping (and matplotlib's XML escaping
inside the SVG).

Only aggregates are shown: counts, proportions with their confidence
intervals, Kaplan-Meier curves, quantiles. No per-patient row is printed.

Sections: the trial and its arms; arm comparison (proportions with
``1 - alpha`` Wilson intervals, observed arms hatched); progression-free
survival (Kaplan-Meier with bands, median, number at risk); differences
against the reference arm (forest plot: risk differences, and hazard ratios on
a log axis); validation against a published cohort (clinical-facts.md §8);
kinetics (Cmax, Tmax) and CRS/ICANS grade distributions; population
calibration; sample size; assumptions and limits. A section whose input is
missing or malformed says "not available" and why; the rest is still shown.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from cartwin.errors import CartwinError
from cartwin.report.html import fmt_number, fmt_scientific
from cartwin.trial._report_figures import (
    DAYS_PER_MONTH,
    OBSERVED_LABEL,
    as_dict,
    number,
    plot_arm_bars,
    plot_forest,
    plot_grades,
    plot_kinetics,
    plot_km,
    plot_validation,
)
from cartwin.trial.validation import is_calibration

logger = logging.getLogger(__name__)

#: Plain names of the trial endpoints (definitions: cartwin.trial.endpoints).
ENDPOINT_LABELS = {
    "orr": "Overall response (best, CR or PR)",
    "cr": "Complete response (best)",
    "cr_m3": "Complete response at month 3",
    "crs_ge3": "CRS grade ≥3",
    "crs_any": "CRS any grade",
    "icans_ge3": "ICANS grade ≥3",
    "icans_any": "ICANS any grade",
    "severe_neutropenia_gt14d": "ANC < 0.5 ×10⁹/L for > 14 days",
    "pfs": "Progression-free survival",
}
#: Quantiles of the kinetics box plots: whiskers 5-95 %, box 25-75 %.
BOX_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Statements true of every trial run by cartwin, shown under "Assumptions".
FIXED_ASSUMPTIONS = (
    ("Virtual patients are drawn from the models' population priors (covariates "
     "and parameters); they are not real patients and share every limit of those "
     "priors."),
    ("CRS and ICANS grades are sampled from a population-calibrated link to the "
     "simulated IL-6 rise, not graded from simulated vital signs (ASTCT 2019 "
     "grades, Lee 2019, doi:10.1016/j.bbmt.2018.12.758)."),
    ("Progression-free survival counts progression only: deaths without "
     "progression are not simulated, so PFS is optimistic against trials that "
     "count deaths as events. Patients free of progression at the horizon are "
     "censored there."),
    ("Confidence intervals describe the sampling of virtual patients only, not the "
     "uncertainty of the models' priors or structure: they shrink with more "
     "patients whatever the model error."),
    ("Published trials graded CRS and neurotoxicity with the Lee 2014 or Penn "
     "scales, not ASTCT 2019 (clinical-facts.md §8): comparisons across scales are "
     "approximate."),
    ("Observed (published) arms enter only through their published summary rates; "
     "no patient-level data are used."),
    ("An endpoint used to calibrate the population is not an independent "
     "validation of the model."),
    ("Ineligible patients and patients whose simulation failed are excluded from "
     "every endpoint; their numbers are shown with the arms."),
    ("When calibration re-weights patients, estimates and distributions are "
     "weighted; the numbers of patients shown are unweighted counts."),
)
_SECTION_ERRORS = (
    KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError,
    CartwinError,
)


def render_trial_report(result: Any) -> str:
    """Render the standalone HTML report of a trial result.

    Parameters
    ----------
    result : TrialResult
        Object with ``trial``, ``outcomes`` (per-patient DataFrame),
        ``endpoints`` (dict of :func:`cartwin.trial.endpoints.compute_endpoints`),
        ``validation`` (list of dict), ``population`` (dict) and
        ``provenance`` (dict); a missing attribute empties its section.

    Returns
    -------
    str
        A complete HTML5 document with inline CSS and inline SVG plots.
    """
    return _template().render(**build_trial_context(result))


def write_trial_report(result: Any, path: str | Path) -> Path:
    """Render the trial report and write it to ``path`` (UTF-8); return the path."""
    path = Path(path)
    path.write_text(render_trial_report(result), encoding="utf-8")
    return path


def build_trial_context(result: Any) -> dict[str, Any]:
    """Template context: one dict per section, each with ``available``/``reason``."""
    data = _TrialData(result)
    return {
        "header": _section(_header, data),
        "comparison": _section(_comparison, data),
        "survival": _section(_survival, data),
        "forest": _section(_forest, data),
        "validation": _section(_validation, data),
        "kinetics": _section(_kinetics, data),
        "grades": _section(_grades, data),
        "population": _section(_population, data),
        "sample_size": _section(_sample_size, data),
        "assumptions": [*data.extra_assumptions(), *FIXED_ASSUMPTIONS],
        "title": data.name,
        "trial_json": data.trial_json(),
    }


def _template() -> jinja2.Template:
    from cartwin.report.html import report_template

    return report_template("trial.html")


def _section(builder: Callable[..., dict], *args: Any) -> dict[str, Any]:
    """Run a section builder; a missing or malformed input makes it unavailable."""
    try:
        data = builder(*args)
    except _Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    except _SECTION_ERRORS as exc:
        logger.warning("trial report section %s not rendered: %r",
                       builder.__name__, exc)
        reason = f"could not be shown ({type(exc).__name__}: {exc})"
        return {"available": False, "reason": reason}
    return {"available": True, "reason": "", **data}


class _Unavailable(ValueError):
    """Raised by a section builder whose input is absent; the text is the reason."""


# -- the result, read defensively ----------------------------------------------
class _TrialData:
    """The parts of a trial result the report reads, with safe defaults."""

    def __init__(self, result: Any) -> None:
        self.trial = getattr(result, "trial", None)
        outcomes = getattr(result, "outcomes", None)
        self.outcomes = outcomes if isinstance(outcomes, pd.DataFrame) else None
        self.endpoints = as_dict(getattr(result, "endpoints", None))
        validation = getattr(result, "validation", None)
        self.validation = [r for r in validation or () if isinstance(r, Mapping)]
        self.population = as_dict(getattr(result, "population", None))
        self.provenance = as_dict(getattr(result, "provenance", None))
        self.alpha = number(getattr(self.trial, "alpha", None)) or 0.05
        self.name = str(getattr(self.trial, "name", "") or "unnamed trial")
        # Split the (possibly million-row) table once; sections reuse the parts.
        self.rows_of = _split_arms(self.outcomes)
        self._arms = self._list_arms()
        self._analysed: dict[str, pd.DataFrame] = {}

    @property
    def ci(self) -> str:
        """``95% CI`` for ``alpha = 0.05``."""
        return f"{(1.0 - self.alpha) * 100:g}% CI"

    @property
    def arm_results(self) -> dict[str, dict]:
        return as_dict(self.endpoints.get("arms"))

    def _list_arms(self) -> list[Any]:
        arms = list(getattr(self.trial, "arms", None) or ())
        known = {str(getattr(a, "name", "")) for a in arms}
        extra = [*self.arm_results, *sorted(self.rows_of)]
        extra = [name for name in dict.fromkeys(extra) if name not in known]
        return arms + [_NamedArm(name) for name in extra]

    def arms(self) -> list[Any]:
        """Arm definitions in trial order, then arms found only in the results."""
        return self._arms

    def arm_names(self) -> list[str]:
        return [str(getattr(a, "name", "")) for a in self.arms()]

    def is_observed(self, name: str) -> bool:
        arm = next((a for a in self._arms if str(getattr(a, "name", "")) == name),
                   None)
        if getattr(arm, "observed", None):
            return True
        return bool(as_dict(self.arm_results.get(name)).get("observed"))

    def simulated_names(self) -> list[str]:
        return [n for n in self.arm_names() if not self.is_observed(n)]

    def analysed(self, name: str) -> pd.DataFrame:
        """Rows of one arm that enter the endpoints: eligible and solved."""
        if name not in self._analysed:
            rows = self.rows_of.get(name, pd.DataFrame())
            keep = np.ones(len(rows), dtype=bool)
            for column in ("eligible", "solve_ok"):
                if column in rows:
                    keep &= rows[column].to_numpy(dtype=bool)
            self._analysed[name] = rows[keep]
        return self._analysed[name]

    def extra_assumptions(self) -> list[str]:
        items = self.population.get("assumptions") or ()
        return [str(item) for item in items] if isinstance(items, (list, tuple)) else []

    def trial_json(self) -> str:
        to_dict = getattr(self.trial, "to_dict", None)
        try:
            content = to_dict() if callable(to_dict) else {}
        except _SECTION_ERRORS as exc:
            return f"not available ({type(exc).__name__}: {exc})"
        return json.dumps(content, indent=2, sort_keys=True, default=str,
                          ensure_ascii=False)


def _split_arms(frame: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Rows of each arm (arm names as text), in the order of the table."""
    if frame is None or "arm" not in frame:
        return {}
    groups = frame.groupby(frame["arm"].astype(str), sort=False)
    return {str(name): rows for name, rows in groups}


class _NamedArm:
    """An arm known only by name (in the results but not in the trial)."""

    def __init__(self, name: str) -> None:
        self.name = name


# -- formatting -----------------------------------------------------------------
def fmt_percent(value: Any) -> str:
    """A proportion as a percentage with one decimal: ``0.58`` -> ``58.0%``."""
    value = number(value)
    return "–" if value is None else f"{value * 100:.1f}%"


def fmt_proportion(result: Any) -> str:
    """``58.0% (48.2–67.3%)`` from an endpoint dict, or ``not available: ...``."""
    result = as_dict(result)
    estimate = number(result.get("estimate"))
    if estimate is None:
        return f"not available: {_reason(result)}"
    low, high = number(result.get("low")), number(result.get("high"))
    text = fmt_percent(estimate)
    if low is not None and high is not None:
        text += f" ({low * 100:.1f}–{high * 100:.1f}%)"
    return text


def _reason(result: dict) -> str:
    return str(result.get("reason") or result.get("note") or "not computed")


def _endpoint_label(name: str) -> str:
    return ENDPOINT_LABELS.get(name, name)


def _is_proportion(endpoint: Any) -> bool:
    """Whether a known endpoint is a proportion (all but PFS)."""
    return str(endpoint) in ENDPOINT_LABELS and endpoint != "pfs"


def _endpoint_order(names: Sequence[str]) -> list[str]:
    known = [n for n in ENDPOINT_LABELS if n in names]
    return known + sorted(n for n in set(names) if n not in ENDPOINT_LABELS)


# -- header -----------------------------------------------------------------------
#: Plain names of further provenance keys (the runner's, cartwin.trial.runner).
PROVENANCE_LABELS = {
    "n": "Patients simulated (n)", "trial_source": "Trial file",
    "started_at": "Run started (UTC)", "workers": "Workers",
    "chunks_total": "Chunks", "chunks_run": "Chunks simulated in this run",
    "chunks_done_before": "Chunks reused from an earlier run",
    "elapsed_simulation_s": "Simulation time (s)", "notes": "Run notes",
}
_PROVENANCE_SHOWN = frozenset({
    "seed", "cartwin_version", "version", "trial_digest", "digest", "backend",
    "chunk_size", "elapsed_s", "elapsed_seconds", "trial_name", "patients_per_arm",
})


def _header(data: _TrialData) -> dict[str, Any]:
    trial, prov = data.trial, data.provenance
    digest = prov.get("trial_digest") or prov.get("digest")
    if digest is None and callable(getattr(trial, "digest", None)):
        digest = trial.digest()
    elapsed = number(prov.get("elapsed_s", prov.get("elapsed_seconds")))
    rows = [
        ("Disease", getattr(trial, "disease", None) or "–"),
        ("Reference arm", getattr(trial, "reference_arm", None) or "–"),
        ("Confidence level", data.ci),
        ("Patients per arm", fmt_text(prov.get(
            "patients_per_arm", getattr(trial, "patients_per_arm", None)))),
        ("Horizon", _with_unit(getattr(trial, "horizon_days", None), "days")),
        ("Validated against", getattr(trial, "validate_against", None) or "none"),
        ("Seed", _plain(prov.get("seed", getattr(trial, "seed", None)))),
        ("cartwin version", fmt_text(prov.get("cartwin_version",
                                              prov.get("version")))),
        ("Trial digest (SHA-256)", fmt_text(digest)),
        ("Backend", fmt_text(prov.get("backend"))),
        ("Chunk size", fmt_text(prov.get("chunk_size"))),
        ("Elapsed time", "–" if elapsed is None else f"{elapsed:.1f} s"),
    ]
    rows += [(PROVENANCE_LABELS.get(key, key.replace("_", " ")), _listed(value))
             for key, value in sorted(prov.items()) if key not in _PROVENANCE_SHOWN]
    return {"name": data.name, "rows": rows,
            "arms": [_arm_row(data, arm) for arm in data.arms()]}


def _listed(value: Any) -> str:
    """A value, lists joined by ``; `` (``none`` when empty), mappings as JSON."""
    if isinstance(value, (list, tuple)):
        return "; ".join(fmt_text(v) for v in value) or "none"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return fmt_text(value)


def _plain(value: Any) -> str:
    """A value as is (no digit grouping: seeds, ids); ``–`` for ``None``."""
    return "–" if value is None else str(value)


def _with_unit(value: Any, unit: str) -> str:
    return "–" if number(value) is None else f"{fmt_number(value)} {unit}"


def fmt_text(value: Any) -> str:
    """Any value as short text; ``–`` for ``None``."""
    if value is None:
        return "–"
    return fmt_number(value) if isinstance(value, (int, float)) else str(value)


def _arm_row(data: _TrialData, arm: Any) -> dict[str, str]:
    name = str(getattr(arm, "name", ""))
    observed = getattr(arm, "observed", None) or None
    row = {"name": name, "kind": OBSERVED_LABEL if data.is_observed(name)
           else "simulated", **_counts(data, name, observed)}
    if observed is not None or data.is_observed(name):
        return {**row, **dict.fromkeys(
            ("product", "dose", "memory", "ld", "bridging", "toci", "steroids",
             "eligibility"), "–")}
    return {
        **row,
        "product": str(getattr(arm, "product", None) or "–"),
        "dose": _dose(arm),
        "memory": fmt_percent(getattr(arm, "memory_fraction", None)),
        "ld": _lymphodepletion(getattr(arm, "lymphodepletion", None)),
        "bridging": _bridging(getattr(arm, "bridging", None)),
        "toci": _policy(getattr(arm, "tocilizumab", None), "tocilizumab"),
        "steroids": _policy(getattr(arm, "steroids", None), "steroids"),
        "eligibility": _eligibility(getattr(arm, "eligibility", None)),
    }


def _counts(data: _TrialData, name: str, observed: dict | None) -> dict[str, str]:
    """N simulated, eligible, solve failures, analysed (from the outcome table)."""
    rows = data.rows_of.get(name)
    if observed is not None or rows is None:
        n = as_dict(observed).get("n", as_dict(data.arm_results.get(name)).get("n"))
        return {"n": fmt_text(n), "eligible": "–", "failed": "–",
                "analysed": fmt_text(n)}
    eligible = rows["eligible"].astype(bool) if "eligible" in rows else None
    solved = rows["solve_ok"].astype(bool) if "solve_ok" in rows else None
    return {
        "n": fmt_number(len(rows)),
        "eligible": "–" if eligible is None else fmt_number(int(eligible.sum())),
        "failed": "–" if solved is None else fmt_number(int((~solved).sum())),
        "analysed": fmt_number(len(data.analysed(name))),
    }


def _dose(arm: Any) -> str:
    per_kg = number(getattr(arm, "dose_cells_per_kg", None))
    if per_kg is not None:
        return f"{fmt_scientific(per_kg)} cells/kg"
    total = number(getattr(arm, "dose_cells", None))
    return "–" if total is None else f"{fmt_scientific(total)} cells"


def _days(days: Any) -> str:
    return ", ".join(fmt_text(d) for d in days or ()) or "–"


def _lymphodepletion(ld: Any) -> str:
    if ld is None:
        return "none"
    regimen = getattr(ld, "regimen", None) or "regimen not named"
    units = _units_per_day(getattr(ld, "units_per_day", None))
    return f"{regimen}, days {_days(getattr(ld, 'days', ()))} ({units})"


def _units_per_day(value: Any) -> str:
    """``1 unit/day``, ``0.5 units/day`` (dose units of cartwin.graph.inputs)."""
    return f"{fmt_text(value)} unit{'' if value == 1 else 's'}/day"


def _bridging(bridging: Any) -> str:
    if bridging is None:
        return "none"
    units = _units_per_day(getattr(bridging, "units_per_day", None))
    return (f"days {_days(getattr(bridging, 'days', ()))} ({units}), "
            "to patients with the population's bridging flag")


def _policy(policy: Any, drug: str) -> str:
    grade = getattr(policy, "at_crs_grade", None)
    if policy is None or not grade:
        return "never"
    doses = number(getattr(policy, "doses", None))
    if drug == "steroids":
        amount = "" if doses is None else f"dexamethasone {doses * 10:g} mg "
        return f"{amount}at CRS grade ≥{grade}"
    count = "" if doses is None else f" ({doses:g} dose{'s' if doses != 1 else ''})"
    return f"at CRS grade ≥{grade}{count}"


def _eligibility(rules: Any) -> str:
    parts = [
        ("max_hematotox", "CAR-HEMATOTOX ≤ {}"), ("min_age", "age ≥ {} years"),
        ("max_age", "age ≤ {} years"), ("max_prior_lines", "prior lines ≤ {}"),
    ]
    texts = [text.format(fmt_text(getattr(rules, key, None)))
             for key, text in parts if getattr(rules, key, None) is not None]
    return "; ".join(texts) or "all patients"


# -- arm comparison -------------------------------------------------------------
def _proportion_endpoints(data: _TrialData) -> list[str]:
    names = [key for result in data.arm_results.values()
             if isinstance(result, Mapping) for key, value in result.items()
             if isinstance(value, Mapping) and value.get("kind") != "survival"
             and key != "pfs"]
    return _endpoint_order(names)


def _comparison(data: _TrialData) -> dict[str, Any]:
    endpoints = _proportion_endpoints(data)
    arms = [n for n in data.arm_names() if n in data.arm_results]
    if not endpoints or not arms:
        raise _Unavailable("the result holds no proportion endpoint")
    rows = [{"endpoint": _endpoint_label(e),
             "cells": [_cell(data, arm, e) for arm in arms]} for e in endpoints]
    alt = (f"Bar chart of {len(endpoints)} endpoints in {len(arms)} arms with "
           f"{data.ci} error bars; observed arms hatched.")
    notes = [f"{a}, {_endpoint_label(e)}: {result['note']}" for a in arms
             for e in endpoints
             if (result := as_dict(as_dict(data.arm_results.get(a)).get(e)))
             .get("note") and result.get("estimate") is not None]
    labels = [_endpoint_label(e) for e in endpoints]
    return {"arms": [{"name": a, "observed": data.is_observed(a)} for a in arms],
            "rows": rows, "ci": data.ci, "notes": notes,
            "plot": plot_arm_bars(data, endpoints, arms, labels, alt=alt)}


def _cell(data: _TrialData, arm: str, endpoint: str) -> str:
    result = as_dict(data.arm_results.get(arm)).get(endpoint)
    if not isinstance(result, Mapping):
        if data.is_observed(arm):
            return "not reported"
        return "not available: not computed"
    text = fmt_proportion(result)
    events, n = number(result.get("events")), number(result.get("n"))
    if number(result.get("estimate")) is not None and events is not None and n:
        text += f"; {events:.0f}/{n:.0f}"
    return text


# -- survival -----------------------------------------------------------------------
def _survival(data: _TrialData) -> dict[str, Any]:
    curves = as_dict(data.endpoints.get("km"))
    arms = [n for n in data.arm_names() if isinstance(curves.get(n), Mapping)]
    rows = [_pfs_row(data, arm) for arm in data.arm_names()
            if isinstance(as_dict(data.arm_results.get(arm)).get("pfs"), Mapping)]
    if not arms and not rows:
        raise _Unavailable("the result holds no progression-free survival")
    horizon = number(getattr(data.trial, "horizon_days", None)) or _km_end(curves)
    ticks = _risk_ticks(horizon)
    at_risk = [_at_risk(data, arm, ticks) for arm in arms]
    alt = (f"Kaplan-Meier curves of progression-free survival in {len(arms)} arms "
           f"with {data.ci} bands, medians marked, numbers at risk below.")
    plot = plot_km(data, arms, curves, ticks, at_risk, alt=alt) if arms else None
    return {"plot": plot, "rows": rows, "ci": data.ci,
            "risk_ticks": [f"{t / DAYS_PER_MONTH:.0f}" for t in ticks],
            "at_risk": [r for r in at_risk if r["counts"]]}


def _pfs_row(data: _TrialData, arm: str) -> dict[str, str]:
    pfs = as_dict(data.arm_results[arm]["pfs"])
    if pfs.get("available") is False:
        return {"arm": arm, "median": f"not available: {_reason(pfs)}",
                "note": "", **dict.fromkeys(("interval", "m6", "m12", "events"), "–")}
    median, low, high = (number(pfs.get(k)) for k in ("median_days", "low", "high"))
    return {
        "arm": arm, "note": str(pfs.get("note") or ""),
        "median": _months(median) if median is not None else "not reached",
        "interval": f"{_months(low, unit=False)} – {_months(high, unit=False)}"
        if low is not None or high is not None else "–",
        "m6": fmt_percent(pfs.get("at_6_months")),
        "m12": fmt_percent(pfs.get("at_12_months")),
        "events": f"{fmt_text(pfs.get('events'))} / {fmt_text(pfs.get('n'))}",
    }


def _months(days: float | None, *, unit: bool = True) -> str:
    if days is None:
        return "not reached"
    text = f"{days / DAYS_PER_MONTH:.1f}"
    return f"{text} months ({days:.0f} days)" if unit else text


def _km_end(curves: dict) -> float:
    ends = [max(as_dict(c).get("t_days") or [0.0]) for c in curves.values()]
    return float(max(ends, default=0.0)) or 365.0


def _risk_ticks(horizon: float) -> list[float]:
    """Every 3 months (every month under 6 months) from day 0 to the horizon.

    A tick within a day past the horizon (12 months = 365.25 days against a
    365-day horizon) is put at the horizon, where patients are censored.
    """
    step = 3 if horizon >= 6 * DAYS_PER_MONTH else 1
    months = np.arange(0, (horizon + 1.0) / DAYS_PER_MONTH, step)
    return [min(float(m * DAYS_PER_MONTH), horizon) for m in months]


def _at_risk(data: _TrialData, arm: str, ticks: list[float]) -> dict[str, Any]:
    """Patients still at risk (no progression, not censored) at each tick."""
    rows = data.analysed(arm)
    if "pfs_days" not in rows or rows.empty:
        return {"arm": arm, "counts": []}
    days = rows["pfs_days"].to_numpy(dtype=float)
    # A day-0 tick counts everyone; later ticks count pfs_days >= t.
    counts = [int(np.sum(days >= t)) if t > 0 else len(days) for t in ticks]
    return {"arm": arm, "counts": counts}


# -- forest plot ----------------------------------------------------------------------
def _forest(data: _TrialData) -> dict[str, Any]:
    comparisons = [c for c in data.endpoints.get("comparisons") or ()
                   if isinstance(c, Mapping)]
    if not comparisons:
        raise _Unavailable("no comparison against a reference arm (one arm only, "
                           "or none computed)")
    rows = [_comparison_row(c) for c in comparisons]
    differences = [c for c in comparisons if c.get("measure") != "hazard ratio"]
    ratios = [c for c in comparisons if c.get("measure") == "hazard ratio"]
    alt = (f"Forest plot: {len(differences)} risk differences and {len(ratios)} "
           f"hazard ratios against the reference arm with {data.ci}.")
    plotted = [c for c in comparisons if number(c.get("estimate")) is not None]
    plot = plot_forest(differences, ratios, row_label=_forest_label, ci=data.ci,
                       alt=alt) if plotted else None
    return {"rows": rows, "ci": data.ci, "plot": plot}


def _forest_label(item: Mapping) -> str:
    """Forest plot row: the endpoint, then ``arm vs reference``."""
    return (f"{_endpoint_label(str(item.get('endpoint', '')))}\n"
            f"{fmt_text(item.get('arm'))} vs {fmt_text(item.get('reference'))}")


def _comparison_row(item: dict) -> dict[str, str]:
    ratio = item.get("measure") == "hazard ratio"
    values = [number(item.get(k)) for k in ("estimate", "low", "high")]

    def show(value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value:.2f}" if ratio else f"{value * 100:+.1f}"

    p_value = number(item.get("p_value"))
    return {
        "endpoint": _endpoint_label(str(item.get("endpoint", ""))),
        "arm": fmt_text(item.get("arm")), "reference": fmt_text(item.get("reference")),
        "measure": "hazard ratio" if ratio else "risk difference (percentage points)",
        "estimate": show(values[0]) if values[0] is not None
        else f"not available: {_reason(item)}",
        "interval": "–" if values[1] is None and values[2] is None
        else f"{show(values[1])} to {show(values[2])}",
        "p_value": "–" if p_value is None else ("< 0.001" if p_value < 0.001
                                                else f"{p_value:.3f}"),
        "note": str(item.get("note") or "") if values[0] is not None else "",
    }


# -- validation -----------------------------------------------------------------------
#: Names of validation endpoints that are not trial endpoints.
VALIDATION_LABELS = {
    "pfs_median_days": "Median PFS (days)",
    "pfs_at_median": "Progression-free at 6 months (published median 5.9 mo)",
}


def _validation_label(endpoint: Any) -> str:
    return VALIDATION_LABELS.get(str(endpoint), _endpoint_label(str(endpoint)))


def _validation(data: _TrialData) -> dict[str, Any]:
    if not data.validation:
        target = getattr(data.trial, "validate_against", None)
        raise _Unavailable("no published cohort to compare with" if not target
                           else f"no validation row for {target}")
    rows = [_validation_row(row) for row in data.validation]
    shown = [r for r in data.validation if _is_proportion(r.get("endpoint"))]
    cohorts = sorted({str(r.get("cohort", "")) for r in data.validation})
    alt = (f"Simulated against published proportions for {len(shown)} endpoints of "
           f"{', '.join(cohorts)}, with intervals; calibration targets marked.")
    plot = plot_validation(shown, [_validation_label(r.get("endpoint")) for r in shown],
                           [is_calibration(r) for r in shown],
                           alt=alt) if shown else None
    return {"rows": rows, "cohorts": ", ".join(cohorts),
            "calibrated": any(r["calibration"] for r in rows), "plot": plot}


def _validation_row(row: dict) -> dict[str, Any]:
    endpoint = str(row.get("endpoint", ""))
    show = _proportion_text if _is_proportion(endpoint) else _value_text
    within = row.get("within")
    return {
        "cohort": str(row.get("cohort", "")), "endpoint": _validation_label(endpoint),
        "source": str(row.get("source") or ""),
        "published": show(row, "published"), "simulated": show(row, "simulated"),
        "within": "–" if within is None else ("yes" if within else "no"),
        "calibration": is_calibration(row), "note": str(row.get("note") or ""),
    }


def _proportion_text(row: dict, prefix: str) -> str:
    return fmt_proportion({"estimate": row.get(prefix),
                           "low": row.get(f"{prefix}_low"),
                           "high": row.get(f"{prefix}_high"),
                           "reason": "not reported"})


def _value_text(row: dict, prefix: str) -> str:
    value = fmt_text(row.get(prefix))
    low, high = row.get(f"{prefix}_low"), row.get(f"{prefix}_high")
    if number(low) is None and number(high) is None:
        return value
    return f"{value} ({fmt_text(low)}–{fmt_text(high)})"


# -- kinetics and grades --------------------------------------------------------------
def weighted_quantiles(values: Any, weights: Any, quantiles: Sequence[float]
                       ) -> np.ndarray:
    """Quantiles of weighted values (linear interpolation of the weighted CDF).

    Each value sits at the middle of its weight's share of the cumulative
    weight, so equal weights give the Hazen quantiles ``(i - 0.5) / n``.

    Parameters
    ----------
    values, weights : array-like
        Values and their non-negative weights (same length, at least one
        positive weight).
    quantiles : sequence of float
        Probabilities in [0, 1].
    """
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    total = weights.sum()
    if not total > 0:
        raise ValueError(f"weights sum to {total}; need a positive total")
    position = (np.cumsum(weights) - 0.5 * weights) / total
    return np.interp(np.asarray(quantiles, float), position, values)


def _arm_values(data: _TrialData, arm: str, column: str, *, positive: bool = False):
    """(values, weights) of one column over the analysed rows, finite only."""
    rows = data.analysed(arm)
    if column not in rows or rows.empty:
        return np.zeros(0), np.zeros(0)
    values = rows[column].to_numpy(dtype=float)
    weights = rows["weight"].to_numpy(dtype=float) if "weight" in rows \
        else np.ones(len(values))
    keep = np.isfinite(values) & np.isfinite(weights) & (weights > 0)
    if positive:
        keep &= values > 0
    return values[keep], weights[keep]


#: Kinetics columns shown: column, title, unit, log axis.
KINETICS_COLUMNS = (
    ("cmax_per_ul", "Peak CAR T level (Cmax)", "cells/µL", True),
    ("tmax_day", "Time to peak (Tmax)", "days", False),
    ("auc0_28", "Exposure, days 0–28 (AUC0–28)", "cells/µL·day", True),
)


def _kinetics(data: _TrialData) -> dict[str, Any]:
    arms = data.simulated_names()
    stats = {(arm, column): _box_stats(*_arm_values(data, arm, column, positive=log))
             for arm in arms for column, _, _, log in KINETICS_COLUMNS}
    if not any(stats.values()):
        raise _Unavailable("no simulated patient with kinetics (no simulated arm, "
                           "or every simulation failed)")
    rows = [{"arm": arm, "values": [_quartile_text(stats[arm, c]) for c, *_ in
                                    KINETICS_COLUMNS]} for arm in arms]
    alt = ("Box plots of Cmax (log axis) and Tmax per simulated arm: boxes 25–75 %, "
           "line median, whiskers 5–95 %.")
    return {"rows": rows, "columns": [f"{t} ({u})" for _, t, u, _ in KINETICS_COLUMNS],
            "plot": plot_kinetics(arms, stats, KINETICS_COLUMNS[:2], alt=alt)}


def _box_stats(values: np.ndarray, weights: np.ndarray) -> dict | None:
    if not values.size:
        return None
    low, q1, median, q3, high = weighted_quantiles(values, weights, BOX_QUANTILES)
    return {"whislo": low, "q1": q1, "med": median, "q3": q3, "whishi": high,
            "fliers": [], "n": int(values.size)}


def _quartile_text(stat: dict | None) -> str:
    if stat is None:
        return "no data"
    return (f"{fmt_number(stat['med'])} ({fmt_number(stat['q1'])}–"
            f"{fmt_number(stat['q3'])}); n = {stat['n']}")


def _grade_shares(data: _TrialData, arm: str, column: str) -> np.ndarray | None:
    values, weights = _arm_values(data, arm, column)
    if not values.size:
        return None
    grades = np.clip(values.astype(int), 0, 4)
    return np.bincount(grades, weights=weights, minlength=5) / weights.sum()


def _grades(data: _TrialData) -> dict[str, Any]:
    arms = data.simulated_names()
    shares = {(arm, kind): _grade_shares(data, arm, f"{kind}_grade")
              for arm in arms for kind in ("crs", "icans")}
    if not any(s is not None for s in shares.values()):
        raise _Unavailable("no simulated patient with a CRS or ICANS grade")
    tables = [{"kind": kind.upper(), "rows": [
        {"arm": arm, "shares": [fmt_percent(x) for x in shares[arm, kind]]
         if shares[arm, kind] is not None else ["no data"] * 5} for arm in arms]}
        for kind in ("crs", "icans")]
    alt = "Stacked bars of the CRS and ICANS grade (0 to 4) distribution per arm."
    return {"tables": tables, "plot": plot_grades(arms, shares, alt=alt)}


# -- population and sample size -------------------------------------------------------
#: Plain names of population summary keys.
POPULATION_LABELS = {
    "method": "Calibration method",
    "effective_sample_size": "Effective sample size",
    "ess": "Effective sample size",
    "pilot": "Pilot patients (calibration sample)",
    "parameters": "Parameters whose prior means were shifted",
    "acceptance_rate": "Acceptance rate",
    "acceptance": "Acceptance rate",
    "n_candidates": "Candidate patients sampled",
    "n_accepted": "Patients accepted",
    "calibrated": "Calibrated",
}
_TARGET_KEYS = ("targets", "raw", "achieved")
_TARGET_COLUMNS = {"targets": "Target", "raw": "Before calibration",
                   "achieved": "Achieved"}


def _population(data: _TrialData) -> dict[str, Any]:
    summary = {k: v for k, v in data.population.items() if k != "assumptions"}
    if not summary:
        raise _Unavailable("the result has no population calibration summary "
                           "(population not calibrated)")
    facts = [(POPULATION_LABELS.get(k, k.replace("_", " ")), _summary_text(k, v))
             for k, v in sorted(summary.items())
             if k not in _TARGET_KEYS and _is_flat(v)]
    columns = {k: as_dict(summary[k]) for k in _TARGET_KEYS if k in summary}
    rows = [{"name": _endpoint_label(str(name)),
             "values": [_summary_text(name, columns[k].get(name)) for k in columns]}
            for name in _endpoint_order([n for c in columns.values() for n in c])]
    nested = {k: v for k, v in summary.items()
              if k not in _TARGET_KEYS and not _is_flat(v)}
    return {"facts": facts, "targets": rows,
            "columns": [_TARGET_COLUMNS[k] for k in columns],
            "details": json.dumps(nested, indent=2, sort_keys=True, default=str,
                                  ensure_ascii=False) if nested else ""}


def _is_flat(value: Any) -> bool:
    """A scalar, or a list of scalars (shown joined)."""
    if isinstance(value, (list, tuple)):
        return not any(isinstance(v, (list, tuple, Mapping)) for v in value)
    return not isinstance(value, Mapping)


def _summary_text(key: Any, value: Any) -> str:
    """A population value: a percentage for rates, a number, or compact JSON."""
    if isinstance(value, Mapping):
        value = value.get("estimate", value.get("value", value))
    if str(key) in ("acceptance_rate", "acceptance") or (
            str(key) in ENDPOINT_LABELS and number(value) is not None):
        return fmt_percent(value)
    return _listed(value)


def _sample_size(data: _TrialData) -> dict[str, Any]:
    items = [s for s in data.endpoints.get("sample_size") or ()
             if isinstance(s, Mapping)]
    if not items:
        raise _Unavailable("no sample-size estimate (one arm only, or none computed)")
    power = getattr(data.trial, "power", None)
    return {"rows": [_sample_row(s) for s in items],
            "design": f"two-sided alpha {fmt_text(data.alpha)}, power "
                      f"{power * 100:g}%" if number(power) else
                      f"two-sided alpha {fmt_text(data.alpha)}"}


def _sample_row(item: dict) -> dict[str, str]:
    endpoint = str(item.get("endpoint", ""))
    effect = number(item.get("effect"))
    if effect is None:
        effect_text = "–"
    elif endpoint == "pfs":
        effect_text = f"hazard ratio {effect:.2f}"
    else:
        effect_text = f"{effect * 100:+.1f} percentage points"
    per_arm = number(item.get("per_arm"))
    return {
        "endpoint": _endpoint_label(endpoint), "arm": str(item.get("arm", "")),
        "reference": str(item.get("reference", "")), "effect": effect_text,
        "per_arm": fmt_number(math.ceil(per_arm)) if per_arm is not None
        else f"not estimable: {_reason(item)}",
        "events": "–" if number(item.get("events")) is None
        else fmt_number(math.ceil(item["events"])),
        "method": str(item.get("method") or "–"),
        "note": str(item.get("note") or "") if per_arm is not None else "",
    }
