"""Benchmark: CAR T kinetics calibration and forecast (MAP/Laplace in JAX).

Measures, in one run:

(a) the first fit + forecast of a process, compilation included, in a fresh
    process with an empty persistent compilation cache and again in a second
    process that finds the cache filled by the first (target < 5 s cold);
(b) fit + forecast of one patient with 20 observations after warm-up (target
    < 10 ms), against the same objective minimised by
    ``scipy.optimize.minimize`` (BFGS and L-BFGS-B) with a numpy objective
    and analytic numpy gradient, as a ratio;
(c) a batch of 1000 patients in one vectorised call (target < 1 s).

Run with ``.venv/bin/python benchmarks/bench_calibration.py``. Every run uses
a temporary cache directory, so numbers are cold-start numbers.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

# an empty persistent cache for this process, set before cartwin is imported
os.environ["CARTWIN_JAX_CACHE"] = tempfile.mkdtemp(prefix="cartwin-bench-main-")
atexit.register(shutil.rmtree, os.environ["CARTWIN_JAX_CACHE"], True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import optimize, special  # noqa: E402

from cartwin.inference import (  # noqa: E402
    FitSettings,
    KineticsData,
    KineticsPrior,
    fit_kinetics,
    fit_kinetics_batch,
    forecast_kinetics,
)
from cartwin.inference.likelihood import neg_log_posterior  # noqa: E402
from cartwin.models.kinetics import simulate_kinetics  # noqa: E402

SCHEDULE_DAYS = np.array(
    [0, 1, 2, 3, 4, 5, 7, 9, 11, 14, 17, 21, 28, 35, 42, 56, 90, 120, 180, 365.0]
)
LLOQ = 50.0

FIRST_CALL = textwrap.dedent(
    """
    import time
    t0 = time.perf_counter()
    import numpy as np
    from cartwin.inference import (KineticsData, KineticsPrior, fit_kinetics,
                                   forecast_kinetics)
    t1 = time.perf_counter()
    days = np.array([0, 1, 2, 3, 4, 5, 7, 9, 11, 14, 17, 21, 28, 35, 42, 56, 90,
                     120, 180, 365.0])
    values = 24000.0 * np.exp(-0.05 * np.abs(days - 9.3)) + 10.0
    prior = KineticsPrior.from_published()
    fit = fit_kinetics(KineticsData(days, values, np.zeros(20, bool)), prior)
    forecast_kinetics(fit, prior)
    print(f"{t1 - t0:.3f} {time.perf_counter() - t1:.3f}")
    """
)


def simulate_cohort(n_patients: int, seed: int) -> list[KineticsData]:
    """Patients drawn from the prior, 20 noisy levels each, censored < LLOQ."""
    prior = KineticsPrior.from_published()
    rng = np.random.default_rng(seed)
    cohort = []
    for _ in range(n_patients):
        theta = prior.mean_theta + prior.sd_theta * rng.standard_normal(6)
        level = simulate_kinetics(theta, SCHEDULE_DAYS)
        level = level * np.exp(prior.sigma * rng.standard_normal(level.size))
        below = level < LLOQ
        cohort.append(KineticsData(SCHEDULE_DAYS, np.where(below, LLOQ, level), below))
    return cohort


def numpy_objective(theta, data, prior, smoothing):
    """Negative log posterior and its analytic gradient, in numpy.

    Same objective as :func:`cartwin.inference.likelihood.neg_log_posterior`
    (smoothed Tmax switch, censored log-normal likelihood), written out by
    hand for scipy. Returns ``(value, gradient)``.
    """
    t, log_obs, censor = data
    mean, sd, sigma = prior
    a, b, c, d, e, f = theta
    tmax, alpha, beta = np.exp(b), np.exp(d), np.exp(f)

    # rising branch and its derivatives
    rising = c - a * (1.0 - t / tmax)
    d_rising = np.stack(
        [-(1.0 - t / tmax), -a * t / tmax, np.ones_like(t), 0 * t, 0 * t, 0 * t]
    )

    # declining branch, log-sum-exp of fast and slow phases
    u = t - tmax
    log_fast = -np.logaddexp(0.0, e) - alpha * u
    log_slow = -np.logaddexp(0.0, -e) - beta * u
    log_sum = np.logaddexp(log_fast, log_slow)
    p_fast, p_slow = np.exp(log_fast - log_sum), np.exp(log_slow - log_sum)
    declining = c + log_sum
    sig_e = special.expit(e)
    d_declining = np.stack(
        [
            0 * t,
            (p_fast * alpha + p_slow * beta) * tmax,
            np.ones_like(t),
            -p_fast * alpha * u,
            p_slow - sig_e,
            -p_slow * beta * u,
        ]
    )

    # logistic blend at Tmax
    w = special.expit(u / smoothing)
    zero = 0 * t
    d_w = np.stack([zero, -w * (1 - w) * tmax / smoothing, zero, zero, zero, zero])
    log_pred = (1 - w) * rising + w * declining
    d_pred = (1 - w) * d_rising + w * d_declining + (declining - rising) * d_w

    # censored log-normal likelihood and d loglik / d log_pred
    z = (log_obs - log_pred) / sigma
    log_phi = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
    exact = censor == 0
    below = censor == 1
    loglik = np.where(
        exact,
        log_phi - np.log(sigma),
        np.where(below, special.log_ndtr(z), special.log_ndtr(-z)),
    )
    slope = np.where(
        exact,
        z / sigma,
        np.where(
            below,
            -np.exp(log_phi - special.log_ndtr(z)) / sigma,
            np.exp(log_phi - special.log_ndtr(-z)) / sigma,
        ),
    )
    value = 0.5 * np.sum(((theta - mean) / sd) ** 2) - loglik.sum()
    grad = (theta - mean) / sd**2 - d_pred @ slope
    return value, grad


def timed(function, repeats: int) -> float:
    """Median wall time of ``function()`` in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def first_call_in_fresh_processes() -> tuple[list[float], list[float]]:
    # two processes sharing one new cache directory: cold, then warm
    imports, firsts = [], []
    with tempfile.TemporaryDirectory(prefix="cartwin-bench-") as cache:
        env = dict(os.environ, CARTWIN_JAX_CACHE=cache)
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", FIRST_CALL],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            imports.append(float(out[0]))
            firsts.append(float(out[1]))
    return imports, firsts


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count()
    return f"nproc {cores}, {model}, jax {jax.__version__} on {jax.default_backend()}"


def main() -> None:
    prior = KineticsPrior.from_published()
    patient = simulate_cohort(1, seed=1)[0]
    settings = FitSettings()

    # (a) first call in this process, then cold and warm fresh processes
    start = time.perf_counter()
    fit = fit_kinetics(patient, prior)
    forecast_kinetics(fit, prior)
    first_here = time.perf_counter() - start
    imports, firsts = first_call_in_fresh_processes()

    # (b) one patient after warm-up: ours against scipy on the same objective
    fit_time = timed(lambda: fit_kinetics(patient, prior), 50)
    both_time = timed(
        lambda: forecast_kinetics(fit_kinetics(patient, prior), prior), 50
    )
    data = (patient.t_days, np.log(patient.values), patient.below_lloq.astype(int))
    arrays = (prior.mean_theta, prior.sd_theta, prior.sigma)
    smoothing = settings.smoothing_days
    check = _check_numpy_objective(fit.map_theta, data, arrays, smoothing)
    scipy_results = {}
    for method in ("BFGS", "L-BFGS-B"):

        def solve(method=method):
            return optimize.minimize(
                numpy_objective,
                prior.mean_theta,
                args=(data, arrays, smoothing),
                jac=True,
                method=method,
                options={"gtol": settings.gtol},
            )

        result = solve()
        gap = np.max(np.abs(result.x - fit.map_theta))
        scipy_results[method] = (timed(solve, 20), result.nit, gap, result.success)

    # (c) 1000 patients in one vectorised call
    cohort = simulate_cohort(1000, seed=2)
    start = time.perf_counter()
    fits = fit_kinetics_batch(cohort, prior)
    batch_first = time.perf_counter() - start
    batch_time = timed(lambda: fit_kinetics_batch(cohort, prior), 5)
    converged = sum(f.status == "converged" for f in fits)

    _print_table(
        first_here,
        imports,
        firsts,
        fit,
        fit_time,
        both_time,
        scipy_results,
        check,
        batch_first,
        batch_time,
        converged,
    )


def _check_numpy_objective(theta, data, arrays, smoothing) -> float:
    # the numpy objective and gradient must equal the JAX ones
    t, log_obs, censor = data
    jax_data = (
        jnp.asarray(t),
        jnp.asarray(log_obs),
        jnp.asarray(censor),
        jnp.ones(t.size, bool),
    )
    jax_arrays = tuple(jnp.asarray(a) for a in arrays)
    value, grad = jax.value_and_grad(neg_log_posterior)(
        jnp.asarray(theta), jax_data, jax_arrays, smoothing
    )
    np_value, np_grad = numpy_objective(theta, data, arrays, smoothing)
    assert abs(np_value - float(value)) < 1e-9 * (1 + abs(np_value))
    return float(np.max(np.abs(np_grad - np.asarray(grad))))


def _print_table(
    first_here,
    imports,
    firsts,
    fit,
    fit_time,
    both_time,
    scipy_results,
    check,
    batch_first,
    batch_time,
    converged,
) -> None:
    ms = 1e3
    print(f"machine: {machine()}")
    print(f"numpy vs JAX gradient at the MAP: max abs difference {check:.1e}")
    print(
        f"one patient: {fit.n_obs} observations ({fit.n_censored} < LLOQ), "
        f"{fit.n_iter} Newton iterations, status {fit.status}"
    )
    rows = [
        ("(a) first fit+forecast, this process, cold", first_here, "s", "< 5 s"),
        ("(a) fresh process 1: import", imports[0], "s", ""),
        ("(a) fresh process 1: first fit+forecast, cold", firsts[0], "s", "< 5 s"),
        ("(a) fresh process 2: first fit+forecast, warm", firsts[1], "s", ""),
        ("(a) persistent cache speed-up, 1 / 2", firsts[0] / firsts[1], "x", ""),
        ("(b) fit, 20 observations, warm", fit_time * ms, "ms", ""),
        ("(b) fit + forecast (1000 draws, 230 days)", both_time * ms, "ms", "< 10 ms"),
    ]
    for method, (seconds, nit, gap, ok) in scipy_results.items():
        rows.append(
            (
                f"(b) scipy {method}: {nit} iterations, success {ok}, "
                f"|x - MAP| {gap:.1e}",
                seconds * ms,
                "ms",
                "",
            )
        )
        ratio = seconds / fit_time
        rows.append((f"(b) ratio scipy {method} / JAX fit", ratio, "x", ""))
    rows += [
        ("(c) batch of 1000, first call (compiles)", batch_first, "s", ""),
        (f"(c) batch of 1000, warm ({converged} converged)", batch_time, "s", "< 1 s"),
        ("(c) per patient in the batch", batch_time / 1000 * ms, "ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>9}  unit  target")
    for name, value, unit, target in rows:
        print(f"{name:<{width}}  {value:>9.3f}  {unit:<4}  {target}")


if __name__ == "__main__":
    main()
