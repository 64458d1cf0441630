"""Damped Newton minimiser for small, smooth problems, in ``jax.lax.while_loop``.

Written for maximum a posteriori (MAP) fits with a handful of parameters: the
exact Hessian (``jax.hessian``) is cheap, Newton converges quadratically near
the optimum, and the loop runs inside one compiled program that ``jax.vmap``
turns into a batch over patients.

Each iteration takes the Newton step of a modified Hessian: eigenvalues are
replaced by their absolute values (floored at ``1e-10`` of the largest), plus
a Levenberg-Marquardt damping ``lam`` [1]_. The step is capped at
``max_step`` in the infinity norm. It is accepted when the objective is
finite and decreases by the Armijo condition ``f_new <= f + 1e-4 g.step``;
A step that changes the objective by no more than rounding (``1e-13``
relative) but shrinks the gradient is accepted too, so that the loop can
finish when the remaining decrease is below the precision of float64.
``lam`` shrinks tenfold on acceptance, otherwise it grows tenfold and the
point stays.
The loop stops when the gradient infinity norm falls below ``gtol``
(converged), when ``lam`` exceeds ``1e12`` times the largest curvature or the
objective is not finite (stalled), or after ``max_iter`` iterations.

References
----------
.. [1] Nocedal J, Wright SJ. Numerical Optimization, 2nd ed. Springer 2006,
   sections 3.4 (Hessian modification) and 10.3 (Levenberg-Marquardt).
   doi:10.1007/978-0-387-40065-5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cartwin._jax import configure_jax

configure_jax()

_ARMIJO = 1e-4
_EIG_FLOOR = 1e-10
_LAM_GIVE_UP = 1e12
_ROUNDING = 1e-13


class NewtonResult(NamedTuple):
    """State of the damped Newton loop; also its final result.

    Attributes
    ----------
    x : jax.Array
        Last accepted point.
    value, grad, hess : jax.Array
        Objective, gradient and Hessian at ``x``.
    n_iter : jax.Array
        Newton steps tried (accepted and rejected), after the evaluation at
        the starting point.
    lam : jax.Array
        Current damping.
    converged : jax.Array
        Gradient infinity norm below ``gtol`` at ``x``.
    stalled : jax.Array
        No acceptable step could be found, or the objective is not finite.
    """

    x: jax.Array
    value: jax.Array
    grad: jax.Array
    hess: jax.Array
    n_iter: jax.Array
    lam: jax.Array
    converged: jax.Array
    stalled: jax.Array


def minimize_newton(
    objective: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    max_iter: int,
    gtol: float,
    max_step: float,
) -> NewtonResult:
    """Minimise a smooth scalar function with damped Newton steps.

    Parameters
    ----------
    objective : callable
        ``f(x) -> scalar``, twice differentiable with JAX.
    x0 : jax.Array, shape (n,)
        Starting point.
    max_iter : int
        Largest number of iterations (static).
    gtol : float
        Convergence threshold on ``max(abs(grad))``.
    max_step : float
        Largest change of any coordinate in one step.

    Returns
    -------
    NewtonResult
        The final state; ``converged`` and ``stalled`` say why it stopped.
    """
    # the first iteration takes a zero step from an infinite objective, so
    # that the derivatives are evaluated in one place only (a smaller program)
    derivatives = _derivatives(objective)
    size = jnp.shape(x0)[0]
    start = NewtonResult(
        x=x0,
        value=jnp.asarray(jnp.inf, x0.dtype),
        grad=jnp.zeros_like(x0),
        hess=jnp.eye(size, dtype=x0.dtype),
        n_iter=jnp.asarray(-1),
        lam=jnp.asarray(0.0, x0.dtype),
        converged=jnp.asarray(False),
        stalled=jnp.asarray(False),
    )

    def keep_going(state: NewtonResult) -> jax.Array:
        running = ~(state.converged | state.stalled)
        return running & (state.n_iter < max_iter)

    def iterate(state: NewtonResult) -> NewtonResult:
        return _newton_step(state, derivatives, gtol, max_step)

    return jax.lax.while_loop(keep_going, iterate, start)


def _derivatives(objective: Callable) -> Callable:
    # one forward-over-reverse pass gives the Hessian, with value and gradient
    # carried along as auxiliary outputs (a smaller program than two passes)
    value_and_grad = jax.value_and_grad(objective)

    def grad_with_aux(x: jax.Array) -> tuple[jax.Array, tuple]:
        value, grad = value_and_grad(x)
        return grad, (value, grad)

    hessian_with_aux = jax.jacfwd(grad_with_aux, has_aux=True)

    def evaluate(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        hess, (value, grad) = hessian_with_aux(x)
        return value, grad, hess

    return evaluate


def _small(grad: jax.Array, gtol: float) -> jax.Array:
    return jnp.all(jnp.isfinite(grad)) & (jnp.max(jnp.abs(grad)) < gtol)


def _rounding_tie(state: NewtonResult, value: jax.Array, grad: jax.Array) -> jax.Array:
    # near the optimum the decrease drowns in rounding: accept a step that
    # keeps the objective within rounding and shrinks the gradient
    slack = _ROUNDING * (1.0 + jnp.abs(state.value))
    shrinks = jnp.max(jnp.abs(grad)) < jnp.max(jnp.abs(state.grad))
    return (value <= state.value + slack) & shrinks


def _newton_step(
    state: NewtonResult, derivatives: Callable, gtol: float, max_step: float
) -> NewtonResult:
    # modified Newton direction: |eigenvalues| floored, plus damping
    eigval, eigvec = jnp.linalg.eigh(state.hess)
    scale = jnp.max(jnp.abs(eigval))
    curvature = jnp.maximum(jnp.abs(eigval), _EIG_FLOOR * scale) + state.lam
    step = -eigvec @ ((eigvec.T @ state.grad) / curvature)

    # cap the step, then evaluate the trial point
    longest = jnp.max(jnp.abs(step))
    step = step * jnp.minimum(1.0, max_step / jnp.maximum(longest, 1e-300))
    trial = state.x + step
    value, grad, hess = derivatives(trial)

    # Armijo acceptance; damping down on success, up on failure
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
    armijo = value <= state.value + _ARMIJO * (state.grad @ step)
    accept = finite & (armijo | _rounding_tie(state, value, grad))
    lam_up = jnp.maximum(10.0 * state.lam, 1e-3 * scale)
    lam = jnp.where(accept, 0.1 * state.lam, lam_up)

    def pick(new: jax.Array, old: jax.Array) -> jax.Array:
        return jnp.where(accept, new, old)

    return NewtonResult(
        x=pick(trial, state.x),
        value=pick(value, state.value),
        grad=pick(grad, state.grad),
        hess=pick(hess, state.hess),
        n_iter=state.n_iter + 1,
        lam=lam,
        converged=accept & _small(grad, gtol),
        stalled=~accept & ((lam > _LAM_GIVE_UP * scale) | ~jnp.isfinite(state.value)),
    )
