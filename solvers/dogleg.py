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
(:func:`jacopt.solvers.gauss_newton.contracts`), so fits reach full precision where the cost is
flat to rounding. A non-finite trial is rejected (``rho = -inf``) and shrinks the radius.
QR, Gauss-Newton and Cauchy points are computed once per accepted point (lazily, at the first
trial from it); a rejected trial only recomputes the path for the smaller radius (O(n)).

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
    backed_at,
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
    scaled_norm,
)
from jacopt.solvers.stopping import (
    Counters,
    confirm_stop,
    nonfinite_since_accept,
    start_status,
    stop_status,
)


class DoglegState(NamedTuple):
    """Loop carry: the accepted ``point`` (:class:`PointEvaluation`), its
    :class:`~jacopt.solvers.gauss_newton.GaussNewtonSystem` ``system`` and Cauchy step
    ``p_cauchy`` (valid when ``factored``), the ``radius``, the last trial's radius
    (``trial_radius``), step norm and acceptance, the
    :class:`~jacopt.solvers.stopping.Counters` ``counters``, the ``start_cost`` and
    ``status``."""

    point: Any
    system: GaussNewtonSystem
    p_cauchy: Any
    factored: Any
    radius: Any
    trial_radius: Any
    step_norm: Any
    accepted: Any
    counters: Counters
    start_cost: Any
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

    def init(self, problem: LeastSquaresProblem, x0) -> DoglegState:
        point = evaluate_point(problem, x0)
        status = start_status(point, self.gtol)
        zero = jnp.zeros((), x0.dtype)
        return DoglegState(
            point=point, system=empty_system(x0.shape[0], x0.dtype), p_cauchy=jnp.zeros_like(x0),
            factored=jnp.asarray(False), radius=zero, trial_radius=zero, step_norm=zero,
            accepted=jnp.asarray(False), counters=Counters.start(1, 1),
            start_cost=point.cost, status=status,
        )

    def step(self, problem: LeastSquaresProblem, s: DoglegState) -> DoglegState:
        point = s.point
        x = point.x

        def fresh():
            system = factorise(problem, point, s.system.scale)
            return system, cauchy_step(system, point.grad, point.cost)

        system, p_cauchy = lax.cond(s.factored, lambda: (s.system, s.p_cauchy), fresh)
        first = (s.counters.num_accepted + s.counters.num_rejected) == 0
        xnorm = scaled_norm(system.scale, x)
        radius = jnp.where(
            first, self.initial_radius_factor * jnp.where(xnorm > 0, xnorm, 1.0), s.radius)

        # 1. The dogleg step, projected onto the box.
        p, gauss_newton = dogleg_step(system.scale, system.p_gn, p_cauchy, radius)
        x_new, step = problem.projected_step(x, p, system.fixed)
        pnorm = scaled_norm(system.scale, step)
        radius = jnp.where(first, jnp.minimum(radius, pnorm), radius)

        # 2. The trial and the radius update.
        trial = evaluate_point(problem, x_new)
        actual = jnp.where(trial.finite, problem.reduction(point.r, trial.r), -jnp.inf)
        predicted, slope = model_decrease(system, point.grad, step)
        ratio = tr.gain_ratio(actual, predicted)
        shrink = tr.interpolated_shrink(slope, actual)
        shrink = jnp.where(trial.cost >= 100.0 * point.cost, 0.1, shrink)
        new_radius, accepted = tr.update_radius(
            tr.MINPACK, radius, ratio, pnorm, inside=gauss_newton, shrink_factor=shrink)
        if self.contraction > 0:
            natural = gauss_newton & natural_monotonicity(
                problem, point, system.R, system.scale, system.fixed, trial.r, pnorm,
                self.contraction)
            accepted = accepted | natural
            new_radius = jnp.where(natural, jnp.maximum(new_radius, 2.0 * pnorm), new_radius)
        accepted = accepted & trial.finite

        # 3. Stopping tests (MINPACK's, as LevenbergMarquardt), relative to the old point.
        nonfinite = nonfinite_since_accept(s.counters.nonfinite, trial.finite, accepted)
        status = stop_status(self, cost=point.cost, actual=actual, predicted=predicted,
                             ratio=ratio, step_bound=new_radius, xnorm=xnorm, accepted=accepted,
                             gtol_measure=trial.gtol_measure, nonfinite=nonfinite)
        new_point = lax.cond(accepted, lambda: trial, lambda: point)
        status = confirm_stop(status, backed_at(problem, self, status, accepted, new_point,
                                                system, s.start_cost))
        counters = s.counters.tally(accepted, ~accepted, 1, 1, nonfinite=nonfinite)
        return DoglegState(
            point=new_point, system=system, p_cauchy=p_cauchy, factored=~accepted,
            radius=new_radius, trial_radius=radius, step_norm=jnp.sqrt(jnp.sum(step * step)),
            accepted=accepted, counters=counters, start_cost=s.start_cost, status=status,
        )

