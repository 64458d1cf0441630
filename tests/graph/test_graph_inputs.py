"""Tests of exogenous inputs from records and scenarios (cartwin.graph.inputs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from graph_samples import T0, at, course_events

from cartwin.demo import demo_bundle_path
from cartwin.errors import DataError, MissingInputError, ModelSpecificationError
from cartwin.graph.inputs import (
    CHANNELS,
    LEAD_IN_DAYS,
    InputChannel,
    InputSchedule,
    Pulse,
    Scenario,
    bridging_scenario,
    dose_scenario,
    register_channel,
    schedule_from_record,
    tocilizumab_scenario,
    typical_schedule,
)
from cartwin.io.fhir import import_fhir
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY


@pytest.fixture(scope="module")
def demo() -> PatientRecord:
    return import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]


@pytest.fixture(scope="module")
def demo_schedule(demo) -> InputSchedule:
    return schedule_from_record(demo)


def record(*events: Event, weight: float | None = 80.0) -> PatientRecord:
    obs = () if weight is None else (Observation("body_weight", at(-1), weight, "kg"),)
    return PatientRecord(
        PatientFacts("p1", disease="LBCL"), obs, course_events() + tuple(events)
    )


def test_demo_infusion_delivers_the_recorded_dose(demo_schedule):
    # demo bundle: 2.0e6 cells/kg x 78 kg = 1.56e8 cells over 18 min
    (pulse,) = demo_schedule.of("cart_infusion_rate")
    assert pulse.amount == 1.56e8
    t = np.linspace(-0.01, 0.05, 60001)
    delivered = np.trapezoid(demo_schedule.value("cart_infusion_rate", t), t)
    assert delivered == pytest.approx(1.56e8, rel=1e-3)


def test_demo_lymphodepletion_bridging_and_tocilizumab(demo_schedule):
    ld = demo_schedule.of("ld_exposure")
    assert [p.amount for p in ld] == [0.5] * 6  # flu 30 and cy 500 mg/m2, 3 days
    assert len(demo_schedule.of("bridging_exposure")) == 3  # R-GemOx
    (toci,) = demo_schedule.of("toci_exposure")
    assert toci.amount == pytest.approx(624.0 / (8.0 * 77.8))  # 624 mg at 77.8 kg
    first = min(p.start_day for p in demo_schedule.of("bridging_exposure"))
    assert demo_schedule.t_start == pytest.approx(first - LEAD_IN_DAYS)
    # Mosteller BSA from 77.8 kg and 176 cm
    assert demo_schedule.covariates["bsa_m2"] == pytest.approx(
        math.sqrt(77.8 * 176.0 / 3600.0)
    )


def test_exposure_decays_with_the_channel_half_life():
    half = CHANNELS["toci_exposure"].half_life_days
    schedule = typical_schedule(toci_days=(2.0,))
    values = schedule.value("toci_exposure", np.array([1.9, 2.0, 2.0 + half]))
    assert values.tolist() == pytest.approx([0.0, 1.0, 0.5])


def test_corticosteroids_are_dexamethasone_equivalents():
    # dexamethasone 0.75 mg = methylprednisolone 4 mg = prednisone 5 mg
    rec = record(
        Event(
            "corticosteroid",
            at(4),
            name="methylprednisolone",
            dose=80.0,
            dose_unit="mg",
        ),
        Event("corticosteroid", at(5), name="prednisone", dose=1.0, dose_unit="mg/kg"),
        Event("corticosteroid", at(6), name="budesonide", dose=9.0, dose_unit="mg"),
    )
    schedule = schedule_from_record(rec)
    amounts = [p.amount for p in schedule.of("steroid_exposure")]
    assert amounts == pytest.approx([80 * 0.75 / 4 / 10, 80 * 0.75 / 5 / 10, 1.0])
    assert any("budesonide" in n for n in schedule.notes)


def test_dose_per_kilogram_and_missing_weight():
    per_kg = PatientRecord(
        PatientFacts("p2"),
        (Observation("body_weight", at(-1), 70.0, "kg"),),
        (Event("infusion", T0, name="tisa-cel", dose=2.0e6, dose_unit="{cells}/kg"),),
    )
    assert schedule_from_record(per_kg).of("cart_infusion_rate")[0].amount == 1.4e8
    no_weight = PatientRecord(
        PatientFacts("p3"),
        (),
        (Event("infusion", T0, name="x", dose=2.0e6, dose_unit="{cells}/kg"),),
    )
    with pytest.raises(MissingInputError, match="cells}/kg"):
        schedule_from_record(no_weight)


def test_records_without_infusion_or_dose_are_refused():
    with pytest.raises(MissingInputError, match="no infusion"):
        schedule_from_record(PatientRecord(PatientFacts("p4")))
    no_dose = PatientRecord(PatientFacts("p5"), (), (Event("infusion", T0),))
    with pytest.raises(MissingInputError, match="no positive dose"):
        schedule_from_record(no_dose)


def test_record_without_lymphodepletion_says_so():
    bare = PatientRecord(
        PatientFacts("p6"),
        (),
        (Event("infusion", T0, name="x", dose=1e8, dose_unit="{cells}"),),
    )
    schedule = schedule_from_record(bare)
    assert schedule.t_start == -LEAD_IN_DAYS
    assert any("no lymphodepletion" in n for n in schedule.notes)


def test_scenarios_change_a_copy_only(demo_schedule):
    doubled = dose_scenario(3.12e8).apply(demo_schedule)
    assert doubled.of("cart_infusion_rate")[0].amount == pytest.approx(3.12e8)
    assert demo_schedule.of("cart_infusion_rate")[0].amount == 1.56e8
    early = tocilizumab_scenario(1.5).apply(demo_schedule)
    assert [p.start_day for p in early.of("toci_exposure")] == [1.5]
    assert tocilizumab_scenario(None).apply(demo_schedule).of("toci_exposure") == ()
    assert bridging_scenario(()).apply(demo_schedule).of("bridging_exposure") == ()
    longer = bridging_scenario((-40.0, -30.0), 2.0).apply(demo_schedule)
    assert longer.t_start == pytest.approx(-47.0)
    memory = Scenario("memory-rich", constants=(("product_memory_fraction", 0.6),))
    assert memory.apply(demo_schedule).constant("product_memory_fraction") == 0.6
    assert json.loads(json.dumps(bridging_scenario((-3.0,)).to_dict()))["add"]


def test_bad_pulses_and_channels_are_refused():
    with pytest.raises(DataError):
        Pulse(2.0, 1.0, 1.0)
    with pytest.raises(DataError):
        Pulse(0.0, 1.0, -1.0)
    with pytest.raises(ModelSpecificationError, match="unknown channels"):
        InputSchedule(pulses={"nonsense": ()})
    with pytest.raises(ModelSpecificationError):
        dose_scenario(1e8).apply(InputSchedule())


def test_typical_schedule_is_zuma1_like():
    schedule = typical_schedule()
    assert schedule.t_start == -12.0
    assert [p.start_day for p in schedule.of("ld_exposure")] == [-5.0, -4.0, -3.0]
    assert schedule.of("cart_infusion_rate")[0].amount == 1.6e8
    assert schedule.constant("product_memory_fraction") == 0.3


def test_a_registered_channel_can_be_read_by_a_new_model():
    channel = InputChannel(
        "test_g_csf_exposure", "1", "exposure", 0.5, description="test channel"
    )
    try:
        register_channel(channel)
        register_channel(channel)  # same definition: fine
        with pytest.raises(ModelSpecificationError, match="already defined"):
            register_channel(InputChannel("test_g_csf_exposure", "1", "constant"))
        pulse = Pulse(1.0, 1.0, 2.0)
        schedule = InputSchedule(pulses={"test_g_csf_exposure": (pulse,)})
        value = schedule.value("test_g_csf_exposure", np.array([1.5]))
        assert value == pytest.approx(1.0)  # half-life 0.5 d
    finally:
        CHANNELS.pop("test_g_csf_exposure", None)
