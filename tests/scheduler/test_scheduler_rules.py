"""The recalibration table: which kinds trigger which model, and how soon."""

from __future__ import annotations

import pytest
from scheduler_samples import T_ARRIVAL

from cartwin.errors import ModelSpecificationError
from cartwin.record.model import (
    EVENT_KINDS,
    Event,
    Observation,
    PatientFacts,
    PatientRecord,
)
from cartwin.record.units import quantity_specs
from cartwin.scheduler import (
    SINGLE_CELL,
    UPDATE_RULES,
    UpdateRule,
    check_rules,
    observation_kinds,
    triggered,
)


def _rule(model):
    return next(rule for rule in UPDATE_RULES if rule.model == model)


def test_table_declares_the_three_frequencies():
    # Issue 5: seconds for CRS grading, hours for kinetics, days for omics priors.
    crs, kinetics, omics = (
        _rule(m) for m in ("crs_grading", "kinetics", "omics_priors")
    )
    assert 1 <= crs.window_s < 60
    assert 3600 <= kinetics.window_s < 86400
    assert omics.window_s >= 86400
    assert check_rules(UPDATE_RULES) == UPDATE_RULES


def test_crs_rule_reads_the_astct_inputs():
    # ASTCT CRS grade (Lee 2019, doi:10.1016/j.bbmt.2018.12.758): fever,
    # hypotension with/without vasopressors, hypoxia with oxygen support.
    assert _rule("crs_grading").kinds == {
        "temperature", "systolic_bp", "diastolic_bp", "spo2", "vasopressor", "oxygen",
    }  # fmt: skip
    assert _rule("kinetics").kinds == {"cart_flow", "cart_qpcr"}
    assert _rule("omics_priors").kinds == {SINGLE_CELL}


def test_every_kind_is_a_known_quantity_or_event_kind():
    known = set(quantity_specs()) | set(EVENT_KINDS)
    for rule in UPDATE_RULES:
        unknown = rule.kinds - known - {SINGLE_CELL}
        assert not unknown, (rule.model, unknown)
    assert SINGLE_CELL not in known  # documented placeholder, not produced yet


def test_triggered_names_the_kinds():
    hits = triggered(["crp", "spo2", "oxygen", "cart_flow", "anc"])
    assert [(rule.model, kinds) for rule, kinds in hits] == [
        ("crs_grading", ["oxygen", "spo2"]),
        ("kinetics", ["cart_flow"]),
    ]
    assert triggered(["crp", "ferritin", "infusion"]) == []


def test_observation_kinds_of_records():
    record = PatientRecord(
        PatientFacts("00000000000000aa"),
        (Observation("spo2", T_ARRIVAL, 91.0, "%"),),
        (Event("oxygen", T_ARRIVAL, detail="low_flow"),),
    )
    other = PatientRecord(PatientFacts("00000000000000bb"))
    assert observation_kinds([record, other]) == {
        "00000000000000aa": {"spo2", "oxygen"},
        "00000000000000bb": set(),
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("", frozenset({"spo2"}), 5.0), "needs a model name"),
        (("x", frozenset(), 5.0), "no observation kinds"),
        (("x", frozenset({"spo2"}), 0.0), "window_s must be > 0"),
    ],
)
def test_bad_rules_are_refused(arguments, message):
    with pytest.raises(ModelSpecificationError, match=message):
        UpdateRule(*arguments)


def test_duplicate_models_are_refused():
    rule = UpdateRule("x", frozenset({"spo2"}), 5.0)
    with pytest.raises(ModelSpecificationError, match="more than once: x"):
        check_rules([rule, rule])
