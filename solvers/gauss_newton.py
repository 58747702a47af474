"""Gauss-Newton with a line search, with robust losses and box bounds; plus the Gauss-Newton
pieces :mod:`jacopt.solvers.dogleg` shares (the QR system, the rank-safe Gauss-Newton step and
the natural-monotonicity test).

References:
- J. E. Dennis, R. B. Schnabel (1983), *Numerical Methods for Unconstrained Optimization and
  Nonlinear Equations*, Prentice-Hall: section 10.2 (damped Gauss-Newton), Algorithm A6.3.1
  (backtracking line search).
- J. Nocedal, S. J. Wright (2006), *Numerical Optimization*, 2nd ed., Springer: section 10.3
  (Gauss-Newton from a QR of J, never the normal equations), chapter 3 (line searches).
- P. Deuflhard (2004), *Newton Methods for Nonlinear Problems*, Springer, section 4.3
  (natural monotonicity test for Gauss-Newton steps).
- D. P. Bertsekas (1982), "Projected Newton methods for optimization problems with simple
  constraints", SIAM J. Control Optim. 20(2) (active set and projected descent).

The method. At an accepted point ``x`` with residuals ``r`` and Jacobian ``J`` (after the
robust-loss correction ``r~``, ``J~`` of :mod:`jacopt.losses`), one Householder QR of
``[J~ | r~]`` (``m x (n+1)``, LAPACK ``geqrf``) gives ``R`` and ``Q^T r~``; the Gauss-Newton
direction is ``d = -R^{-1} Q^T r~``, the least-squares solution of ``J~ d = -r~``. When ``R`` is
numerically singular (a diagonal entry ``<= n eps max|R_ii|``, or the triangular solve is not
finite) ``d`` is instead the minimum-``||D d||`` least-squares solution from a truncated SVD of
``R D^{-1}`` (singular values ``<= n eps sigma_max`` dropped; O(n^3), ``n x n`` only), so flat
directions get no step rather than an infinite one.

The line search is on ``phi(alpha) = C(x + alpha d) - C(x)``, with ``C`` the cost after the
robust loss; the difference is computed termwise (:meth:`LeastSquaresProblem.reduction`), so
sufficient decrease is decided correctly even when the two costs agree to many digits. Each
trial ``alpha`` is one iteration of the solver's single loop (one evaluation of the residuals and
Jacobian; the accepted trial's Jacobian is reused for the next direction). The default search is
:class:`jacopt.solvers.line_search.BacktrackingArmijo` (first trial ``alpha = 1``, the full
Gauss-Newton step, then safeguarded quadratic interpolation), which needs values only;
:class:`~jacopt.solvers.line_search.StrongWolfe` also works (slopes ``grad(x + alpha d) . d``
come free with the Jacobian). A non-finite trial fails sufficient decrease, so ``alpha``
shrinks.

Natural monotonicity (Deuflhard): the full step ``alpha = 1`` is also accepted when the
simplified correction ``||D J^+ r(x + d)||`` (old Jacobian, two triangular solves) is at most
``contraction * ||D d||`` and the cost rose by no more than ``sqrt(eps) C``. Near the solution
of a large-residual problem the cost is flat to rounding while the parameters are not; this
test lets Gauss-Newton take the steps that still improve them, so fits reach the accuracy the
problem's conditioning allows.

Bounds: the components at a bound whose negative gradient points outwards (Bertsekas' active
set) are fixed (their columns pinned in the QR); the Gauss-Newton direction of the others is
projected, ``d = P(x + d_gn) - x``, and the search runs along that segment, which lies in the
box for ``alpha <= 1``.

Safeguard: when the Gauss-Newton direction is not a descent direction, or its search fails
(a nearly singular ``J`` far from the solution gives huge, useless directions), the next search
runs along the (projected) scaled steepest-descent direction ``P(x - t D^{-2} g) - x``
(``t`` the Cauchy step length of the Gauss-Newton model), which always is one; the solve stops
only when that search fails too.

Stopping (after every iteration):

- ``GTOL``: an accepted point has ``max_j |g_j| / (||J_j|| ||r||) <= gtol`` (MINPACK's test).
- ``FTOL``: the actual and predicted relative reductions of an accepted full step (``alpha =
  1``) are ``<= ftol``; a step the search cut short says how far the search got, not how far
  the method can go.
- ``XTOL``: an accepted full step has ``||D dx|| <= xtol ||D x||``.
- ``PRECISION_LIMIT``: the same with machine epsilon; or the steepest-descent search gave up
  because its trial steps fell below the resolution of ``x``; or steepest descent is no
  descent direction in this precision.
- ``LINE_SEARCH_FAILED``: the steepest-descent search spent its ``max_trials`` without
  sufficient decrease.
- ``NONFINITE``: the start is non-finite, or the search collapsed on non-finite trials.
- ``STALLED`` (a failure): an f, x or rounding stop that no first-order test backs
  (:func:`~jacopt.solvers.least_squares_problem.first_order_backed`); a failed search where
  that test holds ended at a minimiser and reports ``PRECISION_LIMIT``.

Cost per iteration: one evaluation of residuals and Jacobian (one linearisation of the user's
function plus ``min(m, n)`` JVPs/VJPs) and O(m n) work; per accepted point one O(m n^2) QR.
The start is evaluated by the first iteration (``evaluates_start_in_loop``), so the residual
function is traced once.
``History.damping`` records the trial's step length ``alpha``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jacopt.linalg import triangular_lstsq
from jacopt.solvers import trust_region as tr
from jacopt.solvers.acceptance import natural_monotonicity, within_rounding
from jacopt.solvers.least_squares_problem import (
    TOLERANCES,
    LeastSquaresProblem,
    LeastSquaresSolver,
    PointEvaluation,
    check_options,
    evaluate_point,
    factor_point,
    placeholder_point,
    scaled_norm,
)
from jacopt.solvers.line_search import BacktrackingArmijo, LineSearchState
from jacopt.solvers.stopping import (
    Counters,
    confirm_stop,
    first_order_backed,
    start_status,
    stop_status,
)
from jacopt.status import Status

# ------------------------------------------------------------------------------------------
# Pieces shared with the dogleg solver.
# ------------------------------------------------------------------------------------------


class GaussNewtonSystem(NamedTuple):
    """The linear algebra of one accepted point: the scaling ``D`` (n,), the fixed
    (active-bound) components (n,) bool, ``R`` (n, n) and ``qtr`` (n,) from the QR of
    ``[J~ | r~]`` (fixed columns pinned), and the Gauss-Newton step ``p_gn`` (n,) (zero on the
    fixed components)."""

    scale: Any
    fixed: Any
    R: Any
    qtr: Any
    p_gn: Any


def empty_system(n, dtype) -> GaussNewtonSystem:
    """A placeholder :class:`GaussNewtonSystem` (zero scale: the first factorisation sets it)."""
    return GaussNewtonSystem(
        scale=jnp.zeros((n,), dtype), fixed=jnp.zeros((n,), bool), R=jnp.zeros((n, n), dtype),
        qtr=jnp.zeros((n,), dtype), p_gn=jnp.zeros((n,), dtype))


def factorise(problem: LeastSquaresProblem, point: PointEvaluation, scale) -> GaussNewtonSystem:
    """The O(m n^2) work of a new point: update the scaling (Moré's running maximum of the
    column norms, or ``1 / x_scale``), the active set, one Householder QR of the corrected
    ``[J~ | r~]`` and the Gauss-Newton step."""
    scale, fixed, R, qtr = factor_point(problem, point, scale)
    p_gn = jnp.where(fixed, 0.0, triangular_lstsq(R, qtr, scale))
    return GaussNewtonSystem(scale, fixed, R, qtr, p_gn)


def cauchy_step(system: GaussNewtonSystem, grad, cost):
    """The minimiser of the Gauss-Newton model along the scaled steepest-descent direction
    ``-D^{-2} g`` (fixed components zero): ``-t D^{-2} g`` with ``t = ||D^{-1} g||^2 /
    ||J~ D^{-2} g||^2`` (``||J~ v|| = ||R v||`` for ``v`` zero on the fixed components), and
    ``t <= 2 C / ||D^{-1} g||^2``. For a plain sum of squares that bound never binds: the model
    ``||r + J p||^2 / 2`` is at least 0, so the Cauchy step's predicted decrease ``t ||D^{-1}
    g||^2 / 2`` is at most the cost ``C``. A robust loss's corrected Jacobian can lose nearly
    all curvature where residuals saturate the loss (Cauchy, arctan), and ``t`` would then be
    astronomically long (1e14 on a three-parameter fit, which backtracking could not bring
    back in its trial budget); the bound keeps the step's linear decrease within twice the
    cost. O(n^2)."""
    g = jnp.where(system.fixed, 0.0, grad)
    direction = g / (system.scale * system.scale)
    rv = system.R @ direction
    curvature = jnp.sum(rv * rv)
    gdg = jnp.sum(g * direction)
    t = gdg / jnp.where(curvature > 0, curvature, 1.0)
    t = jnp.where(curvature > 0, t, jnp.inf)
    t = jnp.minimum(t, 2.0 * cost / jnp.where(gdg > 0, gdg, 1.0))
    return -jnp.where(gdg > 0, t, 0.0) * direction


def model_decrease(system: GaussNewtonSystem, grad, step):
    """``m(0) - m(step) = -(g . step + ||J~ step||^2 / 2)`` for ``step`` zero on the fixed
    components, and the slope ``g . step``. O(n^2)."""
    rs = system.R @ step
    slope = jnp.dot(grad, step)
    return -(slope + 0.5 * jnp.sum(rs * rs)), slope


# ------------------------------------------------------------------------------------------
# The solver.
# ------------------------------------------------------------------------------------------


class GNState(NamedTuple):
    """Loop carry: the accepted point ``point`` (:class:`PointEvaluation`; placeholders until
    the first iteration has evaluated the start), its :class:`GaussNewtonSystem` ``system``, the
    search ``direction`` (n,), whether it is the (projected) Gauss-Newton direction
    ``is_gauss_newton``, the line search's state ``search`` (payload: the
    :class:`PointEvaluation` of the best trial) and its pending trial point ``trial_x``, the
    last evaluated trial's ``alpha`` and ``step_norm``, whether it was ``accepted``, the
    :class:`~jacopt.solvers.stopping.Counters` ``counters``, the ``start_cost``, ``started``
    (the start has been evaluated) and ``status``."""

    point: Any
    system: Any
    direction: Any
    is_gauss_newton: Any
    search: LineSearchState
    trial_x: Any
    alpha: Any
    step_norm: Any
    accepted: Any
    counters: Counters
    start_cost: Any
    started: Any
    status: Any

    @property
    def damping(self):
        """What ``History.damping`` records for this solver."""
        return self.alpha


def _descent_direction(problem: LeastSquaresProblem, point: PointEvaluation,
                       system: GaussNewtonSystem, steepest):
    """``(d, is_gauss_newton)``: the Gauss-Newton step (with bounds: the segment to its
    projection), or the (projected) Cauchy step when ``steepest`` or when the former is no
    descent direction."""
    x = point.x
    d_gn = problem.project(x + system.p_gn) - x if problem.bounded else system.p_gn
    d_cauchy = cauchy_step(system, point.grad, point.cost)
    if problem.bounded:
        d_cauchy = problem.project(x + d_cauchy) - x
    use_gn = ~steepest & (jnp.dot(point.grad, d_gn) < 0)
    return jnp.where(use_gn, d_gn, d_cauchy), use_gn


@dataclasses.dataclass(frozen=True)
class GaussNewton(LeastSquaresSolver):
    """Gauss-Newton with a line search (module docstring: method, bounds, stopping).

    Options (hashable; a static argument of the compiled solve):

    - ``ftol``, ``xtol``, ``gtol``: the stopping tests. The defaults stop only when no further
      progress is possible in the working precision (as :class:`LevenbergMarquardt`'s).
    - ``line_search``: :class:`~jacopt.solvers.line_search.BacktrackingArmijo` (default) or
      :class:`~jacopt.solvers.line_search.StrongWolfe`; its ``max_trials`` bounds the
      iterations spent on one direction.
    - ``contraction``: the natural-monotonicity acceptance of the full step (module docstring);
      0 disables it.
    """

    ftol: float = 0.0
    xtol: float = 1e-15
    gtol: float = 1e-15
    line_search: Any = BacktrackingArmijo()
    contraction: float = 0.5

    def __post_init__(self):
        check_options(self, nonnegative=TOLERANCES, fraction=("contraction",))
        if not all(callable(getattr(self.line_search, m, None)) for m in ("init", "update")):
            raise ValueError(f"GaussNewton: line_search must be a line search such as "
                             f"BacktrackingArmijo() or StrongWolfe(), got {self.line_search!r}.")

    evaluates_start_in_loop = True  # see jacopt._loop: the residual function is traced once

    def init(self, problem: LeastSquaresProblem, x0) -> GNState:
        """Placeholders of the right shapes; nothing is evaluated here."""
        dtype = x0.dtype
        zero = jnp.zeros((), dtype)
        point = placeholder_point(problem, x0)
        return GNState(
            point=point, system=empty_system(x0.shape[0], dtype), direction=jnp.zeros_like(x0),
            is_gauss_newton=jnp.asarray(True),
            search=self.line_search.init(zero, -jnp.ones((), dtype), jnp.ones((), dtype), point),
            trial_x=x0, alpha=zero, step_norm=zero, accepted=jnp.asarray(False),
            counters=Counters.start(), start_cost=zero, started=jnp.asarray(False),
            status=jnp.asarray(Status.RUNNING, jnp.int32),
        )

    def step(self, problem: LeastSquaresProblem, s: GNState) -> GNState:
        """One loop iteration: evaluate the pending trial (the start, on the first iteration),
        let the line search judge it and test for convergence, start a new direction and
        search from an accepted point (or after a failed search), and compute the next
        trial."""
        point, system, search, d = s.point, s.system, s.search, s.direction
        first = ~s.started
        x = point.x
        dtype = x.dtype
        eps = jnp.finfo(dtype).eps

        # 1. The trial (the one evaluation of this iteration) and the search's verdict.
        trial = evaluate_point(problem, s.trial_x)
        actual = jnp.where(trial.finite, problem.reduction(point.r, trial.r), -jnp.inf)
        slope = jnp.dot(trial.grad, d) if self.line_search.needs_slope else None
        new_search = self.line_search.update(search, -actual, slope, payload=trial)
        natural = jnp.asarray(False)
        if self.contraction > 0:
            natural = ((search.num_trials == 0) & s.is_gauss_newton & trial.finite
                       & within_rounding(actual, point.cost)
                       & natural_monotonicity(
                           problem, point, system.R, system.scale, system.fixed, trial.r,
                           scaled_norm(system.scale, s.trial_x - x), self.contraction))
        descent = search.slope0 < 0
        taken = new_search.finished & (new_search.alpha_lo > 0)
        accepted = (natural | (taken & descent)) & ~first
        # lax.cond rather than one select per field: no copies of the unchanged point
        new_point = lax.cond(
            accepted | first,
            lambda: jax.tree.map(lambda a, b: jnp.where(natural | first, a, b), trial,
                                 new_search.payload_lo),
            lambda: point)

        # 2. Stopping tests on the step taken, relative to the point before it.
        dx = new_point.x - x
        xnorm = scaled_norm(system.scale, x)
        dnorm = scaled_norm(system.scale, dx)
        predicted, _ = model_decrease(system, point.grad, dx)
        taken_reduction = problem.reduction(point.r, new_point.r)
        # the f and x tests judge full steps only: a step the search cut short says how far
        # the search got, not how far the method can go
        done = stop_status(self, cost=point.cost, actual=taken_reduction, predicted=predicted,
                           ratio=tr.gain_ratio(taken_reduction, predicted), step_bound=dnorm,
                           xnorm=xnorm, accepted=accepted, gtol_measure=new_point.gtol_measure,
                           judged=natural | (new_search.alpha_lo == 1))
        # A failed search along the Gauss-Newton direction is retried along steepest descent.
        retry = new_search.finished & ~accepted & s.is_gauss_newton & ~first
        failed = jnp.where(~trial.finite, Status.NONFINITE,
                 jnp.where(new_search.precision_limited, Status.PRECISION_LIMIT,
                           Status.LINE_SEARCH_FAILED))
        status = jnp.where(accepted, done,
                 jnp.where(~descent, Status.PRECISION_LIMIT,
                 jnp.where(new_search.finished & ~retry, failed, Status.RUNNING)))
        status = jnp.where(first, start_status(trial, self.gtol), status)

        # 3. A new direction and search from the point kept, after an accepted step or a
        #    finished search (no user code in this cond).
        def fresh():
            new = factorise(problem, new_point, system.scale)
            d, is_gn = _descent_direction(problem, new_point, new, retry)
            slope0 = jnp.dot(new_point.grad, d)
            dmax = jnp.max(jnp.abs(d))
            min_step = eps * jnp.max(jnp.abs(new_point.x)) / jnp.where(dmax > 0, dmax, 1.0)
            search = self.line_search.init(jnp.zeros((), dtype), slope0, jnp.ones((), dtype),
                                           new_point, min_step=min_step)
            return new, d, is_gn, search

        system, d_next, is_gn, search_next = lax.cond(
            accepted | new_search.finished | first, fresh,
            lambda: (system, d, s.is_gauss_newton, new_search))

        # A stop is a success only when a first-order test backs it at the point kept: its
        # full Gauss-Newton step (model gain ||R p||^2 / 2, without the cancellation of
        # model_decrease's form for a long step) or its gradient. A search that fails where
        # that test holds failed at a minimiser: no further reduction is possible.
        start_cost = jnp.where(first, new_point.cost, s.start_cost)
        rp = system.R @ system.p_gn
        backed = first_order_backed(self, new_point, start_cost, system.p_gn,
                                    0.5 * jnp.sum(rp * rp))
        status = jnp.where((status == Status.LINE_SEARCH_FAILED) & backed,
                           Status.PRECISION_LIMIT, status)
        status = confirm_stop(status, backed)

        counters = s.counters.tally(accepted, ~accepted & ~first, 1, 1)
        zero = jnp.zeros((), dtype)
        return GNState(
            point=new_point, system=system, direction=d_next, is_gauss_newton=is_gn,
            search=search_next,
            trial_x=problem.project(new_point.x + search_next.alpha * d_next),
            alpha=jnp.where(first, zero, search.alpha),
            step_norm=jnp.where(first, zero, jnp.sqrt(jnp.sum((s.trial_x - x) ** 2))),
            accepted=accepted, counters=counters, start_cost=start_cost,
            started=jnp.asarray(True), status=status,
        )
