"""The flat nonlinear least-squares problem every least-squares solver sees, and the pieces the
Gauss-Newton family shares: evaluation of residuals and Jacobian together, the robust-loss
correction, the QR factorisation, box-bound projection and the result's summary numbers.

Everything works on flat vectors: ``x`` has shape ``(n,)``, the residuals ``r`` shape ``(m,)``
and the Jacobian ``J`` shape ``(m, n)``. :func:`jacopt.least_squares` ravels the user's pytrees
and builds a :class:`LeastSquaresProblem`; solvers never see pytrees.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jacopt._sharding import constrain_rows
from jacopt.jacobian import jacobian as _jacobian
from jacopt.linalg import triangular_factor, tsqr_factor
from jacopt.losses import Loss, get_loss
from jacopt.results import History
from jacopt.status import Status


class LeastSquaresSolver:
    """Base of the least-squares solvers (``solver=`` accepts any instance). A solver is a
    frozen dataclass with ``init/step`` for :func:`jacopt._loop.run`, whose state has the
    fields ``point`` and ``counters`` (:class:`~jacopt.solvers.stopping.Counters`) that
    :func:`jacopt.least_squares` reads. ``terminate`` and ``record`` are shared: the state also
    carries ``point`` (the accepted :class:`PointEvaluation`), ``status`` (``Status.RUNNING``
    until a stopping test fires), ``step_norm``, ``accepted`` and ``damping`` (what
    ``History.damping`` records: the LM parameter, a line-search step or a radius)."""

    default_x_scale = "jac"
    """What ``least_squares(x_scale=None)`` (the default) means for this solver."""

    def terminate(self, problem, s):
        return s.status != Status.RUNNING, s.status

    def record(self, problem: "LeastSquaresProblem", s) -> History:
        g = problem.projected_gradient(s.point.x, s.point.grad)
        return History(s.point.cost, jnp.max(jnp.abs(g)), s.step_norm, s.damping, s.accepted)


def check_options(solver, *, nonnegative=(), positive=(), fraction=(), counts=(), flags=()):
    """Validate a solver's options when it is constructed (its ``__post_init__``): a
    ``ValueError`` naming the first bad option. ``nonnegative``: finite real numbers ``>= 0``;
    ``positive``: finite and ``> 0``; ``fraction``: in ``[0, 1)``; ``counts``: ints ``>= 1``;
    ``flags``: bools."""
    def number(name):
        value = getattr(solver, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ValueError(f"{type(solver).__name__}: {name} must be a finite real number, "
                             f"got {value!r}.")
        return value

    for name in nonnegative:
        if number(name) < 0:
            raise ValueError(f"{type(solver).__name__}: {name} must be >= 0, got "
                             f"{getattr(solver, name)!r}.")
    for name in positive:
        if number(name) <= 0:
            raise ValueError(f"{type(solver).__name__}: {name} must be > 0, got "
                             f"{getattr(solver, name)!r}.")
    for name in fraction:
        if not 0 <= number(name) < 1:
            raise ValueError(f"{type(solver).__name__}: {name} must be in [0, 1), got "
                             f"{getattr(solver, name)!r}.")
    for name in counts:
        value = getattr(solver, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{type(solver).__name__}: {name} must be an int >= 1, got "
                             f"{value!r}.")
    for name in flags:
        if not isinstance(getattr(solver, name), bool):
            raise ValueError(f"{type(solver).__name__}: {name} must be True or False, got "
                             f"{getattr(solver, name)!r}.")


TOLERANCES = ("ftol", "xtol", "gtol")
"""The stopping tolerances every least-squares solver has (validated as ``nonnegative``)."""


class LeastSquaresProblem(NamedTuple):
    """``minimise C(x) = 0.5 * sum(f_scale**2 * rho((r_i(x) / f_scale)**2))`` over the box
    ``lower <= x <= upper``.

    - ``residual(x, args) -> r``: flat ``(n,) -> (m,)``.
    - ``jacobian``: ``None`` (automatic differentiation, forward mode when ``n <= m``, reverse
      otherwise, via :func:`jacopt.jacobian`) or a user function ``(x, args) -> (m, n)``.
    - ``args``: the extra arguments (a pytree, traced).
    - ``loss``: a :class:`jacopt.losses.Loss`; ``f_scale`` a positive scalar.
    - ``lower``, ``upper``: ``(n,)`` arrays (may hold +-inf) or ``None`` when unbounded.
    - ``x_scale``: ``(n,)`` characteristic scales from the user (the scaling is ``D = 1 /
      x_scale``), or ``None`` for Moré's adaptive scaling from the Jacobian's column norms.
    - ``batched``: the solve runs under ``vmap`` (a static flag set by
      :func:`jacopt.least_squares`): small QR factorisations are then unrolled array
      operations (:func:`jacopt.linalg.r_factor`) instead of batched LAPACK calls.
    - ``rows``: ``None``, or the :class:`jacopt._sharding.RowSharding` (mesh, axis) that the
      residual rows are split over (static, found in the data by :func:`jacopt.least_squares`):
      ``r`` and ``J`` are then kept split by rows and factorised by TSQR
      (:func:`jacopt.linalg.tsqr_factor`).
    """

    residual: Callable
    jacobian: Optional[Callable]
    args: Any
    loss: Loss = get_loss("linear")
    f_scale: Any = 1.0
    lower: Any = None
    upper: Any = None
    x_scale: Any = None
    batched: bool = False
    rows: Any = None

    @property
    def bounded(self) -> bool:
        return self.lower is not None

    def evaluate(self, x):
        """``(r, J)`` at ``x``: one linearisation of the residual function (traced once) and
        ``min(m, n)`` JVPs/VJPs, or the user's ``jac``. Shapes ``(m,)`` and ``(m, n)``."""
        if self.jacobian is not None:
            r, J = self.residual(x, self.args), self.jacobian(x, self.args)
        else:
            def both(v):
                r = self.residual(v, self.args)
                return r, r

            J, r = _jacobian(both, as_matrix=True, has_aux=True)(x)
        return constrain_rows(self.rows, r), constrain_rows(self.rows, J)

    def residual_only(self, x):
        return constrain_rows(self.rows, self.residual(x, self.args))

    def cost(self, r):
        """``C`` from the residuals (``0.5 * sum(r**2)`` for the linear loss)."""
        return self.loss.cost(r, self.f_scale)

    def reduction(self, r, r_new):
        """``C(r) - C(r_new)``, computed as ``0.5 * sum((r - r_new) * (r + r_new))`` for the
        linear loss, which stays accurate when the two costs agree to many digits (the
        difference of the two sums would lose them), and termwise for robust losses."""
        if self.loss.is_linear:
            return 0.5 * jnp.sum((r - r_new) * (r + r_new))
        return 0.5 * jnp.sum(self.loss.per_residual(r, self.f_scale)
                             - self.loss.per_residual(r_new, self.f_scale))

    def corrected(self, r, J):
        """``(r~, J~)``: residuals and Jacobian after the robust-loss correction
        (:mod:`jacopt.losses`); unchanged for the linear loss."""
        w_r, w_j = self.loss.weights(r, self.f_scale)
        if w_r is None:
            return r, J
        return w_r * r, w_j[:, None] * J

    def project(self, x):
        """``x`` clipped to the box (identity when unbounded)."""
        if not self.bounded:
            return x
        return jnp.clip(x, self.lower, self.upper)

    def projected_step(self, x, p, fixed):
        """The trial point for the step ``p`` from ``x`` and the step actually taken:
        ``x + p`` unbounded; with bounds, components in the active set ``fixed`` stay put and
        the point is projected onto the box. Returns ``(x_new, x_new - x)``."""
        if not self.bounded:
            return x + p, p
        x_new = self.project(x + jnp.where(fixed, 0.0, p))
        return x_new, x_new - x

    def active_set(self, x, grad):
        """Bertsekas (1982) active set: components at a bound whose negative gradient points
        out of the box (they stay fixed in the next step). All False when unbounded."""
        if not self.bounded:
            return jnp.zeros(x.shape, bool)
        at_lower = (x <= self.lower) & (grad > 0)
        at_upper = (x >= self.upper) & (grad < 0)
        return at_lower | at_upper

    def projected_gradient(self, x, grad):
        """``x - P(x - grad)``: the gradient with components that would leave the box cut
        (zero exactly at a first-order stationary point of the bounded problem; ``grad`` when
        unbounded). Its infinity norm is the reported ``optimality``."""
        if not self.bounded:
            return grad
        return x - jnp.clip(x - grad, self.lower, self.upper)


class PointEvaluation(NamedTuple):
    """Everything the Gauss-Newton family computes at a point, per trial: ``x (n,)``, the raw
    residuals ``r (m,)`` and Jacobian ``J (m, n)``, the cost, the gradient ``grad = J~^T r~``
    (of the cost, after the loss correction), the column norms of the raw ``J`` (for Moré's
    scaling: parameter units, not the loss's row weights, set it, so a start where a robust
    loss saturates does not shrink the scaling), MINPACK's gtol measure (:func:`gtol_measure`,
    on the free components; for a robust loss on ``J`` and ``rho' r``, whose product
    ``J^T rho' r = J~^T r~`` is the gradient: ``r~`` itself grows without bound where the
    loss's curvature is clipped, and would make any gradient look small) and whether all of it
    is finite."""

    x: Any
    r: Any
    J: Any
    cost: Any
    grad: Any
    column_norms: Any
    gtol_measure: Any
    finite: Any


def placeholder_point(problem: "LeastSquaresProblem", x0) -> PointEvaluation:
    """Zeros of a :class:`PointEvaluation`'s shapes at ``x0`` (from ``eval_shape``: nothing is
    evaluated), for a solver whose first iteration evaluates the start."""
    n, dtype = x0.shape[0], x0.dtype
    m = jax.eval_shape(problem.residual_only, x0).shape[0]
    zero = jnp.zeros((), dtype)
    return PointEvaluation(x=x0, r=jnp.zeros((m,), dtype), J=jnp.zeros((m, n), dtype), cost=zero,
                           grad=jnp.zeros((n,), dtype), column_norms=jnp.zeros((n,), dtype),
                           gtol_measure=zero, finite=jnp.asarray(True))


def evaluate_point(problem: "LeastSquaresProblem", x) -> PointEvaluation:
    """Residuals and Jacobian at ``x`` (one :meth:`LeastSquaresProblem.evaluate`) and the cheap
    O(m n) quantities derived from them."""
    r, J = problem.evaluate(x)
    cost = problem.cost(r)
    rc, Jc = problem.corrected(r, J)
    grad = Jc.T @ rc
    norms = column_norms(J)
    free = problem.projected_gradient(x, grad)
    if problem.loss.is_linear:
        measure = gtol_measure(norms, jnp.sqrt(2.0 * cost), free)
    else:  # grad = J^T (rho' r): the cosine between rho' r and the columns of J
        w_r, w_j = problem.loss.weights(r, problem.f_scale)
        measure = gtol_measure(norms, jnp.sqrt(jnp.sum((w_r * w_j * r) ** 2)), free)
    # a non-finite entry of r or J makes the cost or a column norm non-finite
    finite = jnp.isfinite(cost) & jnp.all(jnp.isfinite(norms))
    return PointEvaluation(x, r, J, cost, grad, norms, measure, finite)


def gtol_measure(norms, rnorm, grad):
    """MINPACK's scale-free gradient test: ``max_j |g_j| / (||J_j|| ||r||)``, the largest cosine
    between the residual vector and a Jacobian column (zero columns skipped)."""
    denom = norms * rnorm
    cosine = jnp.abs(grad) / jnp.where(denom > 0, denom, 1.0)
    return jnp.max(jnp.where(denom > 0, cosine, 0.0))


def scaled_norm(scale, v):
    """``||D v||_2`` with ``D = diag(scale)``: a step's length in the scaled variables."""
    dv = scale * v
    return jnp.sqrt(jnp.sum(dv * dv))


def scaled_gradient_norm(grad, scale):
    """``||D^{-1} g||_2``: the gradient's norm in the scaled variables (the dual norm of
    :func:`scaled_norm`; Moré's upper bound on the damping uses it)."""
    return jnp.sqrt(jnp.sum((grad / scale) ** 2))


def column_norms(J):
    """``||J[:, j]||_2`` for each column, shape ``(n,)``. Summed along the last axis of
    ``J^T``: under ``vmap`` XLA's CPU backend then reduces contiguous rows, where a sum over
    ``J``'s first axis becomes a strided reduction (slower on a batch of small fits; design
    notes)."""
    Jt = J.T
    return jnp.sqrt(jnp.sum(Jt * Jt, axis=1))


def updated_scale(problem: LeastSquaresProblem, scale, norms):
    """Moré's scaling ``D`` after a new Jacobian with column norms ``norms``: MINPACK's running
    maximum ``D_j = max(D_j, ||J[:, j]||)`` (start from ``scale = 0``; a column that has
    always been zero gets ``D_j = 1``), or ``1 / x_scale`` when the user gave ``x_scale``."""
    if problem.x_scale is not None:
        return 1.0 / problem.x_scale
    new = jnp.maximum(scale, norms)
    return jnp.where(new > 0, new, jnp.ones_like(new))


def factor_point(problem: LeastSquaresProblem, point: PointEvaluation, scale):
    """The start of the O(m n^2) (``m < n``: O(n^3)) work at a newly accepted point, shared by
    Gauss-Newton, dogleg and Levenberg-Marquardt: the updated scaling ``D``
    (:func:`updated_scale`), the active set (:meth:`LeastSquaresProblem.active_set`, all False when
    unbounded) and the QR of the corrected ``[J~ | r~]`` with the fixed columns pinned
    (:func:`jacopt.linalg.triangular_factor`; by TSQR, :func:`jacopt.linalg.tsqr_factor`, when
    the rows are split over devices). Returns ``(scale, fixed, R, qtr)``."""
    rc, Jc = problem.corrected(point.r, point.J)
    scale = updated_scale(problem, scale, point.column_norms)
    fixed = problem.active_set(point.x, point.grad)
    pins = (fixed, scale) if problem.bounded else (None, None)
    if problem.rows is not None and not problem.batched:
        R, qtr = tsqr_factor(Jc, rc, problem.rows.mesh, problem.rows.axis, *pins)
    else:
        R, qtr = triangular_factor(Jc, rc, *pins, unrolled=problem.batched)
    return scale, fixed, R, qtr
