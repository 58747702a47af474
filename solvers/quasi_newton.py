"""Quasi-Newton minimisation with a strong-Wolfe line search: the loop that BFGS and L-BFGS share.

A quasi-Newton method keeps an approximation ``H_k`` of the *inverse* Hessian, steps along
``d_k = -H_k g_k`` with a line search, then updates ``H_k`` from the step ``s_k = x_{k+1} - x_k``
and the change of gradient ``y_k = g_{k+1} - g_k`` (Nocedal & Wright, *Numerical Optimization*,
2nd ed., 2006, chapters 6 and 7). After Optimistix's ``AbstractQuasiNewton``, the methods differ
only in three hooks a subclass defines:

- ``init_inverse_hessian(x)``: the approximation before any update (the identity);
- ``update_inverse_hessian(h, s, y, pair)``: the update from one accepted step; ``pair``
  (:class:`Pair`) carries ``s^T y``, ``y^T y``, whether the curvature condition
  ``s^T y > eps ||s|| ||y||`` holds (both BFGS and L-BFGS skip the update when it fails, which
  keeps ``H`` positive definite, also in float32) and whether this is the first update since
  ``H`` was the identity;
- ``apply_inverse_hessian(h, g)``: ``H g``;

and, optionally, ``next_direction(state, alpha, grad)``, the update and the next direction
together, which by default calls the three hooks (:class:`BFGS` fuses them into one pass over
``H``).

Iteration = one trial step of the line search (:class:`jacopt.solvers.line_search.StrongWolfe`):
the objective and its gradient are evaluated once at ``x + alpha d``, the search state advances,
and when the search finishes the step is taken, ``H`` updated and the next direction computed.
The start itself is evaluated by the first iteration (``evaluates_start_in_loop``, see
:mod:`jacopt._loop`), so the user's function is traced and compiled once, inside the loop.
So ``nfev == ngev == num_steps + 1``. The first trial step is 1 (the quasi-Newton step) except
when ``H`` is the unscaled identity (the first iteration, or after a reset): then it is
``1 / ||g||_2``, a unit-length step in ``x`` (:meth:`QuasiNewton.first_trial`), so the first
search is invariant to the scale of ``f`` and moves ``x`` even when ``|g|`` is tiny.

Safeguards (never raising inside the loop):

- a direction that is not a descent direction (``g^T d >= 0`` or non-finite, from an
  ill-conditioned ``H``) is replaced by steepest descent, and ``H`` reset (lazily: the state's
  ``identity`` flag says to read ``H`` as the identity until the next update);
- a line search that finds no step with sufficient decrease resets ``H`` and retries along
  steepest descent; if that fails too, the solve stops with ``PRECISION_LIMIT`` (the trial
  steps shrank below the resolution of ``x``, so no reduction is possible in this precision)
  or ``LINE_SEARCH_FAILED`` (the trial budget ran out);
- a search that gives up after finding sufficient decrease but not the curvature condition
  takes the best such step (the update is then skipped if ``s^T y`` is too small).

``history.damping`` is the step length ``alpha`` of the accepted step (the trial step on
rejected iterations).

Implementation note: on CPU a small solve costs about one kernel launch per fused operation per
iteration, so the loop is written to keep that count low: the dot products each phase needs are
computed together (:func:`dots`), the line search's state is a few small arrays, and the
end-of-search work runs under one ``lax.cond``. It also keeps the operation count of the loop
body low: XLA's CPU client runs a computation whose estimated cost is below 1000
floating-point operations (the loop body counted once) inline on the calling thread, and hands
costlier ones to a worker thread, a hand-off that costs more than a whole small solve (design
notes). Dense BFGS on the test problems with
``n <= 4`` and cheap objectives stays under that estimate.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jacopt.solvers.line_search import LineSearchState, StrongWolfe
from jacopt.solvers.minimize_problem import Minimizer
from jacopt.status import Status


class QuasiNewtonState(NamedTuple):
    """``x``, ``value``, ``grad``: the current point; ``direction``: the search direction
    and ``direction_norm`` its 2-norm; ``search``: the line search's state (its payload is the
    gradient at the trial point); ``inverse_hessian``: the subclass's approximation;
    ``flags`` (int32 ``[identity, restarted, failure]``, one array rather than three: a loop
    carry costs a kernel per rewritten array), read as ``identity`` (``H`` is the unscaled
    identity: reset or never updated), ``restarted`` (the current search follows steepest
    descent after a failed one) and ``failure``; ``alpha``: the step length of the last
    iteration (the taken step, else the trial); ``nfev``: evaluations of the objective and
    gradient together (``ngev`` equals it, ``nhev`` is 0); plus the fields :class:`Minimizer`
    documents."""

    x: Any
    value: Any
    grad: Any
    direction: Any
    direction_norm: Any
    search: LineSearchState
    inverse_hessian: Any
    flags: Any
    accepted: Any
    alpha: Any
    step_norm: Any
    value_change: Any
    nfev: Any

    identity = property(lambda self: self.flags[..., 0] != 0)
    restarted = property(lambda self: self.flags[..., 1] != 0)
    failure = property(lambda self: self.flags[..., 2])
    ngev = property(lambda self: self.nfev)
    nhev = property(lambda self: jnp.zeros_like(self.nfev))


class Pair(NamedTuple):
    """What an update needs besides ``s`` and ``y``: ``sy = s^T y``, ``yy = y^T y``, ``ok``
    (the curvature condition holds: update), ``first`` (``H`` is still the identity)."""

    sy: Any
    yy: Any
    ok: Any
    first: Any


def dots(pairs):
    """``[a_1 . b_1, ..., a_k . b_k]`` for same-shaped vectors, as one fused reduction."""
    a = jnp.stack([p[0] for p in pairs])
    b = jnp.stack([p[1] for p in pairs])
    return jnp.sum(a * b, axis=-1)


def curvature_ok(sy, ss, yy):
    """The curvature condition with a relative margin, ``s^T y > eps ||s|| ||y||`` (``eps`` of
    the dtype): a pair failing it would make the update nearly singular. (A margin of
    ``sqrt(eps)`` skips legitimate updates on badly scaled problems, where ``s`` and ``y`` are
    nearly orthogonal: Powell's badly scaled function then stalls.)"""
    eps = jnp.finfo(jnp.result_type(sy)).eps
    return (sy > eps * jnp.sqrt(ss * yy)) & jnp.isfinite(sy)


def unit_step(dd):
    """``1 / ||d||`` (``dd = ||d||_2^2``): the step of unit length in ``x`` along ``d``, whatever
    the scale of ``f``; the first trial along a gradient direction. (Capping it at 1, a step of
    length ``||g||`` when ``||g|| < 1``, leaves a badly scaled ``f`` with a step below the
    resolution of ``x``: on ``1e-50 (x - 1)^2`` the search could not move from ``x0``.)"""
    return 1.0 / jnp.where(dd > 0, jnp.sqrt(dd), 1.0)


def min_step(x, d):
    """The smallest step along ``d`` that still changes ``x``: below ``eps |x_i| / |d_i|`` for
    every ``i`` it no longer does (per component: a norm of ``x`` would let one large component
    hide the resolution of the others); 0 when ``d`` is zero."""
    ratio = jnp.abs(x) / jnp.where(d != 0, jnp.abs(d), 1.0)
    step = jnp.finfo(x.dtype).eps * jnp.min(jnp.where(d != 0, ratio, jnp.inf))
    return jnp.where(jnp.isfinite(step), step, 0.0)


class QuasiNewton(Minimizer):
    """Base of :class:`BFGS` and :class:`LBFGS`; subclasses are frozen dataclasses with the
    fields ``gtol``, ``ftol``, ``xtol`` and ``line_search`` and the three hooks above."""

    line_search: StrongWolfe

    # --- hooks -------------------------------------------------------------------------
    def init_inverse_hessian(self, x):
        raise NotImplementedError

    def update_inverse_hessian(self, h, s, y, pair: Pair):
        raise NotImplementedError

    def apply_inverse_hessian(self, h, g):
        raise NotImplementedError

    def next_direction(self, state, alpha, grad, value=None):
        """After the search from ``state`` took the step ``s = alpha d`` along
        ``d = state.direction`` (``alpha = 0``: none) to a point with gradient ``grad`` (and
        value ``value``, which an update may use; this generic form does not): the
        updated approximation, the next quasi-Newton direction ``-H+ grad`` and whether ``H+``
        is still the unscaled identity. ``state.identity`` says that ``state.inverse_hessian``
        is to be read as the identity whatever it holds (resets are applied here, lazily).
        This generic form calls the three hooks; :class:`BFGS` overrides it with an
        algebraically equal, fused form."""
        identity = state.identity
        h = jax.tree.map(lambda a, b: jnp.where(identity, a, b), self.init_inverse_hessian(grad),
                         state.inverse_hessian)
        s, y = alpha * state.direction, grad - state.grad
        sy, ss, yy = dots([(s, y), (s, s), (y, y)])
        ok = curvature_ok(sy, ss, yy)
        h = self.update_inverse_hessian(h, s, y, Pair(sy, yy, ok, identity))
        return h, -self.apply_inverse_hessian(h, grad), identity & ~ok

    def first_trial(self, gg):
        """The first trial step along ``-g`` while ``H`` is the unscaled identity
        (``gg = ||g||_2^2``): :func:`unit_step`."""
        return unit_step(gg)

    # --- the loop ----------------------------------------------------------------------
    def _new_search(self, x, value, grad, direction, identity):
        """A line search along ``direction`` (``-grad`` when ``identity``; also, with
        ``identity`` set, when ``direction`` is not a descent direction: a NaN slope fails the
        test too). The first trial is 1, or ``min(1, 1/||g||)`` when ``H`` is the unscaled
        identity. Returns ``(direction, direction_norm, identity, search)``."""
        dtype = x.dtype
        d = jnp.where(identity, -grad, direction)
        slope, gg, dd = dots([(grad, d), (grad, grad), (d, d)])
        descent = slope < 0
        d = jnp.where(descent, d, -grad)
        slope = jnp.where(descent, slope, -gg)
        dnorm = jnp.sqrt(jnp.where(descent, dd, gg))
        identity = identity | ~descent
        alpha0 = jnp.where(identity, self.first_trial(gg), 1.0).astype(dtype)
        search = self.line_search.init(value, slope, alpha0, grad, min_step=min_step(x, d))
        return d, dnorm, identity, search

    evaluates_start_in_loop = True  # see jacopt._loop: the objective is traced once

    def init(self, problem, x0):
        """Placeholders: the first iteration evaluates the start, marked by a trial step of 0
        (every real search tries a positive step)."""
        dtype = x0.dtype
        zero = jnp.zeros((), dtype)
        zeros = jnp.zeros_like(x0)
        return QuasiNewtonState(
            x=x0, value=zero, grad=zeros, direction=zeros, direction_norm=zero,
            search=self.line_search.init(zero, -jnp.ones((), dtype), zero, zeros),
            inverse_hessian=self.init_inverse_hessian(x0),
            flags=jnp.array([1, 0, Status.RUNNING], jnp.int32), accepted=jnp.asarray(False),
            alpha=zero, step_norm=zero, value_change=zero, nfev=jnp.asarray(0, jnp.int32),
        )

    def step(self, problem, state):
        s = state
        d = s.direction
        trial_alpha = s.search.alpha
        first = trial_alpha == 0  # this iteration evaluates the start (see init)
        trial_value, trial_grad = problem.value_and_grad(s.x + trial_alpha * d)
        search = self.line_search.update(s.search, trial_value, jnp.sum(trial_grad * d),
                                         trial_grad)
        take = search.finished & (search.alpha_lo > 0) & ~first
        alpha = jnp.where(take, search.alpha_lo, trial_alpha)

        def finish_search():
            # Take the step (or, when none was found, stay, reset H and go downhill): the
            # search's best point carries its value and gradient (the start's when none).
            x = jnp.where(take, s.x + search.alpha_lo * d, s.x)
            value = jnp.where(take, search.value_lo, jnp.where(first, trial_value, s.value))
            grad = jnp.where(first, trial_grad, search.payload_lo)
            h, direction, identity = self.next_direction(
                s, jnp.where(take, search.alpha_lo, 0.0), grad, value)
            direction, dnorm, identity, new = self._new_search(x, value, grad, direction,
                                                               identity | ~take)
            failure = jnp.where(
                ~take & s.restarted,
                jnp.where(search.precision_limited, Status.PRECISION_LIMIT,
                          Status.LINE_SEARCH_FAILED),
                Status.RUNNING,
            ).astype(jnp.int32)
            flags = jnp.stack([identity.astype(jnp.int32), (~(take | first)).astype(jnp.int32),
                               failure])
            return (x, value, grad, direction, dnorm, h, flags, new,
                    jnp.where(take, s.value - value, 0.0))

        def continue_search():
            return (s.x, s.value, s.grad, d, s.direction_norm, s.inverse_hessian, s.flags,
                    search, jnp.zeros_like(s.value))

        (x, value, grad, direction, dnorm, h, flags, search,
         value_change) = jax.lax.cond(search.finished | first, finish_search, continue_search)
        return QuasiNewtonState(
            x=x, value=value, grad=grad, direction=direction, direction_norm=dnorm,
            search=search, inverse_hessian=h, flags=flags, accepted=take, alpha=alpha,
            step_norm=jnp.abs(alpha) * s.direction_norm, value_change=value_change,
            nfev=s.nfev + 1,
        )

    def terminate(self, problem, state):
        return self.check_termination(state)

    def record(self, problem, state):
        return self.history_row(state, state.alpha)
