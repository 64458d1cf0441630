"""SBML models as model-graph nodes: read with libsbml, compiled to JAX.

:func:`load_sbml` reads an SBML file (Level 2 or 3) with python-libsbml and
returns an :class:`SbmlModel`, a :class:`~cartwin.graph.spec.ScaleModel`:

* **states**: species changed by reactions or rate rules, and parameters with
  rate rules; a species' value is what its symbol means in SBML math (the
  concentration, or the amount when ``hasOnlySubstanceUnits`` is true);
* **parameters**: global parameters whose value is positive and not set by a
  rule or an initial assignment, with log-normal priors centred on the SBML
  value (``log_sd`` configurable; default 0, i.e. fixed). Other values
  (compartment sizes, non-positive parameters, local parameters of kinetic
  laws) are constants of the model (:attr:`SbmlModel.constants`);
* **rhs**: reactions (``d[S]/dt = sum(stoichiometry * rate) / V`` for a
  concentration, without ``/ V`` for an amount) and rate rules, compiled from
  each MathML tree (libsbml ``ASTNode``) to nested closures over
  ``jax.numpy``, so that the right-hand side is traceable, differentiable and
  vectorisable. Assignment rules are evaluated in dependency order before
  the rates; function definitions are inlined; ``piecewise`` becomes
  ``jnp.where``.

Time: the graph works in days. The SBML time unit is read from the model
(L3 ``timeUnits``, L2 unit definition ``time``); when the file does not
declare one, days are assumed (:attr:`SbmlModel.time_unit_source` says which).
``rhs`` takes days and returns derivatives per day.

Unsupported constructs raise :class:`~cartwin.errors.UnsupportedModelError`
(a ``NotImplementedError``) naming the file and
the construct: events, algebraic rules, ``delay``, ``rateOf``, fast
reactions, variable stoichiometry, species conversion factors, compartments
that change size, initial assignments to parameters that depend on species or
time, and references to reaction ids in math. Constraints are ignored (they
only check a simulation; they do not change it).

Known limits
------------
- Discontinuities in time (``piecewise`` on ``time``) are found only when
  ``time`` is compared with an expression of constants; :func:`simulate_sbml`
  gives those instants to the step-size controller as jumps.
- Units of states are libsbml's printout of the derived SBML units, not UCUM.
- ``piecewise`` evaluates every branch (``jnp.where``); a branch that is not
  finite where it is not selected can still spoil a gradient.

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

import functools
import hashlib
import itertools
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import libsbml
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import ModelSpecificationError, UnsupportedModelError
from cartwin.graph.graph import SOLVERS, SolverSettings
from cartwin.graph.spec import Coupling, Observable, Parameter, State, check_model

configure_jax()

Env = dict[str, Any]
Compiled = Callable[[Env], Any]

#: Name of the model time in the evaluation environment (not a valid SBML id).
_TIME = "<time>"

#: Seconds per day, for converting SBML time units.
SECONDS_PER_DAY = 86400.0

#: Prior bounds: this many prior SDs either side of the median (log scale).
BOUND_SDS = 6.0


# -- MathML (libsbml ASTNode) to closures over jax.numpy --------------------

_UNARY = {
    libsbml.AST_FUNCTION_ABS: jnp.abs,
    libsbml.AST_FUNCTION_EXP: jnp.exp,
    libsbml.AST_FUNCTION_LN: jnp.log,
    libsbml.AST_FUNCTION_FLOOR: jnp.floor,
    libsbml.AST_FUNCTION_CEILING: jnp.ceil,
    libsbml.AST_FUNCTION_SIN: jnp.sin,
    libsbml.AST_FUNCTION_COS: jnp.cos,
    libsbml.AST_FUNCTION_TAN: jnp.tan,
    libsbml.AST_FUNCTION_ARCSIN: jnp.arcsin,
    libsbml.AST_FUNCTION_ARCCOS: jnp.arccos,
    libsbml.AST_FUNCTION_ARCTAN: jnp.arctan,
    libsbml.AST_FUNCTION_SINH: jnp.sinh,
    libsbml.AST_FUNCTION_COSH: jnp.cosh,
    libsbml.AST_FUNCTION_TANH: jnp.tanh,
    libsbml.AST_FUNCTION_ARCSINH: jnp.arcsinh,
    libsbml.AST_FUNCTION_ARCCOSH: jnp.arccosh,
    libsbml.AST_FUNCTION_ARCTANH: jnp.arctanh,
    libsbml.AST_FUNCTION_SEC: lambda x: 1.0 / jnp.cos(x),
    libsbml.AST_FUNCTION_CSC: lambda x: 1.0 / jnp.sin(x),
    libsbml.AST_FUNCTION_COT: lambda x: 1.0 / jnp.tan(x),
    libsbml.AST_FUNCTION_FACTORIAL: lambda x: jnp.exp(jax.scipy.special.gammaln(x + 1)),
    libsbml.AST_LOGICAL_NOT: jnp.logical_not,
}

_RELATIONAL = {
    libsbml.AST_RELATIONAL_EQ: operator.eq,
    libsbml.AST_RELATIONAL_NEQ: operator.ne,
    libsbml.AST_RELATIONAL_GT: operator.gt,
    libsbml.AST_RELATIONAL_GEQ: operator.ge,
    libsbml.AST_RELATIONAL_LT: operator.lt,
    libsbml.AST_RELATIONAL_LEQ: operator.le,
}

_NARY = {
    libsbml.AST_PLUS: (operator.add, 0.0),
    libsbml.AST_TIMES: (operator.mul, 1.0),
    libsbml.AST_LOGICAL_AND: (jnp.logical_and, True),
    libsbml.AST_LOGICAL_OR: (jnp.logical_or, False),
    libsbml.AST_LOGICAL_XOR: (jnp.logical_xor, False),
}

_CONSTANTS = {
    libsbml.AST_CONSTANT_E: math.e,
    libsbml.AST_CONSTANT_PI: math.pi,
    libsbml.AST_CONSTANT_TRUE: True,
    libsbml.AST_CONSTANT_FALSE: False,
    libsbml.AST_NAME_AVOGADRO: 6.02214076e23,
}

_UNSUPPORTED = {
    libsbml.AST_FUNCTION_DELAY: "delay()",
    libsbml.AST_FUNCTION_RATE_OF: "rateOf()",
    libsbml.AST_LAMBDA: "a lambda outside a function definition",
}


@dataclass
class _Compiler:
    """Translates ASTNodes into closures ``env -> value`` (jax.numpy)."""

    where: str
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    function_ids: frozenset[str] = frozenset()
    known: frozenset[str] | None = None
    forbidden: dict[str, str] = field(default_factory=dict)
    time_jumps: list[Compiled] = field(default_factory=list)
    is_constant: Callable[[libsbml.ASTNode], bool] = lambda node: False

    def compile(self, node: libsbml.ASTNode, context: str) -> Compiled:
        """Closure evaluating ``node``; ``context`` names it in errors."""
        if node is None:
            raise ModelSpecificationError(f"{self.where}: {context} has no math")
        kind = node.getType()
        if kind in _UNSUPPORTED:
            raise UnsupportedModelError(
                f"{self.where}: {context} uses {_UNSUPPORTED[kind]}, which cartwin's "
                "SBML import does not support"
            )
        return self._dispatch(node, kind, context)

    def _dispatch(self, node: libsbml.ASTNode, kind: int, context: str) -> Compiled:
        # numbers and named constants
        if node.isNumber():
            value = float(node.getValue())
            return lambda env: value
        if kind in _CONSTANTS:
            value = _CONSTANTS[kind]
            return lambda env: value
        if kind == libsbml.AST_NAME_TIME:
            return lambda env: env[_TIME]
        if kind == libsbml.AST_NAME:
            return self._name(node.getName(), context)

        # operators and functions
        args = [self.compile(node.getChild(i), context) for i in range(_n(node))]
        if kind == libsbml.AST_MINUS:
            return _minus(args)
        if kind == libsbml.AST_DIVIDE:
            return lambda env: args[0](env) / args[1](env)
        if kind in (libsbml.AST_POWER, libsbml.AST_FUNCTION_POWER):
            return _power(node, args)
        if kind in _NARY:
            return _nary(*_NARY[kind], args)
        if kind in _RELATIONAL:
            self._note_time_jump(node)
            return _relational(_RELATIONAL[kind], args)
        if kind in _UNARY:
            func = _UNARY[kind]
            return lambda env: func(args[0](env))
        return self._special(node, kind, args, context)

    def _special(
        self, node: libsbml.ASTNode, kind: int, args: list[Compiled], context: str
    ) -> Compiled:
        if kind == libsbml.AST_FUNCTION_PIECEWISE:
            return _piecewise(args)
        if kind == libsbml.AST_FUNCTION_ROOT:
            return _root(args)
        if kind == libsbml.AST_FUNCTION_LOG:
            return _log(args)
        if kind in (libsbml.AST_FUNCTION_MAX, libsbml.AST_FUNCTION_MIN):
            func = jnp.maximum if kind == libsbml.AST_FUNCTION_MAX else jnp.minimum
            return _nary(func, None, args)
        if kind == libsbml.AST_FUNCTION_REM:
            return lambda env: jnp.fmod(args[0](env), args[1](env))
        if kind == libsbml.AST_FUNCTION_QUOTIENT:
            return lambda env: jnp.trunc(args[0](env) / args[1](env))
        if kind == libsbml.AST_FUNCTION:
            return self._call(node.getName(), args, context)
        raise UnsupportedModelError(
            f"{self.where}: {context} uses the MathML construct "
            f"{node.getName() or libsbml.formulaToL3String(node)!r} (AST type "
            f"{kind}), which cartwin's SBML import does not support"
        )

    def _name(self, name: str, context: str) -> Compiled:
        if name in self.forbidden:
            raise UnsupportedModelError(
                f"{self.where}: {context} refers to {name!r}, {self.forbidden[name]}"
            )
        if self.known is not None and name not in self.known:
            raise ModelSpecificationError(
                f"{self.where}: {context} refers to unknown symbol {name!r}"
            )
        return lambda env: env[name]

    def with_names(self, names: frozenset[str]) -> _Compiler:
        """A compiler sharing functions and jumps, knowing more symbols."""
        known = None if self.known is None else self.known | names
        return _Compiler(
            self.where,
            self.functions,
            self.function_ids,
            known,
            self.forbidden,
            self.time_jumps,
            self.is_constant,
        )

    def _call(self, name: str, args: list[Compiled], context: str) -> Compiled:
        if name not in self.function_ids:
            raise ModelSpecificationError(
                f"{self.where}: {context} calls undefined function {name!r}"
            )
        # looked up when traced, so definitions may come in any order
        functions = self.functions
        return lambda env: functions[name](*(arg(env) for arg in args))

    def _note_time_jump(self, node: libsbml.ASTNode) -> None:
        # "time <op> expression of constants": a discontinuity in time
        if _n(node) != 2:
            return
        left, right = node.getChild(0), node.getChild(1)
        for this, other in ((left, right), (right, left)):
            if this.getType() == libsbml.AST_NAME_TIME and self.is_constant(other):
                self.time_jumps.append(self.compile(other, "a time comparison"))

    def define(self, definition: libsbml.FunctionDefinition) -> None:
        """Compile a function definition (lambda) into a Python callable."""
        fid = definition.getId()
        body = definition.getBody()
        count = definition.getNumArguments()
        names = [definition.getArgument(i).getName() for i in range(count)]
        inner = _Compiler(
            self.where, self.functions, self.function_ids, frozenset(names)
        )
        compiled = inner.compile(body, f"function definition {fid!r}")

        def call(*values: Any) -> Any:
            return compiled(dict(zip(names, values)))

        self.functions[fid] = call


def _n(node: libsbml.ASTNode) -> int:
    return int(node.getNumChildren())


def _minus(args: list[Compiled]) -> Compiled:
    if len(args) == 1:
        return lambda env: -args[0](env)
    return lambda env: args[0](env) - args[1](env)


def _nary(func: Callable, empty: Any, args: list[Compiled]) -> Compiled:
    if not args:
        return lambda env: empty

    def evaluate(env: Env) -> Any:
        value = args[0](env)
        for arg in args[1:]:
            value = func(value, arg(env))
        return value

    return evaluate


def _relational(func: Callable, args: list[Compiled]) -> Compiled:
    # n-ary relations (a < b < c) hold pairwise
    def evaluate(env: Env) -> Any:
        values = [arg(env) for arg in args]
        result = func(values[0], values[1])
        for first, second in itertools.pairwise(values[1:]):
            result = jnp.logical_and(result, func(first, second))
        return result

    return evaluate


def _power(node: libsbml.ASTNode, args: list[Compiled]) -> Compiled:
    # an integral constant exponent uses integer_pow: exact for negative bases
    exponent = node.getChild(1)
    if exponent.isNumber() and float(exponent.getValue()).is_integer():
        whole = int(exponent.getValue())
        return lambda env: jnp.asarray(args[0](env)) ** whole
    return lambda env: jnp.power(args[0](env), args[1](env))


def _piecewise(args: list[Compiled]) -> Compiled:
    pairs = [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]
    otherwise = args[-1] if len(args) % 2 else (lambda env: jnp.nan)

    def evaluate(env: Env) -> Any:
        value = otherwise(env)
        for piece, condition in reversed(pairs):
            value = jnp.where(condition(env), piece(env), value)
        return value

    return evaluate


def _root(args: list[Compiled]) -> Compiled:
    if len(args) == 1:
        return lambda env: jnp.sqrt(args[0](env))
    return lambda env: jnp.power(args[1](env), 1.0 / args[0](env))


def _log(args: list[Compiled]) -> Compiled:
    if len(args) == 1:
        return lambda env: jnp.log10(args[0](env))
    return lambda env: jnp.log(args[1](env)) / jnp.log(args[0](env))


def _symbols(node: libsbml.ASTNode | None) -> set[str]:
    """Ids referred to in ``node`` (names; ``time`` as :data:`_TIME`)."""
    found: set[str] = set()
    if node is None:
        return found
    stack = [node]
    while stack:
        item = stack.pop()
        if item.getType() == libsbml.AST_NAME:
            found.add(item.getName())
        elif item.getType() == libsbml.AST_NAME_TIME:
            found.add(_TIME)
        elif item.getType() == libsbml.AST_FUNCTION:
            found.add(f"{item.getName()}()")
        stack.extend(item.getChild(i) for i in range(_n(item)))
    return found


def _topological(targets: dict[str, set[str]], where: str, what: str) -> list[str]:
    """Order ``targets`` so that each comes after the targets it uses."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ModelSpecificationError(
                f"{where}: {what} form a cycle: {' -> '.join((*path, name))}"
            )
        state[name] = 1
        for used in sorted(targets[name] & targets.keys()):
            visit(used, (*path, name))
        state[name] = 2
        order.append(name)

    for name in targets:
        visit(name, ())
    return order


# -- reading the SBML model --------------------------------------------------


@dataclass(frozen=True)
class _Flux:
    """Contribution of the reactions to one state: ``sum(stoich * rate) / V``."""

    terms: tuple[tuple[int, float], ...]
    volume: str | None


@dataclass
class _Program:
    """Everything an :class:`SbmlModel` evaluates, compiled to closures."""

    constants: dict[str, float]
    state_ids: tuple[str, ...]
    initial_values: dict[str, tuple[float, str | None, bool]]
    derived: list[tuple[str, Compiled]]
    rules: list[tuple[str, Compiled]]
    initial_rules: list[tuple[str, Compiled]]
    rates: list[Compiled]
    rate_rules: dict[str, Compiled]
    fluxes: dict[str, _Flux]
    jumps: list[Compiled]
    model_time_per_day: float
    compiler: _Compiler

    def base_env(self, params: Mapping[str, Any]) -> Env:
        """Constants, parameters and values set by initial assignments."""
        env: Env = dict(self.constants)
        env.update(params)
        for target, expr in self.derived:
            env[target] = expr(env)
        return env

    def env(self, t_days: Any, y: Any, params: Mapping[str, Any]) -> Env:
        """Every symbol's value at ``t_days`` for state vector ``y``."""
        env = self.base_env(params)
        env[_TIME] = t_days * self.model_time_per_day
        for index, sid in enumerate(self.state_ids):
            env[sid] = y[index]
        for target, expr in self.rules:
            env[target] = expr(env)
        return env

    def rhs(self, t_days: Any, y: Any, params: Mapping[str, Any]) -> Any:
        """dy/dt in state units per day."""
        env = self.env(t_days, y, params)
        rates = [rate(env) for rate in self.rates]
        derivatives = []
        for sid in self.state_ids:
            if sid in self.rate_rules:
                derivatives.append(self.rate_rules[sid](env))
                continue
            flux = self.fluxes[sid]
            total = sum((s * rates[j] for j, s in flux.terms), 0.0)
            derivatives.append(total / env[flux.volume] if flux.volume else total)
        stacked = jnp.stack(jnp.broadcast_arrays(*derivatives), axis=-1)
        return stacked * self.model_time_per_day

    def initial(self, params: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
        """State vector at t = 0, after initial assignments and rules."""
        env = self.base_env(params)
        env[_TIME] = 0.0
        for sid, (value, compartment, divide) in self.initial_values.items():
            if compartment is not None:
                value = value / env[compartment] if divide else value * env[compartment]
            env[sid] = overrides.get(sid, value)
        for target, expr in self.initial_rules:
            if target not in overrides:
                env[target] = expr(env)
        values = [jnp.asarray(env[sid], dtype=float) for sid in self.state_ids]
        return jnp.stack(jnp.broadcast_arrays(*values), axis=-1)


def _read_document(path: Path) -> libsbml.SBMLDocument:
    if not path.is_file():
        raise ModelSpecificationError(f"SBML file {path} does not exist")
    document = libsbml.readSBMLFromFile(str(path))
    errors = [
        document.getError(i)
        for i in range(document.getNumErrors())
        if document.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR
    ]
    if errors or document.getModel() is None:
        details = "; ".join(
            f"line {e.getLine()}: {e.getMessage().strip()}" for e in errors[:3]
        )
        raise ModelSpecificationError(
            f"SBML file {path} cannot be read: {details or 'no model'}"
        )
    return document


def _reject_unsupported(model: libsbml.Model, where: str) -> None:
    """Raise UnsupportedModelError for constructs the JAX translation lacks."""
    problems = []
    if model.getNumEvents():
        ids = [model.getEvent(i).getId() for i in range(model.getNumEvents())]
        problems.append(f"events {ids}")
    for rule in model.getListOfRules():
        if rule.isAlgebraic():
            problems.append(
                f"an algebraic rule ({libsbml.formulaToL3String(rule.getMath())})"
            )
        elif rule.getVariable() in {c.getId() for c in model.getListOfCompartments()}:
            problems.append(f"a rule changing compartment {rule.getVariable()!r}")
    for reaction in model.getListOfReactions():
        if reaction.isSetFast() and reaction.getFast():
            problems.append(f"fast reaction {reaction.getId()!r}")
        for ref in (*reaction.getListOfReactants(), *reaction.getListOfProducts()):
            if ref.isSetStoichiometryMath() or (
                model.getLevel() >= 3 and not ref.getConstant()
            ):
                problems.append(
                    f"variable stoichiometry in reaction {reaction.getId()!r}"
                )
    for species in model.getListOfSpecies():
        if species.isSetConversionFactor():
            problems.append(f"conversion factor of species {species.getId()!r}")
    if model.isSetConversionFactor():
        problems.append("a model conversion factor")
    if problems:
        raise UnsupportedModelError(
            f"{where}: cartwin's SBML import does not support {'; '.join(problems)}"
        )


def _time_unit(model: libsbml.Model) -> tuple[float, str]:
    """Days per model time unit and where that came from."""
    unit_id = model.getTimeUnits() if model.getLevel() >= 3 else "time"
    definition = model.getUnitDefinition(unit_id) if unit_id else None
    if definition is None and unit_id == "second":
        return 1.0 / SECONDS_PER_DAY, "timeUnits second"
    if definition is None or definition.getNumUnits() != 1:
        return 1.0, "assumed: days (the file declares no convertible time unit)"
    unit = definition.getUnit(0)
    if unit.getKind() != libsbml.UNIT_KIND_SECOND or unit.getExponent() != 1:
        return 1.0, "assumed: days (the time unit is not a multiple of seconds)"
    seconds = unit.getMultiplier() * 10.0 ** unit.getScale()
    return seconds / SECONDS_PER_DAY, f"declared: {seconds:g} s"


def _units(element: libsbml.SBase) -> str:
    derived = element.getDerivedUnitDefinition()
    if derived is None or derived.getNumUnits() == 0:
        return "1"
    return libsbml.UnitDefinition.printUnits(derived, True)


def _references(model: libsbml.Model) -> tuple[str, ...]:
    found = []
    for index in range(model.getNumCVTerms()):
        term = model.getCVTerm(index)
        if term.getQualifierType() == libsbml.MODEL_QUALIFIER:
            found.extend(term.getResourceURI(i) for i in range(term.getNumResources()))
    return tuple(found)


@dataclass
class _Reader:
    """Builds a :class:`_Program` from a libsbml model, one SBML part at a time."""

    model: libsbml.Model
    where: str
    inputs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        model = self.model
        self.compartments = {c.getId(): c for c in model.getListOfCompartments()}
        self.parameters = {p.getId(): p for p in model.getListOfParameters()}
        self.species = {s.getId(): s for s in model.getListOfSpecies()}
        self.assigned = {
            r.getVariable(): r for r in model.getListOfRules() if r.isAssignment()
        }
        self.rated = {r.getVariable(): r for r in model.getListOfRules() if r.isRate()}
        self.initials = {a.getSymbol(): a for a in model.getListOfInitialAssignments()}
        self.state_ids = tuple(
            [s for s in self.species if self._species_is_state(self.species[s])]
            + [p for p in self.parameters if p in self.rated]
        )
        self.fixed = self._fixed_symbols()
        self.compiler = self._make_compiler()

    def _species_is_state(self, species: libsbml.Species) -> bool:
        sid = species.getId()
        if sid in self.rated:
            return True
        if sid in self.assigned or species.getConstant():
            return False
        return not species.getBoundaryCondition()

    def _fixed_symbols(self) -> frozenset[str]:
        # symbols that do not change during a simulation
        changing = set(self.state_ids) | set(self.assigned) | set(self.rated)
        ids = set(self.compartments) | set(self.parameters) | set(self.species)
        return frozenset(ids - changing)

    def _make_compiler(self) -> _Compiler:
        model = self.model
        forbidden = {
            r.getId(): "a reaction id (reaction rates as symbols are not supported)"
            for r in model.getListOfReactions()
        }
        for reaction in model.getListOfReactions():
            for ref in (*reaction.getListOfReactants(), *reaction.getListOfProducts()):
                if ref.isSetId():
                    forbidden[ref.getId()] = "a species reference (not supported)"
        functions = model.getListOfFunctionDefinitions()
        compiler = _Compiler(
            self.where,
            function_ids=frozenset(f.getId() for f in functions),
            known=frozenset(self.compartments)
            | set(self.parameters)
            | set(self.species),
            forbidden=forbidden,
            is_constant=self._is_constant,
        )
        for definition in functions:
            compiler.define(definition)
        return compiler

    def _is_constant(self, node: libsbml.ASTNode) -> bool:
        names = {n for n in _symbols(node) if not n.endswith("()")}
        return names <= self.fixed

    # -- pieces of the program ------------------------------------------------
    def constants(self) -> dict[str, float]:
        """SBML values of compartments and parameters (NaN when unset)."""
        values = {
            cid: c.getSize() if c.isSetSize() else math.nan
            for cid, c in self.compartments.items()
        }
        for pid, parameter in self.parameters.items():
            values[pid] = parameter.getValue() if parameter.isSetValue() else math.nan
        return values

    def initial_values(self) -> dict[str, tuple[float, str | None, bool]]:
        """``(value, compartment, divide)``: species value before assignments."""
        found: dict[str, tuple[float, str | None, bool]] = {}
        for sid in self.state_ids:
            if sid in self.parameters:
                found[sid] = (self.parameters[sid].getValue(), None, False)
            else:
                found[sid] = _species_initial(self.species[sid])
        return found

    def derived(self) -> list[tuple[str, Compiled]]:
        """Fixed symbols set by initial assignments, and fixed species values."""
        exprs: dict[str, Compiled] = {}
        uses: dict[str, set[str]] = {}
        for target, assignment in self.initials.items():
            if target in self.fixed:
                self._check_fixed_assignment(target, assignment.getMath())
                exprs[target] = self.compiler.compile(
                    assignment.getMath(), f"initial assignment to {target!r}"
                )
                uses[target] = _symbols(assignment.getMath())
        for sid, species in self.species.items():
            if sid in self.fixed and sid not in exprs:
                exprs[sid] = _species_constant(_species_initial(species))
                uses[sid] = {species.getCompartment()}
        order = _topological(uses, self.where, "initial assignments")
        return [(target, exprs[target]) for target in order]

    def _check_fixed_assignment(self, target: str, math_node: libsbml.ASTNode) -> None:
        if target in self.inputs:
            raise ModelSpecificationError(
                f"{self.where}: parameter {target!r} has an initial assignment and "
                "cannot be a coupling input"
            )
        if not self._is_constant(math_node):
            raise UnsupportedModelError(
                f"{self.where}: the initial assignment to {target!r} depends on "
                "species or time, which cartwin's SBML import does not support"
            )

    def rules(self) -> list[tuple[str, Compiled]]:
        """Assignment rules in evaluation order."""
        exprs = {
            target: self.compiler.compile(
                rule.getMath(), f"assignment rule for {target!r}"
            )
            for target, rule in self.assigned.items()
        }
        uses = {t: _symbols(r.getMath()) for t, r in self.assigned.items()}
        order = _topological(uses, self.where, "assignment rules")
        return [(target, exprs[target]) for target in order]

    def initial_rules(
        self, rules: list[tuple[str, Compiled]]
    ) -> list[tuple[str, Compiled]]:
        """Initial assignments to states and assignment rules, jointly ordered."""
        exprs = dict(rules)
        uses = {t: _symbols(r.getMath()) for t, r in self.assigned.items()}
        for target, assignment in self.initials.items():
            if target not in self.fixed:
                exprs[target] = self.compiler.compile(
                    assignment.getMath(), f"initial assignment to {target!r}"
                )
                uses[target] = _symbols(assignment.getMath())
        order = _topological(uses, self.where, "initial assignments and rules")
        return [(target, exprs[target]) for target in order]

    def reactions(self) -> tuple[list[Compiled], dict[str, _Flux]]:
        """Compiled rate laws and, per state species, its stoichiometric terms."""
        rates: list[Compiled] = []
        terms: dict[str, dict[int, float]] = {sid: {} for sid in self.state_ids}
        for index, reaction in enumerate(self.model.getListOfReactions()):
            rates.append(self._rate_law(reaction))
            for ref, sign in _references_of(reaction):
                sid = ref.getSpecies()
                if sid in terms and sid not in self.rated:
                    stoich = _stoichiometry(ref, reaction, self.where)
                    terms[sid][index] = terms[sid].get(index, 0.0) + sign * stoich
        fluxes = {
            sid: _Flux(tuple(found.items()), self._volume(sid))
            for sid, found in terms.items()
            if sid in self.species
        }
        return rates, fluxes

    def _volume(self, sid: str) -> str | None:
        species = self.species[sid]
        return None if species.getHasOnlySubstanceUnits() else species.getCompartment()

    def _rate_law(self, reaction: libsbml.Reaction) -> Compiled:
        law = reaction.getKineticLaw()
        rid = reaction.getId()
        if law is None or law.getMath() is None:
            raise ModelSpecificationError(
                f"{self.where}: reaction {rid!r} has no kinetic law"
            )
        local = {p.getId(): p.getValue() for p in law.getListOfParameters()}
        local.update({p.getId(): p.getValue() for p in law.getListOfLocalParameters()})
        compiler = self.compiler.with_names(frozenset(local))
        compiled = compiler.compile(
            law.getMath(), f"the kinetic law of reaction {rid!r}"
        )
        if not local:
            return compiled
        return lambda env: compiled({**env, **local})

    def rate_rules(self) -> dict[str, Compiled]:
        """Compiled rate rules by target."""
        return {
            target: self.compiler.compile(rule.getMath(), f"rate rule for {target!r}")
            for target, rule in self.rated.items()
        }

    def exposed_parameters(self) -> list[str]:
        """Global parameters that can carry a prior (positive, not assigned)."""
        excluded = (
            set(self.assigned) | set(self.rated) | set(self.initials) | self.inputs
        )
        return [
            pid
            for pid, parameter in self.parameters.items()
            if pid not in excluded
            and math.isfinite(parameter.getValue())
            and parameter.getValue() > 0
        ]


def _references_of(
    reaction: libsbml.Reaction,
) -> list[tuple[libsbml.SpeciesReference, float]]:
    reactants = [(ref, -1.0) for ref in reaction.getListOfReactants()]
    return reactants + [(ref, 1.0) for ref in reaction.getListOfProducts()]


def _stoichiometry(
    ref: libsbml.SpeciesReference, reaction: libsbml.Reaction, where: str
) -> float:
    value = ref.getStoichiometry()
    if not math.isfinite(value):
        raise ModelSpecificationError(
            f"{where}: reaction {reaction.getId()!r} gives species "
            f"{ref.getSpecies()!r} no stoichiometry"
        )
    return float(value)


def _species_initial(species: libsbml.Species) -> tuple[float, str | None, bool]:
    # the symbol means the amount (hasOnlySubstanceUnits) or the concentration
    amount_symbol = species.getHasOnlySubstanceUnits()
    compartment = species.getCompartment()
    if species.isSetInitialAmount():
        value = species.getInitialAmount()
        return (value, None, False) if amount_symbol else (value, compartment, True)
    if species.isSetInitialConcentration():
        value = species.getInitialConcentration()
        return (value, compartment, False) if amount_symbol else (value, None, False)
    return (math.nan, None, False)


def _species_constant(initial: tuple[float, str | None, bool]) -> Compiled:
    value, compartment, divide = initial
    if compartment is None:
        return lambda env: value
    if divide:
        return lambda env: value / env[compartment]
    return lambda env: value * env[compartment]


# -- the graph node -----------------------------------------------------------


@dataclass(frozen=True)
class SbmlModel:
    """An SBML model as a :class:`~cartwin.graph.spec.ScaleModel` (see module).

    Attributes
    ----------
    name, version, references, parameters, states, observables, inputs, outputs
        As :class:`~cartwin.graph.spec.ScaleModel`. ``version`` holds the SBML
        level/version and the first 12 hex digits of the file's SHA-256;
        ``references`` the model's MIRIAM ``bqmodel`` resources.
    source : str
        Path of the SBML file.
    time_unit_days : float
        Days per SBML time unit (1/24 for hours, 1 for days).
    time_unit_source : str
        Whether the time unit was declared in the file or assumed.
    constants : Mapping[str, float]
        SBML values of every compartment and global parameter, including
        those not declared as :attr:`parameters`. ``params`` passed to the
        functions below may override any of them (a PEtab condition does).
    """

    name: str
    version: str
    references: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    states: tuple[State, ...]
    observables: tuple[Observable, ...]
    inputs: tuple[Coupling, ...]
    outputs: tuple[Coupling, ...]
    source: str
    time_unit_days: float
    time_unit_source: str
    constants: Mapping[str, float] = field(compare=False)
    _program: _Program = field(repr=False, compare=False)
    _formulas: Mapping[str, Compiled] = field(repr=False, compare=False)
    _input_targets: Mapping[str, str] = field(repr=False, compare=False)

    @property
    def state_ids(self) -> tuple[str, ...]:
        """SBML ids of the states, in state-vector order."""
        return self._program.state_ids

    def _values(self, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> Env:
        unknown = set(params) - set(self.constants)
        if unknown:
            raise ModelSpecificationError(
                f"SBML model {self.name}: unknown parameters {sorted(unknown)}"
            )
        values: Env = dict(params)
        for coupling, target in self._input_targets.items():
            if coupling in inputs:
                values[target] = inputs[coupling]
        return values

    def initial_state(
        self, params: Mapping[str, Any], covariates: Mapping[str, Any]
    ) -> Any:
        """State vector at t = 0; a covariate named like a state overrides it."""
        overrides = {k: v for k, v in covariates.items() if k in self.state_ids}
        return self._program.initial(self._values(params, {}), overrides)

    def rhs(
        self, t: Any, y: Any, params: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> Any:
        """dy/dt per day at ``t`` days."""
        return self._program.rhs(t, y, self._values(params, inputs))

    def couplings(self, t: Any, y: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """Values of the output couplings (formulas given to :func:`load_sbml`)."""
        env = self._program.env(t, y, self._values(params, {}))
        return {c.name: self._formulas[c.name](env) for c in self.outputs}

    def observe(self, quantity: str, t: Any, y: Any, params: Mapping[str, Any]) -> Any:
        """Value of the formula mapped to ``quantity`` by :func:`load_sbml`."""
        if quantity not in self._formulas or quantity in {c.name for c in self.outputs}:
            raise ModelSpecificationError(
                f"SBML model {self.name} has no observable {quantity!r}"
            )
        env = self._program.env(t, y, self._values(params, {}))
        return self._formulas[quantity](env)

    def formula(self, formula: str) -> Callable[[Any, Any, Mapping[str, Any]], Any]:
        """Compile an SBML L3 formula (e.g. a PEtab observable) of the model's symbols.

        Returns a function ``(t_days, y, params) -> value``.
        """
        compiled = _compile_formula(self._program.compiler, formula, self.source)

        def evaluate(t: Any, y: Any, params: Mapping[str, Any]) -> Any:
            return compiled(self._program.env(t, y, self._values(params, {})))

        return evaluate

    def jump_days(self, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Instants (days) where ``piecewise`` switches on ``time`` (see module)."""
        env = self._program.base_env(self._values(params or {}, {}))
        return [jump(env) * self.time_unit_days for jump in self._program.jumps]

    def default_params(self) -> dict[str, float]:
        """Prior medians (the SBML values) of the declared parameters."""
        return {p.name: p.median for p in self.parameters}

    @functools.cached_property
    def _vector_field(self) -> Callable[[Any, Any, Any], Any]:
        # one function object per model, so diffrax compiles once per model
        return lambda t, y, params: self._program.rhs(t, y, params)


def load_sbml(
    path: str | Path,
    *,
    name: str | None = None,
    log_sd: float | Mapping[str, float] = 0.0,
    observables: Mapping[str, tuple[str, Observable]] | None = None,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    time_unit_days: float | None = None,
) -> SbmlModel:
    """Read an SBML file into a model-graph node.

    Parameters
    ----------
    path : str or Path
        SBML Level 2 or 3 file.
    name : str, optional
        Node name; default the SBML model id.
    log_sd : float or mapping, default 0
        SD of ln(parameter) in the population prior, for all parameters or
        per parameter id (missing ids: 0, fixed). The prior median is the
        SBML value; bounds are :data:`BOUND_SDS` SDs either side.
    observables : mapping, optional
        cartwin quantity -> (SBML L3 formula, :class:`Observable`), e.g.
        ``{"il6": ("IL6", Observable("il6", "pg/mL"))}``.
    inputs : mapping, optional
        Coupling name -> id of a global parameter whose value the coupling
        replaces at each instant.
    outputs : mapping, optional
        Coupling name -> SBML L3 formula of the model's symbols.
    time_unit_days : float, optional
        Days per SBML time unit, overriding what the file declares.

    Returns
    -------
    SbmlModel

    Raises
    ------
    ModelSpecificationError
        When the file cannot be read, math refers to unknown symbols, rules
        form a cycle, or a mapping names an unknown id.
    UnsupportedModelError
        For SBML constructs the translation does not support (see module).
    """
    path = Path(path)
    document = _read_document(path)
    model = document.getModel()
    where = f"SBML file {path}"
    _reject_unsupported(model, where)
    reader = _Reader(model, where, frozenset((inputs or {}).values()))
    days, unit_source = _time_unit(model)
    if time_unit_days is not None:
        days, unit_source = float(time_unit_days), "given by the caller"
    program = _program(reader, 1.0 / days)
    formulas = {
        key: _compile_formula(program.compiler, formula, where)
        for key, formula in {
            **{q: f for q, (f, _) in (observables or {}).items()},
            **(outputs or {}),
        }.items()
    }
    node = SbmlModel(
        name=name or model.getId() or path.stem,
        version=_version(document, path),
        references=_references(model),
        parameters=_parameters(reader, log_sd),
        states=tuple(
            State(sid, _units(_element(model, sid)), non_negative=sid in reader.species)
            for sid in reader.state_ids
        ),
        observables=tuple(obs for _, obs in (observables or {}).values()),
        inputs=_inputs(reader, inputs or {}),
        outputs=tuple(
            Coupling(c, "", f"SBML formula {f}") for c, f in (outputs or {}).items()
        ),
        source=str(path),
        time_unit_days=days,
        time_unit_source=unit_source,
        constants=program.constants,
        _program=program,
        _formulas=formulas,
        _input_targets=dict(inputs or {}),
    )
    check_model(node)
    return node


def _program(reader: _Reader, model_time_per_day: float) -> _Program:
    rules = reader.rules()
    rates, fluxes = reader.reactions()
    return _Program(
        constants=reader.constants(),
        state_ids=reader.state_ids,
        initial_values=reader.initial_values(),
        derived=reader.derived(),
        rules=rules,
        initial_rules=reader.initial_rules(rules),
        rates=rates,
        rate_rules=reader.rate_rules(),
        fluxes=fluxes,
        jumps=reader.compiler.time_jumps,
        model_time_per_day=model_time_per_day,
        compiler=reader.compiler,
    )


def _element(model: libsbml.Model, sid: str) -> libsbml.SBase:
    element = model.getSpecies(sid)
    return element if element is not None else model.getParameter(sid)


def _version(document: libsbml.SBMLDocument, path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"SBML L{document.getLevel()}V{document.getVersion()} sha256:{digest}"


def _parameters(
    reader: _Reader, log_sd: float | Mapping[str, float]
) -> tuple[Parameter, ...]:
    found = []
    for pid in reader.exposed_parameters():
        value = float(reader.parameters[pid].getValue())
        sd = float(log_sd.get(pid, 0.0) if isinstance(log_sd, Mapping) else log_sd)
        span = math.exp(BOUND_SDS * sd)
        found.append(
            Parameter(
                pid,
                _units(reader.parameters[pid]),
                value,
                sd,
                lower=value / span,
                upper=value * span,
                source=f"{reader.where}, parameter {pid!r} (prior width: log_sd {sd})",
            )
        )
    return tuple(found)


def _inputs(reader: _Reader, inputs: Mapping[str, str]) -> tuple[Coupling, ...]:
    found = []
    for coupling, target in inputs.items():
        if (
            target not in reader.parameters
            or target in reader.assigned
            or target in reader.rated
        ):
            raise ModelSpecificationError(
                f"{reader.where}: coupling input {coupling!r} targets {target!r}, "
                "which is not a global parameter free of rules"
            )
        found.append(
            Coupling(coupling, _units(reader.parameters[target]), f"sets {target}")
        )
    return tuple(found)


def _compile_formula(compiler: _Compiler, formula: str, where: str) -> Compiled:
    node = libsbml.parseL3Formula(formula)
    if node is None:
        raise ModelSpecificationError(
            f"{where}: formula {formula!r} cannot be parsed: "
            f"{libsbml.getLastParseL3Error()}"
        )
    return compiler.compile(node, f"formula {formula!r}")


# -- simulation -----------------------------------------------------------------


#: Solver of :func:`simulate_sbml`: stiff-capable, tight tolerances (the
#: agreement with libroadrunner is checked at these settings).
SBML_SOLVER = SolverSettings(
    solver="kvaerno5", rtol=1e-10, atol=1e-12, max_steps=200_000
)


def solve_ode(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    t_days: Any,
    args: Any,
    *,
    t0: float = 0.0,
    jumps: Any = (),
    settings: SolverSettings = SBML_SOLVER,
) -> Any:
    """Solve ``dy/dt = vector_field(t, y, args)`` from ``t0``; states at ``t_days``.

    Parameters
    ----------
    vector_field : callable
        ``(t, y, args) -> dy/dt``; reuse one function object so that diffrax
        reuses its compiled program.
    y0 : array
        State at ``t0``.
    t_days : array
        Increasing output times, ``>= t0``.
    args : pytree
        Passed to ``vector_field`` (parameters).
    t0 : float
        Start time, days.
    jumps : sequence of float
        Discontinuities of the vector field in time, days; the step-size
        controller stops on them.
    settings : SolverSettings
        Solver and tolerances.

    Returns
    -------
    jax.Array, shape (len(t_days), len(y0))
        Non-finite entries when the solver failed (``throw=False``: one failed
        virtual patient never aborts a batch).
    """
    ts = jnp.asarray(t_days, dtype=float)
    # arrays, not Python floats: diffrax's filter_jit would treat floats as
    # static and compile again for every new parameter value
    args = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype=float), args)
    # tolerances as arrays: values, not part of the compiled program's key
    controller: Any = diffrax.PIDController(
        rtol=jnp.asarray(settings.rtol), atol=jnp.asarray(settings.atol)
    )
    if len(jumps):
        controller = diffrax.ClipStepSizeController(
            controller, jump_ts=jnp.asarray(jumps)
        )
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        SOLVERS[settings.solver](),
        t0=t0,
        t1=ts[-1],
        dt0=settings.dt0,
        y0=jnp.asarray(y0, dtype=float),
        args=args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=settings.max_steps,
        throw=False,
    )
    failed = solution.result != diffrax.RESULTS.successful
    return jnp.where(failed, jnp.nan, solution.ys)


def simulate_sbml(
    model: SbmlModel,
    t_days: Any,
    *,
    params: Mapping[str, Any] | None = None,
    covariates: Mapping[str, Any] | None = None,
    settings: SolverSettings = SBML_SOLVER,
) -> np.ndarray:
    """States of ``model`` at ``t_days`` (days from the model's t = 0).

    This is the path a graph node takes: :meth:`SbmlModel.initial_state` and
    :meth:`SbmlModel.rhs`, solved by diffrax.

    Parameters
    ----------
    model : SbmlModel
        From :func:`load_sbml`.
    t_days : array
        Increasing output times, days, ``>= 0``.
    params : mapping, optional
        Overrides of parameter values (default: the SBML values).
    covariates : mapping, optional
        Initial values by state id.
    settings : SolverSettings
        Default :data:`SBML_SOLVER` (Kvaerno5, rtol 1e-10, atol 1e-12).

    Returns
    -------
    numpy.ndarray, shape (len(t_days), len(model.states))
        State values in SBML units; NaN when the solver failed.
    """
    values = {**model.default_params(), **(params or {})}
    return np.asarray(
        sbml_trajectory(model, values, t_days, covariates, settings=settings)
    )


def sbml_trajectory(
    model: SbmlModel,
    params: Mapping[str, Any],
    t_days: Any,
    covariates: Mapping[str, Any] | None = None,
    *,
    settings: SolverSettings = SBML_SOLVER,
) -> jax.Array:
    """States at ``t_days`` (JAX-traceable in ``params``; see :func:`simulate_sbml`).

    ``params`` must hold every parameter that differs from its SBML value;
    the time discontinuities of ``piecewise`` (:meth:`SbmlModel.jump_days`)
    are passed to the step-size controller.
    """
    y0 = model.initial_state(params, covariates or {})
    jumps = model.jump_days(params)
    if jumps:
        jumps = jnp.sort(jnp.stack([jnp.asarray(j, dtype=float) for j in jumps]))
    return solve_ode(
        model._vector_field,
        y0,
        t_days,
        model._values(params, {}),
        jumps=jumps,
        settings=settings,
    )


def simulate_roadrunner(
    path: str | Path,
    t_model: Any,
    *,
    rtol: float = 1e-12,
    atol: float = 1e-14,
) -> tuple[tuple[str, ...], np.ndarray]:
    """Reference trajectory from libroadrunner (CVODE), for agreement checks.

    Parameters
    ----------
    path : str or Path
        SBML file.
    t_model : array
        Output times in the SBML model's own time unit, starting at 0.
    rtol, atol : float
        CVODE relative and absolute tolerances.

    Returns
    -------
    ids : tuple of str
        Species and rate-rule parameter ids, in the order of the columns.
    values : numpy.ndarray, shape (len(t_model), len(ids))
        Concentrations (amounts for ``hasOnlySubstanceUnits`` species).
    """
    import roadrunner  # optional: the reference engine only

    runner = roadrunner.RoadRunner(str(path))
    runner.integrator.relative_tolerance = rtol
    runner.integrator.absolute_tolerance = atol
    runner.integrator.maximum_num_steps = 1_000_000
    document = libsbml.readSBMLFromString(runner.getCurrentSBML())
    ids = tuple(model_state_ids(document.getModel()))
    runner.timeCourseSelections = ["time"] + [
        _rr_symbol(document.getModel(), i) for i in ids
    ]
    result = runner.simulate(times=np.asarray(t_model, dtype=float))
    return ids, np.asarray(result)[:, 1:]


def model_state_ids(model: libsbml.Model) -> list[str]:
    """Ids that :func:`load_sbml` makes states, in the same order."""
    return list(_Reader(model, "SBML model").state_ids)


def _rr_symbol(model: libsbml.Model, sid: str) -> str:
    species = model.getSpecies(sid)
    if species is None or species.getHasOnlySubstanceUnits():
        return sid
    return f"[{sid}]"
