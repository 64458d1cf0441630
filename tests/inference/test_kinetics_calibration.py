"""Tests of MAP/Laplace calibration of the CAR T kinetics model."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest

from cartwin.errors import DataError, ModelSpecificationError
from cartwin.inference import (
    FitSettings,
    KineticsData,
    KineticsPrior,
    fit_kinetics,
    fit_kinetics_batch,
    kinetics_data_from_record,
)
from cartwin.inference.calibration import _judge
from cartwin.models.kinetics import PARAM_NAMES, simulate_kinetics
from cartwin.record import Event, Observation, PatientFacts, PatientRecord

Z90 = 1.6448536269514722  # standard normal 95th percentile


def _inside_90(fit, theta) -> np.ndarray:
    sd = np.sqrt(np.diag(fit.cov_theta))
    return np.abs(theta - fit.map_theta) < Z90 * sd


def test_recovers_each_parameter_of_a_seeded_patient(prior, simulate):
    # truth half to one prior SD away from the typical patient
    shift = np.array([0.5, -0.6, 0.8, -0.5, 0.7, -0.9])
    truth = prior.mean_theta + shift * prior.sd_theta
    data = simulate(truth, np.random.default_rng(7))
    assert 0 < data.below_lloq.sum() < 20

    fit = fit_kinetics(data, prior)
    assert fit.status == "converged", fit.reason
    inside = dict(zip(PARAM_NAMES, _inside_90(fit, truth)))
    assert all(inside.values()), inside
    # the data are informative: posterior SD below prior SD for Cmax and Tmax
    sd = np.sqrt(np.diag(fit.cov_theta))
    assert sd[1] < 0.3 * prior.sd_theta[1] and sd[2] < 0.5 * prior.sd_theta[2]


def test_coverage_of_90_percent_intervals_over_200_patients(prior, cohort):
    # truths drawn from the prior, so exact posterior intervals would cover
    # 90% (binomial SD 2.1% for 200 patients). A random-walk Metropolis check
    # on the exact posterior gave 0.87-0.95 per parameter (60 patients); the
    # Laplace approximation gives 0.76-0.78 for Tmax, whose posterior is
    # skewed by the kink at the peak, and 0.82-0.91 for the others.
    truths, datasets = cohort
    fits = fit_kinetics_batch(datasets, prior)
    assert {fit.status for fit in fits} == {"converged"}
    coverage = np.mean([_inside_90(f, t) for f, t in zip(fits, truths)], axis=0)
    report = dict(zip(PARAM_NAMES, coverage.round(3)))
    assert np.all(coverage >= 0.70) and np.all(coverage <= 0.97), report
    assert coverage.mean() >= 0.80, report


def test_zero_observations_return_the_prior(prior):
    empty = KineticsData(np.zeros(0), np.zeros(0), np.zeros(0, bool))
    fit = fit_kinetics(empty, prior)
    assert fit.status == "prior_only" and fit.usable
    assert (fit.n_obs, fit.n_censored) == (0, 0)
    np.testing.assert_array_equal(fit.map_theta, prior.mean_theta)
    np.testing.assert_array_equal(fit.cov_theta, np.diag(prior.sd_theta**2))


def test_one_observation_moves_cmax_only_partly(prior):
    # one peak value 10x the typical Cmax: the MAP moves towards it, shrunk by
    # the prior, and the Cmax posterior SD drops below the prior SD
    one = KineticsData(np.array([9.3]), np.array([240000.0]), np.array([False]))
    fit = fit_kinetics(one, prior)
    assert fit.status == "converged" and fit.n_obs == 1
    cmax = fit.map_natural()["cmax"]
    assert 24000.0 < cmax < 240000.0
    assert np.sqrt(fit.cov_theta[2, 2]) < prior.sd_theta[2]


def test_many_observations_converge_quickly(prior, simulate):
    data = simulate(prior.mean_theta, np.random.default_rng(3))
    fit = fit_kinetics(data, prior)
    assert fit.status == "converged" and fit.n_obs == 20
    assert fit.grad_norm < fit.settings.gtol
    assert fit.n_iter < 30
    assert np.all(np.linalg.eigvalsh(fit.cov_theta) > 0)


def test_censored_values_pull_the_late_curve_down(prior):
    # levels below LLOQ 50 from day 56 on: censoring them must lower the
    # predicted late level compared with dropping them, and must differ from
    # treating the limit as a measured value
    t_days = np.array([1, 4, 7, 9, 14, 21, 28, 56, 90, 180, 365.0])
    values = np.array([40, 900, 9000, 20000, 9000, 2500, 700, 50, 50, 50, 50.0])
    below = t_days >= 56
    censored = fit_kinetics(KineticsData(t_days, values, below), prior)
    kept = ~below
    dropped = fit_kinetics(KineticsData(t_days[kept], values[kept], below[kept]), prior)
    as_exact = fit_kinetics(KineticsData(t_days, values, np.zeros(11, bool)), prior)
    assert censored.n_censored == 4 and dropped.n_censored == 0

    late = np.array([90.0, 180.0, 365.0])
    level = {
        name: simulate_kinetics(fit.map_theta, late)
        for name, fit in (("c", censored), ("d", dropped), ("e", as_exact))
    }
    assert np.all(level["c"] < level["d"])
    assert np.all(level["c"] < 50.0)
    assert not np.allclose(censored.map_theta, as_exact.map_theta, rtol=1e-3)


def test_batch_equals_individual_fits(prior, simulate):
    rng = np.random.default_rng(11)
    datasets = [
        simulate(prior.mean_theta + 0.5 * rng.standard_normal(6), rng),
        KineticsData(np.zeros(0), np.zeros(0), np.zeros(0, bool)),
        KineticsData(
            np.array([0.0, 7.0, 28.0]),
            np.array([3.0, 5000.0, 900.0]),
            np.zeros(3, bool),
        ),
    ]
    batch = fit_kinetics_batch(datasets, prior)
    for data, together in zip(datasets, batch):
        alone = fit_kinetics(data, prior)
        assert together.status == alone.status
        np.testing.assert_allclose(together.map_theta, alone.map_theta, rtol=1e-8)
        if alone.cov_theta is not None:
            np.testing.assert_allclose(together.cov_theta, alone.cov_theta, rtol=1e-6)


def test_pathological_patients_get_a_status_not_an_exception(prior, simulate):
    # a unit error of 300 orders of magnitude puts the MAP out of reach of 100
    # Newton steps; a time of 1e300 days overflows the objective
    normal = simulate(prior.mean_theta, np.random.default_rng(5))
    huge = KineticsData(np.arange(20.0), np.full(20, 1e300), np.zeros(20, bool))
    overflow = KineticsData(
        np.array([1.0, 1e300]), np.array([10.0, 100.0]), np.zeros(2, bool)
    )
    fits = fit_kinetics_batch([normal, huge, overflow], prior)
    assert [f.status for f in fits] == ["converged", "not_converged", "not_converged"]
    assert "after 100 iterations" in fits[1].reason
    assert "no descent step" in fits[2].reason
    assert fits[1].cov_theta is None and not fits[2].usable


def test_exact_kink_without_smoothing_is_reported(prior, cohort):
    # with smoothing 0 a MAP on the Tmax kink never meets the gradient test;
    # each such patient is flagged, the rest of the batch still converges
    _, datasets = cohort
    exact = FitSettings(smoothing_days=0.0)
    fits = fit_kinetics_batch(datasets[:64], prior, settings=exact)
    statuses = [f.status for f in fits]
    assert 0 < statuses.count("not_converged") < 32
    assert statuses.count("converged") + statuses.count("not_converged") == 64


def test_pre_infusion_values_are_ignored_and_counted(prior):
    t_days = np.array([-2.0, 0.0, 7.0, 14.0, 28.0])
    values = np.array([1e6, 5.0, 3000.0, 11000.0, 1400.0])
    with_pre = fit_kinetics(KineticsData(t_days, values, np.zeros(5, bool)), prior)
    after = KineticsData(t_days[1:], values[1:], np.zeros(4, bool))
    without = fit_kinetics(after, prior)
    assert (with_pre.n_obs, with_pre.n_pre_infusion) == (4, 1)
    assert "1 observation(s) before infusion ignored" in with_pre.reason
    np.testing.assert_allclose(with_pre.map_theta, without.map_theta, rtol=1e-10)


def test_assay_mismatch_is_an_error(prior):
    flow = KineticsData(
        np.array([7.0]), np.array([30.0]), np.array([False]), assay="cart_flow"
    )
    with pytest.raises(ModelSpecificationError, match="cart_flow"):
        fit_kinetics(flow, prior)


def test_flow_prior_fits_flow_data():
    flow_prior = KineticsPrior.from_published("cart_flow")
    flow = KineticsData(
        np.array([3.0, 7.0, 14.0, 28.0, 90.0]),
        np.array([2.0, 35.0, 60.0, 8.0, 1.0]),
        np.zeros(5, bool),
        assay="cart_flow",
    )
    fit = fit_kinetics(flow, flow_prior)
    assert fit.status == "converged" and fit.unit == "/uL"
    assert 20.0 < fit.map_natural()["cmax"] < 200.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"values": [0.0]}, "values[0]"),
        ({"values": [float("nan")]}, "values[0]"),
        ({"t_days": [float("inf")]}, "t_days[0]"),
        ({"values": [1.0, 2.0]}, "differ in length"),
        ({"above_uloq": [True]}, "above_uloq[0]"),
    ],
)
def test_invalid_data_are_rejected(kwargs, field):
    arrays = {"t_days": [1.0], "values": [5.0], "below_lloq": [True], **kwargs}
    with pytest.raises(DataError, match=field.replace("[", r"\[").replace("]", r"\]")):
        KineticsData(**arrays)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_iter": 0},
        {"gtol": 0.0},
        {"smoothing_days": -1.0},
        {"min_eigenvalue_ratio": 1.0},
    ],
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ModelSpecificationError, match=next(iter(kwargs))):
        FitSettings(**kwargs)


def _record(counts: dict[str, int]) -> PatientRecord:
    infusion = dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC)
    observations = [
        Observation(
            quantity=quantity,
            time=infusion + dt.timedelta(days=day),
            value=value,
            unit="x",
            censored="below" if day == 60 else None,
        )
        for quantity, n in counts.items()
        for day, value in zip([-1, 7, 14, 60][:n], [1.0, 30.0, 20.0, 0.5])
    ]
    return PatientRecord(
        facts=PatientFacts(pseudonym="p1"),
        observations=tuple(observations),
        events=(Event(kind="infusion", start=infusion),),
    )


def test_record_picks_the_assay_with_most_observations():
    data = kinetics_data_from_record(_record({"cart_flow": 4, "cart_qpcr": 2}))
    assert data.assay == "cart_flow" and len(data) == 4
    np.testing.assert_allclose(data.t_days, [-1.0, 7.0, 14.0, 60.0])
    np.testing.assert_array_equal(data.below_lloq, [False, False, False, True])


def test_record_tie_prefers_qpcr_and_explicit_assay_wins():
    record = _record({"cart_flow": 2, "cart_qpcr": 2})
    assert kinetics_data_from_record(record).assay == "cart_qpcr"
    assert kinetics_data_from_record(record, assay="cart_flow").assay == "cart_flow"
    empty = kinetics_data_from_record(_record({}))
    assert empty.assay == "cart_qpcr" and len(empty) == 0


def test_saddle_point_is_reported_as_indefinite_hessian():
    # the optimiser's flags say converged, but the Hessian has a negative
    # eigenvalue: no Laplace covariance may be formed
    flags = SimpleNamespace(stalled=np.array([False]), converged=np.array([True]))
    status, reason = _judge(flags, np.array([-0.5, 2.0]), 0, 1e-9, 4, FitSettings())
    assert status == "indefinite_hessian"
    assert "-0.5" in reason
    status, _ = _judge(flags, np.array([0.5, 2.0]), 0, 1e-9, 4, FitSettings())
    assert status == "converged"
