"""Tests of graph forecasts, scenarios, the JSON summary and the validation report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cartwin.demo import demo_bundle_path
from cartwin.errors import CalibrationError
from cartwin.graph.calibrate import GraphFit, calibrate_record
from cartwin.graph.forecast import compare_scenarios, forecast_graph, graph_summary
from cartwin.graph.graph import standard_graph
from cartwin.graph.inputs import bridging_scenario, dose_scenario, tocilizumab_scenario
from cartwin.graph.validation import (
    ValidationCheck,
    run_validation,
    validation_report_html,
)
from cartwin.io.fhir import import_fhir
from cartwin.models.cytokines import tocilizumab_grade_scenarios
from cartwin.record.pseudonym import DEMO_KEY

GRAPH = standard_graph("LBCL")

#: Shared grid (one compiled program): day -14 to 90.
GRID = np.concatenate(
    [np.arange(-14.0, 0.0, 1.0), np.arange(0.0, 30.0, 0.25), np.arange(30.0, 91.0, 2.0)]
)


@pytest.fixture(scope="module")
def demo():
    return import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]


@pytest.fixture(scope="module")
def fit(demo):
    return calibrate_record(demo)


@pytest.fixture(scope="module")
def forecast(fit):
    return forecast_graph(GRAPH, fit, t_days=GRID, n_draws=200, seed=5)


@pytest.fixture(scope="module")
def comparison(fit):
    scenarios = [
        dose_scenario(3.12e8, "double dose"),
        tocilizumab_scenario(1.5, name="early tocilizumab"),
        bridging_scenario((), name="no bridging"),
    ]
    return compare_scenarios(GRAPH, fit, scenarios, t_days=GRID, n_draws=200, seed=5)


def test_every_observable_and_coupling_has_an_ordered_band(fit, forecast):
    assert set(forecast.bands) == set(GRAPH.quantities) | set(GRAPH.coupling_names)
    for name, band in forecast.bands.items():
        ok = np.isfinite(band.median)
        assert ok[GRID >= 0].all(), name
        assert np.all(band.lower[ok] <= band.median[ok] + 1e-12), name
        assert np.all(band.median[ok] <= band.upper[ok] + 1e-12), name
    assert forecast.n_failed == 0 and forecast.basis == "posterior"
    assert forecast.origin_day == pytest.approx(fit.last_day)  # last observation
    assert fit.last_day == pytest.approx(89.85, abs=0.01)


def test_forecast_is_reproducible_for_a_seed(fit, forecast):
    again = forecast_graph(GRAPH, fit, t_days=GRID, n_draws=200, seed=5)
    assert np.array_equal(again.bands["il6"].median, forecast.bands["il6"].median)


def test_predictive_band_covers_the_patients_car_t_levels(demo, fit):
    # interval for a new measurement (residual error added); the fit's own
    # data should mostly fall inside (exact values only)
    band = forecast_graph(
        GRAPH, fit, t_days=GRID, n_draws=200, seed=5, include_residual=True
    ).bands["cart_flow"]
    series = demo.series("cart_flow")
    keep = (series.t_days >= 0) & ~series.below_lloq
    low = np.interp(series.t_days[keep], GRID, band.lower)
    high = np.interp(series.t_days[keep], GRID, band.upper)
    inside = (series.values[keep] >= low) & (series.values[keep] <= high)
    assert inside.mean() >= 0.8


def test_model_summaries_give_probabilities(forecast):
    crs = forecast.summaries["cytokines"]["crs_windows"]
    assert [w["hours"] for w in crs] == [24, 48, 72]
    for window in crs:
        assert sum(window["grade_probabilities"].values()) == pytest.approx(1.0)
    response = forecast.summaries["cart_tumour"]["response"]
    assert [r["day"] for r in response] == [28.0, 90.0]
    assert sum(response[0]["probabilities"].values()) == pytest.approx(1.0)
    peak = forecast.summaries["cart_tumour"]["cart_peak"]
    # demo flow peak 34.2 cells/uL on day 8.9
    assert peak["cmax"]["lower"] < 34.2 < peak["cmax"]["upper"]
    assert peak["tmax"]["lower"] <= 8.9 <= peak["tmax"]["upper"]


def test_scenarios_are_the_same_draws_under_other_inputs(comparison):
    flow = {name: f.draws["cart_flow"] for name, f in comparison.forecasts.items()}
    recorded = comparison.forecasts["as recorded"]
    double = comparison.forecasts["double dose"]
    # same parameters: a larger dose gives a higher peak in every draw
    assert np.all(np.nanmax(flow["double dose"], 1) > np.nanmax(flow["as recorded"], 1))
    assert np.array_equal(
        recorded.draws["cytokines.il6_base"], double.draws["cytokines.il6_base"]
    )
    # early tocilizumab: serum IL-6 higher, its signal lower (Nishimoto 2008)
    early = comparison.forecasts["early tocilizumab"]
    day2 = np.searchsorted(GRID, 2.0)
    assert np.all(early.draws["il6"][:, day2] > recorded.draws["il6"][:, day2])
    assert np.all(
        early.draws["il6_signal"][:, day2] < recorded.draws["il6_signal"][:, day2]
    )
    # without bridging the tumour at infusion is larger in every draw
    day0 = np.searchsorted(GRID, 0.0)
    none = comparison.forecasts["no bridging"]
    assert np.all(
        none.draws["tumour_burden"][:, day0] > recorded.draws["tumour_burden"][:, day0]
    )
    table = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert set(table["endpoints"]) == {
        "as recorded",
        "double dose",
        "early tocilizumab",
        "no bridging",
    }


def test_tocilizumab_at_grade_1_comes_before_grade_2(fit):
    first, second = tocilizumab_grade_scenarios(GRAPH, fit)
    day1 = first.add[0][1].start_day
    day2 = second.add[0][1].start_day
    assert 0.0 <= day1 < day2 < 14.0
    assert first.name == "tocilizumab at grade 1"


def test_graph_summary_is_json(fit, forecast):
    summary = graph_summary(fit, forecast)
    text = json.dumps(summary, allow_nan=False)
    back = json.loads(text)
    assert back["status"] == "converged"
    entry = back["parameters"]["cart_tumour.k_ld"]
    assert entry["lower"] < entry["map"] < entry["upper"]
    assert entry["unit"] == "/d" and entry["verdict"] == "informed"
    assert back["fixed"]["cytokines.d_il6"] == 3.96
    assert len(back["forecast"]["t_days"]) == GRID.size
    failed = graph_summary(GraphFit("input_error", "no infusion"), None)
    assert json.loads(json.dumps(failed))["forecast"] is None


def test_unusable_fit_cannot_be_forecast():
    with pytest.raises(CalibrationError, match="input_error"):
        forecast_graph(GRAPH, GraphFit("input_error", "no infusion"))


def test_validation_report_lists_every_check():
    checks = [
        ValidationCheck(
            "r_C at T=6.36", "cart_tumour", "Kimmel 2021", 0.55, 0.5501, 5e-4, "/d"
        ),
        ValidationCheck(
            "a <failing> check",
            "cytokines",
            "source & co",
            1.0,
            2.0,
            0.1,
            relative=True,
        ),
    ]
    page = validation_report_html(checks)
    assert page.startswith("<!DOCTYPE html>") and "1 of 2 checks passed" in page
    assert "&lt;failing&gt;" in page and "source &amp; co" in page
    assert page.count("<tr class=") == 2 and "FAIL" in page and "http" not in page


def test_run_validation_reports_a_provider_that_raises():
    def broken():
        raise RuntimeError("no data")

    checks = run_validation(
        [broken, lambda: [ValidationCheck("ok", "m", "s", 1.0, 1.0, 0.0)]]
    )
    assert [c.passed for c in checks] == [False, True]
    assert "no data" in checks[0].note
