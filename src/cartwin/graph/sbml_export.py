"""Export a model graph and one schedule as SBML, for other simulators.

:func:`graph_to_sbml` writes cartwin's joined ODE system (a
:class:`~cartwin.graph.graph.ModelGraph` whose models give SBML formulas,
below) with one patient's exogenous inputs as an SBML Level 3 Version 2
document [1]_, so that a general SBML simulator such as libRoadRunner [2]_
integrates the same equations. :func:`set_parameters` then changes the
patient on a loaded ``roadrunner.RoadRunner`` without loading the model again.

What the document contains
--------------------------
- **Time** in days (model ``timeUnits`` = ``day``, 86 400 s), days since
  infusion, as in the graph. A simulation starts at the schedule's
  ``t_start`` (days before infusion), not at 0: the caller passes it as the
  start time (``rr.simulate(schedule.t_start, ...)``).
- **States** are species of one compartment ``body`` (size 1, constant) with
  ``hasOnlySubstanceUnits="true"`` and a rate rule each: the species symbol
  is the model's state value in its own unit (cells/µL, 10^9 cells, pg/mL,
  ...; the units are in the species' ``name``, not as SBML units). A species
  rather than a parameter so that simulators report it as a state
  (roadrunner's floating species). Initial values are initial assignments of
  the parameters (:meth:`sbml_initial_state` of each model), so that a
  simulator that resets recomputes them from new parameter values.
- **Parameters**: every graph parameter, id ``<model>__<name>`` (SBML ids
  cannot contain ``.``; :func:`sbml_id`), ``name`` the graph's qualified
  name, value the patient's natural-scale value (population medians by
  default), ``constant="true"``.
- **Couplings** (``cart_total``, ``tumour_kill_rate``, ``il6_signal``, ...)
  are non-constant parameters with the coupling's name as id and an
  assignment rule (:meth:`sbml_couplings`).
- **Exogenous inputs** with the channel's name as id: ``rate`` channels an
  assignment rule that sums ``piecewise(amount / width, time >= start &&
  time < start + width, 0)`` over the schedule's pulses (width at least
  1e-9 d, as in the graph); ``exposure`` channels the sum of
  ``piecewise(amount * exp(-k * (time - start)), time >= start, 0)`` with
  ``k = ln 2 / half-life``; a channel without pulses is ``0``; ``constant``
  channels a constant parameter with the schedule's value (the channel's
  default when the schedule has none).
- **Breakpoints**: one event per discontinuity of the inputs (pulse starts,
  and ends of rate pulses), with trigger ``time >= day`` and no
  assignments. They change nothing; they make an event-aware simulator
  (roadrunner, COPASI) stop and restart its integrator exactly there, the
  SBML counterpart of the graph's ``jump_ts``. Without them an adaptive
  solver can step over the 30-minute infusion and miss the cells.

Models provide their equations as infix formulas (``libsbml.parseL3Formula``
syntax; ``ln`` is the natural logarithm) in terms of their own parameter and
state names, the names of the couplings they read and their inputs:
``sbml_rates()`` (state -> derivative per day), ``sbml_couplings()``
(output -> value) and ``sbml_initial_state()`` (state -> formula of the
parameters). :class:`~cartwin.models.cart_tumour.CarTumourModel`,
:class:`~cartwin.models.cytokines.CytokineModel` and
:class:`~cartwin.models.neutrophils.NeutrophilModel` have them; a graph with
a model that lacks them raises :class:`ModelSpecificationError`.

Per-patient loop with roadrunner
--------------------------------
``rr.reset()`` after :func:`set_parameters` recomputes the initial
assignments from the new parameter values (libRoadRunner 2.x; checked by
``tests/graph/test_sbml_export.py``), so one loaded model serves every
patient: ``set_parameters(rr, graph, v); rr.reset(); rr.simulate(...)``.
:func:`load_roadrunner` loads a document with the integrator settings used
in the tests.

Known limits
------------
- One schedule per document: inputs are written into the formulas. Another
  dose or drug timing needs another export (constants, such as the memory
  fraction, can be set by id like parameters).
- Covariates are not exported: ``sbml_initial_state`` formulas read
  parameters only (true of cartwin's models, whose initial states ignore
  covariates).
- Units of states and parameters are given in their ``name`` only; SBML unit
  definitions are not written except for time, so a unit-consistency check
  reports undeclared units as warnings, not errors.
- Observables (SPD, LDH, qPCR, ALC, CRP as a quantity) are not exported;
  they are functions of the states (see each model's ``observe``).
- roadrunner's default CVODE (BDF) fails on a few prior patients (3 of 2000
  at rtol 1e-8 / atol 1e-12, 10 of 2000 at 1e-6 / 1e-9: error-test failures
  just after the infusion starts, or a tumour below ``atol`` turning
  negative); Adams (``rr.integrator.setValue("stiff", False)``) or a smaller
  ``atol`` solves them (``benchmarks/bench_roadrunner_loop.py`` does so).

References
----------
.. [1] Hucka M, et al. The Systems Biology Markup Language (SBML): language
   specification for Level 3 Version 2 Core. J Integr Bioinform
   2019;16(2):20190021. doi:10.1515/jib-2019-0021
.. [2] Welsh C, et al. libRoadRunner 2.0: a high performance SBML simulation
   and analysis library. Bioinformatics 2023;39(1):btac770.
   doi:10.1093/bioinformatics/btac770
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import libsbml
import numpy as np

from cartwin.errors import ModelSpecificationError
from cartwin.graph.graph import ModelGraph
from cartwin.graph.inputs import InputChannel, InputSchedule, Pulse

#: SBML level and version written.
SBML_LEVEL, SBML_VERSION = 3, 2

#: Id of the one compartment.
COMPARTMENT = "body"

#: Narrowest rate pulse, days (as in ``ModelGraph.exogenous_values``).
MIN_PULSE_WIDTH = 1e-9

_METHODS = ("sbml_rates", "sbml_couplings", "sbml_initial_state")


def sbml_id(qualified: str) -> str:
    """SBML id of a graph state or parameter: ``"<model>.<name>"`` -> ``<model>__<name>``."""
    return qualified.replace(".", "__")


def graph_to_sbml(
    graph: ModelGraph,
    schedule: InputSchedule,
    params: Mapping[str, float] | np.ndarray | None = None,
) -> str:
    """SBML Level 3 Version 2 text of ``graph`` under ``schedule`` (module doc).

    Parameters
    ----------
    graph : ModelGraph
        Every model must provide ``sbml_rates``, ``sbml_couplings`` and
        ``sbml_initial_state``.
    schedule : InputSchedule
        The patient's exogenous inputs, written into the input formulas.
    params : mapping or array, optional
        Natural-scale values by qualified name (others at the median) or a
        full parameter vector; default: population medians.

    Returns
    -------
    str
        The SBML document.

    Raises
    ------
    ModelSpecificationError
        When a model lacks the SBML methods, a formula does not parse or
        names an unknown symbol, the vector has the wrong length, or the
        document has SBML errors.
    """
    vector = _vector(graph, params)
    document = libsbml.SBMLDocument(SBML_LEVEL, SBML_VERSION)
    model = document.createModel()
    _check(model.setId(re.sub(r"\W", "_", graph.name)), "model id", graph.name)
    model.setName(f"{graph.name} {graph.version} (cartwin export)")
    _time_unit(model)
    compartment = model.createCompartment()
    compartment.setId(COMPARTMENT)
    compartment.setSize(1.0)
    compartment.setConstant(True)
    compartment.setSpatialDimensions(3)
    for name, spec, value in zip(graph.parameter_names, graph.parameter_specs, vector):
        _parameter(model, sbml_id(name), float(value), f"{name} [{spec.unit}]")
    _inputs(model, graph, schedule)
    for node in graph.models:
        _model_node(model, graph, node)
    _breakpoints(model, graph, schedule)
    _validate(document, graph.name)
    return libsbml.writeSBMLToString(document)


def parameter_ids(graph: ModelGraph) -> list[str]:
    """SBML ids of the graph's parameters, in vector order."""
    return [sbml_id(name) for name in graph.parameter_names]


def set_parameters(
    rr: Any, graph: ModelGraph, vector: Mapping[str, float] | np.ndarray
) -> None:
    """Set one patient's parameters on a loaded ``roadrunner.RoadRunner``.

    Parameters
    ----------
    rr : roadrunner.RoadRunner
        Loaded from :func:`graph_to_sbml`'s document of the same graph.
    graph : ModelGraph
        The exported graph.
    vector : array or mapping
        Full natural-scale parameter vector, or values by qualified name
        (others at the median).

    Notes
    -----
    Call ``rr.reset()`` afterwards: it recomputes the initial states from
    the initial assignments with the new values and sets the time back.
    """
    values = _vector(graph, vector)
    for key, value in zip(parameter_ids(graph), values):
        rr.setValue(key, float(value))


def load_roadrunner(sbml: str, *, rtol: float = 1e-8, atol: float = 1e-12) -> Any:
    """A ``roadrunner.RoadRunner`` with CVODE at the given tolerances."""
    import roadrunner

    rr = roadrunner.RoadRunner(sbml)
    rr.setIntegrator("cvode")
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    return rr


# -- parts of the document ----------------------------------------------------


def _vector(graph: ModelGraph, params: Any) -> np.ndarray:
    if isinstance(params, np.ndarray):
        vector = np.asarray(params, float)
        if vector.shape != graph.medians.shape:
            raise ModelSpecificationError(
                f"parameter vector of shape {vector.shape} for graph {graph.name}, "
                f"which has {graph.medians.size} parameters"
            )
        return vector
    return graph.parameter_vector(params)


def _check(code: int, what: str, value: Any) -> None:
    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise ModelSpecificationError(
            f"SBML export: cannot set {what} to {value!r} "
            f"({libsbml.OperationReturnValue_toString(code)})"
        )


def _time_unit(model: Any) -> None:
    day = model.createUnitDefinition()
    day.setId("day")
    unit = day.createUnit()
    unit.setKind(libsbml.UNIT_KIND_SECOND)
    unit.setExponent(1.0)
    unit.setScale(0)
    unit.setMultiplier(86400.0)
    model.setTimeUnits("day")


def _parameter(model: Any, key: str, value: float | None, name: str) -> None:
    parameter = model.createParameter()
    _check(parameter.setId(key), "parameter id", key)
    parameter.setName(name)
    parameter.setConstant(value is not None)
    if value is not None:
        parameter.setValue(value)


def _math(formula: str, where: str, rename: Mapping[str, str], known: set[str]) -> Any:
    ast = libsbml.parseL3Formula(formula)
    if ast is None:
        raise ModelSpecificationError(
            f"SBML export, {where}: formula {formula!r} does not parse "
            f"({libsbml.getLastParseL3Error()})"
        )
    _rename(ast, where, rename, known)
    return ast


def _rename(ast: Any, where: str, rename: Mapping[str, str], known: set[str]) -> None:
    if ast.getType() == libsbml.AST_NAME:
        name = ast.getName()
        if name in rename:
            ast.setName(rename[name])
        elif name not in known:
            raise ModelSpecificationError(
                f"SBML export, {where}: unknown symbol {name!r}; allowed: the "
                f"model's parameters and states, and {sorted(known)}"
            )
    for index in range(ast.getNumChildren()):
        _rename(ast.getChild(index), where, rename, known)


def _model_node(model: Any, graph: ModelGraph, node: Any) -> None:
    missing = [m for m in _METHODS if not hasattr(node, m)]
    if missing:
        raise ModelSpecificationError(
            f"SBML export: model {node.name} has no {missing}; it cannot be "
            "written as SBML"
        )
    rename = {p.name: sbml_id(f"{node.name}.{p.name}") for p in node.parameters}
    states = {s.name: sbml_id(f"{node.name}.{s.name}") for s in node.states}
    clash = sorted(set(rename) & set(states))
    known = {c.name for c in (*node.inputs, *node.outputs)}
    clash += sorted((set(rename) | set(states)) & known)
    if clash:
        raise ModelSpecificationError(
            f"SBML export: model {node.name} uses {clash} both as parameter, "
            "state or coupling names"
        )
    rename.update(states)
    _states(model, node, rename, known, states)
    for name, formula in _complete(node, "sbml_couplings", node.outputs).items():
        where = f"model {node.name}, coupling {name}"
        _parameter(model, name, None, f"{name} (coupling)")
        rule = model.createAssignmentRule()
        rule.setVariable(name)
        _check(rule.setMath(_math(formula, where, rename, known)), where, formula)


def _complete(node: Any, method: str, expected: Any) -> dict[str, str]:
    formulas = getattr(node, method)()
    names = sorted(getattr(item, "name", item) for item in expected)
    if sorted(formulas) != names:
        raise ModelSpecificationError(
            f"SBML export: model {node.name}.{method}() gives {sorted(formulas)}, "
            f"expected {names}"
        )
    return formulas


def _states(model, node, rename, known, states) -> None:
    rates = _complete(node, "sbml_rates", node.states)
    initial = _complete(node, "sbml_initial_state", node.states)
    for state in node.states:
        key, where = states[state.name], f"model {node.name}, state {state.name}"
        species = model.createSpecies()
        _check(species.setId(key), "species id", key)
        species.setName(f"{node.name}.{state.name} [{state.unit}]")
        species.setCompartment(COMPARTMENT)
        species.setHasOnlySubstanceUnits(True)
        species.setBoundaryCondition(False)
        species.setConstant(False)
        assignment = model.createInitialAssignment()
        assignment.setSymbol(key)
        math_ = _math(initial[state.name], where + " (initial)", rename, set())
        _check(assignment.setMath(math_), where, initial[state.name])
        rule = model.createRateRule()
        rule.setVariable(key)
        math_ = _math(rates[state.name], where, rename, known)
        _check(rule.setMath(math_), where, rates[state.name])


def _inputs(model: Any, graph: ModelGraph, schedule: InputSchedule) -> None:
    for name in graph.exogenous:
        channel = graph.channels[name]
        if channel.kind == "constant":
            value = float(schedule.constants.get(name, channel.default))
            _parameter(model, name, value, f"{name} [{channel.unit}] (constant input)")
            continue
        _parameter(model, name, None, f"{name} [{channel.unit}] ({channel.kind} input)")
        formula = input_formula(channel, schedule.of(name))
        rule = model.createAssignmentRule()
        rule.setVariable(name)
        _check(rule.setMath(_math(formula, f"input {name}", {}, set())), name, formula)


def input_formula(channel: InputChannel, pulses: tuple[Pulse, ...]) -> str:
    """Infix formula of a ``rate`` or ``exposure`` channel over ``pulses``.

    Returns ``"0"`` without pulses. Floats are written with ``repr`` so that
    the document holds the graph's numbers exactly.
    """
    terms = []
    for pulse in pulses:
        start = float(pulse.start_day)
        if channel.kind == "rate":
            width = max(float(pulse.end_day) - start, MIN_PULSE_WIDTH)
            terms.append(
                f"piecewise({float(pulse.amount) / width!r}, time >= {start!r} "
                f"&& time < {start + width!r}, 0)"
            )
        elif channel.kind == "exposure":
            rate = math.log(2.0) / channel.half_life_days
            terms.append(
                f"piecewise({float(pulse.amount)!r} * exp(-{rate!r} * "
                f"(time - {start!r})), time >= {start!r}, 0)"
            )
        else:
            raise ModelSpecificationError(
                f"input channel {channel.name}: kind {channel.kind!r} has no formula"
            )
    return " + ".join(terms) or "0"


def breakpoints(graph: ModelGraph, schedule: InputSchedule) -> list[float]:
    """Sorted discontinuities of the exogenous inputs, days (the graph's jumps)."""
    days = set()
    for name in graph.exogenous:
        kind = graph.channels[name].kind
        for pulse in schedule.of(name) if kind != "constant" else ():
            days.add(float(pulse.start_day))
            if kind == "rate":
                width = max(float(pulse.end_day) - pulse.start_day, MIN_PULSE_WIDTH)
                days.add(float(pulse.start_day) + width)
    return sorted(days)


def _breakpoints(model: Any, graph: ModelGraph, schedule: InputSchedule) -> None:
    for index, day in enumerate(breakpoints(graph, schedule)):
        event = model.createEvent()
        event.setId(f"breakpoint_{index}")
        event.setName(f"input discontinuity at day {day!r}")
        event.setUseValuesFromTriggerTime(True)
        trigger = event.createTrigger()
        trigger.setInitialValue(True)
        trigger.setPersistent(True)
        trigger.setMath(libsbml.parseL3Formula(f"time >= {day!r}"))


def _validate(document: Any, name: str) -> None:
    document.checkConsistency()
    errors = [
        document.getError(i)
        for i in range(document.getNumErrors())
        if document.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR
    ]
    if errors:
        raise ModelSpecificationError(
            f"SBML export of {name}: {len(errors)} SBML error(s); first: "
            f"{errors[0].getMessage().strip()}"
        )
