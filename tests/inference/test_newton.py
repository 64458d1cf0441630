"""Tests of the damped Newton minimiser in jax.lax.while_loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cartwin.inference.optimize import minimize_newton


def rosenbrock(x):
    # minimum 0 at (1, 1); indefinite Hessian away from the valley
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def test_rosenbrock_converges_to_known_minimum():
    result = minimize_newton(
        rosenbrock, jnp.array([-1.2, 1.0]), max_iter=200, gtol=1e-9, max_step=1.0
    )
    assert bool(result.converged) and not bool(result.stalled)
    np.testing.assert_allclose(result.x, [1.0, 1.0], atol=1e-8)
    assert int(result.n_iter) < 200


def test_quadratic_takes_one_newton_step():
    matrix = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    target = jnp.array([0.5, -1.5])

    def quadratic(x):
        return 0.5 * (x - target) @ matrix @ (x - target)

    result = minimize_newton(
        quadratic, jnp.zeros(2), max_iter=10, gtol=1e-10, max_step=10.0
    )
    np.testing.assert_allclose(result.x, target, atol=1e-12)
    assert int(result.n_iter) == 1


def test_non_finite_start_stalls_immediately():
    result = minimize_newton(
        lambda x: jnp.sum(jnp.log(x)),
        jnp.array([-1.0, 1.0]),
        max_iter=50,
        gtol=1e-8,
        max_step=1.0,
    )
    assert bool(result.stalled) and not bool(result.converged)
    assert int(result.n_iter) == 0


def test_iteration_limit_stops_without_convergence():
    result = minimize_newton(
        rosenbrock, jnp.array([-1.2, 1.0]), max_iter=3, gtol=1e-9, max_step=1.0
    )
    assert not bool(result.converged)
    assert int(result.n_iter) == 3


@pytest.mark.parametrize("start", [[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0]])
def test_vmap_equals_single_runs(start):
    starts = jnp.array([start, [0.5, 0.5]])

    def solve(x0):
        return minimize_newton(rosenbrock, x0, max_iter=200, gtol=1e-9, max_step=1.0)

    batched = jax.vmap(solve)(starts)
    for row, x0 in enumerate(starts):
        single = solve(x0)
        np.testing.assert_allclose(batched.x[row], single.x, rtol=1e-12)
        assert int(batched.n_iter[row]) == int(single.n_iter)
