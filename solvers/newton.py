"""Newton's method with exact second derivatives, globalised by a trust region.

At the current point ``x`` (gradient ``g``, Hessian ``H``) the step ``p`` minimises the model
``m(p) = g^T p + 0.5 p^T H p`` inside ``||p|| <= radius``; the step is accepted and the radius
updated from the gain ratio (actual / predicted reduction) by the shared rule of
:mod:`jacopt.solvers.trust_region` (``CLASSICAL``: Nocedal & Wright, *Numerical Optimization*,
2nd ed., 2006, Algorithm 4.1). Near a minimiser with positive definite Hessian the full Newton
step lies inside the region and convergence is quadratic. Two ways to solve the subproblem:

- :class:`Newton` (``solver="newton"``, small ``n``): the Hessian is formed densely by
  :func:`jacopt.hessian` (forward-over-reverse, ``n`` Hessian-vector products) at every
  accepted point, and the subproblem is solved *exactly* as characterised by Moré & Sorensen
  ("Computing a trust region step", SIAM J. Sci. Stat. Comput. 4, 1983): ``p = -(H + lambda
  I)^{-1} g`` with ``H + lambda I`` positive semidefinite, ``lambda >= 0`` and
  ``lambda (radius - ||p||) = 0``. ``lambda`` is found by their safeguarded Newton iteration on
  the secular equation ``1/||p(lambda)|| = 1/radius`` (N&W Algorithm 4.3), carried out in the
  eigenbasis of ``H`` (one ``eigh`` per accepted point, ``O(n^3)``; each iteration is then
  ``O(n)``), which also makes the "hard case" exact: when ``g`` has no component along the
  lowest eigenvector, the step is completed along that eigenvector to the boundary.
- :class:`NewtonCG` (``solver="newton-cg"``, large ``n``): the Hessian is never formed; the
  subproblem is solved approximately by the truncated conjugate gradients of Steihaug (1983,
  SIAM J. Numer. Anal. 20) and Toint (1981) (N&W Algorithm 7.2) using Hessian-vector products
  from :func:`jacopt.hessian_operator` (the gradient linearised once per iteration, one JVP
  per CG step). CG stops at the boundary, on negative curvature (following that direction to
  the boundary), or when ``||r|| <= min(0.5, sqrt(||g||)) ||g||`` (superlinear convergence;
  N&W eq. 7.3).

Iteration = one trust-region trial: one objective-and-gradient evaluation at ``x + p``; on an
accepted step also the new Hessian (:class:`Newton`) is computed. Counters: ``nfev == ngev``
(trials + 1); ``nhev`` counts dense Hessians (:class:`Newton`) or Hessian-vector products
(:class:`NewtonCG`). ``history.damping`` is the trust radius after the iteration.

Bounds (:class:`Newton` only, ``minimize(bounds=...)``): the start is clipped into the box,
each trial is feasible (:func:`bounded_trust_region_step`: the exact step on the variables not
held at a bound, projected, or the better of the truncated and the projected Cauchy step),
and ``gtol`` applies to the projected gradient ``P(x - g) - x``.

The solve stops with ``PRECISION_LIMIT`` when a rejected trial leaves a radius below the
resolution of ``x`` (``eps ||x||``) or the model predicts a decrease below the resolution of
``f`` (``eps |f|``): no further reduction is possible in this precision.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jacopt.jacobian import hessian
from jacopt.linalg import boundary_root, steihaug_cg
from jacopt.operators import hessian_operator
from jacopt.solvers.minimize_problem import Minimizer, check_tolerances, matvec, vdot
from jacopt.solvers.trust_region import CLASSICAL, RadiusUpdate, gain_ratio, update_radius
from jacopt.status import Status

SECULAR_ITERATIONS = 40
"""Safeguarded Newton/bisection iterations on the secular equation (each ``O(n)``)."""


class NewtonState(NamedTuple):
    """``x``, ``value``, ``grad``: the current point; ``model``: the second-order information
    at ``x`` (:class:`Newton`: the eigenvalues ``(n,)`` and eigenvectors ``(n, n)`` of ``H``;
    :class:`NewtonCG`: nothing); ``radius``: the trust radius; ``ratio``: the last gain ratio;
    plus the fields :class:`~jacopt.solvers.minimize_problem.Minimizer` documents."""

    x: Any
    value: Any
    grad: Any
    model: Any
    radius: Any
    ratio: Any
    accepted: Any
    step_norm: Any
    value_change: Any
    failure: Any
    nfev: Any
    ngev: Any
    nhev: Any


def exact_trust_region_step(eigenvalues, eigenvectors, g, radius):
    """Solve ``min g^T p + 0.5 p^T H p`` s.t. ``||p|| <= radius`` exactly, given
    ``H = V diag(w) V^T`` (``eigh``, ``w`` ascending). Returns ``(p, predicted_reduction)``
    with ``predicted_reduction = -(g^T p + 0.5 p^T H p) >= 0``. Cost ``O(n^2)``.

    Moré & Sorensen (1983): ``p = -(H + lambda I)^{-1} g``; interior Newton step when ``H`` is
    positive definite and it fits, else ``lambda > max(0, -w_min)`` solves
    ``||p(lambda)|| = radius`` by safeguarded Newton steps on ``1/||p||`` (N&W Algorithm 4.3)
    with bisection inside the bracket ``[max(0, -w_min), max(0, -w_min) + ||g|| / radius]``;
    in the hard case the step is completed along the lowest eigenvector.
    """
    w, v = eigenvalues, eigenvectors
    dtype = g.dtype
    eps = jnp.finfo(dtype).eps
    gh = matvec(v.T, g)
    gnorm = jnp.linalg.norm(g)
    scale = jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(dtype).tiny)
    tiny = 4 * eps * scale * w.shape[0]
    w_min = w[0]

    # Interior: the Newton step, when H is positive definite and the step fits.
    pd = w_min > 0
    newton_hat = jnp.where(pd, -gh / jnp.where(pd, w, 1.0), 0.0)
    interior = pd & (jnp.linalg.norm(newton_hat) <= radius)

    lam_low = jnp.maximum(0.0, -w_min)
    lam_high = lam_low + gnorm / radius + tiny

    def secular(_, carry):
        lam, lo, hi = carry
        d = w + lam
        ok = d > 0
        inv = jnp.where(ok, 1.0 / jnp.where(ok, d, 1.0), jnp.inf)
        p2 = jnp.sum(gh * gh * inv * inv)
        q2 = jnp.sum(gh * gh * inv * inv * inv)
        pn = jnp.sqrt(p2)
        # ||p|| decreases in lambda: too long -> lambda is a lower bound.
        too_long = ~(pn <= radius)
        lo = jnp.where(too_long, lam, lo)
        hi = jnp.where(too_long, hi, lam)
        newton = lam + (p2 / q2) * (pn - radius) / radius
        good = jnp.isfinite(newton) & (newton > lo) & (newton < hi)
        return jnp.where(good, newton, 0.5 * (lo + hi)), lo, hi

    lam, _, _ = jax.lax.fori_loop(0, SECULAR_ITERATIONS, secular, (lam_high, lam_low, lam_high))
    d = w + lam
    boundary_hat = jnp.where(d > 0, -gh / jnp.where(d > 0, d, 1.0), 0.0)
    # Hard case: even as lambda -> -w_min the step is too short; complete it along the lowest
    # eigenvector, in the direction that does not increase the model, up to the boundary.
    hard = (w_min <= 0) & (jnp.linalg.norm(boundary_hat) < (1 - jnp.sqrt(eps)) * radius)
    e0 = jnp.zeros_like(gh).at[0].set(jnp.where(gh[0] > 0, -1.0, 1.0))
    tau = boundary_root(boundary_hat, e0, radius)
    boundary_hat = boundary_hat + jnp.where(hard, tau, 0.0) * e0
    p_hat = jnp.where(interior, newton_hat, boundary_hat)
    predicted = -(vdot(gh, p_hat) + 0.5 * vdot(w * p_hat, p_hat))
    return matvec(v, p_hat), predicted


class TrustRegionNewton(Minimizer):
    """The trust-region loop shared by :class:`Newton` and :class:`NewtonCG`; subclasses give
    ``model(problem, x)``, ``initial_radius_for(state)`` and ``subproblem(problem, state)``."""

    radius_update: RadiusUpdate

    def model(self, problem, x):
        raise NotImplementedError

    def subproblem(self, problem, state):
        """``(step, predicted_reduction, hessian_evaluations)``."""
        raise NotImplementedError

    def default_radius(self, problem, x, grad, model):
        raise NotImplementedError

    def init(self, problem, x0):
        if problem.lower is not None:  # the start is clipped into the box, as SciPy does
            x0 = jnp.clip(x0, *problem.box(x0))
        value, grad = problem.value_and_grad(x0)
        model, nh = self.model(problem, x0)
        if self.initial_radius is None:
            radius = self.default_radius(problem, x0, grad, model)
        else:
            radius = jnp.asarray(self.initial_radius, x0.dtype)
        zero = jnp.zeros((), x0.dtype)
        one = jnp.asarray(1, jnp.int32)
        return NewtonState(
            x=x0, value=value, grad=grad, model=model, radius=radius, ratio=zero,
            accepted=jnp.asarray(False), step_norm=zero, value_change=jnp.zeros_like(value),
            failure=jnp.asarray(Status.RUNNING, jnp.int32), nfev=one, ngev=one,
            nhev=jnp.asarray(nh, jnp.int32),
        )

    def step(self, problem, state):
        s = state
        p, predicted, nh = self.subproblem(problem, s)
        x_new = s.x + p
        if problem.lower is not None:  # feasible steps; the clip only removes rounding
            x_new = jnp.clip(x_new, *problem.box(x_new))
        trial_value, trial_grad = problem.value_and_grad(x_new)
        finite = jnp.isfinite(trial_value) & jnp.all(jnp.isfinite(trial_grad))
        actual = jnp.where(finite, s.value - trial_value, -jnp.inf)
        ratio = gain_ratio(actual, predicted)
        p_norm = jnp.linalg.norm(p)
        radius, accept = update_radius(self.radius_update, s.radius, ratio, p_norm)
        accept = accept & finite

        def accepted(_):
            model, nh_model = self.model(problem, x_new)
            return x_new, trial_value, trial_grad, model, jnp.asarray(nh_model, jnp.int32)

        def rejected(_):
            return s.x, s.value, s.grad, s.model, jnp.asarray(0, jnp.int32)

        x, value, grad, model, nh_model = jax.lax.cond(accept, accepted, rejected, None)
        eps = jnp.finfo(x.dtype).eps
        stuck = ~accept & ((radius <= eps * jnp.linalg.norm(s.x))
                           | (predicted <= eps * jnp.abs(s.value)))
        failure = jnp.where(stuck, Status.PRECISION_LIMIT, Status.RUNNING).astype(jnp.int32)
        return NewtonState(
            x=x, value=value, grad=grad, model=model, radius=radius, ratio=ratio,
            accepted=accept, step_norm=p_norm, value_change=jnp.where(accept, actual, 0.0),
            failure=failure, nfev=s.nfev + 1, ngev=s.ngev + 1, nhev=s.nhev + nh + nh_model,
        )

    def terminate(self, problem, state):
        return self.check_termination(self.stationarity(problem, state))

    def record(self, problem, state):
        return self.history_row(self.stationarity(problem, state), state.radius)


def _check_radius(solver):
    r = solver.initial_radius
    if r is not None and not (isinstance(r, (int, float)) and r > 0):
        raise ValueError(f"initial_radius must be a number > 0 or None, got {r!r}.")


def bounded_trust_region_step(problem, x, g, w, v, radius):
    """A trust-region step that keeps ``x`` in the box, and its predicted reduction.

    The variables at a bound whose gradient presses outwards (Bertsekas' active set) are held;
    the exact trust-region step (:func:`exact_trust_region_step`) is computed for the others
    on their block of ``H = V diag(w) V^T``, and projected onto the box (as Ceres Solver
    projects its steps). Where projecting spoils it, two feasible alternatives compete on the
    model ``g^T s + s^T H s / 2``: the step truncated at the first bound (BLNZ eq. 5.8) and the
    projected Cauchy step along ``-g`` (the decrease the convergence theory of Lin & Moré, SIAM
    J. Optim. 9, 1999, asks of every step); the best of the three is taken."""
    lower, upper = problem.box(x)
    dtype = x.dtype
    h = (v * w) @ v.T
    free = ~(((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))) & (lower < upper)
    fm = free.astype(dtype)
    reduced = h * fm[:, None] * fm[None, :] + jnp.diag(1.0 - fm)
    wr, vr = jnp.linalg.eigh(reduced)
    p, _ = exact_trust_region_step(wr, vr, g * fm, radius)
    p = p * fm
    room = jnp.where(p > 0, (upper - x) / jnp.where(p > 0, p, 1.0),
                     jnp.where(p < 0, (lower - x) / jnp.where(p < 0, p, 1.0), jnp.inf))
    gf = g * fm
    gg, ghg = vdot(gf, gf), vdot(gf, matvec(h, gf))
    tau = jnp.where(ghg > 0, gg / jnp.where(ghg > 0, ghg, 1.0), jnp.inf)
    tau = jnp.minimum(tau, radius / jnp.sqrt(jnp.where(gg > 0, gg, 1.0)))
    steps = jnp.stack([jnp.clip(x + p, lower, upper) - x,
                       jnp.clip(jnp.min(room), 0.0, 1.0) * p,
                       jnp.clip(x - tau * gf, lower, upper) - x])
    predicted = -(matvec(steps, g) + 0.5 * jnp.sum(steps * (steps @ h), axis=-1))
    predicted = jnp.where(jnp.isfinite(predicted), predicted, -jnp.inf)
    best = jnp.argmax(predicted)
    return steps[best], predicted[best]


@dataclasses.dataclass(frozen=True)
class Newton(TrustRegionNewton):
    """Trust-region Newton with dense exact Hessians and an exact subproblem solve
    (``solver="newton"``); for small ``n`` (``O(n^3)`` per accepted step).

    Fields: ``gtol`` (1e-5), ``ftol``, ``xtol`` (0: off) as in :class:`~jacopt.solvers.BFGS`;
    ``initial_radius`` (None: the length of the Newton step when ``H(x0)`` is positive
    definite, else 1); ``radius_update`` (:data:`~jacopt.solvers.trust_region.CLASSICAL`).
    """

    gtol: float = 1e-5
    ftol: float = 0.0
    xtol: float = 0.0
    initial_radius: Optional[float] = None
    radius_update: RadiusUpdate = CLASSICAL

    takes_bounds = True  # bounded_trust_region_step

    def __post_init__(self):
        check_tolerances(self)
        _check_radius(self)

    def model(self, problem, x):
        h = hessian(problem.fun, as_matrix=True)(x, problem.args)
        h = 0.5 * (h + h.T)
        w, v = jnp.linalg.eigh(h)
        return (w, v), 1

    def default_radius(self, problem, x, grad, model):
        w, v = model
        pd = w[0] > 0
        newton = jnp.linalg.norm(matvec(v.T, grad) / jnp.where(pd, w, 1.0))
        ok = pd & jnp.isfinite(newton) & (newton > 0)
        return jnp.where(ok, newton, 1.0).astype(x.dtype)

    def subproblem(self, problem, state):
        w, v = state.model
        if problem.lower is None:
            p, predicted = exact_trust_region_step(w, v, state.grad, state.radius)
            return p, predicted, 0
        p, predicted = bounded_trust_region_step(problem, state.x, state.grad, w, v, state.radius)
        return p, predicted, 0


@dataclasses.dataclass(frozen=True)
class NewtonCG(TrustRegionNewton):
    """Trust-region Newton with Hessian-vector products and Steihaug-Toint truncated CG
    (``solver="newton-cg"``); for large ``n`` (memory ``O(n)``, the Hessian is never formed).

    Fields: ``gtol``, ``ftol``, ``xtol`` as in :class:`Newton`; ``initial_radius`` (None: 1,
    SciPy's ``trust-ncg`` default); ``max_cg_steps`` (None: ``n``); ``radius_update``.
    """

    gtol: float = 1e-5
    ftol: float = 0.0
    xtol: float = 0.0
    initial_radius: Optional[float] = None
    max_cg_steps: Optional[int] = None
    radius_update: RadiusUpdate = CLASSICAL

    def __post_init__(self):
        check_tolerances(self)
        _check_radius(self)
        m = self.max_cg_steps
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"max_cg_steps must be an int >= 1 or None, got {m!r}.")

    def model(self, problem, x):
        return (), 0

    def default_radius(self, problem, x, grad, model):
        return jnp.ones((), x.dtype)

    def subproblem(self, problem, state):
        op = hessian_operator(problem.fun, state.x, problem.args)
        n = state.x.shape[0]
        steps = n if self.max_cg_steps is None else self.max_cg_steps
        result = steihaug_cg(op.mv, state.grad, state.radius, max_iterations=steps)
        return result.step, result.predicted_reduction, result.num_products
