"""The shipped T-cell fate model: citations and qualitative behaviours.

Each behaviour is a published qualitative finding (cited per test). The
model is not calibrated, so tests compare scenarios, never absolute
fractions. With 2000 trajectories a fraction has a Monte Carlo standard error
of at most 0.011; every asserted difference is at least 0.15 (> 9 SE), and
runs are seeded, so the tests are deterministic.
"""

from __future__ import annotations

import re

import pytest

from cartwin.errors import ModelSpecificationError
from cartwin.logic import (
    FATES,
    FateRules,
    SimulationSettings,
    Stimulation,
    load_maboss,
    simulate_fates,
)
from cartwin.logic.fates import tcell_model_paths

pytest.importorskip("cmaboss", reason="cmaboss (MaBoSS engine) not installed")

SETTINGS = SimulationSettings(seed=11, sample_count=2000)


def _fates(**scenario) -> dict[str, float]:
    return simulate_fates(stimulation=Stimulation(**scenario), settings=SETTINGS)


def test_every_rule_cites_a_defined_reference_with_a_doi():
    text = tcell_model_paths()[0].read_text(encoding="utf-8")
    defined = dict(re.findall(r"\* \[(R\d+)\]\s+(.*)", text))
    assert all("doi:10." in ref for ref in defined.values())
    blocks = re.findall(r"((?://[^\n]*\n)+)Node (\w+) \{", text)
    assert len(blocks) == text.count("Node ")
    used = set()
    for comment, node in blocks:
        cited = set(re.findall(r"R\d+", comment))
        assert cited, f"node {node} cites no reference"
        assert cited <= set(defined), (
            f"node {node} cites undefined {cited - set(defined)}"
        )
        used |= cited
    assert set(defined) <= used | {"R28", "R29"}  # R28/R29: structure, in header


def test_model_loads_with_fate_nodes_reported(tcell):
    assert tcell.outputs == ("Apoptosis", "Effector", "Memory", "Exhausted")
    assert len(tcell.nodes) == 33


def test_result_is_a_plain_dict_over_all_fates():
    fates = _fates()
    assert type(fates) is dict and tuple(sorted(fates)) == tuple(sorted(FATES))
    assert sum(fates.values()) == pytest.approx(1.0)


def test_no_antigen_stays_quiescent():
    # Without signal 1 nothing is activated; IL-7 keeps resting cells alive
    # (Schluns 2000, doi:10.1038/80868).
    assert _fates(antigen="none")["quiescent"] == 1.0


def test_cytokine_withdrawal_causes_apoptosis():
    # Without IL-7, BIM-dependent death (Hildeman 2002; Schluns 2000).
    assert _fates(antigen="none", il7=False)["apoptotic"] > 0.95


def test_chronic_antigen_without_costimulation_raises_exhaustion():
    # NFAT without AP-1 drives the NR4A/TOX programme (Martinez 2015,
    # Khan 2019, Seo 2019).
    without = _fates(antigen="chronic", costimulation="none")["exhausted"]
    with_bb = _fates(antigen="chronic", costimulation="4-1BB")["exhausted"]
    assert without > 0.9
    assert without - with_bb > 0.5


def test_4_1bb_resists_exhaustion_better_than_cd28_under_pd_l1():
    # Long 2015 (doi:10.1038/nm.3838); PD-1 targets CD28 (Hui 2017).
    cd28 = _fates(antigen="chronic", costimulation="CD28")["exhausted"]
    bb = _fates(antigen="chronic", costimulation="4-1BB")["exhausted"]
    assert cd28 - bb > 0.5


def test_pd_l1_removal_restores_cd28_effector_function():
    # Hui 2017 (doi:10.1126/science.aaf1292): CD28 is PD-1's main target.
    with_pdl1 = _fates(antigen="chronic", costimulation="CD28")["effector"]
    without = _fates(antigen="chronic", costimulation="CD28", pdl1=False)["effector"]
    assert without - with_pdl1 > 0.5


@pytest.mark.parametrize("pdl1", [False, True])
def test_4_1bb_raises_memory_like_state_over_cd28(pdl1):
    # Kawalekar 2016 (doi:10.1016/j.immuni.2016.01.021): 4-1BB CAR T cells
    # form central-memory-like cells, CD28 CAR T cells effector cells.
    cd28 = _fates(antigen="acute", costimulation="CD28", pdl1=pdl1)["memory_like"]
    bb = _fates(antigen="acute", costimulation="4-1BB", pdl1=pdl1)["memory_like"]
    assert bb - cd28 > 0.3


def test_cd28_effectors_contract_by_apoptosis_more_than_4_1bb():
    # CD28 -> terminal effectors that die after clearance; 4-1BB -> more
    # anti-apoptotic proteins (Li 2018, doi:10.1172/jci.insight.121322).
    cd28 = _fates(antigen="acute", costimulation="CD28", pdl1=False)["apoptotic"]
    bb = _fates(antigen="acute", costimulation="4-1BB", pdl1=False)["apoptotic"]
    assert cd28 - bb > 0.3


def test_exogenous_il2_lowers_memory_formation():
    # Strong IL-2 signalling favours terminal effectors (Kalia 2010).
    base = _fates(antigen="acute", costimulation="CD28")["memory_like"]
    il2 = _fates(antigen="acute", costimulation="CD28", il2=True)["memory_like"]
    assert base - il2 > 0.1


def test_fate_priority():
    rules = FateRules()
    assert rules.classify(frozenset({"Effector", "Memory"})) == "effector"
    assert rules.classify(frozenset({"Exhausted", "Effector"})) == "exhausted"
    assert rules.classify(frozenset({"Apoptosis", "Exhausted"})) == "apoptotic"
    assert rules.classify(frozenset()) == "quiescent"


def test_model_without_fate_nodes_is_refused(maboss_dir):
    cellfate = load_maboss(maboss_dir / "cellfate.bnd", maboss_dir / "cellfate.cfg")
    with pytest.raises(ModelSpecificationError, match="cannot give fates"):
        simulate_fates(cellfate)


@pytest.mark.parametrize(
    "kwargs",
    [{"antigen": "tonic"}, {"costimulation": "OX40"}, {"antigen_clearance": 0.0}],
)
def test_bad_stimulation_is_rejected(kwargs):
    with pytest.raises(ModelSpecificationError):
        Stimulation(**kwargs)


def test_inputs_cannot_be_set_as_initial_states():
    with pytest.raises(ModelSpecificationError, match="set by the Stimulation"):
        simulate_fates(initial={"Antigen": 0.0}, settings=SETTINGS)
