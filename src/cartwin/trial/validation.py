"""Published cohorts, and simulated trial arms checked against them.

Numbers are those of ``reference/clinical-facts.md`` §8 (pivotal and
real-world outcome summaries), each with its source. Published confidence
intervals are not in the summaries, so each rate gets the exact
(Clopper-Pearson) 95 % interval of ``round(n x rate)`` events in ``n``
patients. A simulated arm *agrees* with a published rate when the simulated
estimate lies inside that interval. A published median PFS ``m`` (no
interval given) agrees when the simulated arm's 95 % interval of S(6 months)
contains 0.5 and ``m`` is within 45 days of 6 months: progression is seen
at protocol visits, so a simulated median can only fall on a visit day.

Grading: ZUMA-1 graded CRS by Lee 2014 and neurotoxicity by CTCAE, not the
ASTCT 2019 scales that cartwin's CRS/ICANS links name; the comparison treats
them as equivalent (the mapping used, stated in every validation row).
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

from cartwin.errors import TrialConfigError

_TABLE4 = "Ther Adv Hematol 2019, doi:10.1177/2040620719841581, Table 4"

#: Published cohorts (clinical-facts §8). Rates are proportions of infused
#: patients; ``pfs_median_days`` converts months at 30.44 d.
PUBLISHED: dict[str, dict[str, Any]] = {
    "ZUMA-1": {
        "product": "axi-cel",
        "n": 101,
        "orr": 0.82,
        "cr": 0.58,
        "crs_any": 0.93,
        "crs_ge3": 0.13,
        "icans_any": 0.65,
        "icans_ge3": 0.31,
        "pfs_median_days": 5.9 * 30.44,
        "bridging_fraction": 0.0,
        "grading": "CRS Lee 2014, neurotoxicity CTCAE (taken as ASTCT grades)",
        "source": f"Locke 2018 (ZUMA-1, 27.1 mo follow-up); {_TABLE4}",
    },
    "axi-cel real world": {
        "product": "axi-cel",
        "n": 274,
        "orr": 0.81,
        "cr": 0.57,
        "crs_any": 0.92,
        "crs_ge3": 0.07,
        "icans_any": 0.69,
        "icans_ge3": 0.33,
        "bridging_fraction": 0.55,
        "grading": "CRS Lee 2014 (taken as ASTCT grades)",
        "source": f"Nastoupil, ASH 2018 (US Lymphoma CAR T Consortium); {_TABLE4}",
    },
}

#: Endpoints compared, in order, with their published key.
COMPARED = ("orr", "cr", "crs_any", "crs_ge3", "icans_any", "icans_ge3", "pfs")

#: Why some simulated rates are not independent of the published ones.
CALIBRATION_NOTES = {
    "crs_any": "CRS link fitted to ZUMA-1 CRS any 93% / grade>=3 13% "
    "(cartwin.models.cytokines): agreement is by construction",
    "crs_ge3": "CRS link fitted to ZUMA-1 CRS any 93% / grade>=3 13% "
    "(cartwin.models.cytokines): agreement is by construction",
    "icans_any": "ICANS link fitted to ZUMA-1 neurotoxicity 65% / grade>=3 31%: "
    "agreement is by construction",
    "icans_ge3": "ICANS link fitted to ZUMA-1 neurotoxicity 65% / grade>=3 31%: "
    "agreement is by construction",
}


def cohort(name: str, source: str = "") -> dict[str, Any]:
    """A published cohort by name (case-insensitive)."""
    for key, value in PUBLISHED.items():
        if key.lower() == str(name).lower():
            return {"name": key, **value}
    raise TrialConfigError(
        f"{source}: {name!r} is not a published cohort cartwin knows; known: "
        f"{', '.join(PUBLISHED)}"
    )


def exact_interval(rate: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of ``round(n x rate)`` events in ``n``."""
    events = round(rate * n)
    ci = stats.binomtest(events, n).proportion_ci(level, method="exact")
    return float(ci.low), float(ci.high)


def validate(
    trial: Any,
    endpoints: dict[str, Any],
    arm: str | None = None,
    population: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows comparing the simulated ``arm`` (default: reference arm) with
    the trial's ``validate_against`` cohort.

    Parameters
    ----------
    trial : Trial
        Needs ``validate_against``, ``reference_arm``, ``source``.
    endpoints : dict
        :func:`cartwin.trial.endpoints.compute_endpoints` output.
    arm : str, optional
        The simulated arm that stands for the published cohort.
    population : dict, optional
        The population calibration summary; its marrow checks (Rejeski
        2021, by CAR-HEMATOTOX group) are appended when present.

    Returns
    -------
    list of dict
        One row per compared endpoint present on both sides (keys in
        :data:`cartwin.trial.report` / the runner's contract).
    """
    if not trial.validate_against:
        return []
    published = cohort(trial.validate_against, getattr(trial, "source", ""))
    arm = arm or trial.reference_arm
    simulated = endpoints.get("arms", {}).get(arm, {})
    rows = []
    calibrated = _calibration_target(trial)
    for key in COMPARED:
        result = simulated.get(key)
        if not isinstance(result, dict):
            continue
        row = _row(key, published, result, calibrated)
        if row is not None:
            rows.append(row)
    marrow = (population or {}).get("marrow", {})
    return rows + list(marrow.get("checks", []))


def _calibration_target(trial: Any) -> tuple[str, set[str]]:
    population = getattr(trial, "population", {}) or {}
    if population.get("calibrate", True) is False:
        return "", set()
    return str(population.get("calibrate_to", "axi-cel real world")), {"orr", "cr"}


def _row(key, published, result, calibrated) -> dict[str, Any] | None:
    name, targets = calibrated
    notes = [published["grading"]] if key.startswith(("crs", "icans")) else []
    if key in CALIBRATION_NOTES:
        notes.append(CALIBRATION_NOTES[key])
    if key in targets and name.lower() == published["name"].lower():
        notes.append("calibration target of the virtual population")
    elif key in targets:
        notes.append(f"population calibrated to {name}'s rate, not this cohort's")
    if key == "pfs":
        return _pfs_row(published, result, notes)
    if key not in published or result.get("estimate") is None:
        return None
    low, high = exact_interval(published[key], published["n"])
    estimate = float(result["estimate"])
    return {
        "cohort": published["name"],
        "endpoint": key,
        "published": published[key],
        "published_low": low,
        "published_high": high,
        "simulated": estimate,
        "simulated_low": result.get("low"),
        "simulated_high": result.get("high"),
        "within": bool(low <= estimate <= high) and math.isfinite(estimate),
        "note": "; ".join(notes),
        "source": published["source"],
    }


def _pfs_row(published, result, notes) -> dict[str, Any] | None:
    # a published median m says S(m) = 0.5; progression is seen at visits
    # only, so the simulated median can only be a visit day: compare the
    # simulated S at 6 months (182.6 d, the visit grid's 180-d visit) with 0.5
    # when the published median is within a visit interval of it
    value = published.get("pfs_median_days")
    estimate = result.get("at_6_months")
    if value is None or estimate is None or abs(value - 182.6) > 45.0:
        return None
    low, high = result.get("at_6_months_low"), result.get("at_6_months_high")
    within = low is not None and high is not None and low <= 0.5 <= high
    explained = (
        f"published median PFS {value / 30.44:.1f} months means 50% "
        "progression-free then; simulated PFS at 6 months shown (progression "
        f"is seen at visits; simulated median {result.get('median_days')} d); "
        "deaths without progression not modelled"
    )
    notes = [*notes, explained]
    return {
        "cohort": published["name"],
        "endpoint": "pfs_at_median",
        "published": 0.5,
        "published_low": None,
        "published_high": None,
        "simulated": float(estimate),
        "simulated_low": low,
        "simulated_high": high,
        "within": bool(within),
        "note": "; ".join(notes),
        "source": published["source"],
    }


#: Note texts of validation rows whose agreement is not independent
#: evidence: the published rate was a calibration target, or a link was
#: fitted to it.
CALIBRATION_MARKERS = ("calibration target", "by construction")


def is_calibration(row: dict[str, Any]) -> bool:
    """Whether a validation row's agreement comes from calibration (flag or note)."""
    if row.get("calibration") or row.get("calibrated"):
        return True
    note = str(row.get("note") or "").lower()
    return any(marker in note for marker in CALIBRATION_MARKERS)
