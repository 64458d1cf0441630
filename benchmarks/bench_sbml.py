"""Benchmark: an imported SBML model simulated for many virtual patients.

Claim measured: a model read by :func:`cartwin.models.sbml.load_sbml` and
solved in one vectorised, compiled call (``jax.vmap`` over parameter draws,
diffrax Tsit5) is faster than libroadrunner looping over the same patients
with the same tolerances, and gives the same trajectories.

Model: Kimmel 2021 (BioModels BIOMD0000001041, from
``../shared/data/real/sbml``), simulated to day 365 on a daily grid; each
virtual patient draws every exposed parameter log-normally (SD 0.3 of the
log) around its SBML value, seeded. Both engines use rtol 1e-8, atol 1e-10.
Printed: cartwin first call (compile included) and warm call, roadrunner
loop time, their ratio, and the largest relative difference over patients
per state (values below 1e4 x atol, where both engines resolve only noise,
compared absolutely against that floor). Tumours driven to ~1e-9 of their
size and then regrowing amplify that noise exponentially (roadrunner's
trajectories even turn negative), so the tumour column differs by more
than the T-cell columns; that is the model's sensitivity, not a
translation error (the agreement tests use a 50-day horizon).

Run with ``.venv/bin/python benchmarks/bench_sbml.py [--patients N]``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cartwin.graph.graph import SolverSettings
from cartwin.models.sbml import load_sbml, sbml_trajectory

SHARED = Path(
    os.environ.get(
        "CARTWIN_SHARED", Path(__file__).resolve().parents[1].parent / "shared"
    )
)
MODEL_PATH = SHARED / "data" / "real" / "sbml" / "BIOMD0000001041.xml"
RTOL, ATOL = 1e-8, 1e-10


def draws(model, n: int, seed: int = 2021) -> dict[str, np.ndarray]:
    """Log-normal draws (SD 0.3 of the log) of every exposed parameter."""
    rng = np.random.default_rng(seed)
    return {
        p.name: p.median * np.exp(0.3 * rng.standard_normal(n))
        for p in model.parameters
    }


def run_cartwin(model, params: dict[str, np.ndarray], t_days: np.ndarray):
    settings = SolverSettings(solver="tsit5", rtol=RTOL, atol=ATOL, max_steps=100_000)

    def one(p):
        return sbml_trajectory(model, p, t_days, settings=settings)

    batched = jax.jit(jax.vmap(one))
    arrays = {k: jnp.asarray(v) for k, v in params.items()}
    start = time.perf_counter()
    ys = np.asarray(jax.block_until_ready(batched(arrays)))
    first = time.perf_counter() - start
    start = time.perf_counter()
    ys = np.asarray(jax.block_until_ready(batched(arrays)))
    return ys, first, time.perf_counter() - start


def run_roadrunner(model, params: dict[str, np.ndarray], t_days: np.ndarray):
    import roadrunner

    runner = roadrunner.RoadRunner(str(MODEL_PATH))
    runner.integrator.relative_tolerance = RTOL
    runner.integrator.absolute_tolerance = ATOL
    runner.timeCourseSelections = ["time"] + [f"[{s}]" for s in model.state_ids]
    n = len(next(iter(params.values())))
    out = np.empty((n, t_days.size, len(model.state_ids)))
    start = time.perf_counter()
    for i in range(n):
        runner.resetAll()
        for name, values in params.items():
            runner[name] = float(values[i])
        runner.reset()  # re-apply initial assignments and rules
        out[i] = runner.simulate(times=t_days)[:, 1:]
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    args = parser.parse_args()
    if not MODEL_PATH.is_file():
        raise SystemExit(f"model not found: {MODEL_PATH} (set CARTWIN_SHARED)")
    model = load_sbml(MODEL_PATH)
    t_days = np.arange(0.0, 366.0)
    params = draws(model, args.patients)
    ours, first, warm = run_cartwin(model, params, t_days)
    reference, loop = run_roadrunner(model, params, t_days)
    # below ~1e4 x atol both engines only resolve noise: compare absolutely
    floor = 1e4 * ATOL
    difference = np.nanmax(
        np.abs(ours - reference) / (np.abs(reference) + floor), (0, 1)
    )
    print(f"patients                         {args.patients}")
    print(f"device                           {jax.devices()[0].platform}")
    print(f"cartwin first call (compile)     {first:8.3f} s")
    print(f"cartwin warm call                {warm:8.3f} s")
    print(f"libroadrunner loop               {loop:8.3f} s")
    print(f"ratio roadrunner / cartwin warm  {loop / warm:8.1f} x")
    for sid, value in zip(model.state_ids, difference):
        print(f"largest relative difference      {value:8.2e}  {sid}")


if __name__ == "__main__":
    main()
