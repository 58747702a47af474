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


def backed_at(problem: LeastSquaresProblem, tols, status, accepted, point: PointEvaluation,
              system: GaussNewtonSystem, start_cost):
    """:func:`~jacopt.solvers.least_squares_problem.first_order_backed` at ``point``, the point
    kept; ``system`` belongs to the point the last trial started from, so after an accepted
    step that stops the run ``point`` is factorised here (a ``lax.cond``: once per run)."""
    fresh = accepted & (status != Status.RUNNING)
    system = lax.cond(fresh, lambda: factorise(problem, point, system.scale), lambda: system)
    # the Gauss-Newton step's model gain is ||R p||^2 / 2 (g.p = -||R p||^2 at a least-squares
    # solution), without the cancellation of model_decrease's form for a long step
    rp = system.R @ system.p_gn
    return first_order_backed(tols, point, start_cost, system.p_gn, 0.5 * jnp.sum(rp * rp))


# ------------------------------------------------------------------------------------------
# The solver.
# ------------------------------------------------------------------------------------------


class GNState(NamedTuple):
    """Loop carry: the accepted point ``point`` (:class:`PointEvaluation`), its
    :class:`GaussNewtonSystem` ``system``, the search ``direction`` (n,), whether it is the
    (projected) Gauss-Newton direction ``is_gauss_newton``, the line search's state ``search``
    (payload: the :class:`PointEvaluation` of the best trial), ``need_direction`` (the next
    iteration starts a new search), ``steepest`` (it searches along steepest descent, after a
    failed Gauss-Newton search), the last trial's ``alpha`` and ``step_norm``, whether it was
    ``accepted``, the :class:`~jacopt.solvers.stopping.Counters` ``counters``, the ``start_cost``
    and ``status``."""

    point: Any
    system: Any
    direction: Any
    is_gauss_newton: Any
    search: LineSearchState
    need_direction: Any
    steepest: Any
    alpha: Any
    step_norm: Any
    accepted: Any
    counters: Counters
    start_cost: Any
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

    def init(self, problem: LeastSquaresProblem, x0) -> GNState:
        point = evaluate_point(problem, x0)
        status = start_status(point, self.gtol)
        dtype = x0.dtype
        zero = jnp.zeros((), dtype)
        return GNState(
            point=point, system=empty_system(x0.shape[0], dtype), direction=jnp.zeros_like(x0),
            is_gauss_newton=jnp.asarray(True),
            search=self.line_search.init(zero, -jnp.ones((), dtype), jnp.ones((), dtype), point),
            need_direction=jnp.asarray(True), steepest=jnp.asarray(False), alpha=zero,
            step_norm=zero, accepted=jnp.asarray(False), counters=Counters.start(1, 1),
            start_cost=point.cost, status=status,
        )

    def step(self, problem: LeastSquaresProblem, s: GNState) -> GNState:
        point = s.point
        x = point.x
        dtype = x.dtype
        eps = jnp.finfo(dtype).eps

        # 1. A new direction and search after an accepted step (no user code in this cond).
        def fresh():
            system = factorise(problem, point, s.system.scale)
            d, is_gn = _descent_direction(problem, point, system, s.steepest)
            slope0 = jnp.dot(point.grad, d)
            dmax = jnp.max(jnp.abs(d))
            min_step = eps * jnp.max(jnp.abs(x)) / jnp.where(dmax > 0, dmax, 1.0)
            search = self.line_search.init(jnp.zeros((), dtype), slope0, jnp.ones((), dtype),
                                           point, min_step=min_step)
            return system, d, is_gn, search

        system, d, is_gn, search = lax.cond(
            s.need_direction, fresh,
            lambda: (s.system, s.direction, s.is_gauss_newton, s.search))
        descent = search.slope0 < 0

        # 2. The trial (the one evaluation of this iteration).
        alpha = search.alpha
        x_trial = problem.project(x + alpha * d)
        trial = evaluate_point(problem, x_trial)
        actual = jnp.where(trial.finite, problem.reduction(point.r, trial.r), -jnp.inf)
        slope = jnp.dot(trial.grad, d) if self.line_search.needs_slope else None
        new_search = self.line_search.update(search, -actual, slope, payload=trial)
        natural = jnp.asarray(False)
        if self.contraction > 0:
            natural = ((search.num_trials == 0) & is_gn & trial.finite
                       & within_rounding(actual, point.cost)
                       & natural_monotonicity(
                           problem, point, system.R, system.scale, system.fixed, trial.r,
                           scaled_norm(system.scale, x_trial - x), self.contraction))
        taken = new_search.finished & (new_search.alpha_lo > 0)
        accepted = natural | (taken & descent)
        # lax.cond rather than one select per field: no copies of the unchanged point
        new_point = lax.cond(
            accepted,
            lambda: jax.tree.map(lambda a, b: jnp.where(natural, a, b), trial,
                                 new_search.payload_lo),
            lambda: point)

        # 3. Stopping tests on the step taken, relative to the point before it.
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
        retry = new_search.finished & ~accepted & is_gn
        failed = jnp.where(~trial.finite, Status.NONFINITE,
                 jnp.where(new_search.precision_limited, Status.PRECISION_LIMIT,
                           Status.LINE_SEARCH_FAILED))
        status = jnp.where(accepted, done,
                 jnp.where(~descent, Status.PRECISION_LIMIT,
                 jnp.where(new_search.finished & ~retry, failed, Status.RUNNING)))
        # A stop is a success only when a first-order test backs it: the full Gauss-Newton
        # step from the search's start, or the gradient at the point kept. A search that fails
        # where that test holds failed at a minimiser: no further reduction is possible.
        backed = backed_at(problem, self, status, accepted, new_point, system, s.start_cost)
        status = jnp.where((status == Status.LINE_SEARCH_FAILED) & backed,
                           Status.PRECISION_LIMIT, status)
        status = confirm_stop(status, backed)

        counters = s.counters.tally(accepted, ~accepted, 1, 1)
        return GNState(
            point=new_point, system=system, direction=d, is_gauss_newton=is_gn,
            search=new_search, need_direction=accepted | new_search.finished,
            steepest=retry, alpha=alpha,
            step_norm=jnp.sqrt(jnp.sum((x_trial - x) ** 2)), accepted=accepted,
            counters=counters,
            start_cost=s.start_cost, status=status,
        )

