"""Multiphasic CAR T cellular kinetics: expansion, then bi-exponential decline.

The model of Stein et al. 2019 [1]_ (Fig. 2, analytical solution), written in
``jax.numpy`` so that it is differentiable and vectorisable with ``jax.vmap``.
CAR T level ``C(t)`` after infusion at ``t = 0`` (days)::

    rho  = ln(fold_x) / Tmax                    expansion rate, 1/day
    C0   = Cmax / fold_x                        level at t = 0
    C(t) = C0 * exp(rho * t)                                    0 <= t < Tmax
    C(t) = Cmax * [(1 - FB) exp(-alpha (t - Tmax))
                   + FB exp(-beta (t - Tmax))]                  t >= Tmax

Effector cells contract at rate ``alpha``; a fraction ``FB`` becomes
memory-like cells that decline at ``beta``; the signal is their sum. The curve
is continuous at ``Tmax`` (both branches equal ``Cmax`` there) but has a kink.
Before infusion (``t < 0``) the level is 0.

Glossary (fitting scale in brackets):

=========  ==========================================  ==============  ========
symbol     meaning                                     unit            scale
=========  ==========================================  ==============  ========
fold_x     fold expansion from t = 0 to Tmax           1               log
tmax       time of peak expansion                      d               log
cmax       peak level                                  assay unit      log
alpha      fast (effector) contraction rate            1/d             log
fb         fraction entering the slow (memory) phase   1               logit
beta       slow (memory) decline rate                  1/d             log
=========  ==========================================  ==============  ========

Population prior (:class:`KineticsPrior`): normal on the fitting scale, centred
on the typical values of Stein 2019 Table 1 (via the nlmixr2lib transcription
cited in ``reference/clinical-facts.md`` §5.1), with inter-individual SDs from
the random-effect column.

Known limits
------------
- Tocilizumab (Ftoci = 1.2) and corticosteroid (Fster = 1.0) effects of Stein
  2019 are **not modelled**; the prior is the typical patient without them.
- The published estimates come from 90 paediatric/young-adult B-ALL patients
  on tisagenlecleucel, measured by qPCR. Using them for other diseases or
  products (LBCL, axi-cel, myeloma) is an extrapolation.
- The flow-cytometry prior (cells/µL) is an unverified assumption, see
  :meth:`KineticsPrior.from_published`.

References
----------
.. [1] Stein AM, Grupp SA, Levine JE, et al. Tisagenlecleucel model-based
   cellular kinetic analysis of chimeric antigen receptor-T cells. CPT
   Pharmacometrics Syst Pharmacol 2019;8(5):285-295. doi:10.1002/psp4.12388
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import ModelSpecificationError

configure_jax()

#: Parameter names, in the order of the fitting vector ``theta``.
PARAM_NAMES = ("fold_x", "tmax", "cmax", "alpha", "fb", "beta")

#: Canonical unit (UCUM) of each supported assay quantity.
ASSAY_UNITS = {"cart_qpcr": "{copies}/ug", "cart_flow": "/uL"}

#: Typical values of Stein 2019 Table 1 (qPCR, copies/µg genomic DNA).
STEIN_TYPICAL = {
    "fold_x": 3900.0,
    "tmax": 9.3,
    "cmax": 24000.0,
    "alpha": 0.16,
    "fb": 0.0079,
    "beta": 0.0032,
}

#: Random-effect column of Stein 2019 Table 1, as printed (ω² or ω: see prior).
STEIN_IIV = {
    "fold_x": 2.4,
    "tmax": 0.38,
    "cmax": 0.65,
    "alpha": 0.91,
    "fb": 0.8,
    "beta": 0.86,
}

#: Residual error of Stein 2019 Table 1: SD of the additive error on ln(level).
STEIN_SIGMA_LOG = 0.56

#: Assumed typical peak of CAR T cells by flow cytometry in LBCL, cells/µL.
FLOW_TYPICAL_CMAX = 40.0

#: SD of ln(Cmax) for the flow prior (wider than any qPCR reading of Stein).
FLOW_CMAX_SD = 2.0

_IIV_READINGS = ("variance", "sd")


def param_units(assay: str) -> dict[str, str]:
    """UCUM unit of each natural-scale parameter for ``assay``."""
    unit = _assay_unit(assay)
    return {
        "fold_x": "1",
        "tmax": "d",
        "cmax": unit,
        "alpha": "/d",
        "fb": "1",
        "beta": "/d",
    }


def to_theta(natural: Mapping[str, float]) -> np.ndarray:
    """Natural-scale parameters to the fitting vector (log, logit for ``fb``)."""
    missing = [name for name in PARAM_NAMES if name not in natural]
    if missing:
        raise ModelSpecificationError(f"kinetics parameters missing: {missing}")
    values = np.array([float(natural[name]) for name in PARAM_NAMES])
    fb = values[4]
    if np.any(values <= 0) or not fb < 1:
        raise ModelSpecificationError(
            f"kinetics parameters must be positive and fb in (0, 1); got {natural}"
        )
    theta = np.log(values)
    theta[4] = math.log(fb / (1.0 - fb))
    return theta


def to_natural(theta: jax.Array) -> jax.Array:
    """Fitting vector to natural-scale parameters (order of :data:`PARAM_NAMES`)."""
    theta = jnp.asarray(theta)
    natural = jnp.exp(theta)
    return natural.at[..., 4].set(jax.nn.sigmoid(theta[..., 4]))


def log_kinetics(
    theta: jax.Array, t_days: jax.Array, smoothing_days: float = 0.0
) -> jax.Array:
    """Natural log of the CAR T level at ``t_days >= 0`` (assay unit).

    Parameters
    ----------
    theta : jax.Array, shape (6,)
        Parameters on the fitting scale (see module glossary).
    t_days : jax.Array
        Days since infusion, ``>= 0``; negative times are not handled here.
    smoothing_days : float
        0 gives the exact model. A positive width ``s`` (days) replaces the
        switch at ``Tmax`` by a logistic blend of the two branches in log
        space, weight ``sigmoid((t - Tmax) / s)``, so that the curve is twice
        differentiable in ``Tmax`` (used by the calibration objective). The
        largest change of ln C is about ``(rho + alpha) * s / e``, at times
        within a few ``s`` of ``Tmax``.

    Returns
    -------
    jax.Array
        ln C(t), same shape as ``t_days``.
    """
    log_fold, log_tmax, log_cmax, log_alpha, logit_fb, log_beta = theta
    tmax = jnp.exp(log_tmax)
    t_days = jnp.asarray(t_days)

    # expansion branch: ln C0 + rho t = ln Cmax - ln(fold_x) (1 - t / Tmax)
    rising = log_cmax - log_fold * (1.0 - t_days / tmax)

    # bi-exponential decline, summed in log space to avoid under/overflow
    since_peak = t_days - tmax
    log_fast = jax.nn.log_sigmoid(-logit_fb) - jnp.exp(log_alpha) * since_peak
    log_slow = jax.nn.log_sigmoid(logit_fb) - jnp.exp(log_beta) * since_peak
    declining = log_cmax + jnp.logaddexp(log_fast, log_slow)

    # exact switch at Tmax, or the smooth blend used for calibration
    if smoothing_days == 0.0:
        return jnp.where(t_days < tmax, rising, declining)
    weight = jax.nn.sigmoid(since_peak / smoothing_days)
    return (1.0 - weight) * rising + weight * declining


def kinetics_curve(theta: jax.Array, t_days: jax.Array) -> jax.Array:
    """CAR T level of the exact model at ``t_days``; 0 before infusion."""
    t_days = jnp.asarray(t_days)
    level = jnp.exp(log_kinetics(theta, jnp.maximum(t_days, 0.0)))
    return jnp.where(t_days < 0.0, 0.0, level)


def simulate_kinetics(
    params: Mapping[str, float] | np.ndarray, t_days: np.ndarray
) -> np.ndarray:
    """CAR T level of the exact Stein 2019 model at ``t_days``.

    Parameters
    ----------
    params : mapping or numpy.ndarray
        Natural-scale parameters by name (:data:`PARAM_NAMES`), or a fitting
        vector ``theta`` of shape (6,) (log scale, logit for ``fb``).
    t_days : numpy.ndarray
        Days since infusion. Times before 0 give 0 (no CAR T cells yet).

    Returns
    -------
    numpy.ndarray
        Level in the unit of the assay the parameters belong to (``Cmax``'s
        unit), same shape as ``t_days``.

    Examples
    --------
    >>> from cartwin.models.kinetics import STEIN_TYPICAL, simulate_kinetics
    >>> round(float(simulate_kinetics(STEIN_TYPICAL, [9.3])[0]))
    24000
    """
    theta = to_theta(params) if isinstance(params, Mapping) else params
    theta = jnp.asarray(theta, dtype=jnp.float64)
    if theta.shape != (len(PARAM_NAMES),):
        raise ModelSpecificationError(
            f"theta must have shape (6,) in order {PARAM_NAMES}; got {theta.shape}"
        )
    return np.asarray(kinetics_curve(theta, jnp.asarray(t_days, dtype=jnp.float64)))


def derived_kinetics(theta: jax.Array, auc_end_days: float = 28.0) -> jax.Array:
    """Peak level, time of peak and AUC(0, ``auc_end_days``) of the exact model.

    Parameters
    ----------
    theta : jax.Array, shape (6,)
        Parameters on the fitting scale.
    auc_end_days : float
        Upper limit of the area under the curve, days (28 for AUC0-28d).

    Returns
    -------
    jax.Array, shape (3,)
        ``[Cmax (assay unit), Tmax (d), AUC (assay unit x d)]``. When
        ``fold_x < 1`` the curve falls from ``t = 0`` and the peak is
        ``C0 = Cmax / fold_x`` at day 0. The AUC is analytic: integrals of
        the exponential pieces, using ``expm1`` for small exponents.
    """
    fold, tmax, cmax, alpha, fb, beta = to_natural(theta)
    rho = theta[0] / tmax

    # peak: Cmax at Tmax when the curve expands, else C0 at day 0
    expands = fold >= 1.0
    peak = jnp.where(expands, cmax, cmax / fold)
    t_peak = jnp.where(expands, tmax, 0.0)

    # AUC of the expansion phase up to min(Tmax, end)
    rise_end = jnp.minimum(tmax, auc_end_days)
    auc_rise = (cmax / fold) * rise_end * _exprel(rho * rise_end)

    # AUC of the decline phase from Tmax to end, if Tmax < end
    span = jnp.maximum(auc_end_days - tmax, 0.0)
    auc_fall = (
        cmax * span * ((1.0 - fb) * _exprel(-alpha * span) + fb * _exprel(-beta * span))
    )
    return jnp.stack([peak, t_peak, auc_rise + auc_fall])


def _exprel(x: jax.Array) -> jax.Array:
    # (exp(x) - 1) / x, equal to 1 + x/2 near 0 without cancellation
    small = jnp.abs(x) < 1e-8
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + 0.5 * x, jnp.expm1(safe) / safe)


def _assay_unit(assay: str) -> str:
    if assay not in ASSAY_UNITS:
        raise ModelSpecificationError(
            f"kinetics assay {assay!r} is not supported; use one of "
            f"{sorted(ASSAY_UNITS)}"
        )
    return ASSAY_UNITS[assay]


@dataclass(frozen=True)
class KineticsPrior:
    """Population prior of the kinetics parameters for one assay.

    Normal on the fitting scale (log for positive parameters, logit for
    ``fb``), independent between parameters: a log-normal (logit-normal for
    ``fb``) prior on the natural scale.

    Attributes
    ----------
    assay : str
        Quantity key, ``"cart_qpcr"`` or ``"cart_flow"``.
    unit : str
        UCUM unit of the assay (and of ``cmax``).
    typical : dict[str, float]
        Typical (median) values on the natural scale.
    omega : dict[str, float]
        SD of each parameter on the fitting scale.
    sigma : float
        SD of the additive residual error on ln(level).
    iiv_as : str
        How the published random-effect column was read: ``"variance"`` (ω²)
        or ``"sd"`` (ω). Kept for provenance.
    source : str
        Where the numbers come from, including stated assumptions.
    """

    assay: str
    unit: str
    typical: dict[str, float]
    omega: dict[str, float]
    sigma: float
    iiv_as: str
    source: str

    def __post_init__(self) -> None:
        _assay_unit(self.assay)
        to_theta(self.typical)
        bad = {k: v for k, v in self.omega.items() if not v > 0}
        if set(self.omega) != set(PARAM_NAMES) or bad:
            raise ModelSpecificationError(
                f"KineticsPrior.omega needs a positive SD for each of "
                f"{PARAM_NAMES}; got {self.omega}"
            )
        if not self.sigma > 0:
            raise ModelSpecificationError(
                f"KineticsPrior.sigma must be > 0; got {self.sigma}"
            )

    @property
    def mean_theta(self) -> np.ndarray:
        """Prior mean on the fitting scale, shape (6,)."""
        return to_theta(self.typical)

    @property
    def sd_theta(self) -> np.ndarray:
        """Prior SD on the fitting scale, shape (6,)."""
        return np.array([self.omega[name] for name in PARAM_NAMES])

    @classmethod
    def from_published(
        cls, assay: str = "cart_qpcr", *, iiv_as: str = "variance"
    ) -> KineticsPrior:
        """Prior built from Stein 2019 Table 1 for ``assay``.

        Parameters
        ----------
        assay : str
            ``"cart_qpcr"`` (transgene copies/µg genomic DNA, the unit of
            Stein 2019) or ``"cart_flow"`` (CAR T cells/µL by flow cytometry).
        iiv_as : {"variance", "sd"}
            Reading of Stein's random-effect column. The source is ambiguous
            (``clinical-facts.md`` §5.1 caveat, open item 4): nlmixr2lib
            enters it as variances ω², Monolix usually prints SDs ω. The
            default ``"variance"`` follows the transcription the facts file
            cites, so the prior SD is ``sqrt(value)`` (fold_x 1.55, tmax
            0.62, cmax 0.81, alpha 0.95, fb 0.89, beta 0.93); ``"sd"`` uses
            the column as SDs.

        Notes
        -----
        For ``"cart_flow"`` no published prior exists in the facts file. The
        typical Cmax is an **unverified assumption** of 40 cells/µL, the order
        of the median peak CAR T level reported for axi-cel in ZUMA-1
        (Neelapu et al., NEJM 2017, doi:10.1056/NEJMoa1707447; number not
        checked against the paper), with a wider SD of 2.0 on ln(Cmax). The
        shape parameters (fold_x, tmax, alpha, fb, beta) and the residual
        error 0.56 are Stein's qPCR values, also unverified for flow and LBCL.
        """
        if iiv_as not in _IIV_READINGS:
            raise ModelSpecificationError(
                f"iiv_as must be one of {_IIV_READINGS}; got {iiv_as!r}"
            )
        unit = _assay_unit(assay)
        read = math.sqrt if iiv_as == "variance" else float
        omega = {name: read(value) for name, value in STEIN_IIV.items()}
        typical = dict(STEIN_TYPICAL)
        source = (
            "Stein 2019 Table 1 (doi:10.1002/psp4.12388) via nlmixr2lib; "
            f"random-effect column read as {iiv_as}"
        )
        if assay == "cart_flow":
            typical["cmax"] = FLOW_TYPICAL_CMAX
            omega["cmax"] = FLOW_CMAX_SD
            source += (
                "; flow Cmax 40 cells/uL (SD 2.0 on ln) is an unverified "
                "assumption (order of the ZUMA-1 median peak)"
            )
        return cls(assay, unit, typical, omega, STEIN_SIGMA_LOG, iiv_as, source)
