"""Acceptance of a trial step beyond the gain ratio
(:func:`jacopt.solvers.trust_region.gain_ratio`): Deuflhard's natural monotonicity test for a
Gauss-Newton step.

Near the solution of a large-residual problem the cost is flat to rounding: the predicted
reduction of a Gauss-Newton step falls below the rounding noise of the cost difference long
before the parameters stop improving, and the gain ratio becomes noise. The natural
monotonicity test measures progress in the parameters instead: the simplified correction
``J~^+ r~(x + p)`` (the old Jacobian, semi-normal equations on ``R``) must be at most
``contraction`` times the step ``p``, both in the ``D`` norm (P. Deuflhard, *Newton Methods for
Nonlinear Problems*, Springer, 2004, section 4.3). It only decides where the gain ratio is
noise, so it applies only where the cost rose by rounding at most (:func:`within_rounding`).
"""
from __future__ import annotations

import jax.numpy as jnp

from jacopt.linalg import solve_upper, solve_upper_transposed
from jacopt.solvers.least_squares_problem import LeastSquaresProblem, PointEvaluation, scaled_norm


def within_rounding(actual, cost):
    """Whether a trial's actual reduction ``actual`` is no worse than a rise of ``sqrt(eps) C``
    (``C`` the cost it started from): a larger rise is no rounding noise, and the natural
    monotonicity test must not accept it."""
    return actual >= -jnp.sqrt(jnp.finfo(jnp.result_type(cost)).eps) * cost


def natural_monotonicity(problem: LeastSquaresProblem, point: PointEvaluation, R, scale, fixed,
                         trial_r, step_norm, contraction):
    """Whether the simplified correction ``||D J~^+ r~(x + p)|| <= contraction * step_norm``,
    with ``J~`` the Jacobian at ``point`` (its fixed, active-bound columns dropped), ``R`` its
    QR factor, ``trial_r`` the raw residuals at ``x + p`` and ``step_norm = ||D p||``. Two
    triangular solves and one ``J^T`` product, O(m n). False when ``R`` is singular."""
    rc_new, _ = problem.corrected(trial_r, point.J)
    _, Jc = problem.corrected(point.r, point.J)
    if problem.bounded:
        Jc = jnp.where(fixed[None, :], 0.0, Jc)
    sbar = solve_upper(R, solve_upper_transposed(R, Jc.T @ rc_new))
    return scaled_norm(scale, sbar) <= contraction * step_norm
