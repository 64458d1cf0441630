"""Response categories from modelled tumour trajectories, with probabilities.

Each posterior draw of a twin gives one tumour trajectory; each trajectory
gets one response category at an assessment day; the share of draws in each
category is its probability. Two rule sets, both **"-style"**: they apply the
quantitative thresholds of the published criteria to the modelled marker
only, and leave out what the model does not represent (PET, new lesions,
marrow, spleen, urine M-protein, plasmacytomas).

Lugano-style (large B-cell lymphoma, CT part of Cheson 2014 [1]_), on the SPD
of the modelled tumour, baseline at ``baseline_day`` (default day 0):

- **PD**: SPD >= 1.5 x nadir (nadir since baseline) and SPD >= the
  measurability floor (Lugano: progression is an increase of >= 50% from
  nadir in a measurable lesion);
- **CR**: SPD below ``cr_spd_cm2`` (default 1 cm2, a 1 x 1 cm residue;
  Lugano CR is regression of all target lesions to <= 1.5 cm, which the SPD
  of the tumour cells alone cannot express: an assumption);
- **PR**: SPD <= 50% of baseline (Lugano: >= 50% decrease in SPD);
- **SD**: otherwise.

IMWG-style (multiple myeloma, Kumar 2016 [2]_), on serum M-protein when it
is measurable at baseline (>= 1 g/dL), otherwise on the involved free light
chain when measurable (>= 100 mg/L), otherwise not evaluable:

- **PD**: >= 25% above nadir and an absolute increase >= 0.5 g/dL
  (M-protein) or >= 100 mg/L (involved FLC);
- **CR** ("CR or better"): M-protein below ``ife_limit_g_dl`` (default
  0.02 g/dL, taken as immunofixation-negative; assumption) or, for FLC
  disease, involved FLC <= ``flc_normal_mg_l`` (26.3 mg/L, upper normal of
  lambda; assumption);
- **VGPR** >= 90% reduction; **PR** >= 50%; **MR** >= 25%; **SD** otherwise.
  For FLC disease the reduction is of ``involved - uninvolved`` with the
  uninvolved chain taken as ``uninvolved_flc_mg_l`` (15 mg/L; assumption),
  as IMWG uses the difference of involved and uninvolved FLC.

References
----------
.. [1] Cheson BD, Fisher RI, Barrington SF, et al. Recommendations for initial
   evaluation, staging, and response assessment of Hodgkin and non-Hodgkin
   lymphoma: the Lugano classification. J Clin Oncol 2014;32(27):3059-3068.
   doi:10.1200/JCO.2013.54.8800
.. [2] Kumar S, Paiva B, Anderson KC, et al. International Myeloma Working
   Group consensus criteria for response and minimal residual disease
   assessment in multiple myeloma. Lancet Oncol 2016;17(8):e328-e346.
   doi:10.1016/S1470-2045(16)30206-6
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cartwin.errors import ModelSpecificationError

#: Lugano-style categories, best first.
LUGANO_CATEGORIES = ("CR", "PR", "SD", "PD")

#: IMWG-style categories, best first.
IMWG_CATEGORIES = ("CR", "VGPR", "PR", "MR", "SD", "PD", "not_evaluable")


@dataclass(frozen=True)
class LuganoStyle:
    """Thresholds of the Lugano-style rules (see module docstring)."""

    pr_decrease: float = 0.5
    pd_increase: float = 0.5
    cr_spd_cm2: float = 1.0


@dataclass(frozen=True)
class ImwgStyle:
    """Thresholds of the IMWG-style rules (see module docstring)."""

    measurable_m_protein_g_dl: float = 1.0
    measurable_flc_mg_l: float = 100.0
    ife_limit_g_dl: float = 0.02
    flc_normal_mg_l: float = 26.3
    uninvolved_flc_mg_l: float = 15.0
    pd_increase: float = 0.25
    pd_absolute_m_protein: float = 0.5
    pd_absolute_flc: float = 100.0


def _window(t_days, series, baseline_day, assess_day):
    # baseline, nadir since baseline and value at assessment, per draw
    t = np.asarray(t_days, dtype=float)
    values = np.atleast_2d(np.asarray(series, dtype=float))
    if not t[0] <= baseline_day < assess_day <= t[-1]:
        raise ModelSpecificationError(
            f"response window [{baseline_day}, {assess_day}] outside the grid "
            f"[{t[0]}, {t[-1]}] or empty"
        )
    base = np.array([np.interp(baseline_day, t, row) for row in values])
    now = np.array([np.interp(assess_day, t, row) for row in values])
    inside = (t >= baseline_day) & (t <= assess_day)
    nadir = np.minimum(
        np.min(values[:, inside], axis=1, initial=np.inf), np.minimum(base, now)
    )
    return base, nadir, now


def lugano_categories(
    t_days: np.ndarray,
    spd: np.ndarray,
    assess_day: float,
    *,
    baseline_day: float = 0.0,
    rules: LuganoStyle = LuganoStyle(),
) -> np.ndarray:
    """Lugano-style category of each draw's SPD trajectory (draws x times)."""
    base, nadir, now = _window(t_days, spd, baseline_day, assess_day)
    progressed = (now >= (1.0 + rules.pd_increase) * nadir) & (now >= rules.cr_spd_cm2)
    out = np.where(now <= (1.0 - rules.pr_decrease) * base, "PR", "SD")
    out = np.where(now < rules.cr_spd_cm2, "CR", out)
    return np.where(progressed, "PD", out).astype(object)


def imwg_categories(
    t_days: np.ndarray,
    m_protein: np.ndarray,
    involved_flc: np.ndarray,
    assess_day: float,
    *,
    baseline_day: float = 0.0,
    rules: ImwgStyle = ImwgStyle(),
) -> np.ndarray:
    """IMWG-style category of each draw from M-protein or involved FLC."""
    m_base, m_nadir, m_now = _window(t_days, m_protein, baseline_day, assess_day)
    f_base, f_nadir, f_now = _window(t_days, involved_flc, baseline_day, assess_day)
    use_m = m_base >= rules.measurable_m_protein_g_dl
    use_f = ~use_m & (f_base >= rules.measurable_flc_mg_l)

    # reductions: M-protein itself, or involved minus uninvolved FLC
    free = rules.uninvolved_flc_mg_l
    m_red = 1.0 - m_now / np.maximum(m_base, 1e-300)
    f_red = 1.0 - np.maximum(f_now - free, 0.0) / np.maximum(f_base - free, 1e-300)
    reduction = np.where(use_m, m_red, f_red)
    graded = np.select(
        [reduction >= 0.9, reduction >= 0.5, reduction >= 0.25],
        ["VGPR", "PR", "MR"],
        "SD",
    ).astype(object)

    # complete response and progression on the marker in use
    complete = np.where(
        use_m, m_now < rules.ife_limit_g_dl, f_now <= rules.flc_normal_mg_l
    )
    m_pd = (m_now >= (1 + rules.pd_increase) * m_nadir) & (
        m_now - m_nadir >= rules.pd_absolute_m_protein
    )
    f_pd = (f_now >= (1 + rules.pd_increase) * f_nadir) & (
        f_now - f_nadir >= rules.pd_absolute_flc
    )
    out = np.where(complete, "CR", graded)
    out = np.where(np.where(use_m, m_pd, f_pd), "PD", out)
    return np.where(use_m | use_f, out, "not_evaluable").astype(object)


def category_probabilities(
    categories: np.ndarray, order: tuple[str, ...]
) -> dict[str, float]:
    """Share of draws in each category (every category of ``order`` listed)."""
    cats = np.asarray(categories, dtype=object)
    total = max(cats.size, 1)
    return {name: float(np.sum(cats == name)) / total for name in order}


def response_summary(
    t_days: np.ndarray,
    draws: dict[str, np.ndarray],
    disease: str,
    assess_days: tuple[float, ...] = (28.0, 90.0, 180.0),
) -> list[dict[str, Any]]:
    """Response probabilities at each assessment day inside the grid.

    Parameters
    ----------
    t_days : numpy.ndarray
        Grid of the draws, days since infusion (must include day 0).
    draws : dict
        ``"spd"`` (LBCL) or ``"m_protein"`` and ``"involved_flc"`` (MM),
        each draws x times.
    disease : str
        ``"LBCL"`` or ``"MM"``.
    assess_days : tuple of float
        Assessment days; those beyond the grid are skipped.

    Returns
    -------
    list of dict
        ``{"day", "criteria", "probabilities"}`` per assessment day.
    """
    out = []
    for day in assess_days:
        if not np.asarray(t_days)[0] <= 0.0 < day <= np.asarray(t_days)[-1]:
            continue
        if disease == "LBCL":
            cats = lugano_categories(t_days, draws["spd"], day)
            probs, criteria = (
                category_probabilities(cats, LUGANO_CATEGORIES),
                "Lugano-style",
            )
        elif disease == "MM":
            cats = imwg_categories(
                t_days, draws["m_protein"], draws["involved_flc"], day
            )
            probs, criteria = (
                category_probabilities(cats, IMWG_CATEGORIES),
                "IMWG-style",
            )
        else:
            raise ModelSpecificationError(
                f"no response criteria for disease {disease!r}"
            )
        out.append({"day": float(day), "criteria": criteria, "probabilities": probs})
    return out
