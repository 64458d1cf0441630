"""Tests of the SBML import (cartwin.models.sbml) against libroadrunner."""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

from cartwin.errors import ModelSpecificationError
from cartwin.graph.graph import SolverSettings
from cartwin.graph.spec import Observable, ScaleModel, check_model
from cartwin.models.sbml import (
    load_sbml,
    simulate_roadrunner,
    simulate_sbml,
)

SHARED = Path(
    os.environ.get(
        "CARTWIN_SHARED", Path(__file__).resolve().parents[2].parent / "shared"
    )
)
SBML_DIR = SHARED / "data" / "real" / "sbml"
needs_shared = pytest.mark.skipif(
    not SBML_DIR.is_dir(),
    reason=f"shared SBML models not found at {SBML_DIR} (set CARTWIN_SHARED)",
)

# Agreement settings. diffrax Kvaerno5 at rtol 1e-10 and atol 1e-12 (states
# range from 1e-3 to 1e10, so atol is below every value of interest);
# roadrunner CVODE at rtol 1e-12, atol 1e-14. "Relative" error is
# |cartwin - roadrunner| / (|roadrunner| + FLOOR * peak of that state): values
# more than 9 orders of magnitude below a state's own peak (a tumour killed to
# 1e-10 of its start) are compared absolutely, because no tolerance of either
# engine controls their relative error.
AGREEMENT = 1e-6
FLOOR = 1e-9
TIGHT = SolverSettings(solver="kvaerno5", rtol=1e-10, atol=1e-12)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest error of ``ours`` relative to ``reference`` (see FLOOR)."""
    peak = np.max(np.abs(reference), axis=0)
    scale = (
        np.abs(reference) + FLOOR * peak + np.finfo(float).tiny
    )  # 0 for a state at 0
    return float(np.max(np.abs(ours - reference) / scale))


def agreement(path: Path, until_days: float = 50.0) -> float:
    model = load_sbml(path)
    t_days = np.linspace(0.0, until_days, 101)
    ours = simulate_sbml(model, t_days, settings=TIGHT)
    ids, reference = simulate_roadrunner(path, t_days / model.time_unit_days)
    assert ids == model.state_ids
    return relative_error(ours, reference)


# -- the published CAR T models ------------------------------------------------


@needs_shared
@pytest.mark.parametrize(
    "name",
    [
        "BIOMD0000001041.xml",  # Kimmel 2021: assignment rules, ln(), boundary species
        "BIOMD0000001011.xml",  # León-Triana 2020: assignment rule on a parameter
        "MODEL2009230001.xml",  # Hardiansyah 2019: piecewise, initial assignment
        "BIOMD0000000837.xml",  # Hanson 2016: time in hours, piecewise, 12 functions
        "BIOMD0000001024.xml",  # Chaudhury 2020: Lotka-Volterra
    ],
)
def test_trajectories_agree_with_roadrunner(name):
    assert agreement(SBML_DIR / name) < AGREEMENT


@needs_shared
def test_cartmath_events_raise_a_clear_error():
    # BIOMD0000001019 (CARTmath) doses CAR T cells with two events
    with pytest.raises(NotImplementedError, match=r"events \['event1', 'event2'\]"):
        load_sbml(SBML_DIR / "BIOMD0000001019.xml")


@needs_shared
def test_kimmel_structure_and_rates():
    model = load_sbml(SBML_DIR / "BIOMD0000001041.xml")
    # Total_lymphocyte_count is an assignment-rule species, r_C a rule parameter
    assert model.state_ids == (
        "Normal_T_cells",
        "CAR_T_cells",
        "Antigen_presenting_tumour_cells",
    )
    assert "r_C" not in {p.name for p in model.parameters}
    assert model.time_unit_days == 1.0
    assert isinstance(model, ScaleModel)
    check_model(model)

    # clinical-facts.md §5.2: dC/dt = -r_C C ln((N + C) / K_C), with
    # r_C = rho_C + b (T - K_N)^2 / (a T^2 + (T - K_N)^2), T = N + C
    p = model.constants
    n, c, b = 6.0, 0.36, 94.86
    total = n + c
    r_c = p["rho_C"] + p["b"] * (total - p["K_N"]) ** 2 / (
        p["a"] * total**2 + (total - p["K_N"]) ** 2
    )
    rates = model.rhs(0.0, jnp.array([n, c, b]), model.default_params(), {})
    assert float(rates[1]) == pytest.approx(
        -r_c * c * math.log(total / p["K_C"]), rel=1e-14
    )
    kill = p["gamma_B"] * b * c / (p["k_B"] + c)
    assert float(rates[2]) == pytest.approx(p["r_B"] * b - kill, rel=1e-14)


@needs_shared
def test_hanson_hours_and_initial_assignment():
    model = load_sbml(SBML_DIR / "BIOMD0000000837.xml")
    assert model.time_unit_days == pytest.approx(1.0 / 24.0)
    assert model.time_unit_source == "declared: 3600 s"
    # ModelValue_16 := l by initial assignment: not a free parameter
    assert "ModelValue_16" not in {p.name for p in model.parameters}
    # rhs per day is 24 x rhs per hour
    y0 = model.initial_state(model.default_params(), {})
    per_day = model.rhs(0.0, y0, model.default_params(), {})
    assert jnp.all(jnp.isfinite(per_day))


# -- constructs, on small models written here -------------------------------------


def write_model(path: Path, build) -> Path:
    """Write an SBML L3V1 model made by ``build(model)`` to ``path``."""
    document = libsbml.SBMLDocument(3, 1)
    model = document.createModel()
    model.setId("test_model")
    model.setTimeUnits("second")
    compartment = model.createCompartment()
    compartment.setId("cell")
    compartment.setSize(2.0)
    compartment.setConstant(True)
    build(model)
    libsbml.writeSBMLToFile(document, str(path))
    return path


def add_species(model, sid, value, *, amount=False, boundary=False):
    species = model.createSpecies()
    species.setId(sid)
    species.setCompartment("cell")
    species.setHasOnlySubstanceUnits(amount)
    species.setBoundaryCondition(boundary)
    species.setConstant(False)
    species.setInitialAmount(value) if amount else species.setInitialConcentration(
        value
    )


def add_parameter(model, pid, value, constant=True):
    parameter = model.createParameter()
    parameter.setId(pid)
    parameter.setValue(value)
    parameter.setConstant(constant)


def add_reaction(model, rid, reactants, products, formula, local=None):
    reaction = model.createReaction()
    reaction.setId(rid)
    reaction.setReversible(False)
    reaction.setFast(False)
    for group, create in (
        (reactants, reaction.createReactant),
        (products, reaction.createProduct),
    ):
        for sid, stoich in group:
            ref = create()
            ref.setSpecies(sid)
            ref.setStoichiometry(stoich)
            ref.setConstant(True)
    law = reaction.createKineticLaw()
    for lid, value in (local or {}).items():
        parameter = law.createLocalParameter()
        parameter.setId(lid)
        parameter.setValue(value)
    law.setMath(libsbml.parseL3Formula(formula))


def add_rule(model, variable, formula, kind="assignment"):
    create = {
        "assignment": model.createAssignmentRule,
        "rate": model.createRateRule,
        "algebraic": model.createAlgebraicRule,
    }[kind]
    rule = create()
    if kind != "algebraic":
        rule.setVariable(variable)
    rule.setMath(libsbml.parseL3Formula(formula))


def build_mixed(model):
    # amount and concentration species in a compartment of volume 2, a local
    # parameter shadowing a global one, a function definition, a rate rule on
    # a parameter, an initial assignment and a dose switched on in time
    function = model.createFunctionDefinition()
    function.setId("hill")
    function.setMath(libsbml.parseL3Formula("lambda(x, k, n, x^n / (k^n + x^n))"))
    for pid, value in (
        ("k1", 0.3),
        ("k2", 0.05),
        ("km", 1.5),
        ("dose", 2.0),
        ("t_on", 3.0),
    ):
        add_parameter(model, pid, value)
    add_parameter(model, "signal", 1.0, constant=False)
    add_species(model, "A", 10.0, amount=True)
    add_species(model, "B", 0.5)
    add_species(model, "C", 0.0)
    add_reaction(
        model, "r1", [("A", 1.0)], [("B", 2.0)], "k1 * A * hill(signal, km, 2)"
    )
    add_reaction(
        model, "r2", [("B", 1.0)], [("C", 1.0)], "k2 * B * cell", local={"k2": 0.2}
    )
    add_reaction(
        model,
        "r3",
        [],
        [("C", 1.0)],
        "piecewise(dose, time >= t_on && time < t_on + 1, 0)",
    )
    add_rule(model, "signal", "-0.1 * signal + 0.05", kind="rate")
    assignment = model.createInitialAssignment()
    assignment.setSymbol("B")
    assignment.setMath(libsbml.parseL3Formula("2 * k1"))


def test_mixed_constructs_agree_with_roadrunner(tmp_path):
    path = write_model(tmp_path / "mixed.xml", build_mixed)
    model = load_sbml(path, time_unit_days=1.0)
    assert model.state_ids == ("A", "B", "C", "signal")
    # the dose switches on at t_on = 3 and off at t_on + 1 = 4
    assert sorted(float(d) for d in model.jump_days()) == [3.0, 4.0]
    t = np.linspace(0.0, 10.0, 41)
    ours = simulate_sbml(model, t, settings=TIGHT)
    ids, reference = simulate_roadrunner(path, t)
    assert ids == model.state_ids
    assert relative_error(ours, reference) < AGREEMENT
    # initial assignment B := 2 k1 (concentration), A an amount
    assert ours[0, 1] == pytest.approx(0.6)
    assert ours[0, 0] == pytest.approx(10.0)


def test_declared_seconds_are_converted_to_days(tmp_path):
    path = write_model(tmp_path / "mixed.xml", build_mixed)
    model = load_sbml(path)
    assert model.time_unit_days == pytest.approx(1.0 / 86400.0)
    y0 = model.initial_state(model.default_params(), {})
    per_day = model.rhs(0.0, y0, model.default_params(), {})
    per_second = load_sbml(path, time_unit_days=1.0).rhs(
        0.0, y0, model.default_params(), {}
    )
    np.testing.assert_allclose(per_day, 86400.0 * per_second, rtol=1e-14)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda m: (
                add_parameter(m, "x", 1.0, False),
                add_rule(m, "", "x - 1", "algebraic"),
            ),
            "algebraic rule",
        ),
        (
            lambda m: (
                add_species(m, "A", 1.0),
                add_reaction(m, "r", [("A", 1)], [], "delay(A, 1)"),
            ),
            r"delay\(\)",
        ),
        (
            lambda m: (
                add_species(m, "A", 1.0),
                add_rule(m, "cell", "2", "assignment"),
            ),
            "compartment 'cell'",
        ),
    ],
)
def test_unsupported_constructs_are_named(tmp_path, build, message):
    path = write_model(tmp_path / "bad.xml", build)
    with pytest.raises(NotImplementedError, match=message):
        load_sbml(path)


def test_event_is_refused(tmp_path):
    def build(model):
        add_species(model, "A", 1.0)
        event = model.createEvent()
        event.setId("dose")
        event.setUseValuesFromTriggerTime(True)
        trigger = event.createTrigger()
        trigger.setMath(libsbml.parseL3Formula("time >= 1"))
        trigger.setPersistent(True)
        trigger.setInitialValue(False)
        assignment = event.createEventAssignment()
        assignment.setVariable("A")
        assignment.setMath(libsbml.parseL3Formula("2"))

    with pytest.raises(NotImplementedError, match=r"events \['dose'\]"):
        load_sbml(write_model(tmp_path / "event.xml", build))


def test_cyclic_rules_and_unknown_symbols_are_errors(tmp_path):
    def cyclic(model):
        add_parameter(model, "x", 1.0, False)
        add_parameter(model, "y", 1.0, False)
        add_rule(model, "x", "y + 1")
        add_rule(model, "y", "x + 1")

    with pytest.raises(ModelSpecificationError, match="cycle"):
        load_sbml(write_model(tmp_path / "cycle.xml", cyclic))
    with pytest.raises(ModelSpecificationError, match="does not exist"):
        load_sbml(tmp_path / "missing.xml")


def test_priors_mappings_and_gradient(tmp_path):
    path = write_model(tmp_path / "mixed.xml", build_mixed)
    model = load_sbml(
        path,
        log_sd={"k1": 0.5},
        observables={"il6": ("B + C", Observable("il6", "pg/mL"))},
        inputs={"steroid_exposure": "dose"},
        outputs={"b_level": "B"},
        time_unit_days=1.0,
    )
    check_model(model)
    k1 = next(p for p in model.parameters if p.name == "k1")
    assert (k1.median, k1.log_sd) == (0.3, 0.5)
    assert k1.lower == pytest.approx(0.3 * math.exp(-3.0))
    assert "dose" not in {p.name for p in model.parameters}  # it is an input
    y = jnp.array([10.0, 0.6, 0.1, 1.0])
    params = model.default_params()
    assert float(model.observe("il6", 0.0, y, params)) == pytest.approx(0.7)
    assert float(model.couplings(0.0, y, params)["b_level"]) == pytest.approx(0.6)
    # the input replaces the parameter: r3 adds dose/V to C while on
    rate_c = model.rhs(3.5, y, params, {"steroid_exposure": 4.0})[2]
    assert float(rate_c) == pytest.approx(0.2 * 0.6 * 2.0 / 2.0 + 4.0 / 2.0)
    grad = jax.grad(
        lambda k: model.rhs(0.0, y, {**params, "k1": k}, {"steroid_exposure": 0.0})[1]
    )
    assert math.isfinite(float(grad(0.3)))
    with pytest.raises(ModelSpecificationError, match="unknown parameters"):
        model.rhs(0.0, y, {"nope": 1.0}, {})
