"""Cost of cartwin's logical-model layer next to cmaboss called directly.

Claims measured:

1. One patient: personalise the T-cell fate model from 10^4 cells and
   simulate it (:func:`cartwin.logic.personalise`, ``mode="cells"``).
2. A cohort: 100 patients of 10^4 cells each, one call per patient.

Baseline: the same MaBoSS run done with cmaboss directly -- the shipped
``.bnd``/``.cfg`` loaded from file, the same settings, scenario inputs and
joint initial state (computed once, outside the timer), ``run(only_last_state
=True)`` and a plain loop that sums state probabilities into fates. Printed
ratios:

* ``simulate ratio``: :func:`cartwin.logic.simulate_fates` with the same
  initial state / direct cmaboss (overhead of parsing, checks, result object);
* ``end-to-end ratio``: :func:`personalise` from the AnnData / direct cmaboss
  (adds gene matching, quantiles, profiles; the data work cmaboss never does).

Data: seeded synthetic AnnData (CSR, 2000 genes of which the model's 38
mapped genes, Poisson counts with two sub-populations), so the run needs no
download. Best and median of ``--repeat`` runs are printed.

Run::

    .venv/bin/python benchmarks/bench_logic.py [--cells 10000] [--patients 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np

from cartwin.errors import DataQualityWarning
from cartwin.logic import (
    PersonalisationOptions,
    SimulationSettings,
    Stimulation,
    load_gene_map,
    node_activities,
    personalise,
    simulate_fates,
)
from cartwin.logic.fates import DEFAULT_FATES, tcell_model_paths
from cartwin.logic.personalise import _joint_profile

SEED = 20250101
SAMPLES = 2000


def make_cells(n_cells: int, n_genes: int, seed: int):
    """Seeded synthetic AnnData: 60% memory-like and 40% exhausted-like cells."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    model_genes = list(load_gene_map().genes)
    genes = model_genes + [f"GENE{i:05d}" for i in range(n_genes - len(model_genes))]
    counts = rng.poisson(0.15, size=(n_cells, n_genes)).astype(np.float32)
    exhausted = rng.random(n_cells) < 0.4
    for gene in ("TOX", "PDCD1", "NR4A1", "NFATC1", "PRDM1"):
        counts[exhausted, genes.index(gene)] += rng.poisson(4.0, exhausted.sum())
    for gene in ("TCF7", "LEF1", "CCR7", "SELL", "IL7R", "BCL2", "EOMES"):
        counts[~exhausted, genes.index(gene)] += rng.poisson(4.0, (~exhausted).sum())
    matrix = sp.csr_matrix(np.log1p(counts))
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    return anndata.AnnData(X=matrix, var=pd.DataFrame(index=genes), obs=obs)


def direct_cmaboss(inputs: dict[str, float], joint, seed: int) -> dict[str, float]:
    """The same simulation with cmaboss only (loaded from the shipped files)."""
    import cmaboss

    bnd, cfg = tcell_model_paths()
    sim = cmaboss.MaBoSSSim(str(bnd), str(cfg))
    sim.update_parameters(
        seed_pseudorandom=seed, use_physrandgen=False, sample_count=SAMPLES
    )
    sim.update_parameters(**{"$antigen_clearance": 0.0})
    for node, p in inputs.items():
        sim.network.set_istate(node, [1.0 - p, p])
    sim.network.set_istate(*joint.as_cmaboss())
    probs, _, labels = sim.run(only_last_state=True).get_last_probtraj()[:3]
    fates = dict.fromkeys(DEFAULT_FATES.fates, 0.0)
    for label, p in zip(labels, probs[0]):
        state = frozenset() if label == "<nil>" else frozenset(label.split(" -- "))
        fates[DEFAULT_FATES.classify(state)] += float(p)
    return fates


def timed(function, repeat: int) -> tuple[float, float, object]:
    """Best and median wall time (s) of ``repeat`` calls, and the last value."""
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), value


def one_patient(n_cells: int, n_genes: int, repeat: int) -> None:
    cells = make_cells(n_cells, n_genes, SEED)
    settings = SimulationSettings(seed=7, sample_count=SAMPLES)
    stimulation = Stimulation()
    options = PersonalisationOptions()
    activity = node_activities(cells, options=options)
    joint = _joint_profile(activity.nodes, activity.values >= options.threshold)
    inputs = stimulation.initial()

    def ours_end_to_end():
        return personalise(cells, stimulation=stimulation, settings=settings).as_dict()

    def ours_simulate():
        return simulate_fates(
            stimulation=stimulation, settings=settings, initial=(joint,)
        )

    best_e, med_e, fates_e = timed(ours_end_to_end, repeat)
    best_s, med_s, fates_s = timed(ours_simulate, repeat)
    best_d, med_d, fates_d = timed(lambda: direct_cmaboss(inputs, joint, 7), repeat)
    same = fates_s == fates_d == fates_e
    print(f"one patient, {n_cells} cells x {n_genes} genes, {SAMPLES} trajectories")
    print(
        f"  cmaboss direct       best {best_d * 1e3:8.1f} ms  median {med_d * 1e3:8.1f} ms"
    )
    print(
        f"  cartwin simulate     best {best_s * 1e3:8.1f} ms  median {med_s * 1e3:8.1f} ms"
    )
    print(
        f"  cartwin personalise  best {best_e * 1e3:8.1f} ms  median {med_e * 1e3:8.1f} ms"
    )
    print(
        f"  simulate ratio   {best_s / best_d:6.2f}   end-to-end ratio {best_e / best_d:6.2f}"
    )
    print(f"  identical fates (same seed): {same}  {_fmt(fates_e)}")


def cohort(n_patients: int, n_cells: int, n_genes: int) -> None:
    """Patients are generated one at a time (10^4 x 2000 each) to bound memory;
    only the personalise / direct-cmaboss calls are timed."""
    settings = SimulationSettings(seed=7, sample_count=SAMPLES)
    stimulation = Stimulation()
    t_ours = t_direct = 0.0
    same, exhausted = True, []
    for k in range(n_patients):
        cells = make_cells(n_cells, n_genes, SEED + k)
        activity = node_activities(cells)
        joint = _joint_profile(activity.nodes, activity.values >= 0.5)
        start = time.perf_counter()
        ours = personalise(cells, stimulation=stimulation, settings=settings)
        t_ours += time.perf_counter() - start
        start = time.perf_counter()
        direct = direct_cmaboss(stimulation.initial(), joint, 7)
        t_direct += time.perf_counter() - start
        same = same and ours.as_dict() == direct
        exhausted.append(ours.fates["exhausted"])
    spread = np.array(exhausted)
    print(f"cohort, {n_patients} patients x {n_cells} cells")
    print(
        f"  cmaboss direct       {t_direct:7.2f} s  "
        f"({t_direct / n_patients * 1e3:6.1f} ms/patient)"
    )
    print(
        f"  cartwin personalise  {t_ours:7.2f} s  "
        f"({t_ours / n_patients * 1e3:6.1f} ms/patient)"
    )
    print(f"  end-to-end ratio {t_ours / t_direct:6.2f}   identical fates: {same}")
    print(
        f"  exhausted fraction across patients: mean {spread.mean():.3f}, "
        f"sd {spread.std(ddof=1):.3f}"
    )


def _fmt(fates: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in fates.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    warnings.simplefilter(
        "ignore", DataQualityWarning
    )  # synthetic data lack some genes
    one_patient(args.cells, args.genes, args.repeat)
    cohort(args.patients, args.cells, args.genes)


if __name__ == "__main__":
    main()
