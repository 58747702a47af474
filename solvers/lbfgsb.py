"""L-BFGS-B: limited-memory BFGS for bound-constrained minimisation, ``lower <= x <= upper``.

Byrd, Lu, Nocedal & Zhu, "A limited memory algorithm for bound constrained optimization", SIAM
J. Sci. Comput. 16, 1995 (BLNZ), with the subspace step of Morales & Nocedal, "Remark on
Algorithm 778", ACM TOMS 38, 2011 (L-BFGS-B 3.0, SciPy's). Each iteration that ends a search:

1. the quadratic model ``m(x + z) = g^T z + z^T B z / 2`` uses the compact L-BFGS matrix
   ``B = theta I - W M W^T``, ``W = [Y, theta S]`` (BLNZ eq. 3.2-3.4; ``memory`` pairs,
   ``theta = y^T y / s^T y`` of the newest pair);
2. the generalised Cauchy point ``x_c``: the first local minimiser of ``m`` along the projected
   steepest-descent path ``P(x - t g)`` (BLNZ Algorithm CP). The path's segments are evaluated
   all at once from prefix sums over the sorted breakpoints (the derivatives ``f'_j``,
   ``f''_j`` of BLNZ eq. 4.4-4.5 per segment), so no loop runs over them;
3. subspace minimisation (BLNZ section 5.1, direct primal method) of ``m`` over the
   variables free at ``x_c``, then projected onto the box; when that projected point is not a
   descent direction from ``x`` the step is truncated to stay in the box instead (Morales &
   Nocedal);
4. a strong-Wolfe line search (:class:`~jacopt.solvers.line_search.StrongWolfe`) along
   ``d = x_bar - x`` within the box, ``0 < alpha <= alpha_max`` (the farthest feasible step,
   at least 1; a search still descending there stops at it, as L-BFGS-B's ``stpmax``), one
   trial per solver iteration, ``alpha = 1`` (``x_bar`` itself) first;
5. the pair ``s = x+ - x``, ``y = g+ - g`` is stored when ``s^T y > eps ||s|| ||y||``.

A search that finds no step resets the memory and retries from the projected-gradient
direction; a second failure stops the solve (``PRECISION_LIMIT`` or ``LINE_SEARCH_FAILED``).
The start is clipped into the box, as SciPy's L-BFGS-B does. Convergence: ``GTOL`` when the
projected gradient ``P(x - g) - x`` has infinity norm ``<= gtol`` (SciPy's ``pgtol``); the
``grad`` of the result is the plain gradient. ``history.grad_norm`` is the projected one.

Cost per iteration: one objective-and-gradient evaluation; on iterations that end a search,
a sort of the ``n`` breakpoints, ``O(memory^2 n)`` for the model and a ``2 memory`` linear
solve. Memory ``O(memory n)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jacopt.solvers.line_search import LineSearchState, StrongWolfe, capped
from jacopt.solvers.minimize_problem import Minimizer, check_tolerances
from jacopt.solvers.quasi_newton import curvature_ok, dots, min_step, unit_step
from jacopt.status import Status


class LBFGSBState(NamedTuple):
    """``x``, ``value``, ``grad``: the current point (feasible); ``direction`` ``d`` and its
    2-norm; ``max_step``: the farthest feasible step along ``d``; ``search``: the line search
    (payload: the trial gradient);
    ``S``, ``Y``: the stored pairs, oldest first (``(memory, n)``; the last ``count`` rows are
    in use); ``theta``; ``flags`` (int32 ``[restarted, failure]``); ``accepted``, ``alpha``,
    ``step_norm``, ``value_change``, ``nfev`` as in
    :class:`~jacopt.solvers.quasi_newton.QuasiNewtonState`."""

    x: Any
    value: Any
    grad: Any
    direction: Any
    direction_norm: Any
    max_step: Any
    search: LineSearchState
    S: Any
    Y: Any
    count: Any
    theta: Any
    flags: Any
    accepted: Any
    alpha: Any
    step_norm: Any
    value_change: Any
    nfev: Any

    restarted = property(lambda self: self.flags[..., 0] != 0)
    failure = property(lambda self: self.flags[..., 1])
    ngev = property(lambda self: self.nfev)
    nhev = property(lambda self: jnp.zeros_like(self.nfev))


def compact_form(S, Y, count, theta):
    """``(W, M)`` of the compact representation ``B = theta I - W M W^T`` (BLNZ eq. 3.2-3.4)
    from the pairs in the last ``count`` rows of ``S`` and ``Y`` (oldest first). Unused rows are
    zero and get a decoupled unit block in ``M^{-1}``, so they drop out."""
    m = S.shape[0]
    used = jnp.arange(m) >= m - count
    S, Y = S * used[:, None], Y * used[:, None]  # rows left from before a reset drop out
    sy = S @ Y.T  # sy[i, j] = s_i . y_j
    ss = S @ S.T
    d = jnp.where(used, jnp.diagonal(sy), 1.0)
    low = jnp.tril(sy, -1)
    inverse = jnp.block([[-jnp.diag(d), low.T],
                         [low, theta * ss + jnp.diag(jnp.where(used, 0.0, 1.0))]])
    W = jnp.concatenate([Y, theta * S]).T  # (n, 2m)
    return W, jnp.linalg.inv(inverse)


def cauchy_point(x, g, lower, upper, theta, W, M):
    """The generalised Cauchy point (BLNZ Algorithm CP), vectorised over the path's segments.
    Returns ``(x_c, c, free)``: the point, ``c = W^T (x_c - x)`` and the variables not at a
    bound there."""
    dtype = x.dtype
    # breakpoints t_i: where P(x - t g) reaches the bound along -g_i
    t = jnp.where(g < 0, (x - upper) / jnp.where(g < 0, g, 1.0),
                  jnp.where(g > 0, (x - lower) / jnp.where(g > 0, g, 1.0), jnp.inf))
    t = jnp.maximum(t, 0.0)
    d = jnp.where(t > 0, -g, 0.0)
    reach = jnp.where(jnp.isfinite(t), t * d, 0.0)  # displacement where the bound is reached
    order = jnp.argsort(t)
    ts, db, zb, wb = t[order], d[order], reach[order], W[order]
    zero_row = jnp.zeros((1,), dtype)
    # segment j (j = 0..n) starts at T_j (T_0 = 0) once the first j sorted variables are fixed
    starts = jnp.concatenate([zero_row, ts])
    ends = jnp.concatenate([ts, jnp.full((1,), jnp.inf, dtype)])

    # sums over the sorted variables for the segments j = 0..n: over k >= j (still moving on
    # segment j; summed from the end, not as a total minus a prefix, which would cancel) and
    # over k < j (fixed by then)
    k = wb.shape[1]
    moving = jnp.concatenate([wb * db[:, None], (db * db)[:, None]], axis=1)
    suffix = jnp.concatenate([jnp.cumsum(moving[::-1], axis=0)[::-1],
                              jnp.zeros((1, k + 1), dtype)])
    prefix = jnp.concatenate([jnp.zeros((1, k), dtype), jnp.cumsum(wb * zb[:, None], axis=0)])
    p = suffix[:, :k]  # W^T d^j, d^j the direction on segment j
    fsq = suffix[:, k]  # ||d^j||^2
    reached = jnp.isfinite(starts)
    T = jnp.where(reached, starts, 0.0)
    c = prefix + T[:, None] * p  # W^T z_j, z_j the displacement at T_j
    mp = p @ M.T
    df = -fsq + theta * T * fsq - jnp.sum(c * mp, axis=1)  # BLNZ eq. 4.4
    ddf = theta * fsq - jnp.sum(p * mp, axis=1)  # eq. 4.5
    ddf = jnp.maximum(ddf, jnp.finfo(dtype).eps * theta * fsq)
    dt = jnp.where(df >= 0, 0.0, -df / jnp.where(ddf > 0, ddf, 1.0))
    dt = jnp.where((df < 0) & (ddf <= 0), jnp.inf, dt)
    stop = reached & ((df >= 0) | (dt < ends - starts))
    j = jnp.argmax(stop)
    dt_j = jnp.where(jnp.isfinite(dt[j]), dt[j], 0.0)
    tc = T[j] + dt_j
    fixed = (t <= tc) & jnp.isfinite(t) | (t == 0)
    x_c = jnp.where(fixed, x + reach, x + tc * d)
    x_c = jnp.clip(x_c, lower, upper)
    free = ~fixed & (lower < upper)
    return x_c, c[j] + dt_j * p[j], free


def subspace_point(x, g, lower, upper, theta, W, M, x_c, c, free):
    """Minimise the model over the free variables from ``x_c`` (BLNZ section 5.1) and return
    the projected point, or the step truncated into the box when the projected one is not a
    descent direction from ``x`` (Morales & Nocedal 2011)."""
    k = M.shape[0]
    wf = W * free[:, None]
    r = jnp.where(free, g + theta * (x_c - x) - W @ (M @ c), 0.0)  # reduced gradient, eq. 5.4
    v = M @ (wf.T @ r)
    N = jnp.eye(k, dtype=x.dtype) - (M @ (wf.T @ wf)) / theta
    v = jnp.linalg.solve(N, v)
    du = jnp.where(free, -r / theta - (wf @ v) / theta ** 2, 0.0)
    projected = jnp.clip(x_c + du, lower, upper)
    # the longest step <= 1 along du that stays in the box (BLNZ eq. 5.8)
    room = jnp.where(du > 0, (upper - x_c) / jnp.where(du > 0, du, 1.0),
                     jnp.where(du < 0, (lower - x_c) / jnp.where(du < 0, du, 1.0), jnp.inf))
    truncated = x_c + jnp.clip(jnp.min(room), 0.0, 1.0) * du
    descent = jnp.sum(g * (projected - x)) < 0
    out = jnp.where(descent, projected, truncated)
    ok = jnp.all(jnp.isfinite(out))
    return jnp.where(ok, out, x_c)


@dataclasses.dataclass(frozen=True)
class LBFGSB(Minimizer):
    """Limited-memory BFGS within bounds, L-BFGS-B (``solver="lbfgsb"`` or ``"l-bfgs-b"``;
    the bounds come from ``minimize(bounds=...)``).

    Fields: ``memory`` (stored pairs, 10, SciPy's ``maxcor``), ``gtol`` (stop when the
    projected gradient's infinity norm is ``<= gtol``, 1e-5, SciPy's ``pgtol``), ``ftol``,
    ``xtol`` (as :class:`~jacopt.solvers.bfgs.BFGS`, 0: off), ``line_search``.
    """

    memory: int = 10
    gtol: float = 1e-5
    ftol: float = 0.0
    xtol: float = 0.0
    line_search: StrongWolfe = StrongWolfe()

    takes_bounds = True
    evaluates_start_in_loop = True  # see jacopt._loop: the objective is traced once

    def __post_init__(self):
        check_tolerances(self)
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 1:
            raise ValueError(f"memory must be an int >= 1, got {self.memory!r}.")

    def _direction(self, x, g, lower, upper, S, Y, count, theta):
        """``x_bar - x`` from the Cauchy point and the subspace step; the projected-gradient
        step where that is not a descent direction (it always is, unless rounding)."""
        W, M = compact_form(S, Y, count, theta)
        x_c, c, free = cauchy_point(x, g, lower, upper, theta, W, M)
        x_bar = subspace_point(x, g, lower, upper, theta, W, M, x_c, c, free)
        d = x_bar - x
        fallback = jnp.clip(-g, lower - x, upper - x)  # the projected gradient step
        slope, dd, slope_f, ff = dots([(g, d), (d, d), (g, fallback), (fallback, fallback)])
        descent = slope < 0
        return (jnp.where(descent, d, fallback), jnp.where(descent, slope, slope_f),
                jnp.sqrt(jnp.where(descent, dd, ff)))

    def _new_search(self, x, value, grad, lower, upper, S, Y, count, theta, start):
        """The search along the next direction. Its first trial is ``x_bar`` (``alpha = 1``),
        except from the start (``start``) of a problem with some variable not bounded on both
        sides, where it is the step of unit length along the projected gradient (L-BFGS-B's
        rule: in a finite box the projected gradient step ``P(x - g)`` is tried). Steps whose
        predicted decrease ``alpha |g^T d|`` is below the resolution of ``f`` end the search as
        precision-limited (they could not show a decrease)."""
        d, slope, dnorm = self._direction(x, grad, lower, upper, S, Y, count, theta)
        boxed = jnp.all(jnp.isfinite(lower) & jnp.isfinite(upper))
        alpha0 = jnp.where(start & ~boxed, unit_step(dnorm * dnorm), 1.0)
        room = jnp.where(d > 0, (upper - x) / jnp.where(d > 0, d, 1.0),
                         jnp.where(d < 0, (lower - x) / jnp.where(d < 0, d, 1.0), jnp.inf))
        max_step = jnp.maximum(jnp.min(room), 0.0)
        resolution = jnp.finfo(x.dtype).eps * jnp.abs(value) / jnp.where(slope < 0, -slope, 1.0)
        search = self.line_search.init(value, jnp.minimum(slope, 0.0),
                                       jnp.minimum(alpha0, max_step).astype(x.dtype), grad,
                                       min_step=jnp.maximum(min_step(x, d), resolution))
        return d, dnorm, max_step, search

    def init(self, problem, x0):
        """Placeholders (the first iteration evaluates the clipped start, marked by a trial
        step of 0)."""
        lower, upper = problem.box(x0)
        x0 = jnp.clip(x0, lower, upper)
        dtype = x0.dtype
        zero = jnp.zeros((), dtype)
        zeros = jnp.zeros_like(x0)
        pairs = jnp.zeros((self.memory, x0.shape[0]), dtype)
        return LBFGSBState(
            x=x0, value=zero, grad=zeros, direction=zeros, direction_norm=zero,
            max_step=jnp.asarray(jnp.inf, dtype),
            search=self.line_search.init(zero, -jnp.ones((), dtype), zero, zeros),
            S=pairs, Y=pairs, count=jnp.asarray(0, jnp.int32), theta=jnp.ones((), dtype),
            flags=jnp.array([0, Status.RUNNING], jnp.int32), accepted=jnp.asarray(False),
            alpha=zero, step_norm=zero, value_change=zero, nfev=jnp.asarray(0, jnp.int32),
        )

    def step(self, problem, state):
        s = state
        lower, upper = problem.box(s.x)
        d = s.direction
        trial_alpha = s.search.alpha
        first = trial_alpha == 0  # this iteration evaluates the start (see init)
        # feasible for alpha <= max_step; the clip only removes rounding
        trial_value, trial_grad = problem.value_and_grad(
            jnp.clip(s.x + trial_alpha * d, lower, upper))
        search = capped(self.line_search.update(s.search, trial_value,
                                                jnp.sum(trial_grad * d), trial_grad), s.max_step)
        take = search.finished & (search.alpha_lo > 0) & ~first
        alpha = jnp.where(take, search.alpha_lo, trial_alpha)

        def finish_search():
            x = jnp.where(take, jnp.clip(s.x + search.alpha_lo * d, lower, upper), s.x)
            value = jnp.where(take, search.value_lo, jnp.where(first, trial_value, s.value))
            grad = jnp.where(first, trial_grad, search.payload_lo)
            step, y = x - s.x, grad - s.grad
            sy, ss, yy = dots([(step, y), (step, step), (y, y)])
            ok = take & curvature_ok(sy, ss, yy)
            S = jnp.where(ok, jnp.concatenate([s.S[1:], step[None]]), s.S)
            Y = jnp.where(ok, jnp.concatenate([s.Y[1:], y[None]]), s.Y)
            count = jnp.where(ok, jnp.minimum(s.count + 1, self.memory), s.count)
            theta = jnp.where(ok, yy / jnp.where(ok, sy, 1.0), s.theta)
            # a failed search forgets the pairs and retries along the projected gradient
            count = jnp.where(take | first, count, 0)
            theta = jnp.where(take | first, theta, jnp.ones_like(theta))
            direction, dnorm, max_step, new = self._new_search(x, value, grad, lower, upper,
                                                               S, Y, count, theta, first)
            failure = jnp.where(
                ~take & ~first & s.restarted,
                jnp.where(search.precision_limited, Status.PRECISION_LIMIT,
                          Status.LINE_SEARCH_FAILED),
                Status.RUNNING,
            ).astype(jnp.int32)
            flags = jnp.stack([(~(take | first)).astype(jnp.int32), failure])
            return (x, value, grad, direction, dnorm, max_step, new, S, Y, count, theta, flags,
                    jnp.where(take, s.value - value, 0.0), jnp.sqrt(ss))

        def continue_search():
            return (s.x, s.value, s.grad, d, s.direction_norm, s.max_step, search, s.S, s.Y,
                    s.count,
                    s.theta, s.flags, jnp.zeros_like(s.value),
                    jnp.abs(trial_alpha) * s.direction_norm)

        (x, value, grad, direction, dnorm, max_step, search, S, Y, count, theta, flags,
         value_change, step_norm) = jax.lax.cond(search.finished | first, finish_search,
                                                  continue_search)
        return LBFGSBState(
            x=x, value=value, grad=grad, direction=direction, direction_norm=dnorm,
            max_step=max_step, search=search, S=S, Y=Y, count=count, theta=theta, flags=flags,
            accepted=take,
            alpha=alpha, step_norm=step_norm, value_change=value_change, nfev=s.nfev + 1,
        )

    def terminate(self, problem, state):
        """:meth:`Minimizer.check_termination` on the projected gradient."""
        return self.check_termination(self.stationarity(problem, state))

    def record(self, problem, state):
        return self.history_row(self.stationarity(problem, state), state.alpha)
