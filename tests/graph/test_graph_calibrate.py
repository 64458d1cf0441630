"""Tests of the joint MAP + Laplace calibration of a graph (cartwin.graph.calibrate)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from graph_samples import T0, at, course_events, synthetic_patient

from cartwin.demo import demo_bundle_path
from cartwin.graph.calibrate import (
    STATUSES,
    CalibrationSettings,
    calibrate_record,
    calibrate_records,
    graph_data_from_record,
    prior_fit,
)
from cartwin.graph.graph import standard_graph
from cartwin.graph.inputs import schedule_from_record, typical_schedule
from cartwin.inference.likelihood import BELOW
from cartwin.io.fhir import import_fhir
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY

GRAPH = standard_graph("LBCL")


@pytest.fixture(scope="module")
def demo() -> PatientRecord:
    return import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]


@pytest.fixture(scope="module")
def demo_fit(demo):
    return calibrate_record(demo)


@pytest.fixture(scope="module")
def cohort():
    """Six patients with parameters drawn from the prior (seed 2024)."""
    rng = np.random.default_rng(2024)
    truths = rng.standard_normal((6, GRAPH.free_index.size))
    records = [
        synthetic_patient(
            GRAPH, np.asarray(GRAPH.natural_from_z(jnp.asarray(z))), rng, f"syn{i}"
        )
        for i, z in enumerate(truths)
    ]
    return truths, calibrate_records(records)


def test_demo_patient_converges_with_every_quantity(demo_fit):
    assert demo_fit.status == "converged", demo_fit.reason
    # demo bundle: 13 flow values, one before infusion (ignored), 3 below LLOQ
    # of which the pre-infusion one is ignored; 4 qPCR; 9 IL-6; daily labs
    assert demo_fit.n_obs == {
        "cart_flow": 12,
        "cart_qpcr": 4,
        "alc": 30,
        "ldh": 30,
        "il6": 9,
        "crp": 30,
    }
    assert demo_fit.n_censored == {"cart_flow": 2}
    assert demo_fit.n_ignored["cart_flow before day 0"] == 1
    assert demo_fit.cov_z.shape == (len(demo_fit.free_names),) * 2


def test_uninformed_parameters_are_reported_as_prior(demo_fit):
    verdicts = demo_fit.identifiability()
    # no imaging in the demo record: the SPD scale cannot be learned
    assert verdicts["cart_tumour.spd_coef"]["verdict"] == "prior"
    assert verdicts["cart_tumour.spd_coef"]["sd_ratio"] == pytest.approx(1.0, abs=1e-3)
    # 31 ALC values around lymphodepletion inform its effect
    assert verdicts["cart_tumour.k_ld"]["verdict"] == "informed"


def test_fits_recover_parameters_of_simulated_patients(cohort):
    # 90% Laplace intervals should contain the true z of 6 x 23 parameters
    # about 90% of the time; accept 75-100% (pairs are correlated)
    truths, fits = cohort
    assert [f.status for f in fits] == ["converged"] * 6, [f.reason for f in fits]
    inside = [
        np.abs(f.map_z - z) <= 1.645 * np.sqrt(np.diag(f.cov_z))
        for z, f in zip(truths, fits)
    ]
    assert 0.75 <= np.mean(inside) <= 1.0


def test_laplace_covariance_is_positive_definite(cohort):
    _, fits = cohort
    for fit in fits:
        assert np.linalg.eigvalsh(fit.cov_z).min() > 0
        assert "positive definite" in fit.reason


def test_zero_spd_is_censored_below_the_floor():
    rec = PatientRecord(
        PatientFacts("z1", disease="LBCL"),
        (
            Observation("spd", at(-7), 40.0, "cm2"),
            Observation("spd", at(28), 0.0, "cm2"),
            Observation("cart_flow", at(-1), 0.5, "/uL"),
        ),
        course_events(),
    )
    data = graph_data_from_record(GRAPH, rec, schedule_from_record(rec))
    assert data.quantity == ("spd", "spd")
    assert data.values.tolist() == [40.0, 1.0] and data.censor.tolist() == [0, BELOW]
    assert data.ignored == {"cart_flow before day 0": 1}


def test_batch_never_raises_and_keeps_order(demo):
    no_infusion = PatientRecord(PatientFacts("a", disease="LBCL"))
    unsupported = PatientRecord(PatientFacts("b", disease="B-ALL"), (), course_events())
    no_data = PatientRecord(PatientFacts("c", disease="LBCL"), (), course_events())
    fits = calibrate_records([no_infusion, unsupported, no_data])
    assert [f.status for f in fits] == ["input_error", "input_error", "prior_only"]
    assert "no infusion" in fits[0].reason and "B-ALL" in fits[1].reason
    assert np.array_equal(fits[2].cov_z, np.eye(GRAPH.free_index.size))
    assert all(f.status in STATUSES for f in fits)
    assert fits[2].usable and not fits[0].usable


def test_prior_fit_is_the_population(demo):
    fit = prior_fit(GRAPH, typical_schedule(), "virtual")
    assert fit.status == "prior_only" and fit.parameters["cytokines.d_il6"] == 3.96
    assert fit.parameters["cart_tumour.k_c"] == pytest.approx(139.0)


def test_settings_are_checked():
    with pytest.raises(Exception, match="tol"):
        CalibrationSettings(tol=0.0)


def test_infusion_time_sets_study_time():
    # a record whose infusion is later than T0 shifts every observation
    later = PatientRecord(
        PatientFacts("d", disease="LBCL"),
        (Observation("il6", T0, 50.0, "pg/mL"),),
        (Event("infusion", at(1), name="x", dose=1e8, dose_unit="{cells}"),),
    )
    data = graph_data_from_record(GRAPH, later, schedule_from_record(later))
    assert data.t_days.tolist() == [-1.0]
