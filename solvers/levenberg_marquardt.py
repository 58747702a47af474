"""Levenberg-Marquardt after Moré (1978), as in MINPACK's ``lmder``, with optional geodesic
acceleration (Transtrum & Sethna 2012), robust losses and box bounds.

References:
- J. J. Moré (1978), "The Levenberg-Marquardt algorithm: implementation and theory",
  Numerical Analysis (Dundee 1977), Lecture Notes in Mathematics 630, pp. 105-116.
- B. S. Garbow, K. E. Hillstrom, J. J. Moré (1980), MINPACK-1 (``lmder``, ``lmpar``).
- M. K. Transtrum, J. P. Sethna (2012), "Improvements to the Levenberg-Marquardt algorithm for
  nonlinear least-squares minimization", arXiv:1201.5885 (geodesic acceleration).
- D. P. Bertsekas (1982), "Projected Newton methods for optimization problems with simple
  constraints", SIAM J. Control Optim. 20(2) (active set); C. Kanzow, N. Yamashita,
  M. Fukushima (2004), "Levenberg-Marquardt methods with strong local convergence properties
  for solving nonlinear equations with convex constraints", J. Comput. Appl. Math. 172
  (projected LM step).

The method. At an accepted point ``x`` with residuals ``r`` and Jacobian ``J`` (after the
robust-loss correction, :mod:`jacopt.losses`), the step solves the trust-region problem

    min_p ||J p + r||   subject to   ||D p|| <= radius,

whose solution is ``p(lam) = -(J^T J + lam D^T D)^{-1} J^T r`` for the ``lam >= 0`` with
``||D p(lam)|| = radius`` (or ``lam = 0`` when the Gauss-Newton step is within 10% of the
radius, as MINPACK). ``D = 1 / x_scale``; by default ``D = I`` (``x_scale=1``, the scaling of
SciPy's ``trf`` and Optimistix), or Moré's scaling with ``x_scale="jac"``: the running maximum of
the raw Jacobian's column norms, which makes the iteration invariant to the units of each
parameter, but which a far start can freeze at huge column norms, so that the region stays too
small in the parameters that matter (on the Moré-Garbow-Hillstrom problems from 1, 10 and 100
times their starts the identity solves more runs; the robustness benchmark measures both).

Linear algebra (never the normal equations): at each accepted point one Householder QR of the
augmented ``[J | r]`` (``m x (n+1)``, LAPACK ``geqrf``, ``Q`` never formed) gives ``R`` and
``Q^T r``, and one triangular solve the Gauss-Newton step. A damped step is the QR of the small
stacked ``[R | Q^T r; sqrt(lam) D | 0]`` (``2n x (n+1)``), which equals the QR of
``[J; sqrt(lam) D]`` because ``Q`` is orthogonal, and one triangular solve.

Clearly fewer residuals than parameters (``m <= 2n/3``, e.g. fitting a network's weights to a
few outputs; MINPACK refuses ``m < n``) and no bounds: ``R`` is then singular, so there is no
Gauss-Newton step and every trial is damped, and the ``n x n`` factorisations above would spend
most of their work on zero rows. The solver then works in the dual (row) space instead (Björck,
*Numerical Methods for Least Squares Problems*, 1996, section 2.7.1 and 5.1.3): with
``A = J~ D^{-1}`` (``m x n``) and ``q = D p``, the damped step is
``q = -A^T (A A^T + lam I)^{-1} r~``, computed from the QR ``Q S`` of the stacked
``[A^T; sqrt(lam) I_m]`` (``(n+m) x m``, the transposed analogue of the stacked system above, never
``A A^T``) as ``q = -Q_top S^{-T} r~`` (``Q_top`` the first ``n`` rows of ``Q``, formed: a small
``(n+m) x m`` matrix). Nothing is factorised at a new point, and the steps are the same as the
primal form's up to rounding. A trial costs O((n + m) m^2) against the primal form's O(n^3) per
trial and per point (for ``m < n`` its QR pads ``[J~ | r~]`` with zero rows to ``n + 1``), so the
dual form wins for small ``m / n`` (a ``20 x 47`` MLP Jacobian: one ``67 x 20`` QR per trial
instead of a ``48 x 48`` and a ``94 x 48`` one) and loses as ``m`` nears ``n``, because it forms
``Q``; the crossover :func:`is_dual` uses, ``m <= 2n/3``, is measured (design notes).

Choosing ``lam`` (one flat loop, no inner iteration): MINPACK's ``lmpar`` iterates Moré's
safeguarded Newton method on ``phi(lam) = ||D p(lam)|| - radius`` to 10% before each trial. Here
each trial does ONE such Newton step instead: the trial uses the current estimate of ``lam``
(clipped to Moré's bounds, started from his first guess), and after the radius update the same
step's ``||D p||`` and ``||S^{-T} D^2 p||`` (``S`` the stacked QR's factor) give the Newton
correction towards the new radius for the next trial. Every step is still the exact
trust-region step for the radius ``||D p(lam)||`` it has, and the gain ratio and radius rule use
that length, so the method stays a trust-region method; the damping converges over the trials a
rejection series makes anyway. This keeps the compiled loop small (no nested loop, at most one
damped factorisation per trial); the design notes compare it with the full ``lmpar``.

Cost per trial: one evaluation of the residuals and Jacobian (one linearisation of the user's
function plus ``min(m, n)`` JVPs/VJPs), O(n^3) for a damped step (none for a Gauss-Newton step),
and O(m n^2) for the QR of a newly accepted point (O(n^3) when ``m < n``: the QR pads with
zero rows); in the dual form O((n + m) m^2) for every trial and O(m n) at a new point.

The loop (compile time is part of the product): one iteration evaluates the pending trial,
accepts or rejects it, runs the stopping tests, factorises a newly accepted point and computes
the next trial. The start is evaluated by the first iteration (``evaluates_start_in_loop``),
so the user's function and its Jacobian are traced and compiled once, not once before the loop
and again inside it.

Acceptance. The radius follows MINPACK (:data:`jacopt.solvers.trust_region.MINPACK`) from the
gain ratio ``rho = actual / predicted reduction``, the actual reduction computed termwise
(:meth:`LeastSquaresProblem.reduction`) so it stays accurate when the costs agree to many
digits. A trial whose residuals or Jacobian are non-finite is rejected (``rho = -inf``) and
shrinks the radius, so the state always holds the best finite point. Near the solution the
cost is flat to rounding: the predicted reduction of a Gauss-Newton step falls below the
rounding noise of the cost difference (about ``eps * ||y|| * ||r||``) long before the
parameters stop improving, and the gain ratio becomes noise. A Gauss-Newton step that the ratio
rejects is then still accepted when Deuflhard's natural monotonicity test holds: the simplified
correction ``J^+ r(x + p)`` (old Jacobian, semi-normal equations on ``R``) is at most
``contraction`` (0.5) times the step in the ``D`` norm (P. Deuflhard, *Newton Methods for
Nonlinear Problems*, 2004, section 4.3), and the cost rose by no more than ``sqrt(eps) C``
(as Gauss-Newton's; a larger rise is no rounding noise). This test measures progress in the
parameters, not in the cost, and is what takes every NIST run to the accuracy float64 allows.

Stopping (checked after every trial):

- ``GTOL``: ``max_j |g_j| / (||J_j|| ||r||) <= gtol`` at an accepted point (MINPACK's cosine
  between the residual and the Jacobian's columns; for a robust loss on ``r~`` and ``J~``).
- ``FTOL``: the actual and predicted relative reductions of the cost are both ``<= ftol``
  (default 0: off, because the cost stops resolving progress first).
- ``XTOL``: ``radius <= xtol * ||D x||`` (MINPACK's test: the radius follows twice the step
  after good steps and shrinks after rejections).
- ``PRECISION_LIMIT``: ``radius <= eps * ||D x||``: no representable progress is left; or
  the iteration has stalled at rounding level: ``stall_limit`` (5) accepted steps in a row
  neither reached a cost below every earlier accepted point's nor were shorter than every
  earlier accepted step. Converging runs do one or the other at every step (the natural monotonicity
  test below makes accepted Gauss-Newton steps contract); a run cycling through a few points
  one or two ulps apart, which the other tests can miss when ``||D x||`` is dominated by a
  large component, does neither (seen in batches of Misra1a fits).
- ``NONFINITE``: the start is non-finite, or the trust region collapsed on non-finite trials.
- ``STALLED`` (a failure): ``FTOL``, ``XTOL`` or ``PRECISION_LIMIT`` fired but no first-order
  test backs the point kept (:func:`~jacopt.solvers.least_squares_problem.first_order_backed`:
  a small scaled gradient, a full Gauss-Newton step ``-R^{-1} Q^T r`` that would gain or move
  nothing at the tolerance, or vanished residuals). MINPACK reports its f and x tests as
  success without such a check (on Powell's badly scaled problem from 100 x0 the first radius
  ``||D x0||`` is 4e-42 and ``ftol`` fired at F = 1).

Bounds: the components at a bound whose negative gradient points outwards (Bertsekas' active
set) are fixed for the next step; the step of the others is the LM step of the reduced problem,
and the trial point is its projection onto the box (Kanzow, Yamashita & Fukushima). The gain
ratio uses the model's reduction along the projected step, so acceptance stays honest.

Geodesic acceleration (``geodesic=True``): after the velocity ``v = p(lam)``, the second
directional derivative ``r_vv = d^2/dt^2 r(x + t v)`` (one JVP of a JVP) gives the
acceleration ``a = -(J^T J + lam D^T D)^{-1} J^T r_vv`` from the same factorisation and the
trial step is ``v + a / 2``, used when ``2 ||D a|| / ||D v|| <= geodesic_ratio``.

``History.damping`` records ``lam`` (the Levenberg-Marquardt parameter) of each trial.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jacopt.linalg import damped_step, dual_factor, solve_upper, solve_upper_transposed
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
    scaled_gradient_norm,
    updated_scale,
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


class Factorisation(NamedTuple):
    """What the trials from one accepted point need, computed once, lazily, at the first step
    from that point: the scaling ``D``, the fixed (active-bound) components, the QR ``R``,
    ``qtr`` of ``[J~ | r~]``, the Gauss-Newton step ``p_gn = -R^{-1} qtr`` with
    ``gn_norm = ||D p_gn||`` (``inf`` when ``R`` is singular), ``newton_slope`` (Moré's
    ``||R^{-T} D^2 p_gn||^2 / ||D p_gn||^2``, for the lower bound of ``lam``) and
    ``gnorm = ||D^{-1} J~^T r~||`` (for the upper bound).

    In the dual form (``m <= 2n/3``, no bounds: :func:`is_dual`; module docstring) ``R`` holds
    ``A = J~ D^{-1}`` (``m x n``) and ``qtr`` holds ``r~``, so that
    ``||R q + qtr|| = ||J~ p + r~||`` for ``q = D p``, as ``||R p + qtr||`` is up to a constant in
    the primal form; there is no Gauss-Newton step (``p_gn = 0``, ``gn_norm = inf``,
    ``newton_slope = 0``)."""

    scale: Any
    fixed: Any
    R: Any
    qtr: Any
    p_gn: Any
    gn_norm: Any
    newton_slope: Any
    gnorm: Any


class Trial(NamedTuple):
    """The trial step waiting to be evaluated: the point ``x``; the damping ``lam`` it was
    computed with (0 for the Gauss-Newton step, ``gauss_newton``); its scaled and plain lengths
    ``pnorm = ||D step||``, ``step_norm``; the model's predicted reduction and slope
    ``g . step``; ``dpnorm`` and ``qn2`` (``||D p||`` and ``||S^{-T} D^2 p / ||D p|| ||^2``
    of the unprojected step, for Moré's Newton update of ``lam``); and ``xnorm = ||D x||`` of
    the point it starts from (for the ``xtol`` test)."""

    x: Any
    lam: Any
    gauss_newton: Any
    pnorm: Any
    step_norm: Any
    predicted: Any
    slope: Any
    dpnorm: Any
    qn2: Any
    xnorm: Any


class LMState(NamedTuple):
    """Loop carry: the accepted point ``point`` (:class:`PointEvaluation`: ``x``, raw ``r``
    and ``J``, cost, gradient...; placeholders until the first iteration has evaluated the
    start), its :class:`Factorisation` ``fac``, the pending :class:`Trial` ``trial``, the
    radius, the damping and length of the last evaluated trial (``damping``, ``step_norm``),
    whether it was ``accepted``, the :class:`~jacopt.solvers.stopping.Counters` ``counters``
    (``stalled``: accepted steps in a row without progress; ``nonfinite``), ``shortest``, the
    shortest accepted step so far (``||D step||``), ``lowest``, the lowest accepted cost so
    far, ``start_cost``, ``started`` (the start has been evaluated) and ``status``."""

    point: Any
    fac: Any
    trial: Any
    radius: Any
    damping: Any
    step_norm: Any
    accepted: Any
    counters: Counters
    shortest: Any
    lowest: Any
    start_cost: Any
    started: Any
    status: Any


def is_dual(problem: LeastSquaresProblem, m: int, n: int) -> bool:
    """Whether a problem with ``m`` residuals and ``n`` parameters is solved in the dual form
    (module docstring): at most ``2n/3`` residuals (the measured crossover; nearer ``n`` the
    primal form is faster), and no bounds (an active set can leave ``m`` or fewer free
    parameters, where the primal form has a Gauss-Newton step)."""
    return 3 * m <= 2 * n and not problem.bounded


def factorise(problem: LeastSquaresProblem, point: PointEvaluation, scale) -> Factorisation:
    """The O(m n^2) (``m < n``: O(n^3)) work of a new point: update the scaling, one Householder QR
    of the corrected ``[J~ | r~]`` and two triangular solves (in the dual form only the scaled
    ``A = J~ D^{-1}``, O(m n))."""
    if is_dual(problem, *point.J.shape):  # (unbounded: nothing is fixed)
        rc, Jc = problem.corrected(point.r, point.J)
        scale = updated_scale(problem, scale, point.column_norms)
        A = Jc / scale
        return Factorisation(scale, jnp.zeros(point.x.shape, bool), A, rc,
                             jnp.zeros_like(point.x), jnp.asarray(jnp.inf, A.dtype),
                             jnp.zeros((), A.dtype), scaled_gradient_norm(point.grad, scale))
    scale, fixed, R, qtr = factor_point(problem, point, scale)
    gnorm = scaled_gradient_norm(jnp.where(fixed, 0.0, point.grad), scale)
    p_gn = -solve_upper(R, qtr)
    dx = scale * p_gn
    gn_norm = jnp.sqrt(jnp.sum(dx * dx))
    # R D^{-1} numerically singular (a diagonal entry <= n eps times the largest, as
    # gauss_newton_step): the triangular solve's step is finite but rounding noise along the
    # null space (1e14 long on a rank-1 linear problem), so there is no Gauss-Newton step
    ratio = jnp.abs(jnp.diagonal(R)) / scale
    n = ratio.shape[0]
    full_rank = jnp.isfinite(gn_norm) & (
        jnp.min(ratio) > n * jnp.finfo(ratio.dtype).eps * jnp.max(ratio))
    gn_norm = jnp.where(full_rank, gn_norm, jnp.inf)
    w = solve_upper_transposed(R, scale * dx / jnp.where(full_rank & (gn_norm > 0), gn_norm, 1.0))
    slope = jnp.sum(w * w)
    slope = jnp.where(full_rank & jnp.isfinite(slope), slope, 0.0)
    return Factorisation(scale, fixed, R, qtr, p_gn, gn_norm, slope, gnorm)


def damping_bounds(fac: Factorisation, radius):
    """Moré's safeguards ``[lower, upper]`` for the ``lam`` with ``||D p(lam)|| = radius``:
    the Newton estimate from ``lam = 0`` (when ``R`` has full rank) and
    ``||D^{-1} J^T r|| / radius``."""
    tiny = jnp.finfo(jnp.result_type(radius)).tiny
    slope = fac.newton_slope
    lower = jnp.where(slope > 0, (fac.gn_norm - radius) / radius / jnp.where(slope > 0, slope, 1.0),
                      0.0)
    lower = jnp.where(jnp.isfinite(lower), jnp.maximum(lower, 0.0), 0.0)
    upper = fac.gnorm / radius
    upper = jnp.where(upper > 0, upper, tiny / jnp.minimum(radius, 0.1))
    return lower, upper


def geodesic_correction(problem: LeastSquaresProblem, point: PointEvaluation, solve, v):
    """Transtrum & Sethna's acceleration ``a`` for the velocity ``v``: ``a`` minimises
    ``||J~ a + r~_vv||^2 + lam ||D a||^2`` with ``r_vv`` the second directional derivative of
    the residuals along ``v`` (one JVP of a JVP of the residual function), by the velocity's
    own factorisation: ``solve(b) = (J~^T J~ + lam D^T D)^{-1} J~^T b``."""
    f = problem.residual_only

    def along(y):
        return jax.jvp(f, (y,), (v,))[1]

    _, r_vv = jax.jvp(along, (point.x,), (v,))
    _, w_j = problem.loss.weights(point.r, problem.f_scale)
    return -solve(r_vv if w_j is None else w_j * r_vv)


@dataclasses.dataclass(frozen=True)
class LevenbergMarquardt(LeastSquaresSolver):
    """Levenberg-Marquardt with trust-region control of the damping (Moré 1978).

    Options (hashable; a static argument of the compiled solve):

    - ``ftol``, ``xtol``, ``gtol``: the stopping tests (module docstring). The defaults stop a
      run only when the iterates cannot improve further in the working precision, so fits reach
      the accuracy the problem's conditioning allows (NIST StRD: ``python -m
      jacopt.benchmarks.nist``). ``ftol = 0`` disables the cost test, which stops too early on
      large-residual problems (the cost is flat to working precision long before the
      parameters are).
    - ``initial_radius_factor``: the first radius is this times ``||D x0||`` (or this itself
      when ``x0 = 0``); MINPACK's ``factor`` (MINPACK's default is 100; 1 is safer on the
      NIST problems, e.g. BoxBOD from its first start).
    - ``contraction``: the natural-monotonicity acceptance (module docstring): a Gauss-Newton
      step is also accepted when the simplified correction ``||D J^+ r(x + p)||`` is at most
      ``contraction * ||D p||``; 0 disables it.
    - ``geodesic``: add Transtrum & Sethna's geodesic acceleration (one extra second-order
      directional derivative of the residuals per trial); ``geodesic_ratio`` caps
      ``2 ||D a|| / ||D v||`` (0.75 in the paper): a larger acceleration is dropped.
    - ``lazy_jacobian``: evaluate a trial's residuals only, and the Jacobian once the trial
      is accepted (MINPACK's ``lmder``), instead of ``r`` and ``J`` together at every trial:
      fewer Jacobians where trials are often rejected, at the price of a second evaluation
      of ``r`` (with ``J``) at each accepted point. ``njev`` counts the linearisations.

    The radius rule is :data:`jacopt.solvers.trust_region.MINPACK`. ``History.damping``
    records the ``lam`` of each trial (0 for a Gauss-Newton step).
    """

    ftol: float = 0.0
    xtol: float = 1e-15
    gtol: float = 1e-15
    initial_radius_factor: float = 1.0
    contraction: float = 0.5
    geodesic: bool = False
    geodesic_ratio: float = 0.75
    stall_limit: int = 5
    lazy_jacobian: bool = False

    # :func:`jacopt._loop.run` lets the first iteration evaluate the start, so the user's
    # function (and its Jacobian) is traced and compiled once, inside the loop body.
    evaluates_start_in_loop = True
    # D = I unless the user asks for Moré's scaling (module docstring)
    default_x_scale = 1.0

    def __post_init__(self):
        check_options(self, nonnegative=TOLERANCES, positive=("initial_radius_factor",
                      "geodesic_ratio"), fraction=("contraction",), counts=("stall_limit",),
                      flags=("geodesic", "lazy_jacobian"))

    def init(self, problem: LeastSquaresProblem, x0):
        """Placeholders of the right shapes; nothing is evaluated here."""
        dtype = x0.dtype
        n = x0.shape[0]
        m = jax.eval_shape(problem.residual_only, x0).shape[0]

        def zeros(*shape, kind=dtype):
            return jnp.zeros(shape, kind)

        point = placeholder_point(problem, x0)
        rows = m if is_dual(problem, m, n) else n  # the dual form keeps A (m x n), r~ (m,)
        fac = Factorisation(scale=zeros(n), fixed=zeros(n, kind=bool), R=zeros(rows, n),
                            qtr=zeros(rows), p_gn=zeros(n), gn_norm=zeros(),
                            newton_slope=zeros(), gnorm=zeros())
        trial = Trial(x=x0, lam=zeros(), gauss_newton=jnp.asarray(False), pnorm=zeros(),
                      step_norm=zeros(), predicted=zeros(), slope=zeros(), dpnorm=zeros(),
                      qn2=zeros(), xnorm=zeros())
        return LMState(point=point, fac=fac, trial=trial, radius=zeros(), damping=zeros(),
                       step_norm=zeros(), accepted=jnp.asarray(False),
                       counters=Counters.start(), shortest=jnp.asarray(jnp.inf, dtype),
                       lowest=jnp.asarray(jnp.inf, dtype), start_cost=zeros(),
                       started=jnp.asarray(False),
                       status=jnp.asarray(Status.RUNNING, jnp.int32))

    def step(self, problem: LeastSquaresProblem, s: LMState) -> LMState:
        """One loop iteration: evaluate the pending trial (the start, on the first iteration),
        accept or reject it and test for convergence, factorise a newly accepted point, and
        compute the next trial."""
        point, fac, pending = s.point, s.fac, s.trial
        dtype = pending.x.dtype
        first = ~s.started

        # 1. The trial: gain ratio, radius (MINPACK) and acceptance.
        if self.lazy_jacobian:  # the residuals only; J once the trial is taken (below); the
            # start is linearised there, so its residuals are not evaluated twice
            trial_r = lax.cond(first, lambda: jnp.zeros_like(point.r),
                               lambda: problem.residual_only(pending.x))
            trial_cost = problem.cost(trial_r)
            finite = jnp.isfinite(trial_cost) & jnp.all(jnp.isfinite(pending.x))
        else:
            trial = evaluate_point(problem, pending.x)
            trial_r, trial_cost = trial.r, trial.cost
            finite = trial.finite & jnp.all(jnp.isfinite(pending.x))
        actual = jnp.where(finite, problem.reduction(point.r, trial_r), -jnp.inf)
        ratio = tr.gain_ratio(actual, pending.predicted)
        shrink = tr.interpolated_shrink(pending.slope, actual)
        shrink = jnp.where(trial_cost >= 100.0 * point.cost, 0.1, shrink)
        radius, accepted = tr.update_radius(
            tr.MINPACK, s.radius, ratio, pending.pnorm, inside=pending.gauss_newton,
            shrink_factor=shrink)
        dual = is_dual(problem, *point.J.shape)
        if self.contraction > 0 and not dual:  # (no Gauss-Newton steps in the dual form)
            # Deuflhard's natural monotonicity test for a Gauss-Newton step: the simplified
            # correction J+ r(x + p) (old Jacobian) must be shorter than the step. It decides
            # where the cost is flat to rounding and the gain ratio is noise; a cond, so it
            # only runs for the Gauss-Newton steps the gain ratio rejected.
            def natural_test():
                return natural_monotonicity(problem, point, fac.R, fac.scale, fac.fixed,
                                            trial_r, pending.pnorm, self.contraction)

            natural = lax.cond(pending.gauss_newton & ~accepted & finite & ~first
                               & within_rounding(actual, point.cost),
                               natural_test, lambda: jnp.asarray(False))
            accepted = accepted | natural
            radius = jnp.where(natural, jnp.maximum(radius, 2.0 * pending.pnorm), radius)
        accepted = accepted & finite & ~first
        if self.lazy_jacobian:
            # J at the start and at an accepted trial only; a non-finite J rejects the trial
            trial = lax.cond(
                accepted | first, lambda: evaluate_point(problem, pending.x),
                lambda: point._replace(x=pending.x, r=trial_r, cost=trial_cost,
                                       gtol_measure=jnp.asarray(jnp.inf, dtype)))
            broken = (accepted | first) & ~trial.finite
            accepted, finite = accepted & ~broken, finite & ~broken
        # One safeguarded Newton step of Moré's lmpar iteration, from the damping just used
        # towards the damping whose step has length the new radius (0 after a Gauss-Newton
        # step).
        correction = ((pending.dpnorm - radius) / radius
                      / jnp.where(pending.qn2 > 0, pending.qn2, 1.0))
        lower_new, _ = damping_bounds(fac, radius)
        lam_next = jnp.where(jnp.isfinite(correction),
                             jnp.maximum(lower_new, pending.lam + correction), pending.lam)
        lam_next = jnp.where(pending.gauss_newton | first, 0.0, lam_next)

        # 2. Stopping tests, relative to the cost and the point before the trial; stalled at
        #    rounding level: accepted steps that neither reach a new lowest cost nor get
        #    shorter (module docstring).
        progress = (trial.cost < s.lowest) | (pending.pnorm < s.shortest)
        stalled = jnp.where(accepted, jnp.where(progress, 0, s.counters.stalled + 1),
                            s.counters.stalled)
        nonfinite = nonfinite_since_accept(s.counters.nonfinite, finite, accepted)
        status = stop_status(self, cost=point.cost, actual=actual, predicted=pending.predicted,
                             ratio=ratio, step_bound=radius, xnorm=pending.xnorm,
                             accepted=accepted, gtol_measure=trial.gtol_measure,
                             nonfinite=nonfinite, limit=stalled >= self.stall_limit)
        status = jnp.where(first, start_status(trial, self.gtol), status)

        # 3. The new point and, when it changed, its factorisation (lax.cond: no copies of
        #    the unchanged point, and no QR after a rejected trial).
        take = accepted | first
        point, fac = lax.cond(take, lambda: (trial, factorise(problem, trial, fac.scale)),
                              lambda: (point, fac))
        # a stop on f or x counts only when a first-order test backs it at the point kept
        # (module docstring), with its full Gauss-Newton step (-R^{-1} qtr: gains ||qtr||^2/2)
        start_cost = jnp.where(first, point.cost, s.start_cost)
        gn_gain = jnp.where(jnp.isfinite(fac.gn_norm), 0.5 * jnp.sum(fac.qtr * fac.qtr),
                            jnp.inf)
        p_gn = jnp.where(jnp.isfinite(fac.gn_norm), fac.p_gn, jnp.inf)
        status = confirm_stop(status, first_order_backed(self, point, start_cost, p_gn, gn_gain))

        # 4. The next trial: Gauss-Newton when it fits the region (within 10%, as MINPACK),
        #    else the damped step for the current damping estimate, kept inside Moré's bounds.
        x = point.x
        xnorm = jnp.sqrt(jnp.sum((fac.scale * x) ** 2))
        radius = jnp.where(
            first, self.initial_radius_factor * jnp.where(xnorm > 0, xnorm, 1.0), radius)
        gauss_newton = fac.gn_norm <= 1.1 * radius
        lower, upper = damping_bounds(fac, radius)
        lam_try = jnp.clip(lam_next, lower, upper)
        lam_try = jnp.where(lam_try > 0, lam_try, jnp.where(
            jnp.isfinite(fac.gn_norm), fac.gnorm / fac.gn_norm, 0.0))
        lam_try = jnp.where(lam_try > 0, lam_try, jnp.maximum(jnp.finfo(dtype).tiny, 1e-3 * upper))

        if dual:
            # every step is damped (no Gauss-Newton step when m < n); Moré's Newton update
            # needs ||q|| and q^T (A^T A + lam I)^{-1} q / ||q||^2 with q = D p = A^T v
            gauss_newton = jnp.asarray(False)
            Q_top, S = dual_factor(fac.R, lam_try)
            w = solve_upper_transposed(S, fac.qtr)
            q = -(Q_top @ w)
            v = -solve_upper(S, w)  # (A A^T + lam I)^{-1} r~, negated
            t = Q_top @ solve_upper_transposed(S, v)  # (A^T A + lam I)^{-1} q
            dpnorm = jnp.sqrt(jnp.sum(q * q))
            qn2 = jnp.sum(q * t) / jnp.where(dpnorm > 0, dpnorm * dpnorm, 1.0)
            p = q / fac.scale

            def solve(b):
                return (Q_top @ solve_upper_transposed(S, b)) / fac.scale
        else:
            def damped():
                # the damped solve, and what Moré's Newton update of lam needs from it:
                # ||D p|| and ||S^{-T} D^2 p / ||D p||||^2
                p, S = damped_step(fac.R, fac.qtr, fac.scale, lam_try, problem.batched)
                dp = fac.scale * p
                dpnorm = jnp.sqrt(jnp.sum(dp * dp))
                q = solve_upper_transposed(
                    S, fac.scale * dp / jnp.where(dpnorm > 0, dpnorm, 1.0))
                return p, S, dpnorm, jnp.sum(q * q)

            def undamped():
                return fac.p_gn, fac.R, fac.gn_norm, jnp.ones((), dtype)

            # a cond, so the (frequent) Gauss-Newton steps skip the damped solve
            p, S, dpnorm, qn2 = lax.cond(gauss_newton, undamped, damped)

            def solve(b):
                _, Jc = problem.corrected(point.r, point.J)
                return solve_upper(S, solve_upper_transposed(S, Jc.T @ b))
        lam = jnp.where(gauss_newton, 0.0, lam_try)
        if self.geodesic:
            a = geodesic_correction(problem, point, solve, p)
            da = jnp.sqrt(jnp.sum((fac.scale * a) ** 2))
            dv = jnp.sqrt(jnp.sum((fac.scale * p) ** 2))
            use = (2.0 * da <= self.geodesic_ratio * dv) & jnp.isfinite(da)
            p = jnp.where(use, p + 0.5 * a, p)
        x_new, step = problem.projected_step(x, p, fac.fixed)
        # the two norms of this trial in one reduction (one kernel on CPU)
        pnorm, step_norm = jnp.sqrt(jnp.sum(jnp.stack([fac.scale * step, step]) ** 2, axis=1))
        radius = jnp.where(first, jnp.minimum(radius, pnorm), radius)
        # Model m(p) = C + g^T p + 0.5 ||J~ p||^2; for the plain damped step
        # -g^T p = ||R p||^2 + lam ||D p||^2 exactly (MINPACK's form, no cancellation).
        if problem.bounded or self.geodesic:
            _, Jc = problem.corrected(point.r, point.J)
            jp = Jc @ step
            slope = jnp.dot(point.grad, step)
            predicted = -(slope + 0.5 * jnp.sum(jp * jp))
        else:
            rp = fac.R @ (fac.scale * step if dual else step)
            model_gn = jnp.sum(rp * rp)
            slope = -(model_gn + lam * pnorm * pnorm)
            predicted = 0.5 * model_gn + lam * pnorm * pnorm
        next_trial = Trial(x=x_new, lam=lam, gauss_newton=gauss_newton, pnorm=pnorm,
                           step_norm=step_norm, predicted=predicted, slope=slope,
                           dpnorm=dpnorm, qn2=qn2, xnorm=xnorm)

        nfev = jnp.where(first, 1, 1 + int(self.geodesic)) if self.geodesic else 1
        njev = 1
        if self.lazy_jacobian:  # a linearisation (its r too) at each point taken
            njev = take.astype(jnp.int32)
            nfev = nfev + jnp.where(first, 0, njev)
        counters = s.counters.tally(accepted, ~accepted & ~first, nfev, njev, stalled=stalled,
                                    nonfinite=jnp.where(first, 0, nonfinite))
        zero = jnp.zeros((), dtype)
        return LMState(
            point=point, fac=fac, trial=next_trial, radius=radius,
            damping=jnp.where(first, zero, pending.lam),
            step_norm=jnp.where(first, zero, pending.step_norm), accepted=accepted,
            counters=counters,
            shortest=jnp.where(accepted, jnp.minimum(s.shortest, pending.pnorm), s.shortest),
            lowest=jnp.where(take, jnp.minimum(s.lowest, trial.cost), s.lowest),
            start_cost=start_cost, started=jnp.asarray(True), status=status)
