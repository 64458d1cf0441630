"""Tests of the Friberg neutrophil model (cartwin.models.neutrophils)."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from cartwin.errors import DataError, ModelSpecificationError
from cartwin.graph.graph import SolverSettings
from cartwin.graph.spec import ScaleModel, check_model
from cartwin.models import neutrophils as nm
from cartwin.record.model import Event, PatientFacts, PatientRecord

TYPICAL = nm.MODEL.typical_params()


# -- published structure and values ------------------------------------------------


def test_published_parameter_values():
    # clinical-facts.md §6, Kloft 2006 docetaxel neutrophils (DDMODEL00000224):
    # Circ0 5.22 10^9/L, MTT 84.2 h, gamma 0.145, omega^2 0.0640/0.0192/0.128
    by_name = {p.name: p for p in nm.MODEL.parameters}
    assert by_name["circ0"].median == 5.22
    assert by_name["mtt"].median * 24.0 == pytest.approx(84.2, rel=1e-15)
    assert by_name["gamma"].median == 0.145
    assert by_name["circ0"].log_sd ** 2 == pytest.approx(0.0640)
    assert by_name["mtt"].log_sd ** 2 == pytest.approx(0.0192)
    assert by_name["sensitivity"].log_sd ** 2 == pytest.approx(0.128)
    assert nm.MODEL.observables[0].sigma == 0.424  # Netterberg log-additive residual


def test_transit_rate_is_four_over_mtt():
    # Friberg 2002: k_tr = (n + 1) / MTT with n = 3 transit compartments;
    # MTT 84.2 h gives k_tr = 4 / 3.508 d = 1.140 /d.
    y = jnp.array([3.0, 2.5, 2.0, 1.5, 1.0])
    rates = nm.MODEL.rhs(0.0, y, TYPICAL, {nm.LD_INPUT: 0.0})
    k_tr = 4.0 / TYPICAL["mtt"]
    assert k_tr == pytest.approx(1.1401, abs=5e-5)
    np.testing.assert_allclose(rates[1:], k_tr * (y[:-1] - y[1:]), rtol=1e-14)


def test_steady_state_at_circ0_without_drug():
    y0 = nm.MODEL.initial_state(TYPICAL, {})
    np.testing.assert_array_equal(y0, np.full(5, 5.22))
    assert np.all(nm.MODEL.rhs(0.0, y0, TYPICAL, {nm.LD_INPUT: 0.0}) == 0.0)
    # before the first dose the simulated ANC stays at Circ0
    before = nm.simulate_anc([-5.9, -5.5, -5.000001])
    np.testing.assert_allclose(before, 5.22, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    y=st.lists(st.floats(0.01, 20.0), min_size=5, max_size=5),
    exposure=st.floats(0.0, 3.0),
    mtt=st.floats(1.0, 10.0),
)
def test_chain_balance(y, exposure, mtt):
    # what enters the chain (net proliferation) minus what leaves (k_tr Circ)
    # equals the change of the chain's total: no cells are lost in transit
    params = {**TYPICAL, "mtt": mtt}
    y = jnp.asarray(y)
    rates = nm.MODEL.rhs(0.0, y, params, {nm.LD_INPUT: exposure})
    k_tr = 4.0 / mtt
    effect = params["sensitivity"] * params["slope_ld"] * exposure
    feedback = (params["circ0"] / y[4]) ** params["gamma"]
    production = k_tr * y[0] * (1.0 - effect) * feedback
    assert float(jnp.sum(rates)) == pytest.approx(
        float(production - k_tr * y[4]), rel=1e-9, abs=1e-12
    )


def test_exposure_matches_the_graph_channel():
    # one standard day (flu 30 + cy 500 mg/m2) is one unit, half-life 1 day
    table = nm.AXI_CEL_REGIMEN.arrays()
    assert float(nm.ld_exposure(-5.0, table)) == pytest.approx(1.0)
    assert float(nm.ld_exposure(-4.5, table)) == pytest.approx(2**-0.5)
    assert float(nm.ld_exposure(-3.0, table)) == pytest.approx(1.0 + 0.5 + 0.25)
    assert float(nm.ld_exposure(-5.01, table)) == 0.0


# -- solver verification ------------------------------------------------------------


def scipy_reference(t_days: np.ndarray) -> np.ndarray:
    """ANC from scipy's Radau on a NumPy transcription of the equations."""
    p = TYPICAL
    k_tr, k_ld = 4.0 / p["mtt"], math.log(2.0)

    def rhs(t, y, exposure_at_break, start):
        exposure = exposure_at_break * math.exp(-k_ld * (t - start))
        effect = p["sensitivity"] * p["slope_ld"] * exposure
        d_prol = (
            k_tr * y[0] * (1.0 - effect) * (p["circ0"] / y[4]) ** p["gamma"]
            - k_tr * y[0]
        )
        return [d_prol, *(k_tr * (y[i] - y[i + 1]) for i in range(4))]

    # between daily doses the exposure decays from its value at the dose
    breaks = [-6.0, -5.0, -4.0, -3.0, float(t_days[-1])]
    y, exposure, out = np.full(5, p["circ0"]), 0.0, []
    for start, end in itertools.pairwise(breaks):
        exposure = exposure * math.exp(-k_ld * 1.0) + (1.0 if start > -6.0 else 0.0)
        inside = t_days[(t_days > start) & (t_days <= end)]
        solution = solve_ivp(
            rhs,
            (start, end),
            y,
            method="Radau",
            rtol=1e-12,
            atol=1e-14,
            args=(exposure, start),
            dense_output=True,
        )
        out.extend(solution.sol(inside)[4] if inside.size else [])
        y = solution.y[:, -1]
    return np.asarray(out)


def test_converges_to_an_independent_solver_as_tolerances_tighten():
    t_days = np.array([0.0, 5.0, 10.0, 20.0])
    reference = scipy_reference(t_days)
    errors = []
    for rtol in (1e-4, 1e-6, 1e-8, 1e-10):
        tolerances = SolverSettings(solver="tsit5", rtol=rtol, atol=rtol * 1e-2)
        anc = nm.simulate_anc(t_days, settings=tolerances)
        errors.append(np.max(np.abs(anc / reference - 1.0)))
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 1e-8


# -- calibration and validation against Rejeski 2021 ----------------------------------


def test_typical_patient_has_nine_days_of_severe_neutropenia():
    # Rejeski 2021 Table 2: median duration of ANC < 500/uL (d0-d60) 9 (95% CI
    # 8-10) days, pooled and axi-cel. The calibration targets 9.0; 0.05 d is
    # the tolerance of the stored constant (5 significant digits).
    metrics = nm.typical_metrics(nm.AXI_CEL_REGIMEN)
    assert float(metrics.severe_days_to_60) == pytest.approx(9.0, abs=0.05)
    assert float(metrics.severe_days_to_30) == float(metrics.severe_days_to_60)
    # recovery follows the duration: ANC > 0.5 then > 1.0, after the nadir
    assert float(metrics.nadir_day) < float(metrics.recovery_0_5_day)
    assert float(metrics.recovery_0_5_day) < float(metrics.recovery_1_0_day) < 30.0


def test_calibration_reproduces_the_stored_constant():
    assert nm.calibrate_drug_effect() == pytest.approx(nm.SLOPE_LD, rel=1e-4)


def test_tisa_cel_regimen_within_published_interval():
    # Rejeski 2021 Table 2: tisa-cel (flu 25 + cy 250 mg/m2) median 9.5 (95%
    # CI 6-12) days; the model, calibrated on axi-cel, must fall in the CI.
    days = float(nm.typical_metrics(nm.TISA_CEL_REGIMEN).severe_days_to_60)
    assert 6.0 <= days <= 12.0
    assert days < 9.0  # lower doses, shorter neutropenia


def test_lower_baseline_anc_gives_longer_neutropenia():
    # CAR-HEMATOTOX scores ANC < 1.2 10^9/L before lymphodepletion as a risk
    grid = nm.METRIC_GRID_DAYS
    low = nm.simulate_anc(grid, params={**TYPICAL, "circ0": 1.0})
    assert float(nm.neutropenia_metrics(grid, low).severe_days_to_60) > 9.5


# -- derived quantities ---------------------------------------------------------------


def test_days_below_and_recovery_on_an_exact_curve():
    # ln ANC = |t - 5| - 3 is piecewise linear with a kink on a grid point,
    # so the log-linear interpolation of days_below is exact
    t = np.linspace(0.0, 10.0, 1001)
    anc = np.exp(np.abs(t - 5.0) - 3.0)  # below 0.5 where |t - 5| < 3 + ln 0.5
    half_width = 3.0 + math.log(0.5)
    assert nm.days_below(t, anc, 0.5, 10.0) == pytest.approx(2 * half_width, abs=1e-9)
    assert nm.recovery_day(t, anc, 0.5, 10.0) == pytest.approx(
        5.0 + half_width, abs=1e-9
    )
    assert nm.recovery_day(t, anc + 1.0, 0.5, 10.0) == 0.0  # never below
    assert nm.recovery_day(t, anc, 0.5, 6.0) == math.inf  # still below at day 6
    # a failed solve (NaN) gives NaN, not a number
    failed = nm.neutropenia_metrics(t, np.where(t > 3.0, np.nan, anc))
    assert math.isnan(float(failed.severe_days_to_60))


def test_forecast_intervals_from_prior_draws():
    draws = nm.sample_parameters(np.random.default_rng(2021), 64)
    outlook = nm.forecast_neutropenia(draws)
    severe = outlook.severe_days_to_60
    assert outlook.n_failed == 0 and outlook.n_draws == 64
    assert severe.lower < severe.median < severe.upper
    assert severe.median == pytest.approx(9.0, abs=1.0)  # near the typical patient
    assert outlook.recovery_0_5_day.median < outlook.recovery_1_0_day.median
    with pytest.raises(ModelSpecificationError, match="level"):
        nm.forecast_neutropenia(draws, level=1.0)


def test_hematotox_comparison():
    # Rejeski 2021 Table 3, pooled validation: HT-low 5.5 (5-8), HT-high 12 (10-16)
    high = nm.compare_with_hematotox(11.0, 3)
    assert high.risk_group == "high" and high.reference_median_days == 12.0
    assert high.within_reference_ci and high.difference_days == pytest.approx(-1.0)
    low = nm.compare_with_hematotox(9.0, "low")
    assert low.reference_ci_days == (5.0, 8.0) and not low.within_reference_ci
    assert nm.compare_with_hematotox(5.5, 1).risk_group == "low"
    assert "Rejeski 2021 Table 3" in high.summary()
    with pytest.raises(ModelSpecificationError, match="risk group"):
        nm.compare_with_hematotox(9.0, "medium")


# -- the graph node and the record ----------------------------------------------------


def test_model_implements_the_scale_model_protocol():
    assert isinstance(nm.MODEL, ScaleModel)
    check_model(nm.MODEL)
    y = nm.MODEL.initial_state(TYPICAL, {})
    assert float(nm.MODEL.observe("anc", 0.0, y, TYPICAL)) == 5.22
    assert float(nm.MODEL.couplings(0.0, y, TYPICAL)["anc"]) == 5.22
    with pytest.raises(ModelSpecificationError, match="'il6'"):
        nm.MODEL.observe("il6", 0.0, y, TYPICAL)


def record_with(*events: Event) -> PatientRecord:
    infusion = dt.datetime(2024, 1, 10, 10, 0, tzinfo=dt.UTC)
    return PatientRecord(
        PatientFacts("p1"),
        events=(
            Event("infusion", infusion, name="axi-cel", dose=1e8, dose_unit="{cells}"),
            *events,
        ),
    )


def ld_event(day: float, name: str, dose: float, unit: str = "mg/m2") -> Event:
    start = dt.datetime(2024, 1, 10, 10, 0, tzinfo=dt.UTC) + dt.timedelta(days=day)
    return Event("lymphodepletion", start, name=name, dose=dose, dose_unit=unit)


def test_regimen_from_record():
    record = record_with(
        ld_event(-5, "Fludarabine", 30.0), ld_event(-5, "cyclophosphamide", 500.0)
    )
    regimen = nm.regimen_from_record(record)
    assert [d.drug for d in regimen.doses] == ["fludarabine", "cyclophosphamide"]
    assert regimen.start_day == -5.0
    assert sum(d.exposure_units for d in regimen.doses) == pytest.approx(1.0)
    with pytest.raises(DataError, match="must be given in mg/m2"):
        nm.regimen_from_record(record_with(ld_event(-5, "fludarabine", 55.0, "mg")))
    with pytest.raises(DataError, match="'alemtuzumab'"):
        nm.regimen_from_record(record_with(ld_event(-5, "alemtuzumab", 20.0)))
    with pytest.raises(DataError, match="no lymphodepletion"):
        nm.regimen_from_record(record_with())
