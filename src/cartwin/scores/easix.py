"""EASIX, simplified EASIX and modified EASIX (m-EASIX).

Formulas (Pennisi 2021 [1]_), with the units they were defined in:

- EASIX = LDH [U/L] x creatinine [mg/dL] / platelets [10^9/L]
- simplified EASIX = LDH [U/L] / platelets [10^9/L]
- m-EASIX = LDH [U/L] x CRP [mg/dL] / platelets [10^9/L]

cartwin stores CRP in mg/L, so m-EASIX divides the stored CRP by 10 first
(5 mg/dL = 50 mg/L). Results are usually analysed on a log2 scale
(:func:`easix_log2`).

Only one cut-off is published for these scores: EASIX measured right before
lymphodepletion ("EASIX-pre") > 4.67 marks a higher risk of grade >= 3 CRS
and/or ICANS (Korell 2022 [2]_). cartwin applies it, as category ``"high"``
or ``"low"``, to EASIX at the pre-lymphodepletion time point only; no cut-off
for m-EASIX or simplified EASIX is known (clinical-facts.md open item 2), so
their category is ``None``.

References
----------
.. [1] Pennisi M, et al. Modified EASIX predicts severe cytokine release
   syndrome and neurotoxicity after chimeric antigen receptor T cells.
   Blood Adv 2021;5(17):3397-3406. doi:10.1182/bloodadvances.2020003885
.. [2] Korell F, et al. EASIX and severe endothelial complications after
   CD19-directed CAR-T cell therapy - a cohort study. Front Immunol
   2022;13:877477. doi:10.3389/fimmu.2022.877477
"""

from __future__ import annotations

import math

from cartwin.errors import DataError
from cartwin.record.model import PatientRecord
from cartwin.scores import _search
from cartwin.scores._result import ScoreResult

REFERENCE = (
    "Pennisi M et al. Blood Adv 2021;5(17):3397-3406. "
    "doi:10.1182/bloodadvances.2020003885"
)
KORELL_REFERENCE = (
    "cut-off: Korell F et al. Front Immunol 2022;13:877477. "
    "doi:10.3389/fimmu.2022.877477"
)
#: EASIX-pre above this value is "high" (Korell 2022); dimensionless.
KORELL_CUTOFF = 4.67
#: mg/L per mg/dL.
_MG_PER_L_PER_MG_PER_DL = 10.0

#: Score name -> record quantities (numerator factors first, platelets last).
VARIANTS: dict[str, tuple[str, ...]] = {
    "EASIX": ("ldh", "creatinine", "platelets"),
    "m-EASIX": ("ldh", "crp", "platelets"),
    "simplified EASIX": ("ldh", "platelets"),
}
_ALIASES = {"simplified": "simplified EASIX", "easix": "EASIX", "m-easix": "m-EASIX"}


def easix(
    *, ldh_u_per_l: float, creatinine_mg_per_dl: float, platelets_10e9_per_l: float
) -> float:
    """EASIX = LDH x creatinine / platelets.

    Parameters
    ----------
    ldh_u_per_l : float
        Lactate dehydrogenase, U/L, >= 0.
    creatinine_mg_per_dl : float
        Serum creatinine, mg/dL, >= 0.
    platelets_10e9_per_l : float
        Platelet count, 10^9/L, > 0.

    Returns
    -------
    float
        EASIX, dimensionless by convention.

    Examples
    --------
    >>> easix(ldh_u_per_l=250, creatinine_mg_per_dl=1.0, platelets_10e9_per_l=100)
    2.5
    """
    return _ratio((ldh_u_per_l, creatinine_mg_per_dl), platelets_10e9_per_l)


def simplified_easix(*, ldh_u_per_l: float, platelets_10e9_per_l: float) -> float:
    """Simplified EASIX = LDH [U/L] / platelets [10^9/L] (creatinine dropped)."""
    return _ratio((ldh_u_per_l,), platelets_10e9_per_l)


def m_easix(
    *, ldh_u_per_l: float, crp_mg_per_l: float, platelets_10e9_per_l: float
) -> float:
    """m-EASIX = LDH [U/L] x CRP [mg/dL] / platelets [10^9/L].

    ``crp_mg_per_l`` is in mg/L, cartwin's canonical unit, and is divided by
    10 to give the mg/dL of the definition.

    Examples
    --------
    >>> m_easix(ldh_u_per_l=250, crp_mg_per_l=50, platelets_10e9_per_l=100)
    12.5
    """
    crp_mg_per_dl = crp_mg_per_l / _MG_PER_L_PER_MG_PER_DL
    return _ratio((ldh_u_per_l, crp_mg_per_dl), platelets_10e9_per_l)


def easix_log2(value: float) -> float:
    """log2 of an EASIX-family value, the scale used in the analyses."""
    if not value > 0:
        raise DataError(f"log2 of an EASIX value needs a value > 0, got {value!r}")
    return math.log2(value)


def korell_category(easix_pre: float) -> str:
    """``"high"`` when EASIX-pre > 4.67, else ``"low"`` (Korell 2022)."""
    return "high" if _search.compare(easix_pre, KORELL_CUTOFF) > 0 else "low"


def easix_from_record(
    record: PatientRecord,
    variant: str = "EASIX",
    *,
    day_window: tuple[int, int] | None = None,
) -> ScoreResult:
    """EASIX, m-EASIX or simplified EASIX of a patient at one time point.

    Parameters
    ----------
    record : PatientRecord
        The patient; values in canonical units.
    variant : str
        ``"EASIX"``, ``"m-EASIX"`` or ``"simplified"`` (``"simplified EASIX"``).
    day_window : tuple of (int, int), optional
        Inclusive study-day window (last value of each input inside it). By
        default the pre-lymphodepletion rule of :mod:`cartwin.scores._search`.

    Returns
    -------
    ScoreResult
        ``value`` is ``None`` when an input is missing or censored; a censored
        input gives the bound in ``message`` (and the Korell category when the
        bound decides it).

    Raises
    ------
    ValueError
        When ``variant`` is not one of the names above.
    """
    name = _variant_name(variant)
    quantities = VARIANTS[name]
    if day_window is None:
        window = _search.pre_lymphodepletion_window(record)
    else:
        window = _search.study_day_window(record, *day_window)
    found, missing = _search.latest_inputs(record, quantities, window)
    inputs = tuple(_search.as_input(record, found[q]) for q in quantities if q in found)
    reference = REFERENCE
    if name == "EASIX" and day_window is None:
        reference = f"{REFERENCE}; {KORELL_REFERENCE}"
    base = dict(
        name=name,
        inputs=inputs,
        missing=missing,
        window=window.days,
        reference=reference,
        timepoint=window.timepoint,
    )
    if missing:
        message = _search.missing_message(missing, window)
        return ScoreResult(value=None, category=None, message=message, **base)
    low, high = _value_range(name, [found[q] for q in quantities])
    korell = name == "EASIX" and day_window is None
    if low == high:
        category = korell_category(low) if korell else None
        return ScoreResult(value=low, category=category, **base)
    category = _interval_category(low, high) if korell else None
    message = f"{name} {_bound_text(low, high)}: censored input"
    return ScoreResult(value=None, category=category, message=message, **base)


def _variant_name(variant: str) -> str:
    name = _ALIASES.get(variant.lower(), variant)
    if name not in VARIANTS:
        allowed = ", ".join([*VARIANTS, "simplified"])
        raise ValueError(f"EASIX variant must be one of {allowed}; got {variant!r}")
    return name


def _ratio(numerators: tuple[float, ...], platelets: float) -> float:
    for value in (*numerators, platelets):
        if not math.isfinite(value) or value < 0:
            raise DataError(f"EASIX inputs must be finite and >= 0, got {value!r}")
    if platelets == 0:
        raise DataError("EASIX needs a platelet count > 0, got 0")
    return math.prod(numerators) / platelets


def _value_range(name: str, observations: list) -> tuple[float, float]:
    # Interval arithmetic on monotone formulas: the numerator grows with every
    # factor, the platelet count divides.
    for obs in observations:
        zero_platelets = obs.quantity == "platelets" and obs.value == 0
        if not math.isfinite(obs.value) or obs.value < 0 or zero_platelets:
            raise DataError(
                f"{name} input {obs.quantity} ({obs.source_id}) must be finite, "
                f">= 0 (platelets > 0), got {obs.value!r}"
            )
    intervals = [list(_search.value_interval(obs)) for obs in observations]
    for obs, interval in zip(observations, intervals):
        if obs.quantity == "crp":
            interval[:] = [v / _MG_PER_L_PER_MG_PER_DL for v in interval]
    *factors, platelets = intervals
    low = _safe_div(math.prod(f[0] for f in factors), platelets[1])
    high = _safe_div(math.prod(f[1] for f in factors), platelets[0])
    return low, high


def _safe_div(numerator: float, denominator: float) -> float:
    if denominator == 0 or math.isnan(numerator):
        return math.inf
    return numerator / denominator


def _interval_category(low: float, high: float) -> str | None:
    if _search.compare(low, KORELL_CUTOFF) > 0:
        return "high"
    if _search.compare(high, KORELL_CUTOFF) <= 0:
        return "low"
    return None


def _bound_text(low: float, high: float) -> str:
    if math.isinf(high) and low > 0:
        return f"> {low:.3g}"
    if low == 0 and not math.isinf(high):
        return f"< {high:.3g}"
    if math.isinf(high):
        return "undetermined"
    return f"between {low:.3g} and {high:.3g}"
