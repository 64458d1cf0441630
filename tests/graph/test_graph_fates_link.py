"""Tests of the cross-scale link from T-cell fates to the CAR T / tumour model."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from cartwin.errors import CalibrationError, DataError
from cartwin.graph.calibrate import prior_fit
from cartwin.graph.fates_link import (
    EXPANSION_PARAMETER,
    FATE_EDGE,
    MIN_EXPANSION_SCALE,
    apply_fate_link,
    explain,
    fates_to_inputs,
    shift_prior,
)
from cartwin.graph.forecast import forecast_graph
from cartwin.graph.graph import standard_graph
from cartwin.graph.inputs import CHANNELS, typical_schedule
from cartwin.models.cart_tumour import CarTumourModel

GRAPH = standard_graph("LBCL")

#: Small grid (one compiled program): every 12 h to day 28, weekly to day 91.
GRID = np.concatenate([np.arange(0.0, 28.0, 0.5), np.arange(28.0, 92.0, 7.0)])

#: Synthetic products: memory-rich vs exhausted (fractions sum to 1).
MEMORY_RICH = {
    "effector": 0.30,
    "memory_like": 0.55,
    "exhausted": 0.05,
    "apoptotic": 0.05,
    "quiescent": 0.05,
}
EXHAUSTED = {
    "effector": 0.20,
    "memory_like": 0.05,
    "exhausted": 0.65,
    "apoptotic": 0.05,
    "quiescent": 0.05,
}

#: Population prior median of k_exp, 1/d (cart_tumour.COMMON_PARAMETERS).
K_EXP_MEDIAN = 0.6


# -- mapping rule ---------------------------------------------------------------


def test_memory_fraction_and_expansion_scale_follow_the_rule():
    link = fates_to_inputs(MEMORY_RICH)
    # 0.55 / (0.30 + 0.55 + 0.05) and 1 - 0.05 / 0.90, exact arithmetic
    assert link.memory_fraction == pytest.approx(0.55 / 0.90, rel=1e-12)
    assert link.exhausted_share == pytest.approx(0.05 / 0.90, rel=1e-12)
    assert link.expansion_scale == pytest.approx(1.0 - 0.05 / 0.90, rel=1e-12)
    assert link.edges == (FATE_EDGE,)


def test_apoptotic_and_quiescent_cells_do_not_enter_the_rule():
    moved = {**MEMORY_RICH, "apoptotic": 0.0, "quiescent": 0.10}
    a, b = fates_to_inputs(MEMORY_RICH), fates_to_inputs(moved)
    assert a.memory_fraction == b.memory_fraction
    assert a.expansion_scale == b.expansion_scale


def test_only_the_active_fates_are_required():
    link = fates_to_inputs({"effector": 0.5, "memory_like": 0.5, "exhausted": 0.0})
    assert link.memory_fraction == 0.5
    assert link.expansion_scale == 1.0


def test_all_exhausted_product_hits_the_floor():
    link = fates_to_inputs({"effector": 0.0, "memory_like": 0.0, "exhausted": 1.0})
    assert link.memory_fraction == 0.0
    assert link.expansion_scale == MIN_EXPANSION_SCALE


@pytest.mark.parametrize(
    "fates, fragment",
    [
        ({**MEMORY_RICH, "senescent": 0.0}, "unknown fates ['senescent']"),
        ({"effector": 0.5, "memory_like": 0.5}, "missing ['exhausted']"),
        ({**MEMORY_RICH, "effector": math.nan}, "non-finite or negative"),
        ({**MEMORY_RICH, "effector": -0.1, "quiescent": 0.45}, "non-finite"),
        ({**MEMORY_RICH, "effector": 0.5}, "sum to 1.2"),
        (
            {"effector": 0, "memory_like": 0, "exhausted": 0, "apoptotic": 1},
            "no active product",
        ),
    ],
)
def test_bad_fate_distributions_raise(fates, fragment):
    with pytest.raises(
        DataError, match=fragment.replace("[", r"\[").replace("]", r"\]")
    ):
        fates_to_inputs(fates)


def test_edge_targets_a_constant_input_of_the_cart_model():
    assert FATE_EDGE.coupling in {c.name for c in CarTumourModel("LBCL").inputs}
    assert CHANNELS[FATE_EDGE.coupling].kind == "constant"


# -- schedule and prior -----------------------------------------------------------


def test_apply_fate_link_sets_the_constant_and_keeps_the_original():
    base = typical_schedule()
    link = fates_to_inputs(EXHAUSTED)
    linked = apply_fate_link(base, link)
    assert linked.constant("product_memory_fraction") == pytest.approx(0.05 / 0.90)
    assert base.constant("product_memory_fraction") == 0.3  # channel default
    assert linked.pulses == base.pulses
    assert "logic.tcell_fates" in linked.notes[-1]


def test_expansion_prior_scales_the_median_only():
    link = fates_to_inputs(EXHAUSTED)
    base = dict(zip(GRAPH.parameter_names, GRAPH.parameter_specs))[EXPANSION_PARAMETER]
    shifted = link.expansion_prior(base)
    assert base.median == K_EXP_MEDIAN
    assert shifted.median == pytest.approx(K_EXP_MEDIAN * (1 - 0.65 / 0.90))
    assert (shifted.log_sd, shifted.unit) == (base.log_sd, base.unit)
    assert "assumption" in shifted.source


def test_shift_prior_moves_k_exp_and_nothing_else():
    link = fates_to_inputs(EXHAUSTED)
    fit = prior_fit(GRAPH, apply_fate_link(typical_schedule(), link))
    shifted = shift_prior(fit, GRAPH, link)
    assert shifted.parameters[EXPANSION_PARAMETER] == pytest.approx(
        K_EXP_MEDIAN * link.expansion_scale, rel=1e-9
    )
    others = [n for n in GRAPH.parameter_names if n != EXPANSION_PARAMETER]
    for name in others:
        assert shifted.parameters[name] == pytest.approx(fit.parameters[name])
    assert shifted.parameter_specs[EXPANSION_PARAMETER].median == pytest.approx(
        K_EXP_MEDIAN * link.expansion_scale
    )


def test_shift_prior_refuses_a_posterior():
    link = fates_to_inputs(EXHAUSTED)
    fit = replace(prior_fit(GRAPH, typical_schedule()), status="converged")
    with pytest.raises(CalibrationError, match="prior_only"):
        shift_prior(fit, GRAPH, link)


# -- explain --------------------------------------------------------------------


def test_explain_states_the_value_its_source_and_its_role():
    fates = {"effector": 0.40, "memory_like": 0.42, "exhausted": 0.18}
    lines = explain(fates_to_inputs(fates, n_cells=2000))
    assert lines[1].startswith(
        "product memory-like fraction 0.42 from the T-cell fate model "
        "(personalised from 2 000 cells): sets the initial memory fraction "
        "of the CAR T model"
    )
    assert "exhausted share 0.18" in lines[2] and "x0.82" in lines[2]
    assert any(line.startswith("assumption") for line in lines)


def test_explain_without_cell_count():
    lines = explain(fates_to_inputs(MEMORY_RICH, source="a synthetic product"))
    assert "from a synthetic product: sets" in lines[1]
    assert "personalised" not in lines[1]


# -- prior-predictive kinetics ------------------------------------------------------


def _forecast(fates, shift=True):
    link = fates_to_inputs(fates)
    fit = prior_fit(GRAPH, apply_fate_link(typical_schedule(), link))
    if shift:
        fit = shift_prior(fit, GRAPH, link)
    return forecast_graph(GRAPH, fit, t_days=GRID, n_draws=40, seed=11)


@pytest.fixture(scope="module")
def forecasts():
    return {
        name: _forecast(fates)
        for name, fates in (("memory", MEMORY_RICH), ("exhausted", EXHAUSTED))
    }


def test_exhausted_product_expands_less_and_persists_less(forecasts):
    # same seed: draws differ only in k_exp (shifted) and the memory fraction
    mem, exh = (forecasts[k] for k in ("memory", "exhausted"))
    assert mem.n_failed == 0 and exh.n_failed == 0
    peak_mem = mem.summaries["cart_tumour"]["cart_peak"]["cmax"]["median"]
    peak_exh = exh.summaries["cart_tumour"]["cart_peak"]["cmax"]["median"]
    # k_exp x0.94 vs x0.28 (and 61% vs 6% memory): >2-fold lower median
    # peak is the stated direction with margin (observed ~7-fold)
    assert peak_mem > 2.0 * peak_exh
    flow_mem, flow_exh = mem.draws["cart_flow"], exh.draws["cart_flow"]
    assert np.all(np.nanmax(flow_mem, axis=1) > np.nanmax(flow_exh, axis=1))
    # persistence: CAR T at day 91 higher in every paired draw
    assert GRID[-1] == 91.0
    assert np.all(flow_mem[:, -1] > flow_exh[:, -1])


def test_memory_fraction_alone_raises_persistence():
    # no prior shift: only product_memory_fraction differs (0.61 vs 0.06)
    mem = _forecast(MEMORY_RICH, shift=False).draws["cart_flow"]
    exh = _forecast(EXHAUSTED, shift=False).draws["cart_flow"]
    assert np.nanmedian(mem[:, -1]) > np.nanmedian(exh[:, -1])
