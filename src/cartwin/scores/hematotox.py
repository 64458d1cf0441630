"""CAR-HEMATOTOX: pre-lymphodepletion risk of CAR T haematotoxicity.

Five markers taken before lymphodepleting chemotherapy; platelets and ferritin
can score 2 points, the others 1. Total 0-7; 0-1 is HT-low, >= 2 is HT-high.

Points table, in cartwin's canonical units (the paper gives platelets and ANC
per µL and CRP in mg/dL; 175 000/µL = 175 x 10^9/L, 1 200/µL = 1.2 x 10^9/L,
3.0 mg/dL = 30 mg/L):

=====================  ===========  ========  ==============  ========
marker                 unit         0 points  1 point         2 points
=====================  ===========  ========  ==============  ========
platelets              10^9/L       > 175     75 to 175       < 75
ANC                    10^9/L       > 1.2     <= 1.2          --
haemoglobin            g/dL         > 9.0     <= 9.0          --
CRP                    mg/L         < 30      >= 30           --
ferritin               ng/mL        < 650     650 to 2000     > 2000
=====================  ===========  ========  ==============  ========

Boundary convention (chosen by cartwin; the paper's handling of values *at* a
cut-off is unverified): **a value exactly at a cut-off scores 1 point.** The
0-point and 2-point categories are strict as printed, and every 1-point band
is closed. Comparisons use a relative tolerance of 1e-9 (see
:mod:`cartwin.scores._search`).

The markers and the low/high split are verified against the source; the
numeric cut-offs are those of the published online calculators and are
unverified against Fig. 4A of the paper (clinical-facts.md section 1.2, open
item 1).

References
----------
.. [1] Rejeski K, et al. CAR-HEMATOTOX: a model for CAR T-cell-related
   hematologic toxicity in relapsed/refractory large B-cell lymphoma.
   Blood 2021;138(24):2499-2513. doi:10.1182/blood.2020010543
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from cartwin.errors import DataError
from cartwin.record.model import PatientRecord
from cartwin.scores import _search
from cartwin.scores._result import ScoreResult

REFERENCE = (
    "Rejeski K et al. Blood 2021;138(24):2499-2513. doi:10.1182/blood.2020010543"
)
#: Cut-offs in canonical units (see module docstring).
PLATELETS_HIGH = 175.0  # 10^9/L
PLATELETS_LOW = 75.0  # 10^9/L
ANC_CUTOFF = 1.2  # 10^9/L
HEMOGLOBIN_CUTOFF = 9.0  # g/dL
CRP_CUTOFF = 30.0  # mg/L (= 3.0 mg/dL)
FERRITIN_LOW = 650.0  # ng/mL
FERRITIN_HIGH = 2000.0  # ng/mL
#: Highest total that is still HT-low.
LOW_MAX = 1


def platelet_points(platelets_10e9_per_l: float) -> int:
    """Points for the platelet count (10^9/L): >175 -> 0, 75-175 -> 1, <75 -> 2."""
    if _search.compare(platelets_10e9_per_l, PLATELETS_HIGH) > 0:
        return 0
    if _search.compare(platelets_10e9_per_l, PLATELETS_LOW) < 0:
        return 2
    return 1


def anc_points(anc_10e9_per_l: float) -> int:
    """Points for the absolute neutrophil count (10^9/L): >1.2 -> 0, else 1."""
    return 0 if _search.compare(anc_10e9_per_l, ANC_CUTOFF) > 0 else 1


def hemoglobin_points(hemoglobin_g_per_dl: float) -> int:
    """Points for haemoglobin (g/dL): >9.0 -> 0, else 1."""
    return 0 if _search.compare(hemoglobin_g_per_dl, HEMOGLOBIN_CUTOFF) > 0 else 1


def crp_points(crp_mg_per_l: float) -> int:
    """Points for C-reactive protein (mg/L): <30 -> 0, else 1."""
    return 0 if _search.compare(crp_mg_per_l, CRP_CUTOFF) < 0 else 1


def ferritin_points(ferritin_ng_per_ml: float) -> int:
    """Points for ferritin (ng/mL): <650 -> 0, 650-2000 -> 1, >2000 -> 2."""
    if _search.compare(ferritin_ng_per_ml, FERRITIN_LOW) < 0:
        return 0
    if _search.compare(ferritin_ng_per_ml, FERRITIN_HIGH) > 0:
        return 2
    return 1


#: Record quantity -> points function, in the order of the paper.
MARKERS: dict[str, Callable[[float], int]] = {
    "platelets": platelet_points,
    "anc": anc_points,
    "hemoglobin": hemoglobin_points,
    "crp": crp_points,
    "ferritin": ferritin_points,
}


@dataclass(frozen=True)
class HematotoxPoints:
    """Points of each CAR-HEMATOTOX marker and their total (0-7)."""

    platelets: int
    anc: int
    hemoglobin: int
    crp: int
    ferritin: int

    @property
    def total(self) -> int:
        """Sum of the marker points, 0-7."""
        return self.platelets + self.anc + self.hemoglobin + self.crp + self.ferritin

    @property
    def category(self) -> str:
        """``"low"`` (0-1) or ``"high"`` (>= 2)."""
        return hematotox_category(self.total)


def hematotox_points(
    *,
    platelets_10e9_per_l: float,
    anc_10e9_per_l: float,
    hemoglobin_g_per_dl: float,
    crp_mg_per_l: float,
    ferritin_ng_per_ml: float,
) -> HematotoxPoints:
    """Score CAR-HEMATOTOX from five pre-lymphodepletion values.

    Parameters
    ----------
    platelets_10e9_per_l : float
        Platelet count, 10^9/L (= 1000/µL), >= 0.
    anc_10e9_per_l : float
        Absolute neutrophil count, 10^9/L, >= 0.
    hemoglobin_g_per_dl : float
        Haemoglobin, g/dL, >= 0.
    crp_mg_per_l : float
        C-reactive protein, mg/L (not mg/dL), >= 0.
    ferritin_ng_per_ml : float
        Ferritin, ng/mL, >= 0.

    Returns
    -------
    HematotoxPoints
        Points per marker; ``.total`` is the score, ``.category`` the group.

    Raises
    ------
    DataError
        When a value is negative or not finite.

    Examples
    --------
    >>> hematotox_points(platelets_10e9_per_l=60, anc_10e9_per_l=1.0,
    ...     hemoglobin_g_per_dl=8.5, crp_mg_per_l=50, ferritin_ng_per_ml=2500).total
    7
    """
    values = {
        "platelets": platelets_10e9_per_l,
        "anc": anc_10e9_per_l,
        "hemoglobin": hemoglobin_g_per_dl,
        "crp": crp_mg_per_l,
        "ferritin": ferritin_ng_per_ml,
    }
    for name, value in values.items():
        _check_value(name, value)
    return HematotoxPoints(**{name: MARKERS[name](v) for name, v in values.items()})


def hematotox_category(total: int) -> str:
    """Risk group of a CAR-HEMATOTOX total: ``"low"`` for 0-1, ``"high"`` for >= 2."""
    return "low" if total <= LOW_MAX else "high"


def hematotox_from_record(
    record: PatientRecord, *, day_window: tuple[int, int] | None = None
) -> ScoreResult:
    """CAR-HEMATOTOX of a patient, from the last values before lymphodepletion.

    Parameters
    ----------
    record : PatientRecord
        The patient; values in canonical units.
    day_window : tuple of (int, int), optional
        Inclusive study-day window to search instead of the pre-lymphodepletion
        rule (see :mod:`cartwin.scores._search`).

    Returns
    -------
    ScoreResult
        ``value`` is the total (0-7), or ``None`` when an input is missing or a
        censored input leaves the total undetermined; ``message`` then says
        which input, and where it was looked for.
    """
    if day_window is None:
        window = _search.pre_lymphodepletion_window(record)
    else:
        window = _search.study_day_window(record, *day_window)
    found, missing = _search.latest_inputs(record, tuple(MARKERS), window)
    inputs = tuple(_search.as_input(record, found[q]) for q in MARKERS if q in found)
    base = dict(
        name="CAR-HEMATOTOX",
        inputs=inputs,
        missing=missing,
        window=window.days,
        reference=REFERENCE,
        timepoint=window.timepoint,
    )
    if missing:
        message = _search.missing_message(missing, window)
        return ScoreResult(value=None, category=None, message=message, **base)
    for name, obs in found.items():
        _check_value(name, obs.value, obs.source_id)
    low, high = _total_range(found)
    if low == high:
        return ScoreResult(value=low, category=hematotox_category(low), **base)
    category = hematotox_category(low)
    same_group = category == hematotox_category(high)
    message = f"CAR-HEMATOTOX between {low} and {high}: {_censored_text(found)}"
    return ScoreResult(
        value=None, category=category if same_group else None, message=message, **base
    )


def _total_range(found: dict) -> tuple[int, int]:
    # Each points function is monotone, so the ends of a marker's interval
    # give its fewest and most points.
    low = high = 0
    for name, obs in found.items():
        ends = [MARKERS[name](v) for v in _search.value_interval(obs)]
        low += min(ends)
        high += max(ends)
    return low, high


def _censored_text(found: dict) -> str:
    parts = []
    for name, obs in found.items():
        if obs.censored is not None:
            sign = "<" if obs.censored == "below" else ">"
            parts.append(f"{name} {sign} {obs.value:g} {obs.unit}")
    return ", ".join(parts) + " (censored)"


def _check_value(name: str, value: float, source: str = "") -> None:
    if not math.isfinite(value) or value < 0:
        where = f" ({source})" if source else ""
        raise DataError(
            f"CAR-HEMATOTOX input {name}{where} must be a finite value >= 0, "
            f"got {value!r}"
        )
