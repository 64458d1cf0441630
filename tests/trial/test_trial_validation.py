"""Simulated arms against the published cohorts of clinical-facts §8."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from scipy import stats

from cartwin.errors import TrialConfigError
from cartwin.trial.validation import PUBLISHED, cohort, exact_interval, validate


def test_published_numbers_are_those_of_clinical_facts():
    # clinical-facts §8, Ther Adv Hematol 2019, doi:10.1177/2040620719841581, Table 4
    zuma = PUBLISHED["ZUMA-1"]
    assert (zuma["n"], zuma["orr"], zuma["cr"], zuma["crs_ge3"], zuma["icans_ge3"]) == (
        101, 0.82, 0.58, 0.13, 0.31)
    assert zuma["pfs_median_days"] == pytest.approx(5.9 * 30.44)
    rw = PUBLISHED["axi-cel real world"]
    assert (rw["n"], rw["orr"], rw["cr"], rw["crs_ge3"], rw["bridging_fraction"]) == (
        274, 0.81, 0.57, 0.07, 0.55)


def test_exact_interval_is_clopper_pearson():
    # 13 of 101: the beta quantiles of Clopper & Pearson 1934
    low, high = exact_interval(0.13, 101)
    assert low == pytest.approx(stats.beta.ppf(0.025, 13, 89), abs=1e-9)
    assert high == pytest.approx(stats.beta.ppf(0.975, 14, 88), abs=1e-9)
    assert 0.0703 < low < 0.0704 and 0.2100 < high < 0.2101


def test_unknown_cohort_is_a_clear_error():
    with pytest.raises(TrialConfigError, match="'KarMMa-9' is not a published cohort"):
        cohort("KarMMa-9", "trial.toml")


def _trial(**population):
    return SimpleNamespace(validate_against="ZUMA-1", reference_arm="a",
                           source="t.toml", population=population)


def _endpoints(orr, s6=(0.5, 0.47, 0.53)):
    return {"arms": {"a": {
        "orr": {"estimate": orr, "low": orr - 0.02, "high": orr + 0.02},
        "crs_ge3": {"estimate": 0.10, "low": 0.08, "high": 0.12},
        "pfs": {"median_days": 270.0, "low": 180.0, "high": 270.0,
                "at_6_months": s6[0], "at_6_months_low": s6[1],
                "at_6_months_high": s6[2]},
    }}}


def test_rows_agree_inside_the_published_interval_only():
    low, high = exact_interval(0.82, 101)
    inside = validate(_trial(), _endpoints(high - 1e-6))
    outside = validate(_trial(), _endpoints(high + 1e-3))
    assert inside[0]["endpoint"] == "orr" and inside[0]["within"]
    assert not outside[0]["within"]
    assert inside[0]["published_low"] == pytest.approx(low)


def test_calibration_and_construction_are_stated():
    rows = {r["endpoint"]: r for r in validate(_trial(), _endpoints(0.8))}
    assert "by construction" in rows["crs_ge3"]["note"]
    # the population is calibrated to another cohort by default
    assert "not this cohort's" in rows["orr"]["note"]
    same = {r["endpoint"]: r for r in
            validate(_trial(calibrate_to="ZUMA-1"), _endpoints(0.8))}
    assert "calibration target" in same["orr"]["note"]


def test_pfs_median_checked_through_survival_at_six_months():
    rows = {r["endpoint"]: r for r in validate(_trial(), _endpoints(0.8))}
    assert rows["pfs_at_median"]["within"] and rows["pfs_at_median"]["published"] == 0.5
    late = {r["endpoint"]: r for r in
            validate(_trial(), _endpoints(0.8, (0.56, 0.53, 0.59)))}
    assert not late["pfs_at_median"]["within"]
