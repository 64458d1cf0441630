"""Fixed points and attractors (mpbn) against brute force and MaBoSS runs.

Independent reference: enumerate every state and keep those where no node
can flip, evaluating the MaBoSS rate expressions numerically (the library
instead turns rates into Boolean formulas for mpbn).
"""

from __future__ import annotations

import itertools

import pytest

from cartwin.logic import (
    SimulationSettings,
    attractors,
    fixed_points,
    load_maboss,
    parse_maboss,
    simulate,
)
from cartwin.logic._expr import evaluate

pytest.importorskip("mpbn", reason="mpbn (attractor solver) not installed")

TOY = """
Node A { logic = A ^ B; rate_up = @logic ? $ka : 0; rate_down = @logic ? 0 : 1; }
Node B { logic = !C; rate_up = ($off ? 0 : (@logic ? 2 : 0)); }
Node C { logic = C; rate_up = 0; rate_down = 0; }
Node D { logic = A & !D; rate_down = B ? 1 : 0; }
"""


def _stable(model, state: dict[str, bool]) -> bool:
    """True when every rate that could move ``state`` is zero."""
    for node in model.nodes:
        logic = evaluate(node.logic, state, model.variables) if node.logic else 0.0
        attrs = {"logic": logic}
        default_up = node.rate("rate_up") is None
        default_down = node.rate("rate_down") is None
        up = (
            logic
            if default_up
            else evaluate(node.rate("rate_up"), state, model.variables, attrs)
        )
        down = (
            (1 - logic)
            if default_down
            else evaluate(node.rate("rate_down"), state, model.variables, attrs)
        )
        if (not state[node.name] and up > 0) or (state[node.name] and down > 0):
            return False
    return True


def _brute_force(model) -> list[dict[str, int]]:
    names = model.node_names
    found = []
    for bits in itertools.product((0, 1), repeat=len(names)):
        state = dict(zip(names, map(bool, bits)))
        if _stable(model, state):
            found.append(dict(zip(names, bits)))
    return found


def test_toy_fixed_points_match_brute_force():
    for off in (0, 1):
        model = parse_maboss(TOY, f"$ka = 0.5; $off = {off};")
        assert fixed_points(model) == _brute_force(model)


def test_toy_has_fixed_points_at_all():
    # With C = 1: B -> 0; A = A ^ 0 keeps A; D needs A & !D, rate_down 0 if !B.
    model = parse_maboss(TOY, "$ka = 0.5; $off = 0;")
    fps = fixed_points(model, constraints={"C": 1})
    assert {"A": 0, "B": 0, "C": 1, "D": 0} in fps
    assert all(fp["C"] == 1 for fp in fps)


def test_dendritic_fixed_points_match_brute_force(maboss_dir):
    model = load_maboss(
        maboss_dir / "dendritic_cells.bnd", maboss_dir / "dendritic_cells.cfg"
    )
    assert fixed_points(model) == _brute_force(model)


def test_cellfate_maboss_fixed_points_are_found_by_mpbn(maboss_dir):
    # MaBoSS lists the absorbing states its trajectories reached (TNF on);
    # each must be a fixed point of the Boolean translation.
    cmaboss = pytest.importorskip("cmaboss", reason="cmaboss not installed")
    model = load_maboss(maboss_dir / "cellfate.bnd", maboss_dir / "cellfate.cfg")
    sim = cmaboss.MaBoSSSim(
        str(maboss_dir / "cellfate.bnd"), str(maboss_dir / "cellfate.cfg")
    )
    sim.update_parameters(
        max_time=100,
        sample_count=500,
        time_tick=1,
        seed_pseudorandom=4,
        use_physrandgen=False,
    )
    sim.network.set_istate("TNF", [0, 1])
    reached = [
        set(label.split(" -- ")) for _, label in sim.run().get_fp_table().values()
    ]
    ours = fixed_points(model, constraints={"TNF": 1})
    as_sets = [{n for n, v in fp.items() if v} for fp in ours]
    assert len(reached) == 3  # survival, non-apoptotic death, apoptosis
    assert all(state in as_sets for state in reached)
    assert all(_stable(model, {n: bool(v) for n, v in fp.items()}) for fp in ours)


def test_tcell_fixed_points_are_stable_and_include_the_effector_state(tcell):
    inputs = {
        "Antigen": 1,
        "CD28": 0,
        "TNFRSF9": 1,
        "IL2": 0,
        "IL7": 1,
        "IL15": 0,
        "PDL1": 1,
    }
    fps = fixed_points(tcell, constraints=inputs)
    assert fps and all(
        _stable(tcell, {n: bool(v) for n, v in fp.items()}) for fp in fps
    )
    fates = [
        {n for n in ("Effector", "Memory", "Exhausted", "Apoptosis") if fp[n]}
        for fp in fps
    ]
    assert {"Effector", "Memory"} in fates  # what simulation reaches (87%)
    assert {"Exhausted"} in fates  # the TOX lock-in branch (13%)


def test_tcell_simulated_final_states_are_fixed_points(tcell):
    # At the end of a long run the fate-node part of every state must be that
    # of some fixed point of the same scenario.
    inputs = {
        "Antigen": 1,
        "CD28": 0,
        "TNFRSF9": 0,
        "IL2": 0,
        "IL7": 1,
        "IL15": 0,
        "PDL1": 1,
    }
    fps = fixed_points(tcell, constraints=inputs)
    visible = {frozenset(n for n in tcell.outputs if fp[n]) for fp in fps}
    result = simulate(
        tcell,
        settings=SimulationSettings(seed=5, sample_count=500),
        initial={k: float(v) for k, v in inputs.items()},
        final_only=True,
    )
    reached = {s for s, p in zip(result.states, result.probabilities[-1]) if p > 0}
    assert reached <= visible


def test_cyclic_and_bistable_attractors():
    loop = parse_maboss("Node A { logic = !B; }\nNode B { logic = A; }", "")
    assert attractors(loop) == [{"A": None, "B": None}]
    assert fixed_points(loop) == []
    switch = parse_maboss("Node A { logic = !B; }\nNode B { logic = !A; }", "")
    assert attractors(switch) == [{"A": 0, "B": 1}, {"A": 1, "B": 0}]
    reached = attractors(switch, reachable_from={"A": 1, "B": 0})
    assert reached == [{"A": 1, "B": 0}]


def test_arithmetic_rate_of_nodes_is_not_supported():
    model = parse_maboss(
        "Node A { logic = A; rate_up = B - 1; }\nNode B { logic = B; }", ""
    )
    with pytest.raises(NotImplementedError, match="node 'A'"):
        fixed_points(model)


def test_bad_constraint_values_are_rejected(tcell):
    from cartwin.errors import ModelSpecificationError

    with pytest.raises(ModelSpecificationError, match="need 0 or 1"):
        fixed_points(tcell, constraints={"Antigen": 2})
    with pytest.raises(ModelSpecificationError, match="no node"):
        fixed_points(tcell, constraints={"Nope": 1})
