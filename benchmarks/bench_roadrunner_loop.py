"""Benchmark: prior patients through libRoadRunner (SBML export) vs the trial engine.

Issue 6 asks for the trial engine's speed as a ratio against libRoadRunner
looping over the same SBML export. In one run, for ``--patients`` prior
patients (default 2000) of the standard LBCL graph (CAR T / tumour +
cytokines, 8 states), ZUMA-1-like schedule (1.6e8 cells over 30 min at day
0, flu/cy days -5..-3), no drug policy (roadrunner runs the fixed schedule):

(a) libRoadRunner: :func:`cartwin.graph.sbml_export.graph_to_sbml` loaded
    once; per patient ``set_parameters``, ``reset`` (recomputes the initial
    states), ``simulate`` from the schedule's start to day 365 with output
    every day (CAR T total, tumour, IL-6 signal) and the CAR T peak taken
    from it. CVODE at ``--rtol``/``--atol`` (default 1e-8/1e-12, the
    tolerances at which ``tests/graph/test_sbml_export.py`` matches the graph
    to 1e-4) and again at 1e-6/1e-9 (the graph's default tolerances); BDF,
    roadrunner's default. A few prior courses (about 0.15% at 1e-8/1e-12,
    0.5% at 1e-6/1e-9) fail in BDF, right after the infusion starts or when
    the tumour falls below ``atol``; they are solved again with Adams, then
    Adams with a 1000x smaller ``atol``, counted in the time like the
    engine's fallbacks. One process, one thread.
(b) ``cartwin.trial.engine.Engine`` (ETDRK4 on a fixed grid, vmapped,
    compiled once before timing) on the same patients in one chunk.

Printed: patients/s, extrapolated seconds for 10^6 patients, the ratio
roadrunner/engine, and the median relative difference of the CAR T peak
between the two (a check that both simulate the same course). Model
loading and compilation times are printed separately, not in the rates.
Run ``.venv/bin/python benchmarks/bench_roadrunner_loop.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

MILLION = 1_000_000


def _patients(n: int, seed: int):
    from cartwin.graph.graph import standard_graph
    from cartwin.graph.inputs import typical_schedule

    graph = standard_graph("LBCL")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    z = rng.standard_normal((n, graph.free_index.size))
    return graph, typical_schedule(1.6e8), np.asarray(graph.natural_from_z(z))


def roadrunner_loop(graph, schedule, vectors, rtol, atol) -> tuple[float, np.ndarray]:
    """Seconds for the loop and each patient's CAR T peak (days >= 0)."""
    from cartwin.graph.sbml_export import graph_to_sbml, load_roadrunner, set_parameters

    start = time.perf_counter()
    rr = load_roadrunner(graph_to_sbml(graph, schedule), rtol=rtol, atol=atol)
    print(f"    export + load: {time.perf_counter() - start:.2f} s")
    times = np.concatenate([[schedule.t_start], np.arange(0.0, 366.0)])
    selections = ["cart_total", "cart_tumour__tumour", "il6_signal"]
    cmax = np.full(len(vectors), np.nan)
    retried = failed = 0
    start = time.perf_counter()
    for i, vector in enumerate(vectors):
        set_parameters(rr, graph, vector)
        out, attempts = _course(rr, times, selections, atol)
        retried += attempts > 1
        failed += out is None
        if out is not None:
            cmax[i] = np.max(out[1:, 0])
    elapsed = time.perf_counter() - start
    print(
        f"    courses solved again after a CVODE BDF failure: {retried}; "
        f"unsolved: {failed}"
    )
    return elapsed, cmax


def _course(rr, times, selections, atol) -> tuple[np.ndarray | None, int]:
    # BDF (roadrunner's default), then Adams, then Adams with 1000x smaller
    # atol: a few prior courses fail in BDF right after the infusion starts
    # or when a state falls below atol
    attempts = ((True, atol), (False, atol), (False, atol * 1e-3))
    for count, (stiff, tol) in enumerate(attempts, start=1):
        rr.integrator.setValue("stiff", stiff)
        rr.integrator.absolute_tolerance = tol
        rr.reset()
        try:
            out = rr.simulate(times=times, selections=selections)
        except RuntimeError:
            continue
        finally:
            rr.integrator.setValue("stiff", True)
            rr.integrator.absolute_tolerance = atol
        return out, count
    return None, len(attempts)


def engine_run(graph, vectors) -> tuple[float, np.ndarray]:
    """Seconds for one run of the engine (compiled before) and the CAR T peaks."""
    from cartwin.graph.inputs import typical_schedule
    from cartwin.trial.engine import Engine, Protocol

    engine = Engine(graph, Protocol(typical_schedule(1.0)))
    scales = {"cart_infusion_rate": np.full(len(vectors), 1.6e8)}
    start = time.perf_counter()
    engine.run(vectors, scales)
    print(f"    engine compile + first run: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    out = engine.run(vectors, scales)
    return time.perf_counter() - start, out["cmax"]


def _line(label: str, seconds: float, n: int) -> None:
    print(
        f"{label}: {n} patients in {seconds:.2f} s = {n / seconds:,.0f} patients/s; "
        f"10^6 patients ~ {seconds / n * MILLION:,.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--atol", type=float, default=1e-12)
    args = parser.parse_args()
    # SUNDIALS (inside roadrunner) prints each CVODE warning and error of
    # the failing courses to stdout; they are counted instead
    for stream in ("WARNING", "ERROR"):
        os.environ.setdefault(f"SUNLOGGER_{stream}_FILENAME", os.devnull)
    import roadrunner

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, "
        f"libroadrunner {roadrunner.__version__}"
    )
    n = args.patients
    graph, schedule, vectors = _patients(n, args.seed)
    print("(b) trial engine (ETDRK4, vmapped, one chunk)")
    t_engine, cmax_engine = engine_run(graph, vectors)
    _line("    engine", t_engine, n)
    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_CRITICAL)
    for rtol, atol in ((args.rtol, args.atol), (1e-6, 1e-9)):
        print(f"(a) libroadrunner CVODE rtol {rtol:g} atol {atol:g}, daily output")
        t_rr, cmax_rr = roadrunner_loop(graph, schedule, vectors, rtol, atol)
        _line("    roadrunner", t_rr, n)
        diff = np.abs(cmax_engine / cmax_rr - 1.0)
        print(
            f"    ratio roadrunner/engine {t_rr / t_engine:.1f}; CAR T peak "
            f"engine vs roadrunner: median rel. diff {np.median(diff):.1e}, "
            f"95th pct {np.quantile(diff, 0.95):.1e}"
        )


if __name__ == "__main__":
    main()
