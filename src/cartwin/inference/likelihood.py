"""Censored log-normal likelihood and the kinetics negative log posterior.

Observations are modelled on the log scale, ``ln y = ln C(t) + eps`` with
``eps ~ Normal(0, sigma)`` (Stein 2019's "constant error model in log scale",
doi:10.1002/psp4.12388). A value below the lower limit of quantification
(LLOQ, value = the limit) contributes the probability of lying below it,
``log Phi((ln LLOQ - ln C) / sigma)``; a value above an upper limit
contributes ``log Phi((ln C - ln ULOQ) / sigma)``. Censored values are never
dropped and never set to zero (``DESIGN.md``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from cartwin._jax import configure_jax
from cartwin.models.kinetics import log_kinetics

configure_jax()

#: Censoring codes of an observation.
EXACT, BELOW, ABOVE = 0, 1, 2

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def censored_log_likelihood(
    log_obs: jnp.ndarray,
    log_pred: jnp.ndarray,
    sigma: float,
    censor: jnp.ndarray,
) -> jnp.ndarray:
    """Log-likelihood of each observation under the censored log-normal model.

    Parameters
    ----------
    log_obs : jnp.ndarray
        ln of the observed value, or of the limit for a censored value.
    log_pred : jnp.ndarray
        ln of the model prediction, same shape.
    sigma : float
        SD of the residual error on the log scale (Stein 2019: 0.56).
    censor : jnp.ndarray of int
        :data:`EXACT`, :data:`BELOW` (value < limit) or :data:`ABOVE`.

    Returns
    -------
    jnp.ndarray
        Per-observation terms. Exact values give the normal log density of
        ``ln y`` (the Jacobian ``-ln y`` is omitted: it does not depend on the
        parameters); censored values give the log normal CDF, computed with
        the numerically stable ``log_ndtr``.
    """
    z = (log_obs - log_pred) / sigma
    exact = -0.5 * z**2 - jnp.log(sigma) - _LOG_SQRT_2PI
    below = log_ndtr(z)
    above = log_ndtr(-z)
    return jnp.where(censor == BELOW, below, jnp.where(censor == ABOVE, above, exact))


def neg_log_posterior(
    theta: jnp.ndarray,
    data: tuple[jnp.ndarray, ...],
    prior: tuple[jnp.ndarray, jnp.ndarray, float],
    smoothing_days: float,
) -> jnp.ndarray:
    """Negative log posterior of the kinetics parameters, up to a constant.

    Parameters
    ----------
    theta : jnp.ndarray, shape (6,)
        Parameters on the fitting scale.
    data : tuple of jnp.ndarray
        ``(t_days, log_obs, censor, mask)``, padded arrays of one patient;
        entries with ``mask`` False are padding and contribute nothing.
    prior : tuple
        ``(mean, sd, sigma)``: prior mean and SD on the fitting scale and the
        residual SD on the log scale.
    smoothing_days : float
        Width of the smoothed switch at Tmax (see
        :func:`cartwin.models.kinetics.log_kinetics`); static.

    Returns
    -------
    jnp.ndarray
        Scalar ``0.5 * sum(((theta - mean) / sd)**2) - sum(loglik)``.
    """
    t_days, log_obs, censor, mask = data
    mean, sd, sigma = prior

    # prior: independent normals on the fitting scale
    penalty = 0.5 * jnp.sum(((theta - mean) / sd) ** 2)

    # likelihood of the real (unmasked) observations
    log_pred = log_kinetics(theta, t_days, smoothing_days)
    terms = censored_log_likelihood(log_obs, log_pred, sigma, censor)
    return penalty - jnp.sum(jnp.where(mask, terms, 0.0))
