"""The cmaboss engine: agreement with direct cmaboss runs, seeds, overrides.

Agreement is tested two ways. Same seed: cartwin's numbers must equal those
of cmaboss called directly on the same files, to the last bit. Different
(independent) seeds: the final state counts of the two runs are compared
with Pearson's chi-square test of homogeneity at alpha = 0.01; the same test
must reject a run of a model with one rate changed, so it has power.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from cartwin.errors import ModelSpecificationError
from cartwin.logic import (
    InitialCondition,
    SimulationSettings,
    load_maboss,
    parse_maboss,
    replicate_seeds,
    simulate,
)

cmaboss = pytest.importorskip("cmaboss", reason="cmaboss (MaBoSS engine) not installed")

ALPHA = 0.01
RUN = {"sample_count": 2000, "max_time": 60.0, "time_tick": 1.0, "thread_count": 2}


@pytest.fixture(scope="module")
def cellfate(maboss_dir):
    return load_maboss(maboss_dir / "cellfate.bnd", maboss_dir / "cellfate.cfg")


def _direct(maboss_dir, seed: int, *, final_only: bool) -> dict[str, float]:
    sim = cmaboss.MaBoSSSim(
        str(maboss_dir / "cellfate.bnd"), str(maboss_dir / "cellfate.cfg")
    )
    sim.update_parameters(seed_pseudorandom=seed, use_physrandgen=False, **RUN)
    sim.network.set_istate("TNF", [0, 1])
    raw = sim.run(only_last_state=final_only)
    probs, _, labels = raw.get_last_probtraj()[:3]
    return {frozenset(lab.split(" -- ")): float(p) for lab, p in zip(labels, probs[0])}


def _ours(model, seed: int, *, final_only: bool, **parameters) -> dict:
    result = simulate(
        model,
        settings=SimulationSettings(seed=seed, **RUN),
        initial={"TNF": 1.0},
        parameters=parameters,
        final_only=final_only,
    )
    return {s: float(p) for s, p in zip(result.states, result.probabilities[-1])}


@pytest.mark.parametrize("final_only", [True, False])
def test_same_seed_is_identical_to_direct_cmaboss(cellfate, maboss_dir, final_only):
    direct = _direct(maboss_dir, 97, final_only=final_only)
    ours = _ours(cellfate, 97, final_only=final_only)
    nonzero = {s: p for s, p in ours.items() if p > 0}
    assert nonzero == {s: p for s, p in direct.items() if p > 0}


def _counts(dist: dict, states: list) -> np.ndarray:
    n = RUN["sample_count"]
    return np.array([round(dist.get(s, 0.0) * n) for s in states])


def test_independent_seeds_agree_within_monte_carlo_error(cellfate, maboss_dir):
    first, second = replicate_seeds(11, 2, RUN["sample_count"])
    ours = _ours(cellfate, first, final_only=True)
    direct = _direct(maboss_dir, second, final_only=True)
    states = sorted(set(ours) | set(direct), key=sorted)
    table = np.vstack([_counts(ours, states), _counts(direct, states)])
    table = table[:, table.sum(axis=0) > 0]
    assert table.sum() == 2 * RUN["sample_count"]
    assert chi2_contingency(table).pvalue > ALPHA


def test_the_homogeneity_test_detects_a_changed_rate(cellfate):
    # Power check: TransRate 1/24 -> 1 changes the survival/death balance.
    first, second = replicate_seeds(11, 2, RUN["sample_count"])
    base = _ours(cellfate, first, final_only=True)
    changed = _ours(cellfate, second, final_only=True, TransRate=1.0)
    states = sorted(set(base) | set(changed), key=sorted)
    table = np.vstack([_counts(base, states), _counts(changed, states)])
    table = table[:, table.sum(axis=0) > 0]
    assert chi2_contingency(table).pvalue < ALPHA


def test_nearby_seeds_share_trajectories(cellfate):
    # Documented MaBoSS behaviour: seeds 1 and 2 give nearly the same run.
    runs = [_ours(cellfate, s, final_only=True) for s in (1, 2)]
    states = sorted(set(runs[0]) | set(runs[1]), key=sorted)
    diff = np.abs(_counts(runs[0], states) - _counts(runs[1], states)).max()
    assert diff <= 10  # of 2000 trajectories; independent runs differ by ~30


def test_replicate_seeds_are_spaced_by_more_than_sample_count():
    seeds = replicate_seeds(5, 3, 1000)
    assert seeds[0] == 5
    assert min(np.diff(seeds)) > 1000


def test_all_real_models_run(maboss_dir):
    for name in ("cellfate", "dendritic_cells", "tcell_corral"):
        model = load_maboss(maboss_dir / f"{name}.bnd", maboss_dir / f"{name}.cfg")
        settings = SimulationSettings(seed=3, sample_count=200, max_time=20.0)
        result = simulate(model, settings=settings)
        assert np.allclose(result.probabilities.sum(axis=1), 1.0)
        assert result.settings["sample_count"] == 200


def test_dendritic_maturation_stays_on(maboss_dir):
    # Maturation has logic = Maturation and starts at 1 in the cfg: it never
    # changes, and Migration needs CCL21 (istate 0), so the state is fixed.
    model = load_maboss(
        maboss_dir / "dendritic_cells.bnd", maboss_dir / "dendritic_cells.cfg"
    )
    result = simulate(model, settings=SimulationSettings(seed=1, sample_count=100))
    assert result.final_distribution() == {"Maturation": 1.0}
    assert result.final_node_probabilities()["Maturation"] == 1.0


def test_trajectory_shapes_errors_and_time_axis(cellfate):
    result = simulate(
        cellfate, settings=SimulationSettings(seed=2, **RUN), initial={"TNF": 1.0}
    )
    n_times = int(RUN["max_time"] / RUN["time_tick"])
    assert result.probabilities.shape == (n_times, len(result.states))
    assert result.standard_errors.shape == result.probabilities.shape
    assert result.times[0] == 0.0 and result.times[-1] == RUN["max_time"] - 1
    assert not result.probabilities.flags.writeable


def test_override_of_joint_istate_keeps_the_other_node():
    bnd = (
        "Node A { logic = A; rate_up = 0; rate_down = 0; }\n"
        "Node B { logic = B; rate_up = 0; rate_down = 0; }"
    )
    cfg = "[A, B].istate = 0.5 [1, 1], 0.5 [0, 0];\nmax_time = 1; time_tick = 0.5;"
    model = parse_maboss(bnd, cfg)
    settings = SimulationSettings(seed=1, sample_count=4000)
    result = simulate(model, settings=settings, initial={"A": 1.0}, final_only=True)
    nodes = result.final_node_probabilities()
    assert nodes["A"] == 1.0
    assert nodes["B"] == pytest.approx(0.5, abs=0.04)  # 4000 draws: SE 0.008


def test_joint_initial_condition_is_applied():
    model = parse_maboss(
        "Node A { logic = A; rate_up = 0; rate_down = 0; }\n"
        "Node B { logic = B; rate_up = 0; rate_down = 0; }",
        "max_time = 1; time_tick = 0.5;",
    )
    joint = InitialCondition(("A", "B"), (((1, 0), 0.3), ((0, 1), 0.7)))
    result = simulate(
        model, settings=SimulationSettings(seed=1, sample_count=1000), initial=[joint]
    )
    # Nodes are constant, so the final distribution is the initial one: only
    # the states (1, 0) and (0, 1), in proportions 0.3 / 0.7 (SE 0.015).
    final = result.final_distribution()
    assert set(final) == {"A", "B"}
    assert final["A"] == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"parameters": {"nope": 1.0}}, r"no variable \$nope"),
        ({"parameters": {"TransRate": float("nan")}}, "not finite"),
        ({"initial": {"XYZ": 1.0}}, "no node"),
        ({"initial": {"TNF": 1.5}}, "allowed 0 to 1"),
        ({"outputs": ["XYZ"]}, "no node"),
    ],
)
def test_bad_overrides_are_rejected(cellfate, kwargs, fragment):
    with pytest.raises(ModelSpecificationError, match=fragment):
        simulate(cellfate, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"sample_count": 0}, {"max_time": float("inf")}, {"seed": 1.5}],
)
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ModelSpecificationError):
        SimulationSettings(**kwargs)


def test_to_dict_is_json_ready(cellfate):
    import json

    result = simulate(cellfate, settings=SimulationSettings(seed=1, sample_count=50))
    data = json.loads(json.dumps(result.to_dict()))
    assert sum(data["final_distribution"].values()) == pytest.approx(1.0)
