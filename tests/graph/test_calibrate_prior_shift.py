"""Calibration under a shifted prior (cartwin.graph.calibrate.PriorShift).

The graph is the CAR T / tumour model alone (19 free parameters, one
compiled program of a few seconds) and the patient has CAR T flow values
only, so that tumour-size parameters such as ``spd_coef`` are not informed
by the data at all: their MAP must be the prior mean, exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from graph_samples import at, course_events

from cartwin.errors import ModelSpecificationError
from cartwin.graph.calibrate import PriorShift, calibrate_graph, prior_mean_z
from cartwin.graph.graph import ModelGraph
from cartwin.models.cart_tumour import CarTumourModel
from cartwin.record.model import Observation, PatientFacts, PatientRecord

GRAPH = ModelGraph((CarTumourModel("LBCL"),), name="cart-only")

K_EXP = "cart_tumour.k_exp"
#: SPD scale: explains only ``spd``, which this patient never had measured.
SPD = "cart_tumour.spd_coef"
SPECS = dict(zip(GRAPH.parameter_names, GRAPH.parameter_specs))

#: CAR T by flow (cells/uL) in the first five days: before the peak.
FLOW = ((1, 1.5), (3, 3.0), (5, 8.0))


def _record(flow=FLOW) -> PatientRecord:
    observations = tuple(
        Observation("cart_flow", at(day), value, "/uL") for day, value in flow
    )
    facts = PatientFacts("shift", disease="LBCL")
    return PatientRecord(facts, observations, course_events())


@pytest.fixture(scope="module")
def baseline():
    return calibrate_graph(GRAPH, _record())


def test_no_shift_is_the_population_prior(baseline):
    assert baseline.status == "converged", baseline.reason
    assert baseline.prior_shifts == ()
    assert np.array_equal(baseline.prior_mean_z, np.zeros(len(baseline.free_names)))


def test_a_zero_shift_gives_the_same_fit_bit_for_bit(baseline):
    # mu = ln(m / m) / sd = 0 exactly: the objective, the path and the
    # Laplace covariance must not move by one bit
    same = calibrate_graph(
        GRAPH, _record(), prior_shifts=(PriorShift(K_EXP, SPECS[K_EXP].median),)
    )
    assert same.prior_shifts[0].offset_z == 0.0
    assert same.map_z.tobytes() == baseline.map_z.tobytes()
    assert same.cov_z.tobytes() == baseline.cov_z.tobytes()
    assert same.neg_log_posterior == baseline.neg_log_posterior


def test_an_uninformed_parameter_sits_at_the_shifted_median(baseline):
    # no SPD value: the gradient in spd_coef's z is (z - mu) alone, so the
    # MAP is mu and no other coordinate moves
    target = 2.0 * SPECS[SPD].median
    fit = calibrate_graph(GRAPH, _record(), prior_shifts=(PriorShift(SPD, target),))
    assert fit.status == "converged", fit.reason
    assert fit.parameters[SPD] == pytest.approx(target, rel=1e-9)
    k = fit.free_names.index(SPD)
    assert fit.map_z[k] == pytest.approx(math.log(2.0) / SPECS[SPD].log_sd, abs=1e-9)
    others = np.delete(fit.map_z - baseline.map_z, k)
    assert np.max(np.abs(others)) < 1e-9
    # prior SD unchanged and the data do not inform it: posterior SD 1
    assert fit.cov_z[k, k] == pytest.approx(1.0, abs=1e-6)


def test_without_data_the_fit_is_the_shifted_prior():
    bare = PatientRecord(PatientFacts("none", disease="LBCL"), (), course_events())
    fit = calibrate_graph(GRAPH, bare, prior_shifts=(PriorShift(K_EXP, 0.24),))
    assert fit.status == "prior_only"
    assert fit.parameters[K_EXP] == pytest.approx(0.24, rel=1e-12)
    assert np.array_equal(fit.map_z, fit.prior_mean_z)
    assert np.array_equal(fit.cov_z, np.eye(len(fit.free_names)))
    # ln(0.24 / 0.6) / 0.5 (k_exp prior: median 0.6 /d, log-SD 0.5)
    assert fit.prior_shifts[0].offset_z == pytest.approx(math.log(0.4) / 0.5)


def test_the_shift_pulls_an_informed_parameter_part_way(baseline):
    # normal prior N(mu, 1) and a locally normal likelihood: the MAP moves by
    # (posterior variance) x mu. k_exp is weakly informed by three pre-peak
    # values (Laplace variance of its z between the two fits' values), so
    # the MAP moves that fraction of the prior shift, +-0.1 for the curvature
    # changing along the way
    fit = calibrate_graph(GRAPH, _record(), prior_shifts=(PriorShift(K_EXP, 0.3),))
    assert fit.status == "converged", fit.reason
    k = fit.free_names.index(K_EXP)
    fraction = (fit.map_z[k] - baseline.map_z[k]) / (math.log(0.3 / 0.6) / 0.5)
    variances = sorted((baseline.cov_z[k, k], fit.cov_z[k, k]))
    assert variances[0] - 0.1 < fraction < variances[1] + 0.1
    assert 0.5 < fraction < 1.0


def test_shift_provenance_round_trips():
    _, (shift,) = prior_mean_z(
        GRAPH, (PriorShift(K_EXP, 0.3, "fates", (("fate.exhausted", 0.5),)),)
    )
    data = shift.to_dict()
    assert data["prior_median"] == 0.6 and data["median"] == 0.3
    assert data["evidence"] == {"fate.exhausted": 0.5}
    assert PriorShift.from_dict(data) == shift


@pytest.mark.parametrize(
    "shifts, fragment",
    [
        ((PriorShift("cart_tumour.no_such", 1.0),), "not a free parameter"),
        ((PriorShift("cart_tumour.k_me", 0.1),), "not a free parameter"),  # fixed
        ((PriorShift(K_EXP, 0.3), PriorShift(K_EXP, 0.4)), "given twice"),
        ((PriorShift(K_EXP, 20.0),), r"bounds \[0.0001, 10.0\]"),
        ((PriorShift(K_EXP, 0.0),), "not finite and positive"),
        ((PriorShift(K_EXP, math.nan),), "not finite and positive"),
    ],
)
def test_bad_shifts_raise(shifts, fragment):
    with pytest.raises(ModelSpecificationError, match=fragment):
        prior_mean_z(GRAPH, shifts)
