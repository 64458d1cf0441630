"""SBML-qual: round trip of the T-cell model, agreement with cmaboss' reader."""

from __future__ import annotations

import numpy as np
import pytest

from cartwin.logic import (
    LogicSyntaxError,
    SimulationSettings,
    UnknownNodeError,
    load_sbmlqual,
    parse_sbmlqual,
    simulate,
    to_sbmlqual,
)
from cartwin.logic._expr import evaluate

HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<sbml xmlns="http://www.sbml.org/sbml/level3/version1/core" level="3" '
    'version="1" xmlns:qual="http://www.sbml.org/sbml/level3/version1/qual/version1">\n'
    "<model id='m'>\n"
)
SPECIES = (
    "<qual:listOfQualitativeSpecies>\n"
    '<qual:qualitativeSpecies qual:id="A" qual:maxLevel="1" qual:initialLevel="1"/>\n'
    '<qual:qualitativeSpecies qual:id="B" qual:maxLevel="1"/>\n'
    "</qual:listOfQualitativeSpecies>\n"
)
MATH = '<math xmlns="http://www.w3.org/1998/Math/MathML">{}</math>'


def _transition(math: str, default: int = 0, result: int = 1) -> str:
    return (
        "<qual:listOfTransitions><qual:transition qual:id='t'>"
        "<qual:listOfInputs><qual:input qual:id='in_a' qual:qualitativeSpecies='A'/>"
        "</qual:listOfInputs><qual:listOfOutputs>"
        "<qual:output qual:qualitativeSpecies='B'/></qual:listOfOutputs>"
        f"<qual:listOfFunctionTerms><qual:defaultTerm qual:resultLevel='{default}'/>"
        f"<qual:functionTerm qual:resultLevel='{result}'>{MATH.format(math)}"
        "</qual:functionTerm></qual:listOfFunctionTerms></qual:transition>"
        "</qual:listOfTransitions>\n"
    )


def _doc(body: str) -> str:
    return HEAD + SPECIES + body + "</model></sbml>\n"


def _truth(model, node: str, a: bool) -> float:
    return evaluate(model.node(node).logic, {"A": a, "B": False}, {})


@pytest.mark.parametrize(
    ("math", "default", "result", "when_a_on", "when_a_off"),
    [
        ("<apply><eq/><ci>A</ci><cn type='integer'>1</cn></apply>", 0, 1, 1, 0),
        ("<apply><eq/><ci> A </ci><cn type='integer'>0</cn></apply>", 0, 1, 0, 1),
        ("<apply><geq/><cn>1</cn><ci>A</ci></apply>", 0, 1, 1, 1),
        ("<apply><gt/><ci>in_a</ci><cn>0</cn></apply>", 0, 1, 1, 0),
        ("<apply><eq/><ci>A</ci><cn>1</cn></apply>", 1, 0, 0, 1),
        ("<apply><not/><apply><eq/><ci>A</ci><cn>1</cn></apply></apply>", 0, 1, 0, 1),
        ("<true/>", 0, 1, 1, 1),
    ],
)
def test_mathml_terms(math, default, result, when_a_on, when_a_off):
    model = parse_sbmlqual(_doc(_transition(math, default, result)))
    assert _truth(model, "B", True) == when_a_on
    assert _truth(model, "B", False) == when_a_off


def test_species_without_transition_is_constant_and_initial_level_read():
    model = parse_sbmlqual(_doc(_transition("<true/>")))
    assert model.node("A").logic_text() == "A"
    assert model.initial_probability("A") == 1.0
    assert model.initial_probability("B") == 0.5  # no initialLevel: random


def test_tcell_model_round_trip_keeps_every_rule(tcell, tmp_path):
    path = tmp_path / "tcell.sbml"
    path.write_text(to_sbmlqual(tcell), encoding="utf-8")
    back = load_sbmlqual(path)
    assert back.node_names == tcell.node_names
    rng = np.random.default_rng(7)
    for _ in range(300):
        state = {n: bool(rng.integers(2)) for n in tcell.node_names}
        for node in tcell.nodes:
            mine = evaluate(node.logic, state, {})
            assert evaluate(back.node(node.name).logic, state, {}) == mine, node.name
    assert back.initial_probability("TCF7") == 1.0
    assert back.initial_probability("TOX") == 0.0


def test_cmaboss_reads_our_export_and_gives_the_same_run(tcell, tmp_path):
    # cmaboss has its own SBML-qual reader: same seed, same numbers.
    cmaboss = pytest.importorskip("cmaboss", reason="cmaboss not installed")
    path = tmp_path / "tcell.sbml"
    path.write_text(to_sbmlqual(tcell), encoding="utf-8")
    sim = cmaboss.MaBoSSSim(str(path))
    sim.update_parameters(
        seed_pseudorandom=5, use_physrandgen=False, sample_count=500, max_time=20
    )
    probs, _, labels = sim.run(only_last_state=True).get_last_probtraj()[:3]
    direct = {
        frozenset(lab.split(" -- ")): float(p) for lab, p in zip(labels, probs[0])
    }
    ours = simulate(
        load_sbmlqual(path),
        settings=SimulationSettings(seed=5, sample_count=500, max_time=20),
        final_only=True,
    )
    assert dict(zip(ours.states, ours.probabilities[-1].tolist())) == direct


def test_xml_error_has_line_and_column():
    with pytest.raises(LogicSyntaxError) as info:
        parse_sbmlqual(HEAD + "<broken\n", source="bad.sbml")
    # HEAD takes lines 1-3; the unclosed tag starts line 4, column 1.
    assert (info.value.line, info.value.column) == (4, 1)
    assert "XML error" in str(info.value)


def test_unknown_species_has_position():
    text = _doc(_transition("<apply><eq/><ci>Z</ci><cn>1</cn></apply>"))
    with pytest.raises(
        UnknownNodeError, match="unknown qualitative species 'Z'"
    ) as info:
        parse_sbmlqual(text, source="m.sbml")
    assert info.value.line == 8


def test_multivalued_species_is_not_supported():
    text = HEAD + (
        "<qual:listOfQualitativeSpecies><qual:qualitativeSpecies qual:id='A' "
        "qual:maxLevel='2'/></qual:listOfQualitativeSpecies></model></sbml>"
    )
    with pytest.raises(NotImplementedError, match="maxLevel 2"):
        parse_sbmlqual(text)


def test_model_without_species_is_an_error():
    with pytest.raises(LogicSyntaxError, match="no qual:qualitativeSpecies"):
        parse_sbmlqual(HEAD + "</model></sbml>")


def test_non_boolean_logic_cannot_be_exported():
    from cartwin.logic import parse_maboss

    model = parse_maboss("Node A { logic = A > 0.5; }", "")
    with pytest.raises(NotImplementedError, match="not Boolean"):
        to_sbmlqual(model)
