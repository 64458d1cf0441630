"""Tests of the multiphasic CAR T kinetics model (Stein 2019)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from cartwin.errors import ModelSpecificationError
from cartwin.models.kinetics import (
    PARAM_NAMES,
    STEIN_TYPICAL,
    KineticsPrior,
    derived_kinetics,
    log_kinetics,
    param_units,
    simulate_kinetics,
    to_natural,
    to_theta,
)

TYPICAL_THETA = to_theta(STEIN_TYPICAL)


def test_jax_runs_in_float64():
    # importing the model enables x64 (cartwin._jax.configure_jax)
    assert jnp.asarray(1.0).dtype == jnp.float64
    assert jax.config.jax_enable_x64


# Derived numbers of clinical-facts.md §5.1 ("my arithmetic on the typical
# values" of Stein 2019 Table 1, doi:10.1002/psp4.12388). Each is printed to 4
# or 5 significant digits, so half a unit in the last printed digit is a
# relative tolerance of at most 5e-4 (C(14) = 11 412: 4.4e-5; C0 6.15: 8e-4).
@pytest.mark.parametrize(
    ("day", "published", "rel"),
    [
        (0.0, 6.15, 1e-3),
        (7.0, 3105.0, 2e-4),
        (14.0, 11412.0, 5e-5),
        (28.0, 1374.0, 4e-4),
        (90.0, 146.5, 4e-4),
    ],
)
def test_typical_curve_matches_published_levels(day, published, rel):
    level = simulate_kinetics(STEIN_TYPICAL, np.array([day]))[0]
    assert level == pytest.approx(published, rel=rel)


def test_typical_rates_match_published():
    # rho = ln(3900)/9.3 = 0.889/day; t1/2 = ln2/alpha = 4.33 d, ln2/beta = 216.6 d
    rho = math.log(STEIN_TYPICAL["fold_x"]) / STEIN_TYPICAL["tmax"]
    assert rho == pytest.approx(0.889, abs=5e-4)
    assert math.log(2) / STEIN_TYPICAL["alpha"] == pytest.approx(4.33, abs=5e-3)
    assert math.log(2) / STEIN_TYPICAL["beta"] == pytest.approx(216.6, abs=0.05)


def test_analytic_auc_matches_published_and_quadrature():
    # AUC0-28d = 171 774 copies.day/ug (6 digits printed: rel 3e-6)
    cmax, tmax, auc = np.asarray(derived_kinetics(jnp.asarray(TYPICAL_THETA)))
    assert auc == pytest.approx(171774.0, rel=3e-6)
    assert (cmax, tmax) == pytest.approx((24000.0, 9.3), rel=1e-12)
    area, _ = quad(
        lambda t: simulate_kinetics(STEIN_TYPICAL, np.array([t]))[0],
        0.0,
        28.0,
        points=[9.3],
        epsabs=1e-6,
    )
    assert auc == pytest.approx(area, rel=1e-9)


def test_no_expansion_peaks_at_day_zero():
    # fold_x < 1: the curve falls from C0 = Cmax / fold_x at t = 0
    params = {**STEIN_TYPICAL, "fold_x": 0.5}
    cmax, tmax, _ = np.asarray(derived_kinetics(jnp.asarray(to_theta(params))))
    assert tmax == 0.0
    assert cmax == pytest.approx(48000.0, rel=1e-12)
    assert simulate_kinetics(params, np.array([0.0]))[0] == pytest.approx(48000.0)


def test_level_before_infusion_is_zero():
    levels = simulate_kinetics(STEIN_TYPICAL, np.array([-3.0, -1e-9, 0.0]))
    assert levels[0] == 0.0 and levels[1] == 0.0
    assert levels[2] == pytest.approx(24000.0 / 3900.0)


def test_theta_round_trip_and_units():
    natural = np.asarray(to_natural(jnp.asarray(TYPICAL_THETA)))
    expected = [STEIN_TYPICAL[name] for name in PARAM_NAMES]
    np.testing.assert_allclose(natural, expected, rtol=1e-13)
    assert param_units("cart_flow")["cmax"] == "/uL"
    assert param_units("cart_qpcr")["tmax"] == "d"


@pytest.mark.parametrize("bad", [{"fb": 1.0}, {"alpha": 0.0}, {"tmax": -1.0}])
def test_invalid_parameters_are_rejected(bad):
    with pytest.raises(ModelSpecificationError, match="fb in"):
        to_theta({**STEIN_TYPICAL, **bad})


def test_smoothing_changes_the_curve_only_near_tmax():
    theta = jnp.asarray(TYPICAL_THETA)
    far = jnp.array([0.0, 3.0, 20.0, 90.0])
    exact = log_kinetics(theta, far)
    smooth = log_kinetics(theta, far, 0.25)
    np.testing.assert_allclose(smooth, exact, atol=1e-9)
    # bound (rho + alpha) * s / e = (0.889 + 0.16) * 0.25 / e = 0.0965
    near = jnp.linspace(8.0, 11.0, 301)
    gap = jnp.max(jnp.abs(log_kinetics(theta, near, 0.25) - log_kinetics(theta, near)))
    assert 0.0 < float(gap) < 0.0965


def _summed_log_level(theta, smoothing):
    t_days = jnp.array([0.0, 4.0, 12.0, 30.0, 200.0])
    return jnp.sum(log_kinetics(theta, t_days, smoothing))


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_gradient_agrees_with_finite_differences(smoothing):
    # central differences of ln C with respect to each fitting parameter
    total = jax.jit(functools.partial(_summed_log_level, smoothing=smoothing))
    grad = np.asarray(jax.grad(total)(jnp.asarray(TYPICAL_THETA)))
    step = 1e-6
    for k in range(6):
        shift = np.zeros(6)
        shift[k] = step
        upper = float(total(jnp.asarray(TYPICAL_THETA + shift)))
        lower = float(total(jnp.asarray(TYPICAL_THETA - shift)))
        central = (upper - lower) / (2 * step)
        assert grad[k] == pytest.approx(central, rel=1e-6, abs=1e-7)


def test_vmap_over_patients_matches_loop():
    thetas = TYPICAL_THETA + np.linspace(-0.3, 0.3, 18).reshape(3, 6)
    t_days = jnp.array([1.0, 10.0, 100.0])
    batched = jax.vmap(log_kinetics, in_axes=(0, None))(jnp.asarray(thetas), t_days)
    for row, theta in zip(batched, thetas):
        np.testing.assert_allclose(row, log_kinetics(jnp.asarray(theta), t_days))


theta_strategy = st.lists(
    st.floats(-4.0, 4.0, allow_nan=False), min_size=6, max_size=6
).map(lambda z: TYPICAL_THETA + np.array(z) * np.array([1.5, 0.6, 0.8, 0.9, 0.9, 0.9]))


@settings(max_examples=60, deadline=None)
@given(theta=theta_strategy, t_days=st.floats(-10.0, 2000.0, allow_nan=False))
def test_curve_is_non_negative_and_finite(theta, t_days):
    level = simulate_kinetics(theta, np.array([t_days]))[0]
    assert np.isfinite(level) and level >= 0.0


@settings(max_examples=60, deadline=None)
@given(theta=theta_strategy)
def test_curve_is_continuous_at_tmax(theta):
    # both branches equal Cmax at Tmax: ln C one ulp-scale step either side
    tmax, cmax = math.exp(theta[1]), math.exp(theta[2])
    eps = 1e-9 * tmax
    left, right = simulate_kinetics(theta, np.array([tmax - eps, tmax + eps]))
    assert left == pytest.approx(cmax, rel=1e-6)
    assert right == pytest.approx(cmax, rel=1e-6)


class TestPrior:
    def test_variance_reading_takes_square_roots(self):
        prior = KineticsPrior.from_published("cart_qpcr")
        assert prior.iiv_as == "variance"
        assert prior.omega["fold_x"] == pytest.approx(math.sqrt(2.4))
        assert prior.sigma == 0.56
        assert prior.unit == "{copies}/ug"

    def test_sd_reading_uses_column_as_printed(self):
        prior = KineticsPrior.from_published("cart_qpcr", iiv_as="sd")
        np.testing.assert_allclose(prior.sd_theta, [2.4, 0.38, 0.65, 0.91, 0.8, 0.86])

    def test_flow_prior_is_the_documented_assumption(self):
        prior = KineticsPrior.from_published("cart_flow")
        assert prior.unit == "/uL"
        assert prior.typical["cmax"] == 40.0
        assert prior.omega["cmax"] == 2.0
        assert prior.typical["tmax"] == STEIN_TYPICAL["tmax"]
        assert "unverified" in prior.source

    def test_prior_mean_is_typical_on_fitting_scale(self):
        prior = KineticsPrior.from_published()
        assert prior.mean_theta[4] == pytest.approx(math.log(0.0079 / 0.9921))
        assert prior.mean_theta[2] == pytest.approx(math.log(24000.0))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"assay": "cart_elisa"}, "not supported"),
            ({"iiv_as": "cv"}, "iiv_as"),
        ],
    )
    def test_bad_arguments_raise(self, kwargs, match):
        with pytest.raises(ModelSpecificationError, match=match):
            KineticsPrior.from_published(**kwargs)
