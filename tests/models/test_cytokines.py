"""Tests of the cytokine-release model and its CRS link (cartwin.models.cytokines)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartwin.errors import ModelSpecificationError
from cartwin.graph.spec import ScaleModel, check_model
from cartwin.models.cytokines import (
    CRS_LINK,
    D_IL6_HARDIANSYAH,
    PARAMETERS,
    CrsLink,
    CytokineModel,
    crs_exceedance,
    crs_grade_probabilities,
    fit_crs_link,
    tocilizumab_trigger_day,
    validation_checks,
    window_peak,
)

MODEL = CytokineModel()
PARAMS = {p.name: p.median for p in PARAMETERS}
NONE = {"tumour_kill_rate": 0.0, "toci_exposure": 0.0, "steroid_exposure": 0.0}


def test_model_implements_the_protocol():
    assert isinstance(MODEL, ScaleModel)
    check_model(MODEL)
    assert {o.quantity for o in MODEL.observables} == {"il6", "crp"}
    assert {c.name for c in MODEL.inputs} == set(NONE)


def test_hardiansyah_elimination_rate_is_used():
    # Hardiansyah 2019 Table S1: d_IL6 = 3.96 /d (fixed in the prior)
    assert PARAMS["d_il6"] == D_IL6_HARDIANSYAH == 3.96
    y = jnp.array([105.0, 20.0, 0.0])
    assert float(MODEL.rhs(0.0, y, PARAMS, NONE)[0]) == pytest.approx(-3.96 * 100.0)


def test_fast_validation_checks_pass():
    # IL-6 half-life ln2/3.96 d, CRP half-life 19 h, tocilizumab steady state
    checks = validation_checks(include_population=False)
    assert len(checks) == 4
    assert [c.name for c in checks if not c.passed] == []


def test_killing_drives_il6_and_steroids_halve_it_at_ic50():
    y = jnp.array([PARAMS["il6_base"], 20.0, 0.0])
    driven = MODEL.rhs(0.0, y, PARAMS, {**NONE, "tumour_kill_rate": 10.0})
    treated = MODEL.rhs(
        0.0,
        y,
        PARAMS,
        {**NONE, "tumour_kill_rate": 10.0, "steroid_exposure": PARAMS["steroid_ic50"]},
    )
    assert float(driven[0]) == pytest.approx(10.0 * PARAMS["p_il6"])
    assert float(treated[0]) == pytest.approx(0.5 * float(driven[0]))


def test_tocilizumab_slows_clearance_and_lowers_the_signal():
    y = jnp.array([200.0, 50.0, 0.9])
    blocked = MODEL.rhs(0.0, y, PARAMS, NONE)
    free = MODEL.rhs(0.0, jnp.array([200.0, 50.0, 0.0]), PARAMS, NONE)
    assert float(blocked[0]) > float(free[0])  # serum IL-6 falls more slowly
    assert float(MODEL.couplings(0.0, y, PARAMS)["il6_signal"]) == pytest.approx(20.0)
    occupied = MODEL.rhs(
        0.0, jnp.array([5.0, 20.0, 0.0]), PARAMS, {**NONE, "toci_exposure": 1.0}
    )
    assert float(occupied[2]) == pytest.approx(PARAMS["k_block"] / 1.1)


def test_grade_probabilities_are_a_distribution_ordered_by_the_rise():
    rises = np.linspace(-2.0, 10.0, 121)
    probs = crs_grade_probabilities(rises)
    assert probs.shape == (121, 5)
    assert np.all(probs >= -1e-15) and np.allclose(probs.sum(axis=1), 1.0)
    above = crs_exceedance(rises)
    assert np.all(np.diff(above, axis=0) >= 0)  # more IL-6, more risk
    assert np.all(np.diff(above, axis=1) <= 0)  # grade >= k+1 rarer than >= k
    # at a threshold the probability of reaching that grade is one half
    for k, c in enumerate(CRS_LINK.thresholds):
        assert crs_exceedance(c)[k] == pytest.approx(0.5)


def test_link_constants_follow_their_stated_rules():
    c1, c2, c3, c4 = CRS_LINK.thresholds
    assert c2 == pytest.approx(0.5 * (c1 + c3)) and c4 - c3 == pytest.approx(c3 - c2)
    # a patient without IL-6 rise has P(CRS) = 5% (rounding of the constants)
    assert crs_exceedance(0.0)[0] == pytest.approx(0.05, abs=0.002)


def test_fit_crs_link_solves_its_three_conditions():
    peaks = np.random.default_rng(4).normal(2.8, 1.3, 3000)
    link = fit_crs_link(peaks, 0.93, 0.13, p_any_without_rise=0.05)
    rates = crs_exceedance(peaks, link).mean(axis=0)
    assert rates[0] == pytest.approx(0.93, abs=1e-6)
    assert rates[2] == pytest.approx(0.13, abs=1e-6)
    assert crs_exceedance(0.0, link)[0] == pytest.approx(0.05, abs=1e-6)


def test_fit_crs_link_and_link_reject_bad_input():
    with pytest.raises(ModelSpecificationError):
        fit_crs_link(np.array([1.0, 2.0]), 0.1, 0.2)
    with pytest.raises(ModelSpecificationError):
        CrsLink((1.0, 0.5, 2.0, 3.0))


def test_window_peak_interpolates_between_grid_points():
    t = np.array([0.0, 1.0, 2.0])
    series = np.array([[0.0, 10.0, 0.0]])
    assert window_peak(t, series, 0.25, 12.0)[0] == pytest.approx(7.5)
    assert window_peak(t, series, 0.0, 48.0)[0] == pytest.approx(10.0)


def test_tocilizumab_trigger_day_uses_the_rise_over_baseline():
    t = np.arange(0.0, 5.0, 0.5)
    signal = 5.0 * np.exp(t)  # rise = t
    grade2 = tocilizumab_trigger_day(t, signal, 5.0, 2)
    assert grade2 == pytest.approx(math.ceil(CRS_LINK.thresholds[1] * 2) / 2)
    assert tocilizumab_trigger_day(t, signal, 5.0, 4) is None
    with pytest.raises(ModelSpecificationError):
        tocilizumab_trigger_day(t, signal, 5.0, 5)


@settings(max_examples=100, deadline=None)
@given(st.floats(-50.0, 50.0))
def test_grade_probabilities_are_a_distribution_for_any_rise(rise):
    probs = crs_grade_probabilities(rise)
    assert np.all(probs >= -1e-15) and probs.sum() == pytest.approx(1.0)
