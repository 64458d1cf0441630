"""Tests of the cross-scale link from T-cell fates to the CAR T / tumour model."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from graph_samples import at, course_events
from markupsafe import escape

from cartwin.demo import demo_bundle_path
from cartwin.errors import CalibrationError, DataError, ModelSpecificationError
from cartwin.graph.calibrate import calibrate_graph, prior_fit
from cartwin.graph.fates_link import (
    EXPANSION_PARAMETER,
    FATE_EDGE,
    FATE_SOURCE,
    MIN_EXPANSION_SCALE,
    apply_fate_link,
    calibrate_with_fates,
    explain,
    fate_link_summary,
    fates_to_inputs,
    shift_prior,
)
from cartwin.graph.forecast import forecast_graph, graph_summary
from cartwin.graph.graph import EXOGENOUS, ModelGraph, standard_graph
from cartwin.graph.inputs import CHANNELS, typical_schedule
from cartwin.graph.spec import Edge
from cartwin.io.fhir import import_fhir
from cartwin.models.cart_tumour import CarTumourModel
from cartwin.models.manufacturing import ManufacturingModel
from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY
from cartwin.report import render_report
from cartwin.twin import graph_outputs as graph_outputs_module
from cartwin.twin.build import TwinSettings, build_twin

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
    # z stays relative to the population prior, which the specs keep; the
    # shift itself is the fit's provenance
    assert shifted.parameter_specs[EXPANSION_PARAMETER].median == K_EXP_MEDIAN
    (shift,) = shifted.prior_shifts
    assert (shift.parameter, shift.prior_median) == (EXPANSION_PARAMETER, K_EXP_MEDIAN)
    assert shift.median == pytest.approx(K_EXP_MEDIAN * link.expansion_scale)
    assert dict(shift.evidence)["fate.exhausted"] == 0.65
    assert np.array_equal(shifted.map_z, shifted.prior_mean_z)


def test_shifted_prior_interval_is_centred_on_the_shifted_median():
    # the 90% prior interval of k_exp in the graph summary is log-symmetric
    # around the shifted median 0.6 x scale (not 0.6 x scale^2)
    link = fates_to_inputs(EXHAUSTED)
    fit = shift_prior(prior_fit(GRAPH, typical_schedule()), GRAPH, link)
    entry = graph_summary(fit, None)["parameters"][EXPANSION_PARAMETER]
    centre = math.sqrt(entry["lower"] * entry["upper"])
    assert centre == pytest.approx(K_EXP_MEDIAN * link.expansion_scale, rel=1e-9)
    # half-width 1.645 log-SDs (log-SD 0.5, prior SD unchanged)
    assert math.log(entry["upper"] / centre) == pytest.approx(1.6448536 * 0.5)


def test_shift_prior_refuses_a_prior_shifted_twice():
    link = fates_to_inputs(EXHAUSTED)
    once = shift_prior(prior_fit(GRAPH, typical_schedule()), GRAPH, link)
    with pytest.raises(CalibrationError, match="already shifted"):
        shift_prior(once, GRAPH, link)


def test_shift_prior_refuses_a_posterior():
    link = fates_to_inputs(EXHAUSTED)
    fit = replace(prior_fit(GRAPH, typical_schedule()), status="converged")
    with pytest.raises(CalibrationError, match="prior_only.*calibrate_with_fates"):
        shift_prior(fit, GRAPH, link)


# -- the declared edge in the graph ----------------------------------------------------


def test_standard_graph_declares_the_fate_edge():
    assert GRAPH.external_edges == (FATE_EDGE,)
    (entry,) = GRAPH.describe()["external_edges"]
    assert (entry["source"], entry["target"], entry["coupling"]) == (
        "logic.tcell_fates",
        "cart_tumour",
        "product_memory_fraction",
    )
    assert "T-cell fate" in entry["description"]
    # the ODE edges are unchanged: the value still enters as an exogenous input
    assert Edge(EXOGENOUS, "cart_tumour", "product_memory_fraction") in GRAPH.edges


def test_a_graph_accepts_the_fate_edge_and_refuses_wrong_ones():
    models = (CarTumourModel("LBCL"),)
    assert ModelGraph(models, (FATE_EDGE,)).external_edges == (FATE_EDGE,)
    wrong = (
        Edge("logic.unknown", "cart_tumour", "product_memory_fraction"),
        Edge(FATE_SOURCE, "cart_tumour", "ld_exposure"),  # a pulse channel
        Edge(FATE_SOURCE, "cart_tumour", "no_such_coupling"),
    )
    for edge in wrong:
        with pytest.raises(ModelSpecificationError, match="declared edges"):
            ModelGraph(models, (edge,))


def test_a_model_writing_the_memory_fraction_replaces_the_fate_edge():
    graph = standard_graph("LBCL", (ManufacturingModel(),))
    assert graph.external_edges == ()
    record = PatientRecord(PatientFacts("m", disease="LBCL"), (), course_events())
    with pytest.raises(ModelSpecificationError, match="does not declare the edge"):
        calibrate_with_fates(graph, record, fates_to_inputs(EXHAUSTED))


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


# -- calibrated twins: same CAR T data, products differ in exhaustion ------------------

#: The CAR T / tumour model alone (one small compiled program), with the edge.
CART_ONLY = ModelGraph((CarTumourModel("LBCL"),), (FATE_EDGE,), name="cart-only")

#: CAR T by flow (cells/uL) on days 1-3: a twin updated on day 3, before
#: the expansion peak, whose forecast of the peak rests on the prior of k_exp.
EARLY_FLOW = ((1, 1.5), (2, 2.0), (3, 3.0))

#: Products with exhausted share 0.1 and 0.6 of the active cells, the rest
#: split evenly between effector and memory-like cells.
LOW_EXHAUSTION = {"effector": 0.45, "memory_like": 0.45, "exhausted": 0.10}
HIGH_EXHAUSTION = {"effector": 0.20, "memory_like": 0.20, "exhausted": 0.60}


def _early_record() -> PatientRecord:
    observations = tuple(
        Observation("cart_flow", at(day), value, "/uL") for day, value in EARLY_FLOW
    )
    facts = PatientFacts("same-data", disease="LBCL")
    return PatientRecord(facts, observations, course_events())


@pytest.fixture(scope="module")
def twins():
    record = _early_record()
    out = {}
    for name, fates in (("low", LOW_EXHAUSTION), ("high", HIGH_EXHAUSTION)):
        link = fates_to_inputs(fates, n_cells=5000)
        fit = calibrate_with_fates(CART_ONLY, record, link)
        forecast = forecast_graph(CART_ONLY, fit, t_days=GRID, n_draws=100, seed=3)
        out[name] = (link, fit, forecast)
    return out


def test_linked_fits_record_the_link(twins):
    for link, fit, _ in twins.values():
        assert fit.status == "converged", fit.reason
        memory = fit.schedule.constant("product_memory_fraction")
        assert memory == link.memory_fraction
        (shift,) = fit.prior_shifts
        assert shift.parameter == EXPANSION_PARAMETER
        assert shift.prior_median == K_EXP_MEDIAN
        assert shift.median == pytest.approx(K_EXP_MEDIAN * link.expansion_scale)
        assert dict(shift.evidence)["exhausted_share"] == link.exhausted_share
    # 0.45 / 0.55 and 0.20 / 1.0 memory-like; scale 1 - 0.1 / 1.0 = 0.9 and
    # 1 - 0.6 = 0.4 (the fractions sum to 1 over the active fates here)
    assert twins["low"][0].expansion_scale == pytest.approx(0.9)
    assert twins["high"][0].expansion_scale == pytest.approx(0.4)


def test_exhausted_product_gets_a_lower_k_exp_posterior(twins):
    # the posterior median of k_exp is the MAP (Laplace, normal in log k_exp).
    # With three pre-peak values k_exp is weakly informed, so the ratio of
    # the two posteriors lies between the prior ratio 0.4 / 0.9 (prior alone)
    # and 1 (data alone), and nearer the prior: below 0.7
    low = twins["low"][1].parameters[EXPANSION_PARAMETER]
    high = twins["high"][1].parameters[EXPANSION_PARAMETER]
    assert 0.4 / 0.9 < high / low < 0.7
    for link, fit, _ in twins.values():
        verdict = fit.identifiability()[EXPANSION_PARAMETER]
        assert verdict["sd_ratio"] > 0.8  # weakly informed, as said above


def test_exhausted_product_forecasts_a_lower_peak_and_auc(twins):
    # same data; the forecast peak and exposure (AUC of CAR T by flow, days
    # 0-28) follow the link's direction. The exhausted product's lower
    # memory fraction (0.2 vs 0.45) leaves more effectors to expand, which
    # offsets part of its lower k_exp: ratios ~0.65 at the posterior median.
    # Medians of 100 draws move by ~0.07 between seeds (0.52-0.73 over 8
    # seeds), so 0.85 is the bound
    early = GRID <= 28.0
    peaks, aucs, course = {}, {}, {}
    for name, (_, fit, forecast) in twins.items():
        assert forecast.n_failed == 0
        peaks[name] = forecast.summaries["cart_tumour"]["cart_peak"]["cmax"]["median"]
        flow = forecast.draws["cart_flow"][:, early]
        aucs[name] = np.median(np.trapezoid(flow, GRID[early], axis=1))
        path = CART_ONLY.simulate(fit.schedule, GRID, fit.parameters)
        flow = path.observables["cart_flow"][early]
        course[name] = (flow.max(), np.trapezoid(flow, GRID[early]))
    assert peaks["high"] < 0.85 * peaks["low"]
    assert aucs["high"] < 0.85 * aucs["low"]
    # the posterior-median course itself, without Monte Carlo error
    assert course["high"][0] < 0.8 * course["low"][0]
    assert course["high"][1] < 0.8 * course["low"][1]


def test_without_fates_the_fit_is_the_population_fit(twins):
    # a plain calibration of the same record has no shift and the channel's
    # default memory fraction; the linked fits differ from it
    plain = calibrate_graph(CART_ONLY, _early_record())
    assert plain.prior_shifts == () and not np.any(plain.prior_mean_z)
    assert plain.schedule.constant("product_memory_fraction") == 0.3
    high = twins["high"][1]
    assert not np.array_equal(plain.map_z, high.map_z)


def test_explain_with_a_fit_names_the_prior_and_the_fitted_value(twins):
    link, fit, _ = twins["high"]
    lines = explain(link, fit)
    fitted = fit.parameters[EXPANSION_PARAMETER]
    assert (
        "cart_tumour.k_exp prior median 0.6 /d (population) -> 0.24 /d for this "
        f"product; fitted to the patient's data: {fitted:.3g} /d"
    ) in lines
    summary = fate_link_summary(link, fit)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert summary["explain"] == lines
    assert summary["prior_shifts"][0]["median"] == pytest.approx(0.24)


# -- the twin and the report -------------------------------------------------------------

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def demo_record():
    return import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]


def test_twin_settings_pass_the_fates_to_the_graph(demo_record, monkeypatch):
    # the graph itself is replaced (a full graph twin takes ~35 s): this
    # checks what build_twin hands to it and what the version records
    seen = {}

    def fake_graph_outputs(record, **kwargs):
        seen.update(kwargs)
        return {"status": "converged", "reason": "stub"}

    monkeypatch.setattr(graph_outputs_module, "graph_outputs", fake_graph_outputs)
    settings = TwinSettings(
        graph=True, n_draws=10, fates=HIGH_EXHAUSTION, fates_n_cells=5000
    )
    version = build_twin(demo_record, settings=settings, now=NOW)
    link = seen["fate_link"]
    assert link.memory_fraction == pytest.approx(0.2) and link.n_cells == 5000
    assert link.expansion_scale == pytest.approx(0.4)
    # recorded, and read back from JSON (twin reproduce) to equal settings
    stored = json.loads(json.dumps(version.settings))
    assert stored["fates"] == [
        ["effector", 0.2],
        ["memory_like", 0.2],
        ["exhausted", 0.6],
    ]
    assert TwinSettings(**stored) == settings
    plain = build_twin(demo_record, settings=TwinSettings(n_draws=10), now=NOW)
    assert "fates" not in plain.settings and "fates_n_cells" not in plain.settings


def test_fates_without_the_graph_are_refused():
    with pytest.raises(ValueError, match="graph=True"):
        TwinSettings(fates=HIGH_EXHAUSTION)


def test_report_shows_why_the_kinetics_differ(demo_record, twins):
    link, fit, forecast = twins["high"]
    version = build_twin(demo_record, settings=TwinSettings(n_draws=10), now=NOW)
    graph = {
        "status": fit.status,
        "reason": fit.reason,
        "graph": {"name": CART_ONLY.name, "version": CART_ONLY.version},
        "n_draws": forecast.n_draws,
        "n_failed": forecast.n_failed,
        "basis": forecast.basis,
        "interval": forecast.interval,
        "t_days": GRID.tolist(),
        "series": {"spd": forecast.bands["spd"].to_dict()},
        "fate_link": fate_link_summary(link, fit),
    }
    page = render_report(
        demo_record, replace(version, outputs={**version.outputs, "graph": graph})
    )
    section = page[page.index('<section id="graph">') :]
    assert "Why these kinetics differ: T-cell fates of the product" in section
    for line in explain(link, fit):
        assert str(escape(line)) in section
    assert "exhausted share 0.60 of the active product" in section
    without = {k: v for k, v in graph.items() if k != "fate_link"}
    page = render_report(
        demo_record, replace(version, outputs={**version.outputs, "graph": without})
    )
    assert "Why these kinetics differ" not in page
