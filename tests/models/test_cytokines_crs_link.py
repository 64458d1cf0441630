"""Prior-predictive check of the CRS link against ZUMA-1 (clinical-facts §8).

ZUMA-1 (axi-cel, n = 101; Ther Adv Hematol 2019 Table 4,
doi:10.1177/2040620719841581): CRS any grade 93%, grade >= 3 13%. The link
was fitted on 2000 prior-predictive patients (seed 20190101); here fresh
populations of 200 patients (other seeds) must land within 5 percentage
points of both rates. Tolerance: the mean of 200 per-patient probabilities
has a standard error of about 0.015 (any) and 0.02 (>= 3), so 0.05 is 2.5-3
standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from cartwin.models.cytokines import (
    CRS_LINK,
    ZUMA1_CRS_ANY,
    ZUMA1_CRS_SEVERE,
    crs_exceedance,
    fit_crs_link,
    validation_checks,
    zuma1_prior_peaks,
)


@pytest.fixture(scope="module")
def fresh_peaks() -> np.ndarray:
    return zuma1_prior_peaks(200, seed=1)


def test_prior_predictive_crs_rates_match_zuma1(fresh_peaks):
    rates = crs_exceedance(fresh_peaks).mean(axis=0)
    assert rates[0] == pytest.approx(ZUMA1_CRS_ANY, abs=0.05)
    assert rates[2] == pytest.approx(ZUMA1_CRS_SEVERE, abs=0.05)
    # ordered: any > >= 2 > >= 3 > 4
    assert rates[0] > rates[1] > rates[2] > rates[3]


def test_refitting_on_a_fresh_population_gives_similar_constants(fresh_peaks):
    refit = fit_crs_link(fresh_peaks)
    assert np.allclose(refit.thresholds, CRS_LINK.thresholds, atol=0.6)
    assert refit.scale == pytest.approx(CRS_LINK.scale, rel=0.3)


def test_population_validation_checks_pass():
    checks = validation_checks(200, seed=2)
    zuma = [c for c in checks if "CRS" in c.name]
    assert len(zuma) == 2 and all(c.passed for c in zuma)
