"""Tests of the model graph: joining, the joined ODE system, solver verification."""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from graph_samples import SAMPLE_DAYS
from scipy.integrate import solve_ivp

from cartwin.errors import ModelSpecificationError
from cartwin.graph.calibrate import prior_fit
from cartwin.graph.forecast import draw_parameters, simulate_draws
from cartwin.graph.graph import (
    EXOGENOUS,
    ModelGraph,
    SolverSettings,
    pack_inputs,
    standard_graph,
)
from cartwin.graph.inputs import typical_schedule
from cartwin.graph.spec import Coupling, Edge, Observable, Parameter, State
from cartwin.models.cart_tumour import CarTumourModel
from cartwin.models.cytokines import CytokineModel


@dataclass(frozen=True)
class Toy:
    """A one-state model for joining tests: decays, reads and writes as told."""

    name: str = "toy"
    quantity: str = "wbc"
    reads: str = "tumour_burden"
    version: str = "0"
    references: tuple = ()
    parameters: tuple = (Parameter("k", "/d", 0.5, 0.1, 0.01, 10.0),)
    states: tuple = (State("x", "1"),)
    outputs: tuple = ()

    @property
    def observables(self):
        return (Observable(self.quantity, "1"),)

    @property
    def inputs(self):
        return (Coupling(self.reads, "1"),)

    def initial_state(self, params, covariates):
        return jnp.array([1.0])

    def rhs(self, t, y, params, inputs):
        return jnp.array([inputs[self.reads] - params["k"] * y[0]])

    def couplings(self, t, y, params):
        return {}

    def observe(self, quantity, t, y, params):
        return y[0]


@pytest.fixture(scope="module")
def graph() -> ModelGraph:
    return standard_graph("LBCL")


def test_standard_graph_joins_models_by_coupling_names(graph):
    assert Edge("cart_tumour", "cytokines", "tumour_kill_rate") in graph.edges
    assert Edge(EXOGENOUS, "cart_tumour", "ld_exposure") in graph.edges
    assert graph.exogenous == (
        "bridging_exposure",
        "cart_infusion_rate",
        "ld_exposure",
        "product_memory_fraction",
        "steroid_exposure",
        "toci_exposure",
    )
    assert graph.quantities == (
        "cart_flow",
        "cart_qpcr",
        "alc",
        "ldh",
        "spd",
        "il6",
        "crp",
    )
    assert graph.state_names[:2] == ("cart_tumour.normal_t", "cart_tumour.effector")
    assert json.loads(json.dumps(graph.describe()))["n_free_parameters"] == len(
        graph.free_parameter_names
    )
    assert standard_graph("LBCL") is graph  # shared, with its compiled programs


def test_a_quantity_explained_twice_is_refused():
    with pytest.raises(ModelSpecificationError, match="il6.*cytokines.*toy"):
        ModelGraph([CytokineModel(), CarTumourModel(), Toy(quantity="il6")])


def test_an_input_nobody_writes_needs_a_channel():
    with pytest.raises(ModelSpecificationError, match="no_such_input"):
        ModelGraph([Toy(reads="no_such_input")])


def test_a_declared_edge_must_exist():
    models = [CarTumourModel(), CytokineModel()]
    with pytest.raises(ModelSpecificationError, match="declared edges"):
        ModelGraph(models, [Edge("cytokines", "cart_tumour", "il6_signal")])


def test_extra_model_reads_a_coupling_of_another(graph):
    joined = ModelGraph([CarTumourModel(), CytokineModel(), Toy()])
    assert Edge("cart_tumour", "toy", "tumour_burden") in joined.edges
    assert joined.parameter_names[-1] == "toy.k"


def test_vector_field_is_the_models_right_hand_sides(graph):
    rng = np.random.default_rng(3)
    y = jnp.asarray(rng.uniform(0.5, 50.0, len(graph.state_names)))
    vector = graph.parameter_vector()
    arrays = pack_inputs(graph, typical_schedule(toci_days=(0.5,)))
    t = 0.01  # during the infusion, after a tocilizumab dose is scheduled
    joined = graph.vector_field(t, y, (vector, arrays))

    # by hand: inputs from the schedule, the kill rate from the CAR T model
    tumour, cyto = graph.models
    p_t, p_c = graph.model_params(vector)
    exo = graph.exogenous_values(t, arrays)
    first = tumour.rhs(t, y[:5], p_t, {c.name: exo[c.name] for c in tumour.inputs})
    kill = tumour.couplings(t, y[:5], p_t)["tumour_kill_rate"]
    second = cyto.rhs(
        t,
        y[5:],
        p_c,
        {
            "tumour_kill_rate": kill,
            "toci_exposure": exo["toci_exposure"],
            "steroid_exposure": exo["steroid_exposure"],
        },
    )
    assert np.allclose(joined, np.concatenate([first, second]), rtol=1e-14)
    assert float(exo["cart_infusion_rate"]) == pytest.approx(1.6e8 * 48)


def _reference(graph, schedule, days):
    # scipy LSODA on the same vector field, restarted at every input jump
    arrays = pack_inputs(graph, schedule)
    vector = graph.parameter_vector()
    field = jax.jit(lambda t, y: graph.vector_field(t, y, (vector, arrays)))
    jumps = np.asarray(arrays["jump_ts"])
    inner = jumps[(jumps > schedule.t_start) & (jumps < days[-1])]
    edges = np.unique(np.concatenate([[schedule.t_start, days[-1]], inner]))
    y = np.asarray(graph.initial_state(vector, arrays["covariates"]))
    rows = np.zeros((days.size, y.size))
    for a, b in zip(edges[:-1], edges[1:]):
        sol = solve_ivp(
            lambda t, x: np.asarray(field(t, jnp.asarray(x))),
            (a, b),
            y,
            method="LSODA",
            rtol=1e-12,
            atol=1e-14,
            dense_output=True,
        )
        inside = (days >= a) & ((days < b) | (b == days[-1]))
        if inside.any():
            rows[inside] = sol.sol(days[inside]).T
        y = sol.y[:, -1]
    return rows


def test_solution_converges_to_an_independent_solver_as_tolerances_tighten(graph):
    schedule = typical_schedule(toci_days=(3.0,))
    days = SAMPLE_DAYS[SAMPLE_DAYS >= schedule.t_start]
    reference = _reference(graph, schedule, days)
    errors = []
    for rtol in (1e-3, 1e-5, 1e-7, 1e-9):
        settings = SolverSettings(rtol=rtol, atol=rtol * 1e-3)
        states = np.column_stack(
            list(graph.simulate(schedule, days, settings=settings).states.values())
        )
        scale = np.abs(reference).max(axis=0) + 1e-12
        errors.append(np.max(np.abs(states - reference) / scale))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-7


def test_states_stay_non_negative_over_the_prior(graph):
    # 200 patients from the population prior, ZUMA-1-like course, to day 28
    schedule = typical_schedule()
    vectors = draw_parameters(
        graph, prior_fit(graph, schedule), 200, np.random.default_rng(11)
    )
    draws = simulate_draws(graph, vectors, schedule, np.arange(0.0, 28.01, 0.25))
    assert draws["_ok"].all()
    for name in graph.state_names:
        values = draws[name]
        assert np.nanmin(values) >= -1e-9 * max(1.0, np.nanmax(np.abs(values))), name
