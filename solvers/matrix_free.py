"""Matrix-free (inexact) Levenberg-Marquardt, for least-squares problems too large to form the
Jacobian: ``J`` is only ever applied, never stored.

References:
- S. J. Wright, J. N. Holt (1985), "An inexact Levenberg-Marquardt method for large sparse
  nonlinear least squares", J. Austral. Math. Soc. Ser. B 26, pp. 387-403 (the damped step
  solved approximately by LSQR, stopped by a relative residual test).
- R. S. Dembo, S. C. Eisenstat, T. Steihaug (1982), "Inexact Newton methods", SIAM J. Numer.
  Anal. 19(2) (the forcing term: an inner solve stopped at a relative residual ``forcing``).
- H. B. Nielsen (1999), "Damping parameter in Marquardt's method", IMM-REP-1999-05, DTU;
  K. Madsen, H. B. Nielsen, O. Tingleff (2004), *Methods for non-linear least squares
  problems*, 2nd ed., IMM, DTU, Algorithm 3.16 (the damping update and acceptance rule).
- C. C. Paige, M. A. Saunders (1982), "LSQR", ACM TOMS 8(1) (:func:`jacopt.linalg.lsqr`);
  M. R. Hestenes, E. Stiefel (1952) (:func:`jacopt.linalg.cg`).
- D. P. Bertsekas (1982), SIAM J. Control Optim. 20(2) (active set); C. Kanzow, N. Yamashita,
  M. Fukushima (2004), J. Comput. Appl. Math. 172 (projected LM step), as in
  :mod:`jacopt.solvers.levenberg_marquardt`.

The method. At an accepted point ``x`` the residual function is linearised once
(:func:`jacopt.jacobian_operator`: one forward pass whose intermediate values are kept; then
``J v`` is one JVP and ``J^T u`` one transposed JVP). With the robust-loss correction
(:mod:`jacopt.losses`) applied to the products (``J~ v = w * (J v)``, ``J~^T u = J^T (w * u)``),
the step approximately solves the damped problem

    min_p ||J~ p + r~||^2 + lam ||D p||^2

by LSQR on ``[J~; sqrt(lam) D]`` (``linear_solver="lsqr"``, the default: the damping is built in
and ``cond(J)`` is not squared; the change of variable ``y = D p`` preconditions it) or by
conjugate gradients on the normal operator ``(J~^T J~ + lam D^2) p = -J~^T r~``
(``linear_solver="cg"``, preconditioned by ``D^2``). The inner solve stops after
``max_inner_steps`` iterations or at the relative tolerance ``forcing`` (for CG exactly the
inexact-Newton condition ``||(J~^T J~ + lam D^2) p + g|| <= forcing ||g||``; for LSQR Paige and
Saunders' tests with ``atol = btol = forcing``). Both iterations start at ``p = 0`` and their
first iterate is the (damped) Cauchy step, so a truncated solve is still a descent step.

``D`` is Moré's scaling, the running maximum of the column norms of the raw ``J``
(``x_scale="jac"``), which makes the iteration invariant to the units of each parameter (and,
as the LSQR change of variable, equilibrates the columns). A matrix-free solver has no columns
to measure: the norms are estimated from ``num_probes`` products ``J^T z`` with random sign
vectors ``z`` at each accepted point (:func:`column_norm_estimate`; Bekas, Kokiopoulou & Saad
2007). ``scaling="identity"`` uses ``D = I`` instead; an ``x_scale`` array gives ``D = 1 /
x_scale``.

Damping (Madsen, Nielsen & Tingleff, Algorithm 3.16, with the gain ratio of the step actually
taken): ``rho = (C(x) - C(x + s)) / (m(0) - m(s))`` with the model reduction ``m(0) - m(s) =
-(g^T s + ||J~ s||^2 / 2)`` computed from one more JVP (exact for an inexact ``s``). The trial
is accepted when ``rho > 0``; then ``lam *= max(1/3, 1 - (2 rho - 1)^3)``, ``nu = 2``; else
``lam *= nu``, ``nu *= 2``. The first ``lam`` is ``initial_damping`` times the Rayleigh quotient
``||J~ D^{-2} g||^2 / ||D^{-1} g||^2`` of the scaled Gauss-Newton matrix along the scaled
gradient (MNT use ``max_i (J^T J)_ii``, which needs ``J``; the Rayleigh quotient measures the
same top of the spectrum from one JVP).

Bounds: Bertsekas' active set is fixed (its columns masked out of the products), the step of
the others is the projected LM step, as in the dense solver.

Loop structure: one flat loop (:mod:`jacopt._loop`). An iteration linearises at the current
point (a linearisation holds closures, which a loop carry cannot), solves for the step,
evaluates the trial's residuals, decides acceptance and the damping, and, for an accepted
trial only (a ``lax.cond``), linearises there for the gradient, the scaling and the gtol test.

Stopping (after every iteration; default tolerances run to full precision):

- ``GTOL``: at an accepted point ``cos(r~, J~ d) = g^T d / (||r~|| ||J~ d||) <= gtol`` with
  ``d = D^{-2} g`` (free components): the cosine between the residual vector and the image of
  the scaled steepest-descent direction, zero exactly at a stationary point and free of units
  (MINPACK's gtol test takes the same cosine against every column of ``J``, which a matrix-free
  solver does not have).
- ``FTOL``: the actual and predicted relative reductions are ``<= ftol`` (default 0: off).
- ``XTOL``: the step has ``||D s|| <= xtol ||D x||`` (rejections raise ``lam``
  geometrically, so the step shrinks below it once no trial decreases the cost).
- ``PRECISION_LIMIT``: ``||D s|| <= eps ||D x||``.
- ``NONFINITE``: the start is non-finite; the steps collapsed on non-finite trials; or an
  accepted point's gradient is non-finite (the previous point is kept).
- ``STALLED`` (a failure): an f, x or rounding stop where neither the cosine is at most
  ``max(gtol, eps^(1/3))`` nor the residuals vanished
  (:func:`~jacopt.solvers.least_squares_problem.first_order_backed`).

Cost per iteration: one linearisation (a forward pass keeping its intermediate values) and
one residual evaluation; at most ``max_inner_steps`` inner iterations of one JVP and one
transposed JVP each; one JVP for the model reduction; for an accepted trial one more
linearisation, one transposed JVP (the gradient), one JVP (the gtol cosine) and
``num_probes`` transposed JVPs (the scaling); plus O(m + n) vector work. Memory O(m + n) plus
the linearisation's stored intermediate values: never ``m x n``. The result's ``jac`` is
``None``.

The start is linearised by the first iteration (``evaluates_start_in_loop``), not before the
loop. ``History.damping`` records the ``lam`` of the next trial. Derivatives of the solution with
respect to ``args`` (``least_squares``' ``implicit_diff``) form the dense ``n x n`` Hessian at
the solution: they are for small ``n`` only.

Its NIST StRD accuracy beside the dense solver's is in the design notes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jacopt.linalg import cg, lsqr
from jacopt.operators import jacobian_operator
from jacopt.solvers import trust_region as tr
from jacopt.solvers.least_squares_problem import (
    TOLERANCES,
    LeastSquaresProblem,
    LeastSquaresSolver,
    PointEvaluation,
    check_options,
    scaled_norm,
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

LINEAR_SOLVERS = ("lsqr", "cg")
SCALINGS = ("probes", "identity")


class MatrixFreeTrial(NamedTuple):
    """The trial waiting to be evaluated: the point ``x``, the model's ``predicted``
    reduction, ``pnorm = ||D s||`` and ``step_norm = ||s||`` of its step ``s``, and ``xnorm =
    ||D x||`` of the point it starts from."""

    x: Any
    predicted: Any
    pnorm: Any
    xnorm: Any
    step_norm: Any


class MatrixFreeLMState(NamedTuple):
    """Loop carry: the accepted ``point`` (:class:`PointEvaluation` with ``J = None`` and
    ``column_norms = None``; placeholders until the first iteration has evaluated the start),
    the scaling ``D`` (n,), the damping ``lam`` of the pending :class:`MatrixFreeTrial`
    ``trial`` and its growth factor ``nu``, the last evaluated trial's step norm and
    acceptance, the :class:`~jacopt.solvers.stopping.Counters` ``counters`` (``nfev`` counts
    evaluations of the residual function, a linearisation counting as one, ``njev``
    linearisations, each giving ``J`` as an operator; ``inner_steps`` the LSQR or CG
    iterations, each one JVP and one transposed JVP), the ``start_cost``, ``started`` (the
    start has been evaluated) and the status."""

    point: Any
    scale: Any
    lam: Any
    nu: Any
    trial: MatrixFreeTrial
    step_norm: Any
    accepted: Any
    counters: Counters
    start_cost: Any
    started: Any
    status: Any
    carry: Any = None  # what a subclass keeps per accepted point (see ``_linearise``)

    @property
    def damping(self):
        """What ``History.damping`` records for this solver."""
        return self.lam


class Linearisation(NamedTuple):
    """``J~`` at one point as products: the corrected residuals ``rc`` (m,), ``mv: v -> J~ v``
    (n,) -> (m,) and ``rmv: u -> J~^T u`` (m,) -> (n,), both with the ``fixed`` (n,) components
    masked out, and ``raw_rmv: u -> J^T u`` of the raw Jacobian (for the column norms)."""

    rc: Any
    mv: Any
    rmv: Any
    fixed: Any
    raw_rmv: Any


def _norm(v):
    return jnp.sqrt(jnp.sum(v * v))


def linearise(problem: LeastSquaresProblem, x, grad=None, op=None):
    """``(r, grad, lin)`` at ``x``: one forward pass that keeps its intermediate values
    (:func:`jacopt.jacobian_operator`; or ``op``, anything with ``value``, ``mv`` and ``rmv``
    for the raw residuals and Jacobian at ``x``), and one transposed JVP for ``grad = J~^T
    r~`` unless ``grad`` is given (it fixes the active set: Bertsekas' components at a bound
    whose negative gradient points outwards)."""
    if op is None:
        op = jacobian_operator(problem.residual, x, problem.args)
    r = op.value
    w_r, w_j = problem.loss.weights(r, problem.f_scale)
    if w_r is None:
        rc, mv, rmv = r, op.mv, op.rmv
    else:
        rc = w_r * r

        def mv(v):
            return w_j * op.mv(v)

        def rmv(u):
            return op.rmv(w_j * u)

    if grad is None:
        grad = rmv(rc)
    fixed = problem.active_set(x, grad)
    if problem.bounded:
        full_mv, full_rmv = mv, rmv

        def mv(v):
            return full_mv(jnp.where(fixed, 0.0, v))

        def rmv(u):
            return jnp.where(fixed, 0.0, full_rmv(u))

    return r, grad, Linearisation(rc, mv, rmv, fixed, op.rmv)


def describe(problem: LeastSquaresProblem, x, r, grad, lin: Linearisation, scale):
    """The :class:`PointEvaluation` at ``x`` (``J = None``; ``gtol_measure`` the cosine
    ``g^T d / (||r~|| ||J~ d||)``, ``d = D^{-2} g`` on the free components; for a robust loss
    ``g^T d / (||rho' r|| ||J d||)``, as the dense solvers' measure, since ``r~`` grows without
    bound where the loss's curvature is clipped) and the scaled Rayleigh quotient
    ``||J~ d||^2 / (g^T d)``. One JVP."""
    g_free = jnp.where(lin.fixed, 0.0, grad)
    d = g_free / (scale * scale)
    jd = lin.mv(d)
    jd_norm = _norm(jd)
    gd = jnp.sum(g_free * d)
    _, w_j = problem.loss.weights(r, problem.f_scale)
    if w_j is None:
        denom = _norm(lin.rc) * jd_norm
    else:  # rho' r = w_j r~ and J d = (J~ d) / w_j
        denom = _norm(w_j * lin.rc) * _norm(jd / w_j)
    cosine = jnp.where(denom > 0, gd / jnp.where(denom > 0, denom, 1.0), 0.0)
    curvature = jnp.where(gd > 0, jd_norm ** 2 / jnp.where(gd > 0, gd, 1.0), 0.0)
    cost = problem.cost(r)
    finite = (jnp.isfinite(cost) & jnp.all(jnp.isfinite(grad)) & jnp.isfinite(jd_norm)
              & jnp.all(jnp.isfinite(scale)))
    return PointEvaluation(x, r, None, cost, grad, None, cosine, finite), curvature


def _hash32(v):
    """C. Wellons' ``lowbias32`` integer hash on uint32 (a few elementwise operations: far
    cheaper to compile than ``jax.random``'s threefry)."""
    v = v ^ (v >> 16)
    v = v * jnp.uint32(0x7FEB352D)
    v = v ^ (v >> 15)
    v = v * jnp.uint32(0x846CA68B)
    return v ^ (v >> 16)


def rademacher_probes(num_probes, m, seed, dtype):
    """``(num_probes, m)`` signs ``+-1`` from a hash of (probe, row, ``seed``): deterministic,
    pseudo-random, and the same for every member of a ``vmap``."""
    k = jnp.arange(num_probes, dtype=jnp.uint32)[:, None]
    i = jnp.arange(m, dtype=jnp.uint32)[None, :]
    seed = jnp.asarray(seed).astype(jnp.uint32)
    bits = _hash32(_hash32(i ^ _hash32(k + jnp.uint32(0x9E3779B9) * seed)))
    return jnp.where((bits >> 31) == 1, 1.0, -1.0).astype(dtype)


def column_norm_estimate(rmatvec, m, dtype, seed, num_probes):
    """An unbiased estimate of the column norms of ``J`` (m, n), shape (n,):
    ``sqrt(mean_k (J^T z_k)^2)`` over ``num_probes`` sign vectors ``z_k`` (m,)
    (:func:`rademacher_probes`), since ``E[(J^T z)_j^2] = sum_i J_ij^2`` for independent signs
    (Hutchinson's estimator applied to the diagonal of ``J^T J``: C. Bekas, E. Kokiopoulou,
    Y. Saad (2007), "An estimator for the diagonal of a matrix", Appl. Numer. Math. 57). The
    relative standard deviation of each squared norm is at most ``sqrt(2 / num_probes)``,
    enough for a scaling. Cost: ``num_probes`` transposed JVPs (batched)."""
    z = rademacher_probes(num_probes, m, seed, dtype)
    squares = jax.vmap(rmatvec)(z) ** 2
    return jnp.sqrt(jnp.mean(squares, axis=0))


@dataclasses.dataclass(frozen=True)
class MatrixFreeLevenbergMarquardt(LeastSquaresSolver):
    """Inexact Levenberg-Marquardt that never forms the Jacobian (module docstring):
    ``solver="lm-matrix-free"`` in :func:`jacopt.least_squares`.

    Options (hashable; a static argument of the compiled solve):

    - ``linear_solver``: ``"lsqr"`` (default; LSQR on ``[J~; sqrt(lam) D]``) or ``"cg"``
      (conjugate gradients on the damped normal operator).
    - ``max_inner_steps``: the most inner iterations per step (each one JVP and one transposed
      JVP): a step costs at most twice this many products.
    - ``forcing``: the inner solve's relative tolerance (the inexact-Newton forcing term);
      ``None`` (default) is ``100 eps`` of the working dtype (``2.2e-14`` in float64), so small
      problems get steps as accurate as a dense solve and ``max_inner_steps`` bounds the work
      on large ones.
    - ``scaling``: what ``x_scale="jac"`` means: ``"probes"`` (default) Moré's running maximum
      of the column norms of ``J``, estimated from ``num_probes`` sign-vector products per
      accepted point (:func:`column_norm_estimate`); ``"identity"``: ``D = I`` (no extra
      products). An ``x_scale`` array always wins.
    - ``initial_damping``: ``tau`` of the first damping ``lam = tau * ||J~ d||^2 / (g^T d)``.
    - ``ftol``, ``xtol``, ``gtol``: the stopping tests (module docstring); the defaults run
      until no representable progress is left.

    The result's ``jac`` is ``None``. Supports every loss, bounds and ``x_scale`` arrays.
    """

    ftol: float = 0.0
    xtol: float = 1e-15
    gtol: float = 1e-15
    linear_solver: str = "lsqr"
    max_inner_steps: int = 100
    forcing: Optional[float] = None
    scaling: str = "probes"
    num_probes: int = 8
    initial_damping: float = 1e-3

    def __post_init__(self):
        check_options(self, nonnegative=TOLERANCES, counts=("max_inner_steps", "num_probes"),
                      positive=("initial_damping",))
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got "
                             f"{self.linear_solver!r}.")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}.")
        if self.forcing is not None and not (
                isinstance(self.forcing, (int, float)) and 0 < self.forcing < 1):
            raise ValueError(f"forcing must be None or a number in (0, 1), got "
                             f"{self.forcing!r}.")

    def _linearise(self, problem, x, carry, point=None):
        """``(r, grad, lin, carry)`` at ``x`` (:func:`linearise`). ``point`` is the accepted
        :class:`PointEvaluation` at ``x`` when known (its gradient is reused), ``None`` at a
        new point. ``carry`` is the state's ``carry``: what a subclass keeps per accepted
        point (nothing here: the linearisation holds closures, so it is redone)."""
        r, grad, lin = linearise(problem, x, None if point is None else point.grad)
        return r, grad, lin, carry

    def _column_norms(self, lin: Linearisation, r, x, seed, carry):
        """The column norms of the raw ``J`` for Moré's scaling: estimated from probes."""
        return column_norm_estimate(lin.raw_rmv, r.shape[0], x.dtype, seed, self.num_probes)

    def _forcing(self, point: PointEvaluation, carry):
        """The inner solve's relative tolerance for the step from ``point``: one number, or
        LSQR's ``(atol, btol)`` (CG then takes ``btol``)."""
        if self.forcing is None:
            return 100 * float(jnp.finfo(point.grad.dtype).eps)
        return self.forcing

    def _evaluations(self, first, accepted):
        """``(nfev, njev)`` of one iteration: the start is one linearisation; later a trial
        costs one residual evaluation and the linearisation it was computed from, an accepted
        point (``accepted``, 0 or 1) one more linearisation."""
        return jnp.where(first, 1, 2 + accepted), jnp.where(first, 1, 1 + accepted)

    def _evaluate(self, problem, x, scale, seed, carry):
        """Everything a new accepted point needs: one linearisation, the gradient, the updated
        scaling (``1 / x_scale``, ones, or the running maximum of the column norms, probes
        seeded by ``seed``), the point, the scaled Rayleigh quotient and the new ``carry``."""
        r, grad, lin, carry = self._linearise(problem, x, carry)
        if problem.x_scale is not None:
            scale = (1.0 / problem.x_scale).astype(x.dtype)
        elif self.scaling == "identity":
            scale = jnp.ones_like(x)
        else:
            scale = updated_scale(problem, scale, self._column_norms(lin, r, x, seed, carry))
        point, curvature = describe(problem, x, r, grad, lin, scale)
        return point, scale, curvature, carry

    def _inner_solve(self, lin: Linearisation, grad, scale, lam, forcing):
        """The approximate damped step ``p`` (n,) and the inner iteration count, to the
        relative tolerance ``forcing`` (:meth:`_forcing`)."""
        atol, forcing = forcing if isinstance(forcing, tuple) else (forcing, forcing)
        if self.linear_solver == "lsqr":
            out = lsqr(lin.mv, lin.rmv, -lin.rc, damp=jnp.sqrt(lam), diag=scale,
                       atol=atol, btol=forcing, maxiter=self.max_inner_steps)
        else:
            d2 = scale * scale

            def normal(v):
                return lin.rmv(lin.mv(v)) + lam * d2 * v

            b = -jnp.where(lin.fixed, 0.0, grad)
            out = cg(normal, b, tol=forcing, maxiter=self.max_inner_steps,
                     preconditioner=lambda v: v / d2)
        return out.x, out.num_steps

    evaluates_start_in_loop = True  # see jacopt._loop: the start is evaluated in the loop

    def init(self, problem: LeastSquaresProblem, x0):
        """Placeholders of the right shapes; nothing is evaluated here."""
        n, dtype = x0.shape[0], x0.dtype
        m = jax.eval_shape(problem.residual_only, x0).shape[0]
        zero = jnp.zeros((), dtype)
        point = PointEvaluation(x0, jnp.zeros((m,), dtype), None, zero, jnp.zeros((n,), dtype),
                                None, zero, jnp.asarray(True))
        return MatrixFreeLMState(
            point=point, scale=jnp.zeros_like(x0), lam=zero, nu=jnp.asarray(2.0, dtype),
            trial=MatrixFreeTrial(x0, zero, zero, zero, zero), step_norm=zero,
            accepted=jnp.asarray(False), counters=Counters.start(), start_cost=zero,
            started=jnp.asarray(False), status=jnp.asarray(Status.RUNNING, jnp.int32))

    def step(self, problem: LeastSquaresProblem, s: MatrixFreeLMState) -> MatrixFreeLMState:
        """One loop iteration: evaluate the pending trial (the start, on the first iteration),
        accept or reject it and test for convergence, linearise at a newly accepted point, and
        compute the next trial."""
        point, scale, pending = s.point, s.scale, s.trial
        first = ~s.started
        dtype = pending.x.dtype
        zero = jnp.zeros((), dtype)

        # 1. The trial: one residual evaluation, accepted when the gain ratio is positive (the
        #    start is linearised below instead).
        r_trial = lax.cond(first, lambda: jnp.zeros_like(point.r),
                           lambda: problem.residual_only(pending.x))
        trial_finite = jnp.all(jnp.isfinite(r_trial))
        actual = jnp.where(trial_finite, problem.reduction(point.r, r_trial), -jnp.inf)
        ratio = tr.gain_ratio(actual, pending.predicted)
        accepted = (ratio > 0) & ~first

        # 2. Nielsen's damping update.
        shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
        lam = jnp.maximum(jnp.where(accepted, s.lam * shrink, s.lam * s.nu),
                          jnp.finfo(dtype).tiny)
        nu = jnp.where(accepted, jnp.asarray(2.0, dtype), 2.0 * s.nu)

        # 3. A new point (or the start): linearise there (gradient, scaling, gtol cosine). A
        #    cond, so rejected trials skip it; a point with non-finite derivatives is not taken.
        new_point, new_scale, curvature, carry = lax.cond(
            accepted | first,
            lambda: self._evaluate(problem, pending.x, scale, s.counters.njev, s.carry),
            lambda: (point, scale, zero, s.carry))
        broken = accepted & ~new_point.finite
        accepted = accepted & ~broken
        keep = accepted | first
        new_point, carry = jax.tree.map(lambda a, b: jnp.where(keep, a, b), (new_point, carry),
                                        (point, s.carry))
        new_scale = jnp.where(keep, new_scale, scale)
        start_lam = self.initial_damping * jnp.where(
            (curvature > 0) & jnp.isfinite(curvature), curvature, 1.0)
        lam = jnp.where(first, start_lam, lam)
        nu = jnp.where(first, jnp.asarray(2.0, dtype), nu)

        # 4. Stopping tests.
        nonfinite = nonfinite_since_accept(s.counters.nonfinite, trial_finite, accepted)
        # the step tests here judge the trial's own step (not a radius): a tiny step accepted
        # right after non-finite trials drove lam up has collapsed on them too
        status = stop_status(self, cost=point.cost, actual=actual, predicted=pending.predicted,
                             ratio=ratio, step_bound=pending.pnorm, xnorm=pending.xnorm,
                             accepted=accepted, gtol_measure=new_point.gtol_measure,
                             nonfinite=jnp.maximum(s.counters.nonfinite, nonfinite))
        status = jnp.where(broken, Status.NONFINITE, status)
        # an f or x stop needs a first-order test (the gradient cosine, or vanished residuals)
        start_cost = jnp.where(first, new_point.cost, s.start_cost)
        status = confirm_stop(status, first_order_backed(self, new_point, start_cost, None,
                                                         None, column_norms=new_scale))
        status = jnp.where(first, start_status(new_point, self.gtol), status)

        # 5. The next trial, unless the run stops: linearise at the point kept (products only;
        #    its gradient is known) and solve the damped problem inexactly.
        def next_trial():
            x = new_point.x
            _, _, lin, _ = self._linearise(problem, x, carry, new_point)
            p, inner = self._inner_solve(lin, new_point.grad, new_scale, lam,
                                         self._forcing(new_point, carry))
            x_new, step = problem.projected_step(x, p, lin.fixed)
            js = lin.mv(step)
            predicted = -(jnp.sum(new_point.grad * step) + 0.5 * jnp.sum(js * js))
            return MatrixFreeTrial(x_new, predicted, scaled_norm(new_scale, step),
                                   scaled_norm(new_scale, x), _norm(step)), inner

        trial, inner = lax.cond(status == Status.RUNNING, next_trial,
                                lambda: (pending, jnp.zeros((), jnp.int32)))

        one = accepted.astype(jnp.int32)
        nfev, njev = self._evaluations(first, one)
        counters = s.counters.tally(
            accepted, ~accepted & ~first, nfev, njev, nonfinite=jnp.where(first, 0, nonfinite),
            inner_steps=s.counters.inner_steps + inner)
        return MatrixFreeLMState(
            point=new_point, scale=new_scale, lam=lam, nu=nu, trial=trial,
            step_norm=jnp.where(first, zero, pending.step_norm), accepted=accepted,
            counters=counters, start_cost=start_cost, started=jnp.asarray(True), status=status,
            carry=carry)
