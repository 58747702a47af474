"""Powell's dogleg with a scaled trust region, robust losses and box bounds.

References:
- M. J. D. Powell (1970), "A hybrid method for nonlinear equations", in *Numerical Methods
  for Nonlinear Algebraic Equations*, P. Rabinowitz (ed.), Gordon and Breach, pp. 87-114.
- J. Nocedal, S. J. Wright (2006), *Numerical Optimization*, 2nd ed., Springer, section 4.1
  (the dogleg method) and Algorithm 4.1 (trust region).
- J. J. Moré (1978), "The Levenberg-Marquardt algorithm: implementation and theory", LNM 630
  (scaling ``D`` and the radius rule, :data:`jacopt.solvers.trust_region.MINPACK`).
- D. P. Bertsekas (1982), SIAM J. Control Optim. 20(2) (active set); C. Kanzow, N. Yamashita,
  M. Fukushima (2004), J. Comput. Appl. Math. 172 (projected trust-region step).

The method. At an accepted point with corrected residuals ``r~`` and Jacobian ``J~``
(:mod:`jacopt.losses`), the Gauss-Newton model ``m(p) = C + g^T p + ||J~ p||^2 / 2`` is
minimised approximately inside ``||D p|| <= radius`` along Powell's dogleg path, in the
variables ``D p`` (``D`` is Moré's scaling, the running maximum of the Jacobian's column norms,
or ``1 / x_scale``):

- the Gauss-Newton point ``p_gn = -R^{-1} Q^T r~`` from one Householder QR of ``[J~ | r~]``
  (the minimum-``||D p||`` solution from a truncated SVD of ``R D^{-1}`` when ``R`` is
  numerically singular, see :func:`jacopt.linalg.triangular_lstsq`);
- the Cauchy point ``p_c = -t D^{-2} g``, the model's minimiser along the scaled steepest
  descent direction (``t = ||D^{-1} g||^2 / ||J~ D^{-2} g||^2``);
- the step: ``p_gn`` if ``||D p_gn|| <= radius``; else ``p_c`` cut back to the boundary if
  ``||D p_c|| >= radius``; else the point where the segment from ``p_c`` to ``p_gn`` leaves the
  region (the positive root of a quadratic, in its cancellation-free form).

The radius follows :data:`jacopt.solvers.trust_region.MINPACK` from the gain ratio of actual
to predicted reduction (the reduction computed termwise, accurate when the costs agree to many
digits), with MINPACK's interpolated shrink. The first radius is ``initial_radius_factor *
||D x0||``, then cut to the first step's length, as in :class:`LevenbergMarquardt`. A
Gauss-Newton step is also accepted by Deuflhard's natural monotonicity test
(:func:`jacopt.solvers.acceptance.natural_monotonicity`), so fits reach full precision where
the cost is flat to rounding. A non-finite trial is rejected (``rho = -inf``) and shrinks the
radius. QR, Gauss-Newton and Cauchy points are computed once per accepted point, in the
iteration that accepts it; a rejected trial only recomputes the path for the smaller radius
(O(n)). The start is evaluated by the first iteration (``evaluates_start_in_loop``).

Bounds: the active-set components are pinned (as in :class:`LevenbergMarquardt`), the dogleg
step of the others is projected onto the box, and the gain ratio uses the model's reduction
along the projected step.

Stopping: as :class:`LevenbergMarquardt` (``GTOL``, ``FTOL``, ``XTOL`` on the radius,
``PRECISION_LIMIT``, ``NONFINITE``, and ``STALLED`` when no first-order test backs an f or x
stop). Cost per iteration: one evaluation of residuals and
Jacobian and O(m n) work; per accepted point one O(m n^2) QR. ``History.damping`` records the
trust-region radius the trial was computed for.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from jacopt.solvers import trust_region as tr
from jacopt.solvers.acceptance import natural_monotonicity
from jacopt.solvers.gauss_newton import (
    GaussNewtonSystem,
    cauchy_step,
    empty_system,
    factorise,
    model_decrease,
)
from jacopt.solvers.least_squares_problem import (
    TOLERANCES,
    LeastSquaresProblem,
    LeastSquaresSolver,
    check_options,
    evaluate_point,
    placeholder_point,
    scaled_norm,
)
from jacopt.solvers.stopping import (
    Counters,
    confirm_stop,
    first_order_backed,
    nonfinite_since_accept,
    start_status,
    stop_status,
)
from jacopt.status import Status


class DoglegTrial(NamedTuple):
    """The trial step waiting to be evaluated: the point ``x``, whether it is the Gauss-Newton
    step (``gauss_newton``), its lengths ``pnorm = ||D step||`` and ``step_norm``, the model's
    ``predicted`` reduction and ``slope`` ``g . step``, ``xnorm = ||D x||`` of the point it
    starts from and the ``radius`` it was computed for."""

    x: Any
    gauss_newton: Any
    pnorm: Any
    step_norm: Any
    predicted: Any
    slope: Any
    xnorm: Any
    radius: Any


class DoglegState(NamedTuple):
    """Loop carry: the accepted ``point`` (:class:`PointEvaluation`; placeholders until the
    first iteration has evaluated the start), its
    :class:`~jacopt.solvers.gauss_newton.GaussNewtonSystem` ``system`` and Cauchy step
    ``p_cauchy``, the pending :class:`DoglegTrial` ``trial``, the radius, length and acceptance
    of the last evaluated trial (``trial_radius``, ``step_norm``, ``accepted``), the
    :class:`~jacopt.solvers.stopping.Counters` ``counters``, the ``start_cost``, ``started``
    (the start has been evaluated) and ``status``."""

    point: Any
    system: GaussNewtonSystem
    p_cauchy: Any
    trial: DoglegTrial
    trial_radius: Any
    step_norm: Any
    accepted: Any
    counters: Counters
    start_cost: Any
    started: Any
    status: Any

    @property
    def damping(self):
        """What ``History.damping`` records for this solver."""
        return self.trial_radius


def dogleg_step(scale, p_gn, p_cauchy, radius):
    """Powell's dogleg point for the radius (``||D p|| <= radius``): returns ``(p,
    gauss_newton)``, ``gauss_newton`` True when ``p = p_gn`` lies inside. O(n)."""
    gn_norm = scaled_norm(scale, p_gn)
    c_norm = scaled_norm(scale, p_cauchy)
    inside = gn_norm <= radius
    steepest = p_cauchy * (radius / jnp.where(c_norm > 0, c_norm, 1.0))
    # ||D (p_c + tau (p_gn - p_c))|| = radius, tau in [0, 1]: a tau^2 + b tau + c = 0, c < 0
    dc, dd = scale * p_cauchy, scale * (p_gn - p_cauchy)
    a = jnp.sum(dd * dd)
    b = 2.0 * jnp.sum(dc * dd)
    c = c_norm * c_norm - radius * radius
    root = jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))
    tau = jnp.where(b > 0, -2.0 * c / jnp.where(b + root > 0, b + root, 1.0),
                    (root - b) / jnp.where(a > 0, 2.0 * a, 1.0))
    segment = p_cauchy + jnp.clip(tau, 0.0, 1.0) * (p_gn - p_cauchy)
    finite_gn = jnp.all(jnp.isfinite(p_gn))
    p = jnp.where(inside & finite_gn, p_gn,
                  jnp.where((c_norm >= radius) | ~finite_gn, steepest, segment))
    return p, inside & finite_gn


@dataclasses.dataclass(frozen=True)
class Dogleg(LeastSquaresSolver):
    """Powell's dogleg in a scaled trust region (module docstring: method, bounds, stopping).

    Options (hashable; a static argument of the compiled solve):

    - ``ftol``, ``xtol``, ``gtol``: the stopping tests, as :class:`LevenbergMarquardt`'s (the
      defaults run to the working precision).
    - ``initial_radius_factor``: the first radius is this times ``||D x0||`` (this itself when
      ``x0 = 0``).
    - ``contraction``: natural-monotonicity acceptance of a Gauss-Newton step; 0 disables it.
    """

    ftol: float = 0.0
    xtol: float = 1e-15
    gtol: float = 1e-15
    initial_radius_factor: float = 1.0
    contraction: float = 0.5

    def __post_init__(self):
        check_options(self, nonnegative=TOLERANCES, positive=("initial_radius_factor",),
                      fraction=("contraction",))

    evaluates_start_in_loop = True  # see jacopt._loop: the residual function is traced once

    def init(self, problem: LeastSquaresProblem, x0) -> DoglegState:
        """Placeholders of the right shapes; nothing is evaluated here."""
        n, dtype = x0.shape[0], x0.dtype
        zero = jnp.zeros((), dtype)
        trial = DoglegTrial(x=x0, gauss_newton=jnp.asarray(False), pnorm=zero, step_norm=zero,
                            predicted=zero, slope=zero, xnorm=zero, radius=zero)
        return DoglegState(
            point=placeholder_point(problem, x0), system=empty_system(n, dtype),
            p_cauchy=jnp.zeros_like(x0), trial=trial, trial_radius=zero, step_norm=zero,
            accepted=jnp.asarray(False), counters=Counters.start(), start_cost=zero,
            started=jnp.asarray(False), status=jnp.asarray(Status.RUNNING, jnp.int32))

    def step(self, problem: LeastSquaresProblem, s: DoglegState) -> DoglegState:
        """One loop iteration: evaluate the pending trial (the start, on the first iteration),
        accept or reject it and test for convergence, factorise a newly accepted point, and
        compute the next trial."""
        point, system, pending = s.point, s.system, s.trial
        first = ~s.started

        # 1. The trial: gain ratio, radius (MINPACK) and acceptance.
        trial = evaluate_point(problem, pending.x)
        actual = jnp.where(trial.finite, problem.reduction(point.r, trial.r), -jnp.inf)
        ratio = tr.gain_ratio(actual, pending.predicted)
        shrink = tr.interpolated_shrink(pending.slope, actual)
        shrink = jnp.where(trial.cost >= 100.0 * point.cost, 0.1, shrink)
        radius, accepted = tr.update_radius(
            tr.MINPACK, pending.radius, ratio, pending.pnorm, inside=pending.gauss_newton,
            shrink_factor=shrink)
        if self.contraction > 0:
            natural = pending.gauss_newton & natural_monotonicity(
                problem, point, system.R, system.scale, system.fixed, trial.r, pending.pnorm,
                self.contraction)
            accepted = accepted | natural
            radius = jnp.where(natural, jnp.maximum(radius, 2.0 * pending.pnorm), radius)
        accepted = accepted & trial.finite & ~first

        # 2. Stopping tests (MINPACK's, as LevenbergMarquardt), relative to the old point.
        nonfinite = nonfinite_since_accept(s.counters.nonfinite, trial.finite, accepted)
        status = stop_status(self, cost=point.cost, actual=actual, predicted=pending.predicted,
                             ratio=ratio, step_bound=radius, xnorm=pending.xnorm,
                             accepted=accepted, gtol_measure=trial.gtol_measure,
                             nonfinite=nonfinite)
        status = jnp.where(first, start_status(trial, self.gtol), status)

        # 3. The point kept and, when it changed, its QR system and Cauchy step (a cond: no
        #    QR after a rejected trial); an f or x stop counts only when a first-order test
        #    backs it there, with its full Gauss-Newton step (model gain ||R p||^2 / 2).
        def fresh():
            new = factorise(problem, trial, system.scale)
            return trial, new, cauchy_step(new, trial.grad, trial.cost)

        point, system, p_cauchy = lax.cond(accepted | first, fresh,
                                           lambda: (point, system, s.p_cauchy))
        start_cost = jnp.where(first, point.cost, s.start_cost)
        rp = system.R @ system.p_gn
        status = confirm_stop(status, first_order_backed(self, point, start_cost, system.p_gn,
                                                         0.5 * jnp.sum(rp * rp)))

        # 4. The next trial: the dogleg step for the radius, projected onto the box; the first
        #    radius is initial_radius_factor ||D x0||, cut to the first step's length.
        xnorm = scaled_norm(system.scale, point.x)
        radius = jnp.where(
            first, self.initial_radius_factor * jnp.where(xnorm > 0, xnorm, 1.0), radius)
        p, gauss_newton = dogleg_step(system.scale, system.p_gn, p_cauchy, radius)
        x_new, step = problem.projected_step(point.x, p, system.fixed)
        pnorm = scaled_norm(system.scale, step)
        radius = jnp.where(first, jnp.minimum(radius, pnorm), radius)
        predicted, slope = model_decrease(system, point.grad, step)
        next_trial = DoglegTrial(x=x_new, gauss_newton=gauss_newton, pnorm=pnorm,
                                 step_norm=jnp.sqrt(jnp.sum(step * step)), predicted=predicted,
                                 slope=slope, xnorm=xnorm, radius=radius)

        counters = s.counters.tally(accepted, ~accepted & ~first, 1, 1,
                                    nonfinite=jnp.where(first, 0, nonfinite))
        zero = jnp.zeros((), point.x.dtype)
        return DoglegState(
            point=point, system=system, p_cauchy=p_cauchy, trial=next_trial,
            trial_radius=jnp.where(first, zero, pending.radius),
            step_norm=jnp.where(first, zero, pending.step_norm), accepted=accepted,
            counters=counters, start_cost=start_cost, started=jnp.asarray(True), status=status)
