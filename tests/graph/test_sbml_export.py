"""Tests of the SBML export: libRoadRunner integrates the graph's equations.

The reference is cartwin's own graph (diffrax Tsit5 at tight tolerances);
the SBML document is integrated by libRoadRunner (CVODE), an independent
solver and parser of the same equations.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

from cartwin.errors import ModelSpecificationError
from cartwin.graph.calibrate import prior_fit
from cartwin.graph.forecast import draw_parameters
from cartwin.graph.graph import ModelGraph, SolverSettings, pack_inputs, standard_graph
from cartwin.graph.inputs import DEFAULT_INFUSION_DAYS, typical_schedule
from cartwin.graph.sbml_export import (
    breakpoints,
    graph_to_sbml,
    load_roadrunner,
    sbml_id,
    set_parameters,
)
from cartwin.graph.spec import Coupling, Observable, Parameter, State
from cartwin.models.cart_tumour import CarTumourModel
from cartwin.models.cytokines import CytokineModel
from cartwin.models.neutrophils import NeutrophilModel

#: Days compared (issue 6: the course to one year).
DAYS = np.array([1.0, 7.0, 14.0, 28.0, 90.0, 365.0])

#: Compared series: graph name -> SBML id.
SERIES = {
    "cart_total": "cart_total",
    "cart_tumour.tumour": "cart_tumour__tumour",
    "cytokines.il6": "cytokines__il6",
}

#: Tight graph solve: its error is far below the 1e-4 compared.
TIGHT = SolverSettings(rtol=1e-10, atol=1e-14)

#: One tumour cell in the model's unit (10^9 cells): smaller differences of
#: an eradicated tumour (values down to 1e-26) are below both solvers'
#: absolute tolerances and have no meaning.
ONE_CELL = 1e-9


@pytest.fixture(scope="module")
def lbcl():
    graph, schedule = standard_graph("LBCL"), typical_schedule()
    rr = load_roadrunner(graph_to_sbml(graph, schedule))
    return graph, schedule, rr


def _rate_error(graph, schedule, rr, rng, vector) -> float:
    # largest relative difference of d/dt between roadrunner and vector_field
    ids = [sbml_id(name) for name in graph.state_names]
    arrays = pack_inputs(graph, schedule)
    times = [*rng.uniform(schedule.t_start, 30.0, 6), 0.5 * DEFAULT_INFUSION_DAYS]
    worst = 0.0
    set_parameters(rr, graph, vector)
    for t in times:
        y = rng.uniform(0.1, 200.0, len(ids))
        y[graph.state_names.index("cytokines.il6r_blocked")] = rng.uniform()
        rr.model.setTime(float(t))
        for key, value in zip(ids, y):
            rr.setValue(key, float(value))
        ours = np.asarray(graph.vector_field(t, jnp.asarray(y), (vector, arrays)))
        worst = max(worst, float(np.max(np.abs(rr.getRatesOfChange() / ours - 1))))
    return worst


def test_roadrunner_matches_graph_for_median_and_prior_patients(lbcl):
    graph, schedule, rr = lbcl
    fit = prior_fit(graph, schedule)
    draws = draw_parameters(graph, fit, 3, np.random.default_rng(0))
    for vector in [graph.medians, *draws]:
        course = graph.simulate(schedule, DAYS, vector, settings=TIGHT)
        assert course.success
        set_parameters(rr, graph, vector)
        rr.reset()
        out = rr.simulate(
            times=[schedule.t_start, *DAYS], selections=list(SERIES.values())
        )
        for k, name in enumerate(SERIES):
            ours = {**course.couplings, **course.states}[name]
            # tolerance: issue 6 asks 1e-4 relative; both solvers run at
            # rtol <= 1e-8, so the bound has two decades of room
            np.testing.assert_allclose(out[1:, k], ours, rtol=1e-4, atol=ONE_CELL)


def test_median_course_expands_and_kills(lbcl):
    # the comparison above is not vacuous: the infusion is seen (breakpoint
    # events) and the typical patient expands and responds
    graph, schedule, rr = lbcl
    set_parameters(rr, graph, graph.medians)
    rr.reset()
    out = rr.simulate(
        times=[schedule.t_start, 0.0, 7.0, 28.0], selections=list(SERIES.values())
    )
    assert out[1, 0] == 0.0 and out[2, 0] > 10.0
    assert (
        out[3, 1]
        < 1e-2 * graph.medians[graph.parameter_names.index("cart_tumour.tumour0")]
    )


def test_without_breakpoint_events_the_infusion_is_missed(lbcl):
    # why the export writes events: CVODE steps over the 30-minute pulse
    graph, schedule, _ = lbcl
    document = libsbml.readSBMLFromString(graph_to_sbml(graph, schedule))
    model = document.getModel()
    assert model.getNumEvents() == len(breakpoints(graph, schedule)) == 5
    while model.getNumEvents():
        model.removeEvent(0)
    rr = load_roadrunner(libsbml.writeSBMLToString(document))
    out = rr.simulate(times=[schedule.t_start, 7.0], selections=["cart_total"])
    assert out[1, 0] < 1e-6


def test_reset_recomputes_initial_states_from_new_parameters(lbcl):
    graph, schedule, rr = lbcl
    vector = draw_parameters(
        graph, prior_fit(graph, schedule), 1, np.random.default_rng(5)
    )[0]
    set_parameters(rr, graph, vector)
    rr.reset()
    state = [rr.getValue(sbml_id(name)) for name in graph.state_names]
    expected = np.asarray(graph.initial_state(vector, schedule.covariates))
    np.testing.assert_allclose(state, expected, rtol=1e-14)
    assert state[graph.state_names.index("cart_tumour.tumour")] != pytest.approx(
        graph.medians[graph.parameter_names.index("cart_tumour.tumour0")]
    )


@pytest.mark.parametrize(
    "graph",
    [
        standard_graph("LBCL"),
        standard_graph("MM"),
        standard_graph("LBCL", (NeutrophilModel(),)),
    ],
    ids=["LBCL", "MM", "LBCL+neutrophils"],
)
def test_sbml_rates_equal_vector_field(graph):
    # every input channel active: drugs, bridging, inside the infusion
    schedule = typical_schedule(
        toci_days=(2.0,),
        steroid_days=(3.0,),
        bridging_days=(-8.0,),
        memory_fraction=0.45,
    )
    rr = load_roadrunner(graph_to_sbml(graph, schedule))
    rng = np.random.default_rng(7)
    draws = draw_parameters(graph, prior_fit(graph, schedule), 2, rng)
    for vector in [graph.medians, *draws]:
        # tolerance: same formulas in double precision, rounding only
        assert _rate_error(graph, schedule, rr, rng, vector) < 1e-12


def test_neutrophil_nadir_matches_graph():
    # ANC after flu/cy (Friberg chain), days 0-28: nadir and recovery
    graph, schedule = standard_graph("LBCL", (NeutrophilModel(),)), typical_schedule()
    days = np.array([0.0, 3.0, 7.0, 10.0, 14.0, 28.0])
    course = graph.simulate(schedule, days, settings=TIGHT)
    rr = load_roadrunner(graph_to_sbml(graph, schedule))
    out = rr.simulate(times=[schedule.t_start, *days], selections=["anc"])
    np.testing.assert_allclose(out[1:, 0], course.couplings["anc"], rtol=1e-4)
    assert out[:, 0].min() < 0.5 * out[0, 0]  # flu/cy lowers the ANC


@dataclass(frozen=True)
class _Mutant(CarTumourModel):
    """CAR T model whose SBML effector rate lost the exhaustion term."""

    def sbml_rates(self) -> dict[str, str]:
        rates = super().sbml_rates()
        rates["effector"] = rates["effector"].replace(" - (k_ex *", " - 0 * (k_ex *")
        return rates


def test_a_changed_formula_is_caught():
    graph = ModelGraph([_Mutant("LBCL"), CytokineModel()])
    schedule = typical_schedule()
    rr = load_roadrunner(graph_to_sbml(graph, schedule))
    rng = np.random.default_rng(3)
    assert _rate_error(graph, schedule, rr, rng, graph.medians) > 1e-3


def test_document_is_valid_sbml_l3v2(lbcl):
    graph, schedule, _ = lbcl
    document = libsbml.readSBMLFromString(graph_to_sbml(graph, schedule))
    document.checkConsistency()
    severities = [
        document.getError(i).getSeverity() for i in range(document.getNumErrors())
    ]
    assert max(severities, default=0) < libsbml.LIBSBML_SEV_ERROR
    model = document.getModel()
    assert (document.getLevel(), document.getVersion()) == (3, 2)
    assert model.getTimeUnits() == "day"
    species = [model.getSpecies(i).getId() for i in range(model.getNumSpecies())]
    assert species == [sbml_id(name) for name in graph.state_names]
    assert model.getNumRules() == len(species) + 4 + 2 + 5  # rates, couplings, inputs
    value = model.getParameter("cart_tumour__k_exp").getValue()
    assert value == graph.medians[graph.parameter_names.index("cart_tumour.k_exp")]


def test_params_mapping_and_vector_are_written():
    graph, schedule = standard_graph("LBCL"), typical_schedule(memory_fraction=0.6)
    document = libsbml.readSBMLFromString(
        graph_to_sbml(graph, schedule, {"cart_tumour.k_exp": 1.25})
    )
    model = document.getModel()
    assert model.getParameter("cart_tumour__k_exp").getValue() == 1.25
    assert model.getParameter("product_memory_fraction").getValue() == 0.6
    with pytest.raises(ModelSpecificationError, match="shape"):
        graph_to_sbml(graph, schedule, np.ones(3))


@dataclass(frozen=True)
class _Typo(CytokineModel):
    """Cytokine model whose SBML IL-6 rate names an unknown parameter."""

    def sbml_rates(self) -> dict[str, str]:
        return {**super().sbml_rates(), "il6": "k_typo * il6"}


@dataclass(frozen=True)
class _Plain:
    """A one-state model without SBML formulas."""

    name: str = "plain"
    version: str = "0"
    references: tuple = ()
    parameters: tuple = (Parameter("k", "/d", 0.5, 0.0),)
    states: tuple = (State("x", "1"),)
    observables: tuple = (Observable("wbc", "1"),)
    inputs: tuple = (Coupling("tumour_burden", "10*9.{cells}"),)
    outputs: tuple = ()

    def initial_state(self, params, covariates):
        return jnp.array([1.0])

    def rhs(self, t, y, params, inputs):
        return jnp.array([inputs["tumour_burden"] - params["k"] * y[0]])

    def couplings(self, t, y, params):
        return {}

    def observe(self, quantity, t, y, params):
        return y[0]


def test_unknown_symbol_and_missing_methods_raise():
    schedule = typical_schedule()
    typo = ModelGraph([CarTumourModel("LBCL"), _Typo()])
    with pytest.raises(
        ModelSpecificationError, match="state il6: unknown symbol 'k_typo'"
    ):
        graph_to_sbml(typo, schedule)
    with pytest.raises(ModelSpecificationError, match="plain has no"):
        graph_to_sbml(standard_graph("LBCL", (_Plain(),)), schedule)
