"""A patient's calibration problem as PEtab v1, and back.

PEtab [1]_ describes a parameter-estimation problem with an SBML model and
tab-separated tables. :func:`export_petab` writes the ANC calibration problem
of one patient (:class:`AncProblem`: the Friberg neutrophil model of
:mod:`cartwin.models.neutrophils`, the patient's lymphodepletion doses and
ANC observations, population priors):

* ``model.xml``: the neutrophil model written as SBML L3V1 with
  python-libsbml: species with rate rules, the lymphodepletion exposure as
  the assignment rule ``sum_i piecewise(u_i exp(-k_ld (time - s_i)),
  time >= s_i, 0)``;
* ``conditions.tsv``: one condition, the patient, setting each dose's
  exposure units ``u_i``;
* ``measurements.tsv``: the ANC values (10^9/L);
* ``observables.tsv``: ``anc = circ``, log-normal noise with the model's SD;
* ``parameters.tsv``: every model parameter, those estimated on log scale
  with ``parameterScaleNormal`` priors equal to cartwin's log-normal priors;
* ``problem.yaml``.

SBML/PEtab time starts at 0; it is ``t_days - time_origin_day`` where
``time_origin_day`` (days since infusion) is the earlier of the first
observation and one day before the first dose; the SBML model holds it as
the constant parameter ``time_origin_day``.

:func:`import_petab` reads the files back (with the ``petab`` package) into
an :class:`ImportedProblem` whose SBML model is compiled by
:func:`cartwin.models.sbml.load_sbml`; :func:`fit_petab` minimises its PEtab
objective and :func:`fit_anc_problem` minimises the original problem's, on
the same scale with the same optimiser. The two optima match
(``tests/io/test_petab.py``).

Objective (negative log posterior, PEtab's convention, constants included)::

    sum_i [ ln(sigma sqrt(2 pi)) + ln y_i + (ln y_i - ln h_i)^2 / (2 sigma^2) ]
    + sum_k [ ln(s_k sqrt(2 pi)) + (x_k - m_k)^2 / (2 s_k^2) ],   x_k = ln theta_k

Known limits
------------
- Only the neutrophil model and ANC are exported; CAR T observations need
  a CAR T model with an SBML form (not written yet).
- PEtab v1 has no censored measurements: an ANC below a limit of
  quantification is refused (:class:`~cartwin.errors.DataError`), never
  dropped.
- The importer reads what this exporter writes and the common subset of
  PEtab v1 around it: one condition, no preequilibration, observable and
  noise formulas in SBML L3 syntax, ``lin``/``log`` parameter scales,
  ``parameterScaleNormal`` priors or none, normal noise on ``lin`` or ``log``
  observables. Anything else raises :class:`NotImplementedError`.

References
----------
.. [1] Schmiester L, Schälte Y, Bergmann FT, et al. PEtab - Interoperable
   specification of parameter estimation problems in systems biology. PLoS
   Comput Biol 2021;17(1):e1008646. doi:10.1371/journal.pcbi.1008646
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import libsbml
import numpy as np

from cartwin._jax import configure_jax
from cartwin.errors import CalibrationError, DataError, ModelSpecificationError
from cartwin.graph.graph import SolverSettings
from cartwin.graph.inputs import CHANNELS
from cartwin.models import neutrophils as nm
from cartwin.models.sbml import SbmlModel, load_sbml, sbml_trajectory
from cartwin.record.model import PatientRecord

configure_jax()

#: Parameters estimated by default: baseline ANC, transit time, sensitivity.
DEFAULT_ESTIMATED = ("circ0", "mtt", "sensitivity")

#: Solver of both objectives: tight enough that the two optima agree.
FIT_SOLVER = SolverSettings(solver="tsit5", rtol=1e-10, atol=1e-12)

#: Names of the PEtab files written by :func:`export_petab`.
FILES = {
    "sbml": "model.xml",
    "conditions": "conditions.tsv",
    "measurements": "measurements.tsv",
    "observables": "observables.tsv",
    "parameters": "parameters.tsv",
    "yaml": "problem.yaml",
}

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Largest gradient component (objective per unit of x) accepted as converged.
#: The prior alone gives a curvature of at least 1 / 0.36**2 ~ 8 per unit of
#: ln theta, so this leaves ln theta within about 1e-4 of the optimum.
GRADIENT_TOL = 1e-3


@dataclass(frozen=True)
class AncProblem:
    """One patient's ANC calibration problem for the neutrophil model.

    Attributes
    ----------
    patient : str
        Pseudonym (becomes the PEtab condition id after sanitising).
    t_days : numpy.ndarray
        Days since infusion of each ANC value.
    anc : numpy.ndarray
        ANC, 10^9/L, finite and > 0.
    regimen : Regimen
        Lymphodepletion doses (:func:`cartwin.models.neutrophils.regimen_from_record`).
    estimated : tuple of str
        Parameters estimated; the others stay at their prior medians.
    """

    patient: str
    t_days: np.ndarray
    anc: np.ndarray
    regimen: nm.Regimen
    estimated: tuple[str, ...] = DEFAULT_ESTIMATED

    def __post_init__(self) -> None:
        t = np.asarray(self.t_days, dtype=float).ravel()
        anc = np.asarray(self.anc, dtype=float).ravel()
        object.__setattr__(self, "t_days", t)
        object.__setattr__(self, "anc", anc)
        if t.size != anc.size or t.size == 0:
            raise DataError(
                f"patient {self.patient}: {t.size} times but {anc.size} ANC values"
            )
        bad = ~(np.isfinite(anc) & (anc > 0)) | ~np.isfinite(t)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"patient {self.patient}: ANC[{i}] = {anc[i]!r} at day {t[i]!r} must "
                "be finite and > 0 at a finite time"
            )
        unknown = set(self.estimated) - set(nm.MODEL.typical_params())
        if unknown:
            raise ModelSpecificationError(
                f"unknown estimated parameters {sorted(unknown)}"
            )

    @property
    def time_origin_day(self) -> float:
        """Simulation start, days since infusion (PEtab time 0)."""
        return float(min(np.min(self.t_days), self.regimen.start_day - 1.0))

    def priors(self) -> dict[str, tuple[float, float]]:
        """Prior mean and SD of ln(theta) of each estimated parameter."""
        by_name = {p.name: p for p in nm.MODEL.parameters}
        return {
            n: (math.log(by_name[n].median), by_name[n].log_sd) for n in self.estimated
        }


def anc_problem_from_record(
    record: PatientRecord, *, estimated: tuple[str, ...] = DEFAULT_ESTIMATED
) -> AncProblem:
    """The ANC problem of a patient: ANC observations and lymphodepletion doses.

    Raises
    ------
    DataError
        When an ANC value is censored (PEtab v1 cannot express it), the
        record has no ANC, or its doses cannot be read.
    """
    censored = [o for o in record.observations_of("anc") if o.censored is not None]
    if censored:
        raise DataError(
            f"patient {record.facts.pseudonym}: ANC {censored[0].source_id} is "
            f"censored ({censored[0].censored} {censored[0].value}); PEtab v1 has "
            "no censoring"
        )
    series = record.series("anc")
    return AncProblem(
        patient=record.facts.pseudonym,
        t_days=series.t_days,
        anc=series.values,
        regimen=nm.regimen_from_record(record),
        estimated=estimated,
    )


@dataclass(frozen=True)
class Optimum:
    """Result of a MAP fit.

    Attributes
    ----------
    params : dict
        Estimated parameters on the natural scale.
    objective : float
        Negative log posterior at the optimum (PEtab convention).
    x : numpy.ndarray
        Estimated parameters on the optimisation scale (ln theta).
    converged : bool
        Whether the optimiser reported success.
    message : str
        The optimiser's message.
    initial_objective : float
        Objective at the start point (the prior medians or PEtab nominal values).
    """

    params: dict[str, float]
    objective: float
    x: np.ndarray
    converged: bool
    message: str
    initial_objective: float = math.nan


def log_normal_nllh(y: Any, prediction: Any, sigma: Any) -> Any:
    """PEtab negative log-likelihood of ``y`` with log-normal noise (``log``/normal)."""
    residual = (jnp.log(y) - jnp.log(prediction)) / sigma
    return jnp.sum(jnp.log(sigma) + _LOG_SQRT_2PI + jnp.log(y) + 0.5 * residual**2)


def normal_prior_nll(x: Any, mean: Any, sd: Any) -> Any:
    """Negative log density of independent normal priors on the optimisation scale."""
    return jnp.sum(jnp.log(sd) + _LOG_SQRT_2PI + 0.5 * ((x - mean) / sd) ** 2)


# -- the neutrophil model as SBML ------------------------------------------------


def neutrophil_sbml(problem: AncProblem) -> str:
    """SBML L3V1 text of the neutrophil model with the patient's doses.

    Model time is days since ``problem.time_origin_day``. Parameter values
    are the prior medians; dose ``i`` has parameters ``ld{i}_start`` (model
    time, days) and ``ld{i}_units`` (units of ``ld_exposure``); the exposure
    decays at ``k_ld`` (the graph's channel half-life).
    """
    document = libsbml.SBMLDocument(3, 1)
    model = document.createModel()
    model.setId("cartwin_neutrophils")
    model.setName("Friberg neutrophil model driven by flu/cy (cartwin)")
    _day_unit(model)
    compartment = model.createCompartment()
    _set(compartment, id="blood", size=1.0, constant=True, spatialDimensions=3)

    # parameters: the model's, the time origin, the exposure decay, the doses
    for name, value in nm.MODEL.typical_params().items():
        _parameter(model, name, value)
    origin = problem.time_origin_day
    _parameter(model, "time_origin_day", origin)
    _parameter(model, "k_ld", math.log(2.0) / CHANNELS[nm.LD_INPUT].half_life_days)
    for i, dose in enumerate(problem.regimen.doses, start=1):
        _parameter(model, f"ld{i}_start", dose.day - origin)
        _parameter(model, f"ld{i}_units", dose.exposure_units)

    # the exposure and the transit rate as assignment rules
    pieces = [
        f"piecewise(ld{i}_units * exp(-k_ld * (time - ld{i}_start)), "
        f"time >= ld{i}_start, 0)"
        for i in range(1, len(problem.regimen.doses) + 1)
    ]
    _rule(model, nm.LD_INPUT, " + ".join(pieces), rate=False)
    _rule(model, "k_tr", f"{nm.N_TRANSIT + 1} / mtt", rate=False)

    # species with rate rules (amounts in a unit compartment), all at circ0
    for state, formula in _friberg_rates().items():
        species = model.createSpecies()
        _set(
            species,
            id=state,
            compartment="blood",
            initialAmount=0.0,
            hasOnlySubstanceUnits=True,
            boundaryCondition=False,
            constant=False,
        )
        _initial(model, state, "circ0")
        _rule(model, state, formula, rate=True)
    return libsbml.writeSBMLToString(document)


def _friberg_rates() -> dict[str, str]:
    chain = ["prol", *(f"transit{i}" for i in range(1, nm.N_TRANSIT + 1)), "circ"]
    effect = f"sensitivity * slope_ld * {nm.LD_INPUT}"
    rates = {
        "prol": f"k_tr * prol * (1 - {effect}) * (circ0 / circ)^gamma - k_tr * prol"
    }
    for upstream, state in itertools.pairwise(chain):
        rates[state] = f"k_tr * ({upstream} - {state})"
    return rates


def _day_unit(model: libsbml.Model) -> None:
    unit_def = model.createUnitDefinition()
    unit_def.setId("day")
    unit = unit_def.createUnit()
    _set(unit, kind=libsbml.UNIT_KIND_SECOND, exponent=1, scale=0, multiplier=86400.0)
    model.setTimeUnits("day")


def _parameter(
    model: libsbml.Model, name: str, value: float, *, constant: bool = True
) -> None:
    parameter = model.createParameter()
    _set(parameter, id=name, value=float(value), constant=constant)


def _rule(model: libsbml.Model, variable: str, formula: str, *, rate: bool) -> None:
    if not rate:
        _parameter(model, variable, 0.0, constant=False)
    rule = model.createRateRule() if rate else model.createAssignmentRule()
    rule.setVariable(variable)
    _math(rule, formula)


def _initial(model: libsbml.Model, symbol: str, formula: str) -> None:
    assignment = model.createInitialAssignment()
    assignment.setSymbol(symbol)
    _math(assignment, formula)


def _math(element: libsbml.SBase, formula: str) -> None:
    node = libsbml.parseL3Formula(formula)
    if node is None:
        raise ModelSpecificationError(
            f"cannot parse {formula!r}: {libsbml.getLastParseL3Error()}"
        )
    _check(element.setMath(node), f"math {formula!r}")


def _set(element: libsbml.SBase, **attributes: Any) -> None:
    # libsbml setters return an operation code; anything else than success is a bug
    for name, value in attributes.items():
        setter = getattr(element, "set" + name[0].upper() + name[1:])
        _check(setter(value), f"{element.getElementName()}.{name} = {value!r}")


def _check(code: int, what: str) -> None:
    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise ModelSpecificationError(
            f"libsbml refused {what}: {libsbml.OperationReturnValue_toString(code)}"
        )


# -- writing and checking PEtab files -----------------------------------------


def condition_id(problem: AncProblem) -> str:
    """PEtab condition id of the patient (a valid identifier)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in problem.patient)
    return f"patient_{cleaned}"


def export_petab(problem: AncProblem, directory: str | Path) -> Path:
    """Write ``problem`` as PEtab v1 files into ``directory``; return the YAML path.

    The folder is created when missing; files of the same names are replaced.
    """
    import pandas as pd

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FILES["sbml"]).write_text(neutrophil_sbml(problem), encoding="utf-8")
    condition = condition_id(problem)
    units = {
        f"ld{i}_units": d.exposure_units for i, d in enumerate(problem.regimen.doses, 1)
    }
    tables = {
        "conditions": pd.DataFrame([{"conditionId": condition, **units}]),
        "measurements": pd.DataFrame(
            {
                "observableId": "anc",
                "simulationConditionId": condition,
                "time": problem.t_days - problem.time_origin_day,
                "measurement": problem.anc,
            }
        ),
        "observables": pd.DataFrame(
            [
                {
                    "observableId": "anc",
                    "observableName": "absolute neutrophil count (10^9/L)",
                    "observableFormula": "circ",
                    "observableTransformation": "log",
                    "noiseFormula": repr(_anc_sigma()),
                    "noiseDistribution": "normal",
                }
            ]
        ),
        "parameters": pd.DataFrame(
            [_parameter_row(p, problem) for p in nm.MODEL.parameters]
        ),
    }
    for kind, table in tables.items():
        table.to_csv(folder / FILES[kind], sep="\t", index=False)
    (folder / FILES["yaml"]).write_text(_yaml_text(), encoding="utf-8")
    return folder / FILES["yaml"]


def _anc_sigma() -> float:
    return float(nm.MODEL.observables[0].sigma)


def _parameter_row(parameter: Any, problem: AncProblem) -> dict[str, Any]:
    estimated = parameter.name in problem.estimated
    row = {
        "parameterId": parameter.name,
        "parameterScale": "log" if estimated else "lin",
        "lowerBound": parameter.lower,
        "upperBound": parameter.upper,
        "nominalValue": parameter.median,
        "estimate": int(estimated),
        "objectivePriorType": "",
        "objectivePriorParameters": "",
    }
    if estimated and parameter.log_sd > 0:
        row["objectivePriorType"] = "parameterScaleNormal"
        row["objectivePriorParameters"] = (
            f"{math.log(parameter.median)!r};{parameter.log_sd!r}"
        )
    return row


def _yaml_text() -> str:
    return (
        "format_version: 1\n"
        f"parameter_file: {FILES['parameters']}\n"
        "problems:\n"
        f"- condition_files: [{FILES['conditions']}]\n"
        f"  measurement_files: [{FILES['measurements']}]\n"
        f"  observable_files: [{FILES['observables']}]\n"
        f"  sbml_files: [{FILES['sbml']}]\n"
    )


def lint_petab(yaml_path: str | Path) -> bool:
    """Whether the ``petab`` package's lint finds no error in the problem."""
    import petab.v1 as petab

    problem = petab.Problem.from_yaml(str(yaml_path))
    return not petab.lint_problem(problem)


# -- reading PEtab back ---------------------------------------------------------


@dataclass(frozen=True)
class ImportedProblem:
    """A PEtab v1 problem read back, ready to fit with cartwin's engine.

    Attributes
    ----------
    model : SbmlModel
        The SBML model compiled by :func:`cartwin.models.sbml.load_sbml`.
    times : numpy.ndarray
        Measurement times in the model's time unit, increasing.
    measurements : numpy.ndarray
        Measured values in the same order.
    observable_formula : str
        SBML L3 formula of the (single) observable.
    transformation : str
        ``"lin"`` or ``"log"``.
    sigma : float
        Noise SD (on the transformed scale).
    estimated : tuple of str
        Estimated parameter ids.
    scales : tuple of str
        Their scales (``"lin"`` or ``"log"``).
    bounds : tuple of (float, float)
        Their bounds on the optimisation scale.
    x_nominal : numpy.ndarray
        Nominal values on the optimisation scale.
    prior_mean, prior_sd : numpy.ndarray
        ``parameterScaleNormal`` prior of each estimated parameter; NaN where
        the problem gives none.
    fixed : dict
        Values of the other parameters (table nominal values and the
        condition's overrides).
    """

    model: SbmlModel
    times: np.ndarray
    measurements: np.ndarray
    observable_formula: str
    transformation: str
    sigma: float
    estimated: tuple[str, ...]
    scales: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    x_nominal: np.ndarray
    prior_mean: np.ndarray
    prior_sd: np.ndarray
    fixed: dict[str, float] = field(default_factory=dict)


def import_petab(yaml_path: str | Path) -> ImportedProblem:
    """Read a PEtab v1 problem (the subset in the module's Known limits).

    Raises
    ------
    NotImplementedError
        For PEtab features outside that subset, naming the table and column.
    ModelSpecificationError
        When a table refers to an unknown id.
    """
    import petab.v1 as petab

    yaml_path = Path(yaml_path)
    problem = petab.Problem.from_yaml(str(yaml_path))
    config = petab.yaml.load_yaml(str(yaml_path))
    sbml_file = yaml_path.parent / config["problems"][0]["sbml_files"][0]
    model = load_sbml(sbml_file)
    observable = _single_observable(problem.observable_df, yaml_path)
    measurements = _measurements(problem.measurement_df, yaml_path)
    estimated, fixed = _parameter_table(problem.parameter_df, yaml_path)
    fixed.update(_condition(problem.condition_df, yaml_path))
    return ImportedProblem(
        model=model,
        times=measurements[0],
        measurements=measurements[1],
        observable_formula=str(observable["observableFormula"]),
        transformation=str(observable.get("observableTransformation", "lin") or "lin"),
        sigma=_noise(observable, fixed, yaml_path),
        fixed=fixed,
        **estimated,
    )


def _unsupported(where: Path, what: str) -> NotImplementedError:
    return NotImplementedError(
        f"PEtab problem {where}: {what} is not supported by cartwin"
    )


def _single_observable(table: Any, where: Path) -> dict[str, Any]:
    if len(table) != 1:
        raise _unsupported(where, f"{len(table)} observables (one only)")
    row = table.reset_index().iloc[0].to_dict()
    if str(row.get("noiseDistribution", "normal") or "normal") != "normal":
        raise _unsupported(where, f"noiseDistribution {row['noiseDistribution']!r}")
    if str(row.get("observableTransformation", "lin") or "lin") not in ("lin", "log"):
        raise _unsupported(
            where, f"observableTransformation {row['observableTransformation']!r}"
        )
    return row


def _measurements(table: Any, where: Path) -> tuple[np.ndarray, np.ndarray]:
    for column in (
        "preequilibrationConditionId",
        "observableParameters",
        "noiseParameters",
    ):
        if (
            column in table
            and table[column].notna().any()
            and (table[column] != "").any()
        ):
            raise _unsupported(where, f"measurement column {column}")
    order = np.argsort(table["time"].to_numpy(dtype=float), kind="stable")
    times = table["time"].to_numpy(dtype=float)[order]
    return times, table["measurement"].to_numpy(dtype=float)[order]


def _parameter_table(
    table: Any, where: Path
) -> tuple[dict[str, Any], dict[str, float]]:
    rows = table.reset_index().to_dict("records")
    fixed = {
        r["parameterId"]: float(r["nominalValue"])
        for r in rows
        if not int(r["estimate"])
    }
    free = [r for r in rows if int(r["estimate"])]
    for row in free:
        if row["parameterScale"] not in ("lin", "log"):
            raise _unsupported(
                where,
                f"parameterScale {row['parameterScale']!r} of {row['parameterId']}",
            )
    scale = [_scaler(r["parameterScale"]) for r in free]
    prior = [_prior(r, where) for r in free]
    estimated = {
        "estimated": tuple(r["parameterId"] for r in free),
        "scales": tuple(r["parameterScale"] for r in free),
        "bounds": tuple(
            (f(float(r["lowerBound"])), f(float(r["upperBound"])))
            for f, r in zip(scale, free)
        ),
        "x_nominal": np.array(
            [f(float(r["nominalValue"])) for f, r in zip(scale, free)]
        ),
        "prior_mean": np.array([m for m, _ in prior]),
        "prior_sd": np.array([s for _, s in prior]),
    }
    return estimated, fixed


def _scaler(scale: str) -> Callable[[float], float]:
    return math.log if scale == "log" else float


def _prior(row: Mapping[str, Any], where: Path) -> tuple[float, float]:
    kind = row.get("objectivePriorType")
    if kind is None or (isinstance(kind, float) and math.isnan(kind)) or kind == "":
        return math.nan, math.nan
    if kind != "parameterScaleNormal":
        raise _unsupported(
            where, f"objectivePriorType {kind!r} of {row['parameterId']}"
        )
    mean, sd = (float(v) for v in str(row["objectivePriorParameters"]).split(";"))
    return mean, sd


def _condition(table: Any, where: Path) -> dict[str, float]:
    if len(table) != 1:
        raise _unsupported(where, f"{len(table)} conditions (one only)")
    row = table.reset_index().iloc[0].to_dict()
    values = {}
    for key, value in row.items():
        if key in ("conditionId", "conditionName"):
            continue
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise _unsupported(
                where, f"condition value {key} = {value!r} (numbers only)"
            ) from None
    return values


def _noise(
    observable: Mapping[str, Any], fixed: Mapping[str, float], where: Path
) -> float:
    formula = str(observable["noiseFormula"])
    try:
        return float(formula)
    except ValueError:
        if formula in fixed:
            return fixed[formula]
        raise _unsupported(
            where, f"noiseFormula {formula!r} (a number or fixed parameter)"
        ) from None


# -- the two objectives and one optimiser --------------------------------------


def anc_objective(
    problem: AncProblem, *, settings: SolverSettings = FIT_SOLVER
) -> Callable[[Any], Any]:
    """Negative log posterior of the original problem as a JAX function of ln theta."""
    order = np.argsort(problem.t_days, kind="stable")
    t_days = jnp.asarray(problem.t_days[order])
    anc = jnp.asarray(problem.anc[order])
    fixed = nm.MODEL.typical_params()
    priors = problem.priors()
    with_prior = np.array([priors[n][1] > 0 for n in problem.estimated])
    mean = jnp.asarray([priors[n][0] for n in problem.estimated])
    sd = jnp.asarray(
        [priors[n][1] if priors[n][1] > 0 else 1.0 for n in problem.estimated]
    )
    sigma = _anc_sigma()

    def objective(x: Any) -> Any:
        params = {
            **fixed,
            **{n: jnp.exp(x[i]) for i, n in enumerate(problem.estimated)},
        }
        prediction = nm.anc_trajectory(
            params,
            t_days,
            problem.regimen,
            t0=problem.time_origin_day,
            settings=settings,
        )
        prior = normal_prior_nll(x[with_prior], mean[with_prior], sd[with_prior])
        return log_normal_nllh(anc, prediction, sigma) + prior

    return objective


def petab_objective(
    imported: ImportedProblem, *, settings: SolverSettings = FIT_SOLVER
) -> Callable[[Any], Any]:
    """PEtab negative log posterior of an imported problem, a JAX function of x."""
    model = imported.model
    observe = model.formula(imported.observable_formula)
    t_days = jnp.asarray(imported.times * model.time_unit_days)
    y = jnp.asarray(imported.measurements)
    has_prior = np.isfinite(imported.prior_sd)
    mean = jnp.asarray(imported.prior_mean[has_prior])
    sd = jnp.asarray(imported.prior_sd[has_prior])
    logs = np.array([s == "log" for s in imported.scales])

    def objective(x: Any) -> Any:
        theta = jnp.where(logs, jnp.exp(x), x)
        params = {**imported.fixed, **dict(zip(imported.estimated, theta))}
        params = {k: v for k, v in params.items() if k in model.constants}
        states = sbml_trajectory(model, params, t_days, settings=settings)
        prediction = jax.vmap(lambda t, s: observe(t, s, params))(t_days, states)
        return _nllh(y, prediction, imported) + normal_prior_nll(x[has_prior], mean, sd)

    return objective


def _nllh(y: Any, prediction: Any, imported: ImportedProblem) -> Any:
    if imported.transformation == "log":
        return log_normal_nllh(y, prediction, imported.sigma)
    residual = (y - prediction) / imported.sigma
    return jnp.sum(math.log(imported.sigma) + _LOG_SQRT_2PI + 0.5 * residual**2)


def minimise(
    objective: Callable[[Any], Any],
    x0: np.ndarray,
    bounds: tuple[tuple[float, float], ...],
    names: tuple[str, ...],
    scales: tuple[str, ...] | None = None,
) -> Optimum:
    """Minimise a JAX objective with L-BFGS-B (exact gradients by JAX).

    Converged means L-BFGS-B's success or a largest gradient component below
    :data:`GRADIENT_TOL` at the end (the objective is smooth only to the ODE
    solver's tolerance, which can end a line search early at the optimum).

    Raises
    ------
    CalibrationError
        When the objective is not finite at the start.
    """
    from scipy.optimize import minimize

    value_and_grad = jax.jit(jax.value_and_grad(objective))

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(jnp.asarray(x))
        return float(value), np.asarray(grad, dtype=float)

    start, _ = fun(np.asarray(x0, dtype=float))
    if not math.isfinite(start):
        raise CalibrationError(
            f"objective is not finite at the start point {dict(zip(names, x0))}"
        )
    result = minimize(
        fun,
        np.asarray(x0, dtype=float),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-8},
    )
    # the ODE objective is smooth only to the solver tolerance, so a line
    # search may stop "abnormally" at the optimum: judge by the gradient
    gradient = fun(result.x)[1]
    converged = bool(result.success) or float(np.max(np.abs(gradient))) < GRADIENT_TOL
    scales = scales or ("log",) * len(names)
    natural = [
        math.exp(v) if s == "log" else float(v) for v, s in zip(result.x, scales)
    ]
    return Optimum(
        params=dict(zip(names, natural)),
        objective=float(result.fun),
        x=np.asarray(result.x),
        converged=converged,
        message=f"{result.message}; max |gradient| {np.max(np.abs(gradient)):.2e}",
        initial_objective=start,
    )


def fit_anc_problem(
    problem: AncProblem, *, settings: SolverSettings = FIT_SOLVER
) -> Optimum:
    """MAP of the original problem, from the prior medians."""
    by_name = {p.name: p for p in nm.MODEL.parameters}
    bounds = tuple(
        (math.log(by_name[n].lower), math.log(by_name[n].upper))
        for n in problem.estimated
    )
    x0 = np.array([math.log(by_name[n].median) for n in problem.estimated])
    return minimise(
        anc_objective(problem, settings=settings), x0, bounds, problem.estimated
    )


def fit_petab(
    imported: ImportedProblem, *, settings: SolverSettings = FIT_SOLVER
) -> Optimum:
    """MAP of an imported PEtab problem, from its nominal values."""
    return minimise(
        petab_objective(imported, settings=settings),
        imported.x_nominal,
        imported.bounds,
        imported.estimated,
        imported.scales,
    )
