"""Generalised Gauss-Newton (GGN) for a smooth loss of a model's outputs, with Nielsen's
damping: the second-order solver for losses that are not sums of squares (the cross-entropy
of a classifier's logits, :func:`jacopt.problems.mlp.train_ggn`).

The method. For ``f(x) = L(z(x))``, ``z`` the model's outputs with Jacobian ``J = dz/dx`` and
``L`` convex in ``z`` with Hessian ``H_L = M M^T``, the GGN matrix

    G = J^T H_L J = B^T B,        B = M^T J        (R x P, R = the rows of the factor)

drops the term ``sum_k dL/dz_k d^2 z_k / dx^2`` of the Hessian: it is positive semidefinite
everywhere, and it is Gauss-Newton's ``J^T J`` for the squared error (N. N. Schraudolph (2002),
"Fast curvature matrix-vector products for second-order gradient descent", Neural Computation
14(7); J. Martens (2010), "Deep learning via Hessian-free optimization", ICML). The step solves

    (G + lam I) p = -g

exactly, by one Cholesky factorisation of the smaller of ``B B^T`` (R x R, through the
push-through identity, when R < P) and ``B^T B`` (P x P) (:func:`damped_solve`). It is judged
by the gain ratio against the model ``m(p) = f + g^T p + ||B p||^2 / 2``
(:func:`jacopt.solvers.trust_region.gain_ratio`), accepted when the ratio is positive, and the
damping follows Nielsen's rule (:func:`jacopt.solvers.damping.nielsen_update`; Martens 2010
section 4.1 damps the GGN the same way, with Marquardt's fixed factors).

The problem (:class:`GGNProblem`) gives the loss and a factor ``B`` of ``G`` as functions of the
flat parameters; the solver never sees the model or its outputs.

Loop structure: one flat loop (:mod:`jacopt._loop`); the first iteration evaluates the start
(``evaluates_start_in_loop``: the loss, its gradient and the factor are traced once, inside the
loop). An iteration is one trial: the damped step, the loss at the trial point, the acceptance
and the damping update, and, for an accepted trial only (a ``lax.cond``), the gradient and the
factor at the new point. A trial whose loss, gradient or factor is non-finite is rejected, so
the state always holds the best point found.

Stopping (:meth:`~jacopt.solvers.minimize_problem.Minimizer.check_termination`, after every
iteration):

- ``GTOL`` (success): ``max|g| <= gtol`` at the current point.
- ``NONFINITE``: the loss, gradient or factor at the start is non-finite; or the damped steps
  collapsed (below ``eps ||x||``, or the damping overflowed) after non-finite trials since the
  last accepted step.
- ``PRECISION_LIMIT`` (a failure, as for every minimiser): the steps collapsed so with finite
  trials that all failed to decrease ``f``.
- ``MAX_STEPS``: the loop ran out of iterations.

Counters: ``nfev`` loss evaluations (one per iteration, the start's included: ``num_steps +
1``); ``ngev`` gradients and ``nhev`` factors (each one Jacobian of the outputs), one each at
the start and at every trial that decreased ``f`` (accepted unless they are non-finite).
``History.damping`` is the ``lam`` of the next trial.

Cost per iteration: one loss evaluation, one Cholesky factorisation of size ``min(R, P)`` and
O(R P) products; at an accepted point also the gradient, the factor and its Gram matrix
(O(R P min(R, P))). Memory: ``B`` and its Gram matrix, O(R P).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jacopt.results import History
from jacopt.solvers.damping import NU_RESET, nielsen_update
from jacopt.solvers.least_squares_problem import check_options
from jacopt.solvers.minimize_problem import Minimizer
from jacopt.solvers.stopping import nonfinite_since_accept
from jacopt.solvers.trust_region import gain_ratio
from jacopt.status import Status


class GGNProblem(NamedTuple):
    """Minimise ``loss(x, args)`` (a scalar) over flat ``x`` (P,), given ``factor(x, args)``:
    a matrix ``B`` (R, P) with ``B^T B`` the GGN matrix of the loss at ``x`` (module
    docstring). Both are traced inside the solver's loop body; ``args`` is any pytree."""

    loss: Callable
    factor: Callable
    args: Any

    def value(self, x):
        """``f(x)``: one evaluation."""
        return self.loss(x, self.args)

    def curvature(self, x):
        """``(grad, B, gram)`` at ``x``: the gradient (one reverse pass), the factor and its
        Gram matrix (:func:`gram`)."""
        factor = self.factor(x, self.args)
        return jax.grad(self.loss)(x, self.args), factor, gram(factor)


def gram(factor):
    """The Gram matrix :func:`damped_solve` factorises: ``B B^T`` (R, R) when the factor
    ``B`` (R, P) has fewer rows than columns, else ``B^T B`` (P, P)."""
    rows, cols = factor.shape
    return factor @ factor.T if rows < cols else factor.T @ factor


def damped_solve(factor, gram_matrix, rhs, lam):
    """``(B^T B + lam I)^-1 rhs`` from the factor ``B`` (R, P) and ``gram_matrix =``
    :func:`gram` ``(B)``: when R < P by the push-through identity ``(B^T B + lam I)^-1 = (I -
    B^T (B B^T + lam I)^-1 B) / lam``, else directly. One Cholesky factorisation of size
    ``min(R, P)``; ``lam > 0``."""
    eye = jnp.eye(gram_matrix.shape[0], dtype=gram_matrix.dtype)
    chol = jax.scipy.linalg.cho_factor(gram_matrix + lam * eye)
    if gram_matrix.shape[0] < factor.shape[1]:
        return (rhs - factor.T @ jax.scipy.linalg.cho_solve(chol, factor @ rhs)) / lam
    return jax.scipy.linalg.cho_solve(chol, rhs)


class GGNState(NamedTuple):
    """Loop carry: the current point ``x``, ``value``, ``grad`` and the factor ``B`` with its
    ``gram`` matrix; the damping ``lam`` and its growth factor ``nu``; the last trial's
    ``accepted``, ``step_norm`` and ``value_change``; ``failure`` (a :class:`Status` code,
    ``RUNNING`` while the solver can go on); and the counters ``nfev``, ``ngev``, ``nhev``
    (module docstring) and ``nonfinite`` (non-finite trials since the last accepted step)."""

    x: Any
    value: Any
    grad: Any
    factor: Any
    gram: Any
    lam: Any
    nu: Any
    accepted: Any
    step_norm: Any
    value_change: Any
    failure: Any
    nfev: Any
    ngev: Any
    nhev: Any
    nonfinite: Any


@dataclasses.dataclass(frozen=True)
class GeneralisedGaussNewton(Minimizer):
    """Damped generalised Gauss-Newton on a :class:`GGNProblem` (module docstring).

    Options (hashable; a static argument of the compiled solve):

    - ``gtol``: stop with ``GTOL`` when ``max|g| <= gtol``.
    - ``initial_damping``: the first ``lam`` (absolute: ``G`` of a mean loss is O(1) for
      inputs and weights of order one).
    """

    gtol: float = 1e-10
    initial_damping: float = 1.0
    ftol: ClassVar[float] = 0.0  # the f and x tests of Minimizer are off: GTOL is the success
    xtol: ClassVar[float] = 0.0

    evaluates_start_in_loop = True  # see jacopt._loop: loss and factor are traced once

    def __post_init__(self):
        check_options(self, nonnegative=("gtol",), positive=("initial_damping",))

    def init(self, problem: GGNProblem, x0):
        """Placeholders of the right shapes (``nfev == 0`` marks them); the first iteration
        evaluates the start."""
        dtype = x0.dtype
        factor = jnp.zeros(jax.eval_shape(problem.factor, x0, problem.args).shape, dtype)
        zero = jnp.zeros((), dtype)
        count = jnp.zeros((), jnp.int32)
        return GGNState(
            x=x0, value=zero, grad=jnp.zeros_like(x0), factor=factor, gram=gram(factor),
            lam=jnp.asarray(self.initial_damping, dtype), nu=jnp.asarray(NU_RESET, dtype),
            accepted=jnp.asarray(False), step_norm=zero, value_change=zero,
            failure=jnp.asarray(Status.RUNNING, jnp.int32), nfev=count, ngev=count,
            nhev=count, nonfinite=count)

    def step(self, problem: GGNProblem, s: GGNState) -> GGNState:
        dtype = s.x.dtype
        first = s.nfev == 0  # the start: the placeholders give a zero step and x0 is the trial

        # 1. The damped GGN step and its trial point, judged against the quadratic model.
        p = -damped_solve(s.factor, s.gram, s.grad, s.lam)
        bp = s.factor @ p
        predicted = -(jnp.sum(s.grad * p) + 0.5 * jnp.sum(bp * bp))
        trial = s.x + p
        trial_value = problem.value(trial)
        ratio = gain_ratio(s.value - trial_value, predicted)
        take = first | (ratio > 0)

        # 2. At a new point (a cond: rejected trials skip it) the gradient and the factor; one
        #    that is non-finite there is not taken (the start is, to be reported NONFINITE).
        grad, factor, gram_matrix = lax.cond(
            take, lambda: problem.curvature(trial), lambda: (s.grad, s.factor, s.gram))
        derivatives_finite = jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(factor))
        moved = take & (first | derivatives_finite)
        accepted = moved & ~first
        keep = lambda new, old: jnp.where(moved, new, old)

        # 3. Damping (Nielsen) and the failures the loop cannot see from the point alone.
        lam, nu = nielsen_update(s.lam, s.nu, ratio, accepted)
        lam, nu = jnp.where(first, s.lam, lam), jnp.where(first, s.nu, nu)
        trial_finite = jnp.isfinite(trial_value) & (derivatives_finite | ~take)
        nonfinite = nonfinite_since_accept(s.nonfinite, trial_finite | first, accepted)
        step_norm = jnp.sqrt(jnp.sum(p * p))
        # a step at the resolution of x, or a damping that overflowed (a NaN step, from a
        # Cholesky breakdown, is only rejected: the damping grows and the next one is finite)
        tiny_step = step_norm <= jnp.finfo(dtype).eps * jnp.sqrt(jnp.sum(s.x * s.x))
        collapsed = ~first & ~accepted & (tiny_step | ~jnp.isfinite(lam))
        failure = jnp.where(first & ~derivatives_finite, Status.NONFINITE,
                  jnp.where(collapsed & (nonfinite > 0), Status.NONFINITE,
                  jnp.where(collapsed, Status.PRECISION_LIMIT, Status.RUNNING)))

        one = lambda flag: flag.astype(jnp.int32)
        return GGNState(
            x=keep(trial, s.x), value=keep(trial_value, s.value), grad=keep(grad, s.grad),
            factor=keep(factor, s.factor), gram=keep(gram_matrix, s.gram), lam=lam, nu=nu,
            accepted=accepted, step_norm=jnp.where(first, 0.0, step_norm).astype(dtype),
            value_change=jnp.where(accepted, s.value - trial_value, 0.0).astype(dtype),
            failure=failure.astype(jnp.int32), nfev=s.nfev + 1, ngev=s.ngev + one(take),
            nhev=s.nhev + one(take), nonfinite=nonfinite)

    def terminate(self, problem: GGNProblem, state: GGNState):
        return self.check_termination(state)

    def record(self, problem: GGNProblem, state: GGNState) -> History:
        return self.history_row(state, state.lam)
