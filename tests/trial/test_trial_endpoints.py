"""Trial endpoints: published interval examples, Kaplan-Meier, Cox, sample sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, norm

from cartwin.errors import DataError
from cartwin.trial.config import Arm, Trial
from cartwin.trial.endpoints import (
    MAX_KM_POINTS,
    compute_endpoints,
    endpoint_rows,
    newcombe_difference,
    sample_size,
    schoenfeld_events,
    two_proportion_p_value,
    wilson_interval,
)

# Values printed to 4 decimals in the papers: tolerance half a unit of the 4th.
PRINTED = 5e-5


@pytest.mark.parametrize(
    ("events", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
     (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_1998_table_1(events, n, low, high):
    # Newcombe RG, Stat Med 1998;17:857-872, Table I, method 3 (score, no
    # continuity correction), 95 % intervals
    got = wilson_interval(events, n, alpha=0.05)
    assert got == pytest.approx((low, high), abs=PRINTED)


@pytest.mark.parametrize(
    ("counts", "low", "high"),
    [((56, 70, 48, 80), 0.0524, 0.3339), ((9, 10, 3, 10), 0.1705, 0.8090),
     ((6, 7, 2, 7), 0.0582, 0.8062), ((5, 56, 0, 29), -0.0381, 0.1926),
     ((0, 10, 0, 20), -0.1611, 0.2775), ((10, 10, 0, 20), 0.6791, 1.0000)],
)
def test_newcombe_hybrid_matches_newcombe_1998_table_2(counts, low, high):
    # Newcombe RG, Stat Med 1998;17:873-890, Table II, method 10 (hybrid score)
    x1, n1, x2, n2 = counts
    d, got_low, got_high = newcombe_difference(x1, n1, x2, n2, alpha=0.05)
    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert (got_low, got_high) == pytest.approx((low, high), abs=PRINTED)


def test_z_test_equals_pearson_chi_square():
    # the pooled z-test is Pearson's chi-square on the 2x2 table (z^2 = X^2)
    table = np.array([[56, 14], [48, 32]])
    _, p, _, _ = chi2_contingency(table, correction=False)
    assert two_proportion_p_value(56, 70, 48, 80) == pytest.approx(p, rel=1e-12)
    assert two_proportion_p_value(0, 10, 0, 20) == 1.0


def test_sample_size_two_proportions():
    # 0.6 vs 0.4, alpha 0.05, power 0.8: 96.9 -> 97 per arm by the normal
    # approximation; 106.7 -> 107 with the Fleiss-Tytun-Ury correction
    # (Fleiss, Levin, Paik 2003, Statistical Methods for Rates and Proportions,
    # chapter 4; hand computation: (1.95996 sqrt(0.5) + 0.84162 sqrt(0.48))^2
    # / 0.2^2 = 96.92, and 96.92/4 (1 + sqrt(1 + 4 / (96.92 * 0.2)))^2 = 106.7)
    assert sample_size(0.6, 0.4) == 97
    assert sample_size(0.4, 0.6) == 97
    assert sample_size(0.6, 0.4, continuity_correction=True) == 107
    assert sample_size(0.6, 0.4, power=0.9) > 97
    with pytest.raises(ValueError):
        sample_size(0.5, 0.5)


def test_schoenfeld_events():
    # 4 (1.95996 + 0.84162)^2 / ln(0.7)^2 = 246.8 -> 247 events (Schoenfeld 1983)
    assert schoenfeld_events(0.7) == 247
    assert schoenfeld_events(1 / 0.7) == 247
    with pytest.raises(ValueError):
        schoenfeld_events(1.0)


# -- outcome tables ---------------------------------------------------------------

# Ten patients, PFS by hand: S = 0.9 (t1), 0.8 (t2), censored t3, 0.6857 (t4),
# 0.5714 (t5), censored t6, 0.4286 (t7) -> median 7 days.
HAND_DAYS = np.arange(1.0, 11.0)
HAND_EVENT = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 0], dtype=bool)


def _trial(*arms: Arm, endpoints=("orr", "crs_ge3", "pfs"), horizon=365.0) -> Trial:
    return Trial(name="test", disease="LBCL", arms=arms, endpoints=endpoints,
                 reference_arm=arms[0].name, horizon_days=horizon)


def _arm(name: str) -> Arm:
    return Arm(name, "axi-cel", dose_cells_per_kg=2e6)


def _outcomes(arm: str, days, event, **columns) -> pd.DataFrame:
    n = len(days)
    frame = pd.DataFrame({
        "arm": arm, "patient": np.arange(n), "weight": 1.0, "eligible": True,
        "solve_ok": True, "best_response": "PD", "crs_grade": 0,
        "anc_days_below_500": np.nan, "pfs_days": np.asarray(days, float),
        "pfs_event": np.asarray(event, bool),
    })
    for key, value in columns.items():
        frame[key] = value
    return frame


def _greenwood_loglog(days, event, z):
    # Kaplan-Meier with Greenwood variance and log(-log) interval, by hand
    s, var_sum, rows = 1.0, 0.0, {}
    for t in np.unique(days[event]):
        at_risk, died = np.sum(days >= t), np.sum(days[event] == t)
        s *= 1 - died / at_risk
        var_sum += died / (at_risk * (at_risk - died))
        se = math.sqrt(var_sum) / abs(math.log(s))
        rows[t] = (s, s ** math.exp(z * se), s ** math.exp(-z * se))
    return rows


def test_kaplan_meier_median_and_interval_by_hand():
    result = compute_endpoints(_outcomes("a", HAND_DAYS, HAND_EVENT), _trial(_arm("a")))
    pfs = result["arms"]["a"]["pfs"]
    assert pfs["median_days"] == 7.0 and pfs["median_reached"]
    assert (pfs["events"], pfs["n"]) == (7, 10)
    # median interval: first times the lower / upper band fall to <= 0.5
    band = _greenwood_loglog(HAND_DAYS, HAND_EVENT, norm.ppf(0.975))
    low = min(t for t, (_, lo, _) in band.items() if lo <= 0.5)
    high = min(t for t, (_, _, hi) in band.items() if hi <= 0.5)
    assert (pfs["low"], pfs["high"]) == (low, high) == (1.0, 9.0)
    curve = result["km"]["a"]
    at_1 = curve["t_days"].index(1.0)
    assert (curve["survival"][at_1], curve["low"][at_1], curve["high"][at_1]) == \
        pytest.approx(band[1.0], rel=1e-9)


def test_landmarks_read_the_step_function():
    # 6 months = 182.6 d; 12 months = 365.25 d reads S(365) at a 365-d horizon
    days = np.array([100.0, 200.0, 300.0, 365.0, 365.0])
    event = np.array([1, 1, 1, 0, 0], dtype=bool)
    pfs = compute_endpoints(_outcomes("a", days, event), _trial(_arm("a")))
    pfs = pfs["arms"]["a"]["pfs"]
    assert pfs["at_6_months"] == pytest.approx(0.8)
    assert pfs["at_12_months"] == pytest.approx(0.4)
    short = compute_endpoints(_outcomes("a", days / 2, event), _trial(_arm("a")))
    assert short["arms"]["a"]["pfs"]["at_12_months"] is None


def test_identical_arms_have_hazard_ratio_one():
    frame = pd.concat([_outcomes("a", HAND_DAYS, HAND_EVENT),
                       _outcomes("b", HAND_DAYS, HAND_EVENT)])
    result = compute_endpoints(frame, _trial(_arm("a"), _arm("b")))
    (row,) = [c for c in result["comparisons"] if c["endpoint"] == "pfs"]
    assert row["measure"] == "hazard ratio" and row["reference"] == "a"
    assert row["estimate"] == pytest.approx(1.0, abs=1e-6)
    assert row["low"] < 1.0 < row["high"]
    assert row["p_value"] == pytest.approx(1.0)


def test_better_arm_has_hazard_ratio_below_one():
    # exponential PFS, hazard 1/100 d vs 1/200 d: true HR 0.5, 400 per arm
    rng = np.random.default_rng(20260101)
    frames = []
    for name, mean_days in (("ref", 100.0), ("better", 200.0)):
        days = rng.exponential(mean_days, 400)
        frames.append(_outcomes(name, np.minimum(days, 365.0), days < 365.0))
    result = compute_endpoints(pd.concat(frames), _trial(_arm("ref"), _arm("better")))
    (row,) = [c for c in result["comparisons"] if c["endpoint"] == "pfs"]
    assert row["arm"] == "better" and row["high"] < 1.0
    assert row["low"] < 0.5 < row["high"] or abs(row["estimate"] - 0.5) < 0.1
    assert row["p_value"] < 1e-6
    (size,) = [s for s in result["sample_size"] if s["endpoint"] == "pfs"]
    assert size["events"] == schoenfeld_events(row["estimate"])
    assert size["per_arm"] > size["events"] / 2


def test_arm_without_events_reports_undefined_hazard_ratio():
    frame = pd.concat([_outcomes("a", HAND_DAYS, HAND_EVENT),
                       _outcomes("b", np.full(10, 365.0), np.zeros(10, bool))])
    result = compute_endpoints(frame, _trial(_arm("a"), _arm("b")))
    (row,) = [c for c in result["comparisons"] if c["endpoint"] == "pfs"]
    assert row["estimate"] is None and row["low"] is None
    assert "no progression event in 'b'" in row["note"]
    assert 0 < row["p_value"] < 0.05
    b = result["arms"]["b"]["pfs"]
    assert b["median_days"] is None and not b["median_reached"]
    assert not [s for s in result["sample_size"] if s["endpoint"] == "pfs"]


def test_proportions_use_only_eligible_solved_rows():
    frame = _outcomes("a", HAND_DAYS, HAND_EVENT,
                      best_response=["CR", "PR", "SD", "PD", "CR"] * 2,
                      crs_grade=[0, 1, 2, 3, 4] * 2)
    frame.loc[0, "eligible"] = False      # a CR, not eligible
    frame.loc[4, "solve_ok"] = False      # a CR, solve failed
    entry = compute_endpoints(frame, _trial(_arm("a")))["arms"]["a"]
    assert (entry["n"], entry["n_eligible"], entry["n_analysed"],
            entry["n_failed"]) == (10, 9, 8, 1)
    orr = entry["orr"]
    assert (orr["events"], orr["n"]) == (4, 8)
    assert (orr["low"], orr["high"]) == pytest.approx(wilson_interval(4, 8))
    assert entry["crs_ge3"]["events"] == 3


def test_weighted_proportion_uses_kish_effective_n():
    weight = np.array([2.0, 2.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 0.5, 0.5])
    crs = [3, 3, 0, 0, 3, 0, 0, 0, 0, 0]
    frame = _outcomes("a", HAND_DAYS, HAND_EVENT, weight=weight, crs_grade=crs)
    entry = compute_endpoints(frame, _trial(_arm("a")))["arms"]["a"]["crs_ge3"]
    # p = (2 + 2 + 0.5) / 10 = 0.45; n_eff = 10^2 / 13 = 7.692
    assert entry["estimate"] == pytest.approx(0.45)
    assert entry["n_effective"] == pytest.approx(100 / 13)
    assert (entry["low"], entry["high"]) == pytest.approx(
        wilson_interval(0.45 * 100 / 13, 100 / 13))
    assert entry["weighted"] and entry["events"] == 3


def test_weighted_survival_runs_without_warnings():
    weight = np.linspace(0.5, 1.5, 10)
    frame = pd.concat([_outcomes("a", HAND_DAYS, HAND_EVENT, weight=weight),
                       _outcomes("b", HAND_DAYS + 2, HAND_EVENT, weight=weight)])
    result = compute_endpoints(frame, _trial(_arm("a"), _arm("b")))
    assert "frequencies" in result["arms"]["a"]["pfs"]["note"]
    (row,) = [c for c in result["comparisons"] if c["endpoint"] == "pfs"]
    assert 0 < row["estimate"] < 1


def test_missing_model_output_is_unavailable_not_a_crash():
    trial = _trial(_arm("a"), endpoints=("severe_neutropenia_gt14d", "cr_m3", "orr"))
    entry = compute_endpoints(_outcomes("a", HAND_DAYS, HAND_EVENT), trial)
    entry = entry["arms"]["a"]
    assert not entry["severe_neutropenia_gt14d"]["available"]
    assert "anc_days_below_500" in entry["severe_neutropenia_gt14d"]["reason"]
    assert "response_d90" in entry["cr_m3"]["reason"]
    assert entry["orr"]["available"]


def test_observed_arm_and_synthetic_control_comparison():
    # ZUMA-1 (clinical-facts §8): ORR 82 % of 101 -> round(82.82) = 83 responders
    observed = Arm("ZUMA-1", observed={"n": 101, "orr": 0.82})
    responses = ["CR"] * 70 + ["PD"] * 30
    frame = _outcomes("a", np.full(100, 365.0), np.zeros(100, bool),
                      best_response=responses)
    result = compute_endpoints(frame, _trial(_arm("a"), observed))
    orr = result["arms"]["ZUMA-1"]["orr"]
    assert (orr["events"], orr["n"]) == (83, 101)
    assert (orr["low"], orr["high"]) == pytest.approx(wilson_interval(83, 101))
    assert not result["arms"]["ZUMA-1"]["pfs"]["available"]
    (row,) = [c for c in result["comparisons"] if c["reference"] == "ZUMA-1"
              and c["endpoint"] == "orr"]
    assert row["arm"] == "a" and row["measure"] == "risk difference"
    expected = newcombe_difference(70, 100, 83, 101)
    assert (row["estimate"], row["low"], row["high"]) == pytest.approx(expected)


def test_result_is_json_and_rows_are_flat():
    frame = pd.concat([_outcomes("a", HAND_DAYS, HAND_EVENT),
                       _outcomes("b", np.full(10, 365.0), np.zeros(10, bool))])
    result = compute_endpoints(frame, _trial(_arm("a"), _arm("b")))
    json.dumps(result, allow_nan=False)
    rows = endpoint_rows(result)
    # per arm: orr, crs_ge3, 3 PFS rows; then 3 comparisons (orr, crs, pfs)
    assert len(rows) == 2 * 5 + 3
    assert all(list(r) == list(rows[0]) for r in rows)
    assert {r["measure"] for r in rows} >= {"proportion", "median PFS (days)",
                                            "risk difference", "hazard ratio"}


def test_long_curves_are_thinned():
    days = np.linspace(1.0, 365.0, 3000)
    result = compute_endpoints(_outcomes("a", days, np.ones(3000, bool)),
                               _trial(_arm("a")))
    curve = result["km"]["a"]
    assert len(curve["t_days"]) == MAX_KM_POINTS
    assert np.all(np.diff(curve["survival"]) <= 0)


def test_bad_tables_raise_data_error():
    trial = _trial(_arm("a"), _arm("b"))
    frame = _outcomes("a", HAND_DAYS, HAND_EVENT)
    with pytest.raises(DataError, match="no row for simulated arm 'b'"):
        compute_endpoints(frame, trial)
    with pytest.raises(DataError, match="missing column"):
        compute_endpoints(frame.drop(columns="solve_ok"), _trial(_arm("a")))
    with pytest.raises(DataError, match="not simulated arms"):
        compute_endpoints(frame, _trial(_arm("c")))


def test_sample_sizes_beyond_practical_are_stated_not_printed():
    from cartwin.trial.endpoints import PRACTICAL_PER_ARM, _practical

    tiny = _practical({"per_arm": 2_488_880_269, "events": None, "note": None})
    assert tiny["per_arm"] is None and "too small for a practical trial" in tiny["note"]
    edge = _practical({"per_arm": PRACTICAL_PER_ARM, "events": None, "note": None})
    assert edge["per_arm"] == PRACTICAL_PER_ARM and edge["note"] is None
