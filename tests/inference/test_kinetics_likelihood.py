"""Tests of the censored log-normal likelihood and the negative log posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from cartwin.inference.likelihood import (
    ABOVE,
    BELOW,
    EXACT,
    censored_log_likelihood,
    neg_log_posterior,
)
from cartwin.models.kinetics import KineticsPrior, log_kinetics

SIGMA = 0.56


@pytest.mark.parametrize("z", [-40.0, -8.0, -1.3, 0.0, 0.7, 6.0, 30.0])
def test_terms_match_scipy(z):
    # independent implementation: scipy.stats.norm on the log scale
    log_pred = 5.0
    log_obs = log_pred + z * SIGMA
    args = (jnp.full(3, log_obs), jnp.full(3, log_pred), SIGMA)
    terms = censored_log_likelihood(*args, jnp.array([EXACT, BELOW, ABOVE]))
    expected = [
        stats.norm.logpdf(log_obs, log_pred, SIGMA),
        stats.norm.logcdf((log_obs - log_pred) / SIGMA),
        stats.norm.logsf((log_obs - log_pred) / SIGMA),
    ]
    # absolute 1e-14: log Phi(6) = -1e-9 is known to about 1e-16 absolute
    np.testing.assert_allclose(terms, expected, rtol=1e-10, atol=1e-14)


def test_censored_term_is_never_zero_or_dropped():
    # a prediction far above the LLOQ makes "below" very unlikely, not free
    terms = censored_log_likelihood(
        jnp.log(jnp.array([50.0])),
        jnp.log(jnp.array([5000.0])),
        SIGMA,
        jnp.array([BELOW]),
    )
    assert float(terms[0]) == pytest.approx(stats.norm.logcdf(np.log(0.01) / SIGMA))
    assert float(terms[0]) < -30.0


def _data(t_days, values, censor, pad=0):
    n = len(t_days)
    mask = np.r_[np.ones(n, bool), np.zeros(pad, bool)]
    return (
        jnp.asarray(np.r_[t_days, np.zeros(pad)]),
        jnp.asarray(np.r_[np.log(values), np.zeros(pad)]),
        jnp.asarray(np.r_[censor, np.zeros(pad, int)]),
        jnp.asarray(mask),
    )


PRIOR = KineticsPrior.from_published()
PRIOR_ARRAYS = (jnp.asarray(PRIOR.mean_theta), jnp.asarray(PRIOR.sd_theta), PRIOR.sigma)
T_DAYS = np.array([0.0, 5.0, 9.0, 14.0, 60.0])
VALUES = np.array([5.0, 900.0, 20000.0, 9000.0, 50.0])
CENSOR = np.array([EXACT, EXACT, EXACT, EXACT, BELOW])


def test_posterior_equals_prior_plus_scipy_likelihood():
    theta = PRIOR.mean_theta + np.array([0.3, -0.1, 0.2, 0.1, -0.4, 0.2])
    value = neg_log_posterior(
        jnp.asarray(theta), _data(T_DAYS, VALUES, CENSOR), PRIOR_ARRAYS, 0.0
    )

    # the same sum written out with scipy
    log_pred = np.asarray(log_kinetics(jnp.asarray(theta), jnp.asarray(T_DAYS)))
    loglik = stats.norm.logpdf(np.log(VALUES[:4]), log_pred[:4], SIGMA).sum()
    loglik += stats.norm.logcdf((np.log(VALUES[4]) - log_pred[4]) / SIGMA)
    penalty = 0.5 * np.sum(((theta - PRIOR.mean_theta) / PRIOR.sd_theta) ** 2)
    assert float(value) == pytest.approx(penalty - loglik, rel=1e-12)


def test_padding_contributes_nothing():
    theta = jnp.asarray(PRIOR.mean_theta)
    plain = neg_log_posterior(theta, _data(T_DAYS, VALUES, CENSOR), PRIOR_ARRAYS, 0.0)
    padded = neg_log_posterior(
        theta, _data(T_DAYS, VALUES, CENSOR, pad=11), PRIOR_ARRAYS, 0.0
    )
    assert float(padded) == float(plain)


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_gradient_and_hessian_agree_with_finite_differences(smoothing):
    data = _data(T_DAYS, VALUES, CENSOR)

    def objective(theta):
        return neg_log_posterior(theta, data, PRIOR_ARRAYS, smoothing)

    theta = PRIOR.mean_theta + np.array([0.2, 0.1, -0.2, 0.3, 0.1, -0.1])
    gradient = jax.jit(jax.grad(objective))
    objective = jax.jit(objective)
    grad = np.asarray(gradient(jnp.asarray(theta)))
    hess = np.asarray(jax.jit(jax.hessian(objective))(jnp.asarray(theta)))
    step = 1e-5
    for k in range(6):
        shift = np.zeros(6)
        shift[k] = step
        plus, minus = jnp.asarray(theta + shift), jnp.asarray(theta - shift)
        central = (float(objective(plus)) - float(objective(minus))) / (2 * step)
        assert grad[k] == pytest.approx(central, rel=1e-6, abs=1e-6)
        column = (gradient(plus) - gradient(minus)) / (2 * step)
        np.testing.assert_allclose(hess[:, k], column, rtol=1e-5, atol=1e-5)
