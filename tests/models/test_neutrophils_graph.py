"""The neutrophil, manufacturing and SBML nodes joined in cartwin's model graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cartwin.demo import demo_bundle_path
from cartwin.graph.graph import SolverSettings, standard_graph
from cartwin.graph.inputs import schedule_from_record
from cartwin.graph.spec import Edge
from cartwin.io.fhir import import_fhir
from cartwin.models import neutrophils as nm
from cartwin.models.manufacturing import ManufacturingModel
from cartwin.models.sbml import load_sbml, simulate_sbml
from cartwin.record.pseudonym import DEMO_KEY

SHARED = Path(
    os.environ.get(
        "CARTWIN_SHARED", Path(__file__).resolve().parents[2].parent / "shared"
    )
)
KIMMEL = SHARED / "data" / "real" / "sbml" / "BIOMD0000001041.xml"
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12, max_steps=100_000)


@pytest.fixture(scope="module")
def course():
    """The demo patient simulated through a graph holding the new nodes.

    Kimmel's SBML model joins when the shared data are present.
    """
    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    extra = [nm.NeutrophilModel(), ManufacturingModel()]
    if KIMMEL.is_file():
        extra.append(load_sbml(KIMMEL, name="kimmel_sbml"))
    graph = standard_graph("LBCL", tuple(extra))
    schedule = schedule_from_record(record)
    t_days = np.linspace(-10.0, 60.0, 141)
    return record, graph, schedule, graph.simulate(schedule, t_days, settings=TIGHT)


def test_graph_joins_the_nodes(course):
    _, graph, _, trajectory = course
    assert trajectory.success
    edges = set(graph.edges)
    assert Edge("exogenous", "neutrophils", "ld_exposure") in edges
    assert Edge("manufacturing", "cart_tumour", "product_memory_fraction") in edges
    assert "anc" in graph.quantities


def test_graph_anc_equals_the_standalone_model(course):
    # the graph's ld_exposure pulses (from the record's events) and the
    # standalone Regimen give the same input, so the ANC agrees to the solvers'
    # tolerance (both rtol 1e-10)
    record, _, schedule, trajectory = course
    regimen = nm.regimen_from_record(record)
    alone = nm.anc_trajectory(
        nm.MODEL.typical_params(),
        trajectory.t_days,
        regimen,
        t0=schedule.t_start,
        settings=TIGHT,
    )
    np.testing.assert_allclose(trajectory.observables["anc"], alone, rtol=1e-7)
    assert np.min(trajectory.observables["anc"]) < nm.SEVERE_ANC  # neutropenia


def test_product_composition_reaches_the_car_t_model(course):
    _, _, _, trajectory = course
    fraction = trajectory.couplings["product_memory_fraction"]
    # typical culture: memory share 0.4 exp(-0.1 x 4) = 0.268, constant in time
    np.testing.assert_allclose(fraction, 0.4 * np.exp(-0.4), rtol=1e-12)


def test_sbml_node_in_the_graph_matches_its_standalone_run(course):
    # Kimmel's model is autonomous: graph time t is SBML time t - t_start
    if not KIMMEL.is_file():
        pytest.skip(f"shared SBML model not found at {KIMMEL} (set CARTWIN_SHARED)")
    _, _, schedule, trajectory = course
    kimmel = load_sbml(KIMMEL, name="kimmel_sbml")
    alone = simulate_sbml(
        kimmel,
        trajectory.t_days - schedule.t_start,
        settings=TIGHT,
    )
    for index, sid in enumerate(kimmel.state_ids):
        np.testing.assert_allclose(
            trajectory.states[f"kimmel_sbml.{sid}"], alone[:, index], rtol=1e-6
        )
