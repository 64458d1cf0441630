"""PEtab export and import of a patient's ANC calibration problem."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cartwin.demo import demo_bundle_path
from cartwin.errors import DataError
from cartwin.io import petab as pt
from cartwin.io.fhir import import_fhir
from cartwin.models import neutrophils as nm
from cartwin.models.sbml import load_sbml, simulate_roadrunner, simulate_sbml
from cartwin.record.pseudonym import DEMO_KEY


@pytest.fixture(scope="module")
def record():
    """The bundled synthetic demo patient (31 ANC values, flu/cy x 3 days)."""
    return import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]


@pytest.fixture(scope="module")
def problem(record):
    return pt.anc_problem_from_record(record)


@pytest.fixture(scope="module")
def exported(problem, tmp_path_factory):
    return pt.export_petab(problem, tmp_path_factory.mktemp("petab"))


@pytest.fixture(scope="module")
def imported(exported):
    return pt.import_petab(exported)


def test_problem_from_the_demo_record(problem):
    assert problem.anc.size == 31
    assert len(problem.regimen.doses) == 6
    # PEtab time 0 is the first ANC value, before lymphodepletion
    assert problem.time_origin_day == pytest.approx(np.min(problem.t_days))
    assert problem.time_origin_day < problem.regimen.start_day


def test_export_passes_petab_lint(exported):
    assert pt.lint_petab(exported)
    folder = exported.parent
    measurements = pd.read_csv(folder / "measurements.tsv", sep="\t")
    assert len(measurements) == 31 and measurements["time"].min() == 0.0
    parameters = pd.read_csv(folder / "parameters.tsv", sep="\t").set_index(
        "parameterId"
    )
    assert sorted(parameters.index[parameters["estimate"] == 1]) == sorted(
        pt.DEFAULT_ESTIMATED
    )
    mean, sd = (
        float(v) for v in parameters.loc["circ0", "objectivePriorParameters"].split(";")
    )
    assert (math.exp(mean), sd) == (
        pytest.approx(5.22),
        pytest.approx(math.sqrt(0.064)),
    )


def test_exported_sbml_reproduces_the_model(problem, exported):
    # the SBML written for PEtab, run by cartwin's importer and by roadrunner,
    # gives the ANC of the Python model (typical parameters) to 1e-6
    path = exported.parent / "model.xml"
    sbml = load_sbml(path)
    t_model = np.linspace(0.0, 60.0, 121)
    t_days = t_model + problem.time_origin_day
    python = np.asarray(
        nm.anc_trajectory(
            nm.MODEL.typical_params(),
            t_days,
            problem.regimen,
            t0=problem.time_origin_day,
            settings=pt.FIT_SOLVER,
        )
    )
    ours = simulate_sbml(sbml, t_model, settings=pt.FIT_SOLVER)[
        :, sbml.state_ids.index("circ")
    ]
    ids, reference = simulate_roadrunner(path, t_model)
    rr = reference[:, ids.index("circ")]
    np.testing.assert_allclose(ours, python, rtol=1e-8)
    np.testing.assert_allclose(rr, python, rtol=1e-6)


def test_optimum_of_the_imported_problem_matches_the_original(problem, imported):
    original = pt.fit_anc_problem(problem)
    again = pt.fit_petab(imported)
    assert original.converged and again.converged, (original.message, again.message)
    # same objective at the same start point (the prior medians), then the
    # same optimum
    typical = nm.MODEL.typical_params()
    np.testing.assert_allclose(
        imported.x_nominal, np.log([typical[n] for n in problem.estimated])
    )
    assert again.initial_objective == pytest.approx(
        original.initial_objective, abs=1e-8
    )
    # both solve the same ODE to rtol 1e-10: objectives agree to 1e-7 (of ~6),
    # parameters to 1e-4 relative (GRADIENT_TOL / curvature)
    assert again.objective == pytest.approx(original.objective, abs=1e-7)
    for name in problem.estimated:
        assert again.params[name] == pytest.approx(original.params[name], rel=1e-4)
    # the data move the estimates: this patient's baseline ANC is ~2, not 5.22
    assert original.params["circ0"] < 3.0


def test_likelihood_matches_scipy():
    y = np.array([0.3, 1.2, 4.0])
    prediction = np.array([0.25, 1.5, 3.0])
    expected = -np.sum(stats.lognorm.logpdf(y, s=0.424, scale=prediction))
    assert float(pt.log_normal_nllh(y, prediction, 0.424)) == pytest.approx(
        expected, rel=1e-12
    )
    x = np.array([0.1, -0.3])
    prior = -np.sum(stats.norm.logpdf(x, loc=[0.0, 0.2], scale=[0.25, 0.5]))
    assert float(
        pt.normal_prior_nll(x, np.array([0.0, 0.2]), np.array([0.25, 0.5]))
    ) == (pytest.approx(prior, rel=1e-12))


def test_censored_anc_is_refused(record):
    first = record.observations_of("anc")[0]
    censored = dataclasses.replace(first, censored="below", value=0.1)
    changed = dataclasses.replace(
        record,
        observations=tuple(o for o in record.observations if o is not first)
        + (censored,),
    )
    with pytest.raises(DataError, match="PEtab v1 has no censoring"):
        pt.anc_problem_from_record(changed)


def test_unsupported_petab_features_are_named(problem, tmp_path):
    path = pt.export_petab(problem, tmp_path)
    observables = pd.read_csv(tmp_path / "observables.tsv", sep="\t")
    observables["noiseDistribution"] = "laplace"
    observables.to_csv(tmp_path / "observables.tsv", sep="\t", index=False)
    with pytest.raises(NotImplementedError, match="noiseDistribution 'laplace'"):
        pt.import_petab(path)
