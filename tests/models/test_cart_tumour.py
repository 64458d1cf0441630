"""Tests of the mechanistic CAR T / tumour model (cartwin.models.cart_tumour)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from cartwin.errors import ModelSpecificationError
from cartwin.graph.spec import ScaleModel, check_model
from cartwin.models.cart_tumour import (
    _SMOOTH_RATE,
    KIMMEL_2021,
    CarTumourModel,
    kimmel_growth_rate,
    validation_checks,
)

LBCL = CarTumourModel("LBCL")
NO_INPUTS = {
    "cart_infusion_rate": 0.0,
    "ld_exposure": 0.0,
    "bridging_exposure": 0.0,
    "steroid_exposure": 0.0,
    "product_memory_fraction": 0.3,
}


def medians(model: CarTumourModel = LBCL) -> dict[str, float]:
    return {p.name: p.median for p in model.parameters}


def test_kimmel_growth_rate_reproduces_published_values():
    # clinical-facts §5.2 (Kimmel 2021, BioModels units): r_C(6.36) = 0.550 /d
    # printed to 3 digits, so half a unit of the last digit; r_C(K_N) = rho_C
    params = {"rho_c": 0.0251, "b_reconst": 0.525, "a_signal": 0.423, "k_n": 500.0}
    assert float(kimmel_growth_rate(6.36, params)) == pytest.approx(0.550, abs=5e-4)
    assert float(kimmel_growth_rate(500.0, params)) == pytest.approx(0.0251, abs=1e-12)


def test_model_implements_the_protocol_for_both_diseases():
    for disease, extra in (("LBCL", {"spd"}), ("MM", {"m_protein", "involved_flc"})):
        model = CarTumourModel(disease)
        assert isinstance(model, ScaleModel)
        check_model(model)
        quantities = {o.quantity for o in model.observables}
        assert {"cart_flow", "cart_qpcr", "alc", "ldh"} | extra == quantities
    assert len(CarTumourModel("MM").states) == len(LBCL.states) + 1


def test_unsupported_disease_is_refused_with_its_name():
    with pytest.raises(ModelSpecificationError, match="B-ALL"):
        CarTumourModel("B-ALL")


def test_every_validation_check_passes():
    # Kimmel r_C values, Kimmel special case and CARTmath special cases
    # against independent scipy integrations of the published equations
    checks = validation_checks()
    failed = [(c.name, c.expected, c.obtained) for c in checks if not c.passed]
    assert failed == []
    names = " ".join(c.name for c in checks)
    assert "CARTmath HDLM-2" in names and "CARTmath RAJI" in names
    assert sum("Kimmel special case" in c.name for c in checks) == 6


def test_phenotype_transitions_conserve_car_t_cells():
    # growth, death, killing and infusion off: E + M + X is constant although
    # cells move between phenotypes (the memory floor eps/2 is cancelled by
    # d_m = eps/2, see reduced_parameters)
    params = {
        **medians(),
        "k_exp": 0.0,
        "rho_c": 0.0,
        "b_reconst": 0.0,
        "d_e": 0.0,
        "d_x": 0.0,
        "d_m": 0.5 * _SMOOTH_RATE,
        "r_b": 0.0,
        "gamma_b": 0.0,
        "r_n": 0.0,
        "k_em": 0.05,
        "k_me": 0.2,
        "k_ex": 0.3,
    }
    rhs = jax.jit(lambda t, y: LBCL.rhs(t, y, params, NO_INPUTS))
    y0 = [300.0, 20.0, 5.0, 1.0, 50.0]
    sol = solve_ivp(
        lambda t, y: np.asarray(rhs(t, jnp.asarray(y))),
        (0, 100),
        y0,
        rtol=1e-11,
        atol=1e-12,
        t_eval=[0, 10, 50, 100],
    )
    total = sol.y[1] + sol.y[2] + sol.y[3]
    assert np.allclose(total, 26.0, rtol=1e-9)
    assert sol.y[3, -1] > 1.0 and sol.y[1, -1] < 20.0  # cells did move


def test_steroids_reduce_antigen_driven_expansion_but_not_killing():
    y = jnp.array([50.0, 10.0, 2.0, 0.0, 80.0])
    plain = LBCL.rhs(0.0, y, medians(), NO_INPUTS)
    treated = LBCL.rhs(0.0, y, medians(), {**NO_INPUTS, "steroid_exposure": 1.0})
    assert treated[1] < plain[1]
    assert treated[4] == pytest.approx(float(plain[4]))  # tumour killing unchanged


def test_lymphodepletion_depletes_normal_t_cells():
    y = jnp.array([300.0, 0.0, 0.0, 0.0, 80.0])
    params = medians()
    plain = LBCL.rhs(0.0, y, params, NO_INPUTS)
    depleted = LBCL.rhs(0.0, y, params, {**NO_INPUTS, "ld_exposure": 1.0})
    assert float(plain[0] - depleted[0]) == pytest.approx(params["k_ld"] * 300.0)


def test_infusion_splits_by_product_memory_fraction():
    y = jnp.array([300.0, 0.0, 0.0, 0.0, 0.0])
    inputs = {**NO_INPUTS, "cart_infusion_rate": 5.0e8, "product_memory_fraction": 0.25}
    rates = LBCL.rhs(0.0, y, medians(), inputs)
    assert float(rates[1]) == pytest.approx(0.75)  # 5e8 cells/d = 1 /uL/d
    assert float(rates[2]) == pytest.approx(0.25)


def test_observation_models():
    params = medians()
    y = jnp.array([210.0, 6.0, 3.0, 1.0, 27.0])

    def observe(quantity):
        return float(LBCL.observe(quantity, 0.0, y, params))

    assert observe("cart_flow") == pytest.approx(10.0)
    assert observe("cart_qpcr") == pytest.approx(10.0 * params["qpcr_per_cell"])
    assert observe("alc") == pytest.approx(220.0 / (1000.0 * params["t_fraction"]))
    assert observe("spd") == pytest.approx(params["spd_coef"] * 9.0)  # 27^(2/3) = 9
    assert observe("ldh") == pytest.approx(
        params["ldh_base"] + 27.0 * params["ldh_per_tumour"]
    )
    with pytest.raises(ModelSpecificationError, match="m_protein"):
        LBCL.observe("m_protein", 0.0, y, params)


def test_myeloma_m_protein_relaxes_to_its_steady_state():
    # Singh 2021: dP/dt = k (m_B B - P), elimination 0.117 /d
    model = CarTumourModel("MM")
    params = medians(model)
    y = jnp.array([300.0, 0.0, 0.0, 0.0, 200.0, 1.0])
    rate = float(model.rhs(0.0, y, params, NO_INPUTS)[5])
    assert params["k_mprot"] == 0.117
    assert rate == pytest.approx(0.117 * (params["m_per_tumour"] * 200.0 - 1.0))
    assert float(model.observe("m_protein", 0.0, y, params)) == 1.0


def test_initial_state_has_no_car_t_before_infusion():
    y0 = np.asarray(LBCL.initial_state(medians(), {}))
    assert y0.tolist() == [300.0, 0.0, 0.0, 0.0, KIMMEL_2021["b0"]]


_CONSERVING = jax.jit(
    lambda y, rates: LBCL.rhs(
        0.0,
        y,
        {
            **medians(),
            "k_exp": 0.0,
            "rho_c": 0.0,
            "b_reconst": 0.0,
            "d_e": 0.0,
            "d_x": 0.0,
            "d_m": 0.5 * _SMOOTH_RATE,
            "gamma_b": 0.0,
            "k_em": rates[0],
            "k_me": rates[1],
            "k_ex": rates[2],
        },
        NO_INPUTS,
    )
)


@settings(max_examples=60, deadline=None)
@given(
    cells=st.lists(st.floats(1e-3, 1e4), min_size=5, max_size=5),
    rates=st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3),
)
def test_transitions_never_create_or_destroy_car_t_cells(cells, rates):
    # property: with growth, death and killing off, d(E + M + X)/dt = 0 for
    # any state and any transition rates (mass balance)
    dy = np.asarray(_CONSERVING(jnp.asarray(cells), jnp.asarray(rates)))
    scale = max(cells[1:4]) * (1.0 + max(rates))
    assert abs(dy[1] + dy[2] + dy[3]) <= 1e-12 * scale
