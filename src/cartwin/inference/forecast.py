"""Forecast of CAR T kinetics to day 365 with 90% intervals, and its summary.

Parameters are drawn from the Laplace posterior of a :class:`KineticsFit`
(normal on the fitting scale; the prior itself for ``"prior_only"``), the
exact Stein 2019 model (doi:10.1002/psp4.12388) is evaluated on a time grid
for every draw, and pointwise quantiles give the median curve and the
interval. Cmax, Tmax and AUC0-28d are computed analytically for each draw
(:func:`cartwin.models.kinetics.derived_kinetics`) and summarised the same
way. The interval is for the latent CAR T level, not for a new measurement
(residual error is not added).

The pointwise median curve is not the curve of any one parameter set; its
peak can be lower and broader than the median Cmax when Tmax is uncertain.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import CalibrationError, ModelSpecificationError
from cartwin.inference.calibration import KineticsFit
from cartwin.models.kinetics import (
    PARAM_NAMES,
    KineticsPrior,
    derived_kinetics,
    kinetics_curve,
    param_units,
    to_natural,
)

configure_jax()

#: Names of the derived quantities, in the order of ``derived_kinetics``.
DERIVED_NAMES = ("cmax", "tmax", "auc0_28")


@dataclass(frozen=True)
class Interval:
    """Median and equal-tailed interval of one quantity, with its unit."""

    median: float
    lower: float
    upper: float
    unit: str

    def to_dict(self) -> dict[str, float | str]:
        """JSON-ready mapping with keys median, lower, upper, unit."""
        return {
            "median": self.median,
            "lower": self.lower,
            "upper": self.upper,
            "unit": self.unit,
        }


@dataclass(frozen=True)
class KineticsForecast:
    """Forecast CAR T curve with pointwise median and interval.

    Attributes
    ----------
    quantity : str
        ``"cart_qpcr"`` or ``"cart_flow"``.
    unit : str
        UCUM unit of the curve.
    t_days : numpy.ndarray
        Grid, days since infusion.
    median, lower, upper : numpy.ndarray
        Pointwise median and interval bounds of the level on ``t_days``.
    interval : float
        Probability mass of the interval (0.9: 5th to 95th percentile).
    derived : dict[str, Interval]
        ``"cmax"`` (unit), ``"tmax"`` (d), ``"auc0_28"`` (unit x d).
    basis : str
        ``"posterior"``, or ``"prior"`` when the forecast is the prior
        predictive (no data, or a failed fit with ``on_failure="prior"``).
    n_draws : int
        Parameter draws used.
    seed : int or None
        Seed of the generator, when an integer seed was given.
    """

    quantity: str
    unit: str
    t_days: np.ndarray
    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    interval: float
    derived: dict[str, Interval] = field(default_factory=dict)
    basis: str = "posterior"
    n_draws: int = 0
    seed: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready mapping: lists of floats, derived intervals as dicts."""
        return {
            "quantity": self.quantity,
            "unit": self.unit,
            "t_days": _floats(self.t_days),
            "median": _floats(self.median),
            "lower": _floats(self.lower),
            "upper": _floats(self.upper),
            "interval": self.interval,
            "derived": {k: v.to_dict() for k, v in self.derived.items()},
            "basis": self.basis,
            "n_draws": self.n_draws,
            "seed": self.seed,
        }


def default_grid(t_end_days: float = 365.0) -> np.ndarray:
    """Forecast grid: every 6 h to day 28, daily to day 90, then every 5 days."""
    pieces = (
        np.arange(0.0, 28.0, 0.25),
        np.arange(28.0, 90.0, 1.0),
        np.arange(90.0, t_end_days, 5.0),
        [t_end_days],
    )
    grid = np.concatenate(pieces)
    return np.unique(grid[grid <= t_end_days])


def forecast_kinetics(
    fit: KineticsFit,
    prior: KineticsPrior,
    *,
    t_end_days: float = 365.0,
    n_draws: int = 1000,
    seed: int | np.random.Generator = 0,
    interval: float = 0.9,
    on_failure: str = "prior",
) -> KineticsForecast:
    """Forecast the CAR T level from day 0 to ``t_end_days``.

    Parameters
    ----------
    fit : KineticsFit
        Calibration result; ``"prior_only"`` gives the prior predictive.
    prior : KineticsPrior
        The prior the fit used (same assay).
    t_end_days : float
        End of the forecast, days after infusion (> 0).
    n_draws : int
        Parameter draws from the posterior (>= 10).
    seed : int or numpy.random.Generator
        Seed or generator of the standard normal draws; the same seed gives
        the same forecast bit for bit.
    interval : float
        Central probability of the interval, in (0, 1).
    on_failure : {"prior", "raise"}
        What to do when the fit is not usable (``"not_converged"``,
        ``"indefinite_hessian"``): forecast from the prior (``basis`` says
        so) or raise.

    Returns
    -------
    KineticsForecast

    Raises
    ------
    CalibrationError
        When the fit is not usable and ``on_failure="raise"``.
    ModelSpecificationError
        When an argument is out of range or the assays differ.
    """
    _check_args(fit, prior, t_end_days, n_draws, interval, on_failure)
    mean, cov, basis = _distribution(fit, prior, on_failure)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    normals = rng.standard_normal((n_draws, len(PARAM_NAMES)))
    grid = default_grid(float(t_end_days))
    probs = np.array([0.5, (1.0 - interval) / 2.0, (1.0 + interval) / 2.0])

    # curves and derived quantities per draw (JAX), quantiles over draws
    # (numpy: XLA's CPU sort is about ten times slower here)
    curves, derived_draws = jax.device_get(
        _forecast_compiled(mean, _sqrt_matrix(cov), normals, grid)
    )
    curve_q = np.quantile(curves, probs, axis=0)
    derived_q = np.quantile(derived_draws, probs, axis=0)
    units = _derived_units(prior.unit)
    derived = {
        name: Interval(*(float(v) for v in derived_q[:, k]), unit=units[name])
        for k, name in enumerate(DERIVED_NAMES)
    }
    return KineticsForecast(
        quantity=prior.assay,
        unit=prior.unit,
        t_days=grid,
        median=curve_q[0],
        lower=curve_q[1],
        upper=curve_q[2],
        interval=interval,
        derived=derived,
        basis=basis,
        n_draws=n_draws,
        seed=seed if isinstance(seed, int) else None,
    )


def _check_args(fit, prior, t_end_days, n_draws, interval, on_failure) -> None:
    rules = {
        "t_end_days": (t_end_days, t_end_days > 0),
        "n_draws": (n_draws, n_draws >= 10),
        "interval": (interval, 0 < interval < 1),
        "on_failure": (on_failure, on_failure in ("prior", "raise")),
    }
    for name, (value, ok) in rules.items():
        if not ok:
            raise ModelSpecificationError(
                f"forecast_kinetics {name}={value!r} is out of range"
            )
    if fit.assay != prior.assay:
        raise ModelSpecificationError(
            f"fit is for {fit.assay} but the prior is for {prior.assay}"
        )


def _distribution(
    fit: KineticsFit, prior: KineticsPrior, on_failure: str
) -> tuple[np.ndarray, np.ndarray, str]:
    # Laplace posterior when usable, else the prior (or raise)
    if fit.status == "prior_only":
        return prior.mean_theta, np.diag(prior.sd_theta**2), "prior"
    if fit.usable:
        return fit.map_theta, fit.cov_theta, "posterior"
    if on_failure == "raise":
        raise CalibrationError(
            f"kinetics fit of {fit.assay} is {fit.status}: {fit.reason}"
        )
    return prior.mean_theta, np.diag(prior.sd_theta**2), "prior"


def _sqrt_matrix(cov: np.ndarray) -> np.ndarray:
    # L with L @ L.T = cov, through the eigen-decomposition (robust to rounding)
    eigval, eigvec = np.linalg.eigh(0.5 * (cov + cov.T))
    return eigvec * np.sqrt(np.maximum(eigval, 0.0))


@jax.jit
def _forecast_compiled(mean, root, normals, grid) -> tuple:
    thetas = mean + normals @ root.T
    curves = jax.vmap(kinetics_curve, in_axes=(0, None))(thetas, grid)
    return curves, jax.vmap(derived_kinetics)(thetas)


def _derived_units(unit: str) -> dict[str, str]:
    return {"cmax": unit, "tmax": "d", "auc0_28": f"d.{unit}"}


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values).ravel()]


def kinetics_summary(
    fit: KineticsFit, forecast: KineticsForecast, prior: KineticsPrior
) -> dict:
    """The ``outputs["kinetics"]`` entry of a twin version, JSON-ready.

    Parameters
    ----------
    fit : KineticsFit
        Calibration result.
    forecast : KineticsForecast
        Forecast made from ``fit`` and ``prior``.
    prior : KineticsPrior
        The prior used.

    Returns
    -------
    dict
        Keys ``quantity, unit, status, reason, n_obs, n_censored, t_days,
        median, lower, upper, interval, derived, parameters``. ``derived``
        maps ``cmax``, ``tmax``, ``auc0_28`` to ``{median, lower, upper,
        unit}``; ``parameters`` maps each parameter to ``{map, median,
        lower, upper, unit}`` on the natural scale, from the distribution the
        forecast used (``map`` is the typical value for the prior, ``None``
        when the fit did not converge). When the forecast fell back to the
        prior, ``reason`` says so.
    """
    curve = forecast.to_dict()
    reason = fit.reason
    if forecast.basis == "prior" and fit.status != "prior_only":
        reason += "; forecast and parameter intervals are from the prior only"
    return {
        "quantity": forecast.quantity,
        "unit": forecast.unit,
        "status": fit.status,
        "reason": reason,
        "n_obs": fit.n_obs,
        "n_censored": fit.n_censored,
        "t_days": curve["t_days"],
        "median": curve["median"],
        "lower": curve["lower"],
        "upper": curve["upper"],
        "interval": forecast.interval,
        "derived": curve["derived"],
        "parameters": _parameter_summary(fit, forecast, prior),
    }


def _parameter_summary(
    fit: KineticsFit, forecast: KineticsForecast, prior: KineticsPrior
) -> dict[str, dict]:
    # marginal quantiles on the fitting scale map exactly through exp / expit
    on_prior = forecast.basis == "prior"
    mean = prior.mean_theta if on_prior else fit.map_theta
    sd = prior.sd_theta if on_prior else np.sqrt(np.diag(fit.cov_theta))
    z = statistics.NormalDist().inv_cdf((1.0 + forecast.interval) / 2.0)
    rows = np.asarray(to_natural(jnp.stack([mean, mean - z * sd, mean + z * sd])))
    best = rows[0] if fit.usable else None
    units = param_units(prior.assay)
    return {
        name: {
            "map": None if best is None else float(best[k]),
            "median": float(rows[0, k]),
            "lower": float(rows[1, k]),
            "upper": float(rows[2, k]),
            "unit": units[name],
        }
        for k, name in enumerate(PARAM_NAMES)
    }
