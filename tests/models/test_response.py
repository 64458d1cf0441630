"""Tests of Lugano-style and IMWG-style response categories (cartwin.models.response).

Thresholds: Lugano CT criteria (Cheson 2014, doi:10.1200/JCO.2013.54.8800):
PR >= 50% SPD decrease, PD >= 50% increase from nadir. IMWG (Kumar 2016,
doi:10.1016/S1470-2045(16)30206-6): VGPR >= 90%, PR >= 50%, MR 25-49%
M-protein reduction; PD >= 25% above nadir with >= 0.5 g/dL absolute.
"""

from __future__ import annotations

import numpy as np
import pytest

from cartwin.errors import ModelSpecificationError
from cartwin.models.response import (
    IMWG_CATEGORIES,
    LUGANO_CATEGORIES,
    category_probabilities,
    imwg_categories,
    lugano_categories,
    response_summary,
)

T = np.array([0.0, 14.0, 28.0, 60.0, 90.0])


def spd_rows(*finals):
    # baseline 40 cm2, linear to the given day-28 value
    return np.array([[40.0, (40.0 + f) / 2, f, f, f] for f in finals])


def test_lugano_thresholds():
    cats = lugano_categories(T, spd_rows(0.5, 19.0, 20.5, 30.0), 28.0)
    assert cats.tolist() == ["CR", "PR", "SD", "SD"]


def test_lugano_progression_from_nadir():
    rows = np.array(
        [
            [40.0, 4.0, 6.0, 6.5, 6.5],  # +50% from nadir 4 -> PD
            [40.0, 0.2, 0.5, 0.5, 0.5],  # tiny regrowth: not measurable
            [40.0, 4.0, 5.9, 5.9, 5.9],
        ]
    )  # +47.5%: PR
    assert lugano_categories(T, rows, 28.0).tolist() == ["PD", "CR", "PR"]


def test_imwg_m_protein_categories():
    finals = [0.01, 0.25, 1.4, 2.2, 2.4]  # 3 g/dL at baseline
    rows = np.array([[3.0, 3.0, f, f, f] for f in finals])
    flc = np.full_like(rows, 20.0)
    cats = imwg_categories(T, rows, flc, 28.0)
    assert cats.tolist() == ["CR", "VGPR", "PR", "MR", "SD"]


def test_imwg_progression_needs_relative_and_absolute_increase():
    rows = np.array(
        [
            [3.0, 1.0, 1.6, 1.6, 1.6],  # +60%, +0.6 g/dL -> PD
            [3.0, 1.0, 1.4, 1.4, 1.4],
        ]
    )  # +40%, +0.4 g/dL -> PR
    flc = np.full_like(rows, 20.0)
    assert imwg_categories(T, rows, flc, 28.0).tolist() == ["PD", "PR"]


def test_imwg_uses_flc_when_m_protein_is_not_measurable():
    m_protein = np.full((3, 5), 0.3)
    flc = np.array(
        [
            [415.0, 100.0, 30.0, 30.0, 30.0],  # dFLC 400 -> 15: VGPR
            [415.0, 100.0, 20.0, 20.0, 20.0],  # normal FLC: CR
            [50.0, 50.0, 50.0, 50.0, 50.0],
        ]
    )  # not measurable
    cats = imwg_categories(T, m_protein, flc, 28.0)
    assert cats.tolist() == ["VGPR", "CR", "not_evaluable"]


def test_probabilities_are_shares_of_draws():
    cats = lugano_categories(T, spd_rows(0.5, 0.5, 0.5, 19.0), 28.0)
    probs = category_probabilities(cats, LUGANO_CATEGORIES)
    assert probs == {"CR": 0.75, "PR": 0.25, "SD": 0.0, "PD": 0.0}
    assert (
        sum(category_probabilities(np.array(["VGPR"]), IMWG_CATEGORIES).values()) == 1
    )


def test_response_summary_skips_days_beyond_the_grid():
    summary = response_summary(T, {"spd": spd_rows(0.5, 19.0)}, "LBCL", (28.0, 180.0))
    assert [entry["day"] for entry in summary] == [28.0]
    assert summary[0]["probabilities"]["CR"] == 0.5
    with pytest.raises(ModelSpecificationError):
        response_summary(T, {"spd": spd_rows(1.0)}, "B-ALL")
