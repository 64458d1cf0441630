"""Tests of the kinetics forecast (posterior and prior predictive) and summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cartwin.errors import CalibrationError, ModelSpecificationError
from cartwin.inference import (
    KineticsData,
    default_grid,
    fit_kinetics,
    forecast_kinetics,
    kinetics_summary,
)
from cartwin.models.kinetics import PARAM_NAMES

EMPTY = KineticsData(np.zeros(0), np.zeros(0), np.zeros(0, bool))
Z90 = 1.6448536269514722


@pytest.fixture(scope="module")
def fitted(prior, simulate):
    data = simulate(prior.mean_theta + 0.3, np.random.default_rng(21))
    fit = fit_kinetics(data, prior)
    assert fit.status == "converged"
    return data, fit


def test_grid_is_finer_early_and_ends_at_day_365():
    grid = default_grid()
    assert grid[0] == 0.0 and grid[-1] == 365.0
    assert np.all(np.diff(grid) > 0)
    assert np.diff(grid[grid < 28]).max() == 0.25
    assert np.diff(grid[grid > 90]).max() == 5.0
    assert default_grid(20.0)[-1] == 20.0


def test_prior_predictive_matches_typical_values(prior):
    # with 4000 draws the Monte Carlo SE of a median is 1.25 sd / sqrt(4000),
    # 2% of ln-scale SD: tolerances below are 3-5 such SEs
    prior_fit = fit_kinetics(EMPTY, prior)
    forecast = forecast_kinetics(prior_fit, prior, n_draws=4000, seed=1)
    assert forecast.basis == "prior"
    derived = forecast.derived
    assert derived["cmax"].median == pytest.approx(24000.0, rel=0.06)
    assert derived["tmax"].median == pytest.approx(9.3, rel=0.05)

    # 90% prior interval of Cmax: 24000 exp(+-1.645 sqrt(0.65))
    half_width = Z90 * math.sqrt(0.65)
    lower, upper = 24000 * math.exp(-half_width), 24000 * math.exp(half_width)
    assert derived["cmax"].lower == pytest.approx(lower, rel=0.1)
    assert derived["cmax"].upper == pytest.approx(upper, rel=0.1)

    # C(0) = Cmax / fold_x is log-linear in theta: its median is C0 = 6.15
    assert forecast.median[0] == pytest.approx(6.15, rel=0.12)


def test_posterior_interval_is_narrower_and_ordered(prior, fitted):
    _, fit = fitted
    post = forecast_kinetics(fit, prior, seed=3)
    pre = forecast_kinetics(fit_kinetics(EMPTY, prior), prior, seed=3)
    assert post.basis == "posterior" and post.n_draws == 1000
    assert np.all(post.lower <= post.median) and np.all(post.median <= post.upper)
    assert np.all(post.lower >= 0.0)
    early = post.t_days <= 28
    width = np.log(post.upper / post.lower)
    prior_width = np.log(pre.upper / pre.lower)
    assert np.all(width[early] < 0.6 * prior_width[early])
    for name in ("cmax", "tmax", "auc0_28"):
        item = post.derived[name]
        assert item.lower < item.median < item.upper


def test_posterior_covers_the_observed_peak_region(prior, fitted):
    data, fit = fitted
    forecast = forecast_kinetics(fit, prior, seed=4)
    map_cmax = fit.map_natural()["cmax"]
    assert forecast.derived["cmax"].lower < map_cmax < forecast.derived["cmax"].upper
    exact = ~data.below_lloq & (data.t_days <= 28)
    band = np.interp(data.t_days[exact], forecast.t_days, forecast.upper)
    # most observed values lie within a few residual SDs of the band
    assert np.mean(data.values[exact] < band * math.exp(3 * 0.56)) > 0.9


def test_same_seed_same_forecast_other_seed_differs(prior, fitted):
    _, fit = fitted
    first = forecast_kinetics(fit, prior, seed=8)
    again = forecast_kinetics(fit, prior, seed=np.random.default_rng(8))
    other = forecast_kinetics(fit, prior, seed=9)
    np.testing.assert_array_equal(first.median, again.median)
    assert first.seed == 8 and again.seed is None
    assert not np.array_equal(first.upper, other.upper)


def test_failed_fit_falls_back_to_prior_or_raises(prior):
    huge = KineticsData(np.arange(20.0), np.full(20, 1e300), np.zeros(20, bool))
    fit = fit_kinetics(huge, prior)
    assert fit.status == "not_converged"
    forecast = forecast_kinetics(fit, prior, seed=0)
    assert forecast.basis == "prior"
    summary = kinetics_summary(fit, forecast, prior)
    assert "from the prior only" in summary["reason"]
    assert summary["parameters"]["cmax"]["map"] is None
    with pytest.raises(CalibrationError, match="not_converged"):
        forecast_kinetics(fit, prior, on_failure="raise")


@pytest.mark.parametrize(
    "kwargs",
    [{"n_draws": 5}, {"interval": 1.0}, {"t_end_days": 0.0}, {"on_failure": "ignore"}],
)
def test_invalid_forecast_arguments_raise(prior, fitted, kwargs):
    with pytest.raises(ModelSpecificationError, match=next(iter(kwargs))):
        forecast_kinetics(fitted[1], prior, **kwargs)


def test_summary_has_the_twin_output_keys_and_is_strict_json(prior, fitted):
    _, fit = fitted
    forecast = forecast_kinetics(fit, prior, seed=0)
    summary = kinetics_summary(fit, forecast, prior)
    assert list(summary) == [
        "quantity",
        "unit",
        "status",
        "reason",
        "n_obs",
        "n_censored",
        "t_days",
        "median",
        "lower",
        "upper",
        "interval",
        "derived",
        "parameters",
    ]
    assert summary["quantity"] == "cart_qpcr" and summary["unit"] == "{copies}/ug"
    assert set(summary["derived"]) == {"cmax", "tmax", "auc0_28"}
    assert summary["derived"]["auc0_28"]["unit"] == "d.{copies}/ug"
    assert list(summary["parameters"]) == list(PARAM_NAMES)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["interval"] == 0.9
    assert len(summary["t_days"]) == len(summary["median"]) == forecast.t_days.size


def test_summary_parameters_are_the_laplace_marginals(prior, fitted):
    _, fit = fitted
    summary = kinetics_summary(fit, forecast_kinetics(fit, prior), prior)
    cmax = summary["parameters"]["cmax"]
    sd = math.sqrt(fit.cov_theta[2, 2])
    assert cmax["map"] == pytest.approx(fit.map_natural()["cmax"], rel=1e-12)
    assert cmax["lower"] == pytest.approx(math.exp(fit.map_theta[2] - Z90 * sd))
    assert cmax["upper"] == pytest.approx(math.exp(fit.map_theta[2] + Z90 * sd))
    fb = summary["parameters"]["fb"]
    assert 0.0 < fb["lower"] < fb["map"] < fb["upper"] < 1.0
