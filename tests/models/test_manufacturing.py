"""Tests of the manufacturing model (cartwin.models.manufacturing)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from cartwin.errors import DataError, ModelSpecificationError
from cartwin.graph.spec import ScaleModel, check_model
from cartwin.models import manufacturing as mf

TYPICAL = {p.name: p.median for p in mf.MANUFACTURING_PARAMETERS}


def test_culture_solves_the_logistic_equation():
    # after the lag, dN/dt = r N (1 - N/K); checked against scipy's LSODA
    covariates = mf.Leukapheresis(5e9).covariates()
    t = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 14.0, 30.0])
    total, memory = mf.culture(TYPICAL, covariates, t)
    seeded = TYPICAL["seed_cap"]  # 5e9 x 0.9 viable cells exceed the cap
    np.testing.assert_allclose(total[t <= TYPICAL["lag_days"]], seeded, rtol=1e-15)
    r, k = TYPICAL["growth_rate"], TYPICAL["capacity"]
    reference = solve_ivp(
        lambda _, n: r * n * (1 - n / k),
        (2.0, 30.0),
        [seeded],
        method="LSODA",
        rtol=1e-12,
        atol=1.0,
        t_eval=t[t >= 2.0],
    )
    np.testing.assert_allclose(total[t >= 2.0], reference.y[0], rtol=1e-8)
    assert float(total[-1]) == pytest.approx(k, rel=1e-3)  # saturates at capacity
    # the memory-like share decays at k_diff after the lag
    np.testing.assert_allclose(
        memory, 0.4 * np.exp(-0.1 * np.maximum(t - 2.0, 0.0)), rtol=1e-14
    )


def test_poor_collection_seeds_fewer_cells():
    covariates = mf.Leukapheresis(6e7, viability=0.5).covariates()
    total, _ = mf.culture(TYPICAL, covariates, 0.0)
    assert float(total) == pytest.approx(3e7)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cd3_cells", 0.0),
        ("viability", 1.2),
        ("memory_fraction", 0.0),
        ("cd4_cd8_ratio", -1.0),
        ("weight_kg", math.nan),
    ],
)
def test_leukapheresis_rejects_impossible_values(field, value):
    values = {"cd3_cells": 1e9, field: value}
    with pytest.raises(DataError, match=f"Leukapheresis.{field}"):
        mf.Leukapheresis(**values)


def test_typical_patient_reaches_the_axi_cel_dose():
    # ZUMA-1 (Neelapu 2017): product manufactured for 110/111 (99%) [U, see
    # module]; axi-cel target 2e6 CAR+ cells/kg (1.4e8 at 70 kg). 20 000
    # draws give a Monte Carlo SD below 0.001 near 0.99.
    outlook = mf.forecast_manufacturing(
        mf.Leukapheresis(5e9), rng=np.random.default_rng(17)
    )
    assert outlook.target_cells == pytest.approx(1.4e8)
    assert 0.97 <= outlook.probability_target <= 1.0
    assert (
        outlook.car_cells_interval[0]
        < outlook.car_cells_median
        < outlook.car_cells_interval[1]
    )


def test_vein_to_vein_median_matches_zuma1():
    # ZUMA-1: median 17 days leukapheresis -> product delivery [U]; the model
    # composes 6 culture + 8 release + 3 logistics days (medians), so the
    # median of the sum lies within half a day of 17.
    outlook = mf.forecast_manufacturing(
        mf.Leukapheresis(5e9), rng=np.random.default_rng(3)
    )
    assert outlook.vein_to_vein_median == pytest.approx(
        mf.ZUMA1_VEIN_TO_VEIN_DAYS, abs=0.5
    )
    low, high = outlook.vein_to_vein_interval
    assert mf.AXI_CEL_PROCESS.culture_days < low < outlook.vein_to_vein_median < high


def test_harder_patients_have_lower_probability_and_longer_waits():
    rng = np.random.default_rng(5)
    typical = mf.forecast_manufacturing(mf.Leukapheresis(5e9), rng=rng)
    heavy = mf.forecast_manufacturing(mf.Leukapheresis(5e9, weight_kg=120.0), rng=rng)
    poor = mf.forecast_manufacturing(mf.Leukapheresis(5e7, viability=0.6), rng=rng)
    assert (
        poor.probability_target < heavy.probability_target < typical.probability_target
    )
    # more failed runs: a second manufacture lengthens the upper tail
    assert poor.vein_to_vein_interval[1] > typical.vein_to_vein_interval[1] + 5.0
    # the cap of 2e8 cells keeps very heavy patients' target finite
    assert mf.AXI_CEL_PROCESS.target_cells(150.0) == 2e8


def test_same_seed_same_outlook():
    first = mf.forecast_manufacturing(
        mf.Leukapheresis(1e9), rng=np.random.default_rng(9)
    )
    second = mf.forecast_manufacturing(
        mf.Leukapheresis(1e9), rng=np.random.default_rng(9)
    )
    assert first == second


def test_graph_node_writes_product_composition():
    model = mf.ManufacturingModel()
    assert isinstance(model, ScaleModel)
    check_model(model)
    leuka = mf.Leukapheresis(5e9, cd4_cd8_ratio=3.0, memory_fraction=0.6)
    y = model.initial_state(TYPICAL, leuka.covariates())
    couplings = model.couplings(0.0, y, TYPICAL)
    # 6 culture days, 2 of lag: memory share 0.6 exp(-0.1 x 4)
    assert float(couplings["product_memory_fraction"]) == pytest.approx(
        0.6 * math.exp(-0.4)
    )
    assert float(couplings["product_cd4_fraction"]) == pytest.approx(0.75)
    # CAR+ cells: transduction 0.5 of the logistic total at day 6
    total, _ = mf.culture(TYPICAL, leuka.covariates(), 6.0)
    assert float(jnp.sum(y)) == pytest.approx(0.5 * float(total))
    assert jnp.all(model.rhs(3.0, y, TYPICAL, {}) == 0.0)
    with pytest.raises(ModelSpecificationError, match="no observable"):
        model.observe("cart_flow", 0.0, y, TYPICAL)


def test_richer_starting_material_gives_a_more_memory_rich_product():
    model = mf.ManufacturingModel()
    shares = []
    for fraction in (0.2, 0.4, 0.8):
        y = model.initial_state(
            TYPICAL, mf.Leukapheresis(5e9, memory_fraction=fraction).covariates()
        )
        shares.append(
            float(model.couplings(0.0, y, TYPICAL)["product_memory_fraction"])
        )
    assert shares == sorted(shares)
