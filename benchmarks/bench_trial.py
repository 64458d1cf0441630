"""Benchmark: virtual patients through the kinetics + tumour + CRS graph to day 365.

Measures, in one run, for ``--patients`` prior patients (default 10^6) of the
standard LBCL graph (CAR T / tumour + cytokines, 8 states), ZUMA-1-like
schedule, tocilizumab policy at CRS grade 2, per-patient summaries only:

(a) the trial engine (``cartwin.trial.engine.Engine``, ETDRK4 on a fixed
    grid of ~480 steps) in this process, chunks of ``--chunk`` patients;
(b) the same engine through Dask: a LocalCluster of ``--workers`` worker
    processes with one thread each, on loopback, one task per chunk;
(c) the graph's adaptive solver (diffrax Tsit5, rtol 1e-6, vmapped) on
    ``--adaptive-sample`` patients, extrapolated: what a user of cartwin's
    twin API would run otherwise.

Peak resident memory of this process and of each worker is reported. The
libroadrunner loop over the same graph exported as SBML
(:mod:`cartwin.graph.sbml_export`) is ``bench_roadrunner_loop.py``. Run
``.venv/bin/python benchmarks/bench_trial.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np


def _engine():
    from cartwin.graph.graph import standard_graph
    from cartwin.graph.inputs import typical_schedule
    from cartwin.models.cytokines import CRS_LINK
    from cartwin.trial.engine import DrugPolicy, Engine, Protocol

    policy = DrugPolicy("toci_exposure", CRS_LINK.thresholds[1])
    graph = standard_graph("LBCL")
    return graph, Engine(graph, Protocol(typical_schedule(1.0), policies=(policy,)))


_CACHE: dict = {}


def run_chunk(start: int, size: int, seed: int) -> dict:
    """Simulate prior patients ``start .. start + size`` (top-level for Dask)."""
    if "engine" not in _CACHE:
        _CACHE["graph"], _CACHE["engine"] = _engine()
    graph, engine = _CACHE["graph"], _CACHE["engine"]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(start,)))
    z = rng.standard_normal((size, graph.free_index.size))
    vectors = np.asarray(graph.natural_from_z(z))
    out = engine.run(vectors, {"cart_infusion_rate": np.full(size, 1.6e8)})
    return {
        "cmax_median": float(np.median(out["cmax"])),
        "ok": int(out["ok"].sum()),
        "adaptive": int(out["adaptive"].sum()),
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def local(n: int, chunk: int, seed: int) -> tuple[float, list[dict]]:
    run_chunk(0, chunk, seed)  # compile
    start = time.perf_counter()
    parts = [run_chunk(s, min(chunk, n - s), seed) for s in range(0, n, chunk)]
    return time.perf_counter() - start, parts


def dask(n: int, chunk: int, seed: int, workers: int) -> tuple[float, list[float]]:
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True,
        host="127.0.0.1", dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        client.run(run_chunk, 0, chunk, seed)  # compile on every worker
        start = time.perf_counter()
        futures = [
            client.submit(run_chunk, s, min(chunk, n - s), seed, pure=False)
            for s in range(0, n, chunk)
        ]
        client.gather(futures)
        elapsed = time.perf_counter() - start
        rss = client.run(_peak_rss_mib)
    return elapsed, list(rss.values())


def adaptive(n: int, seed: int) -> float:
    from cartwin.graph.forecast import simulate_draws
    from cartwin.graph.graph import standard_graph
    from cartwin.graph.inputs import typical_schedule

    graph = standard_graph("LBCL")
    rng = np.random.default_rng(seed)
    vectors = np.asarray(
        graph.natural_from_z(rng.standard_normal((n, graph.free_index.size)))
    )
    grid = np.concatenate([np.arange(0, 28, 0.25), np.arange(28, 366, 1.0)])
    schedule = typical_schedule(1.6e8)
    simulate_draws(graph, vectors[:8], schedule, grid)  # compile
    start = time.perf_counter()
    simulate_draws(graph, vectors, schedule, grid)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--adaptive-sample", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261204)
    args = parser.parse_args()
    n = args.patients
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}")
    t_local, parts = local(n, args.chunk, args.seed)
    fallbacks = sum(p["adaptive"] for p in parts)
    print(f"(a) engine, this process: {n} patients in {t_local:.1f} s "
          f"({t_local / n * 1e6:.0f} µs/patient); adaptive fallbacks {fallbacks}; "
          f"peak RSS {_peak_rss_mib():.0f} MiB")
    t_dask, rss = dask(n, args.chunk, args.seed, args.workers)
    print(f"(b) engine via Dask, {args.workers} workers: {t_dask:.1f} s; worker "
          f"peak RSS {', '.join(f'{r:.0f}' for r in rss)} MiB; "
          f"ratio local/dask {t_local / t_dask:.2f}")
    t_adaptive = adaptive(args.adaptive_sample, args.seed)
    per = t_adaptive / args.adaptive_sample
    print(f"(c) adaptive diffrax, vmapped: {args.adaptive_sample} patients in "
          f"{t_adaptive:.1f} s, extrapolated {per * n:.0f} s for {n}; ratio "
          f"adaptive/engine {per * n / t_local:.1f}, adaptive/dask "
          f"{per * n / t_dask:.1f}")


if __name__ == "__main__":
    main()
