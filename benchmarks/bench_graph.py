"""Benchmark: the multi-scale graph (CAR T / tumour + cytokines) in JAX/diffrax.

Measures, in one run:

(a) vectorised simulation of ``--patients`` virtual patients (default 10 000;
    the issue's target is 100 000) drawn from the population prior, ZUMA-1-like
    schedule, to day 365 (weekly grid after day 28), in compiled batches of
    ``--batch``; compile time reported separately;
(b) the same model solved patient by patient with ``scipy.integrate.solve_ivp``
    (LSODA, same tolerances, the graph's jitted vector field, restarted at
    input jumps) on ``--scipy-sample`` patients, extrapolated, as a ratio;
(c) calibration of the bundled demo patient (115 observations, 23 free
    parameters) after warm-up, median of three (target < 2 s).

libroadrunner is not compared here: that needs the graph exported as SBML
(issue 3, SBML part). Run with ``.venv/bin/python benchmarks/bench_graph.py``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import jax
import numpy as np
from scipy.integrate import solve_ivp

from cartwin.demo import demo_bundle_path
from cartwin.graph.calibrate import calibrate_record, prior_fit
from cartwin.graph.forecast import draw_parameters, simulate_draws
from cartwin.graph.graph import pack_inputs, standard_graph
from cartwin.graph.inputs import typical_schedule
from cartwin.io.fhir import import_fhir
from cartwin.record.pseudonym import DEMO_KEY

GRID = np.concatenate([np.arange(0.0, 28.0, 1.0), np.arange(28.0, 366.0, 7.0)])


def vectorised(graph, schedule, vectors, batch: int) -> tuple[float, float]:
    # first batch includes compilation; the rest are timed as throughput
    start = time.perf_counter()
    simulate_draws(graph, vectors[:batch], schedule, GRID)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for lo in range(0, vectors.shape[0], batch):
        chunk = vectors[lo : lo + batch]
        if chunk.shape[0] < batch:  # keep the compiled shape
            chunk = np.vstack([chunk, vectors[: batch - chunk.shape[0]]])
        simulate_draws(graph, chunk, schedule, GRID)
    return first, time.perf_counter() - start


def scipy_loop(graph, schedule, vectors) -> float:
    arrays = pack_inputs(graph, schedule)
    field = jax.jit(lambda t, y, v: graph.vector_field(t, y, (v, arrays)))
    jumps = np.asarray(arrays["jump_ts"])
    inner = jumps[(jumps > schedule.t_start) & (jumps < GRID[-1])]
    edges = np.unique(np.concatenate([[schedule.t_start, GRID[-1]], inner]))
    field(0.0, np.ones(len(graph.state_names)), vectors[0])  # compile
    start = time.perf_counter()
    for vector in vectors:
        y = np.asarray(graph.initial_state(vector, arrays["covariates"]))
        for a, b in itertools.pairwise(edges):
            sol = solve_ivp(
                lambda t, x, v=vector: np.asarray(field(t, x, v)),
                (a, b),
                y,
                method="LSODA",
                rtol=1e-6,
                atol=1e-9,
            )
            y = sol.y[:, -1]
    return (time.perf_counter() - start) / len(vectors)


def calibration_seconds() -> float:
    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    calibrate_record(record)  # warm-up (compiles)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fit = calibrate_record(record)
        times.append(time.perf_counter() - start)
    assert fit.status == "converged", fit.reason
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--scipy-sample", type=int, default=20)
    args = parser.parse_args()

    graph, schedule = standard_graph("LBCL"), typical_schedule()
    vectors = draw_parameters(
        graph, prior_fit(graph, schedule), args.patients, np.random.default_rng(0)
    )
    print(
        f"platform: {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}, devices {jax.devices()}"
    )
    first, total = vectorised(graph, schedule, vectors, args.batch)
    per_scipy = scipy_loop(graph, schedule, vectors[: args.scipy_sample])
    print(
        f"(a) {args.patients} patients to day 365: {total:.2f} s "
        f"({1e6 * total / args.patients:.1f} us/patient); first batch with "
        f"compilation {first:.2f} s"
    )
    print(
        f"(b) scipy LSODA loop: {1e3 * per_scipy:.1f} ms/patient -> "
        f"{per_scipy * args.patients:.0f} s extrapolated; ratio "
        f"{per_scipy * args.patients / total:.0f}x"
    )
    print(
        f"(c) demo calibration after warm-up: {calibration_seconds():.2f} s "
        "(target < 2 s)"
    )


if __name__ == "__main__":
    main()
