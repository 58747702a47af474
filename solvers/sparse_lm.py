"""Levenberg-Marquardt on a sparse Jacobian: ``least_squares(..., jac_sparsity=...)``.

The loop, damping, bounds, losses and stopping tests are those of the inexact matrix-free
solver (:class:`jacopt.solvers.matrix_free.MatrixFreeLevenbergMarquardt`); what changes is how
``J`` is applied. At each accepted point the nonzeros of ``J`` are computed once from ``c``
compressed JVPs (or VJPs), ``c`` the number of colours of the pattern
(:mod:`jacopt.sparse`: Curtis, Powell & Reid 1974; Coleman & Moré 1983), and kept in the loop
state as a vector of ``nnz`` values; ``J v`` and ``J^T u`` are then sparse products (a gather
and a segment sum each), never a dense ``m x n`` matrix and never another pass through the
residual function. The column norms of ``J`` are exact (from the values), so Moré's scaling
``D`` (``x_scale="jac"``, the default) is the column-norm (Jacobi) preconditioner of LSQR on
``[J~ D^{-1}; sqrt(lam) I]``.

Inexact steps (a forcing sequence): LSQR stops when the linearised residual has fallen to
``btol = min(forcing_max, sqrt(C_k / C_0))`` of ``||r||`` (compatible systems: zero-residual
problems, where ``sqrt(C_k / C_0) = ||r_k|| / ||r_0||`` tends to zero) or when the cosine of
the damped problem's residual has fallen to ``atol = min(forcing_max, cos_k) cos_k``, ``cos_k``
the gtol cosine between ``r~`` and the image of the scaled gradient at the point: the step's
normal-equation residual is then about ``min(forcing_max, cos_k)`` of ``||g_k||``, a relative
tolerance ``O(||g_k||)`` at a solution with nonzero residuals. Both are floored at ``100
eps``. The outer iteration so keeps the local rate of exact steps while early steps take few
inner iterations (Dembo, Eisenstat & Steihaug 1982, "Inexact Newton methods", SIAM J.
Numer. Anal. 19(2), Thm. 3.3; S. J. Wright & J. N. Holt 1985 for the inexact LM step).

The pattern is found or checked on the host by :func:`jacopt.least_squares` before tracing
(:func:`plan_for`) and travels with the solver instance (``plan``), so the compiled solve is
cached per pattern.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from jacopt._validate import is_traced
from jacopt.solvers.matrix_free import Linearisation, MatrixFreeLevenbergMarquardt, linearise

# jacopt.sparse, jacopt.sparsity and jacopt.coloring import scipy.sparse, which
# ``import jacopt`` does not load: they are imported where a sparse problem is planned.

__all__ = ["SparseLevenbergMarquardt", "SparseJacobianPlan", "plan_for"]


class SparseJacobianPlan:
    """The pattern of the flat Jacobian and its colouring (a :class:`jacopt.sparse.SparsePlan`)
    with the row and column index of every nonzero, in CSR order. Hashed by identity (it is
    part of the static solver); :func:`plan_for` caches one per function, pattern and
    shapes."""

    def __init__(self, plan):
        import scipy.sparse as sp

        coo = sp.coo_array(plan.pattern)
        self.plan = plan
        self.shape = tuple(plan.pattern.shape)
        self.nnz = int(plan.pattern.nnz)
        self.rows = coo.row.astype(np.int32)
        self.cols = coo.col.astype(np.int32)
        order = np.argsort(self.cols, kind="stable")  # CSC order, for sorted segment sums
        self.csc_order = order.astype(np.int32)
        self.csc_cols = self.cols[order]

    @property
    def num_colors(self) -> int:
        return self.plan.num_colors

    def __repr__(self):
        return (f"SparseJacobianPlan(shape={self.shape}, nnz={self.nnz}, mode="
                f"{self.plan.mode!r}, colors={self.plan.num_colors})")


class SparseOperator(NamedTuple):
    """``J`` at one point from its nonzeros: ``value`` the residuals, ``mv: v -> J v`` and
    ``rmv: u -> J^T u`` (what :func:`jacopt.solvers.matrix_free.linearise` takes)."""

    value: Any
    mv: Any
    rmv: Any


def sparse_operator(plan: SparseJacobianPlan, r, values) -> SparseOperator:
    """``J v`` and ``J^T u`` from the ``nnz`` values (CSR order) by gathers and sorted segment
    sums."""
    m, n = plan.shape
    rows, cols = jnp.asarray(plan.rows), jnp.asarray(plan.cols)
    order, csc_cols = jnp.asarray(plan.csc_order), jnp.asarray(plan.csc_cols)
    csc_values = values[order]
    csc_rows = rows[order]

    def mv(v):
        return jax.ops.segment_sum(values * v[cols], rows, m, indices_are_sorted=True)

    def rmv(u):
        return jax.ops.segment_sum(csc_values * u[csc_rows], csc_cols, n,
                                   indices_are_sorted=True)

    return SparseOperator(r, mv, rmv)


def jacobian_values(problem, plan: SparseJacobianPlan, x):
    """``(r, values)``: the residuals at ``x`` and the ``nnz`` nonzeros of ``J`` (CSR order)
    from ``plan.num_colors`` compressed JVPs or VJPs."""
    def g(v):
        return problem.residual(v, problem.args)

    r = g(x)
    from jacopt.sparse import _compressed

    compressed = _compressed(g, x, plan.plan, plan.shape[0])
    return r, compressed.reshape(-1)[jnp.asarray(plan.plan.gather, jnp.int32)]


class SparseCarry(NamedTuple):
    """What the sparse solver keeps per accepted point: the nonzeros of ``J`` and the start's
    cost (for the forcing sequence; -1 until the start is evaluated)."""

    values: Any
    cost0: Any


@dataclasses.dataclass(frozen=True)
class SparseLevenbergMarquardt(MatrixFreeLevenbergMarquardt):
    """Inexact Levenberg-Marquardt on a sparse Jacobian (module docstring):
    ``solver="lm-sparse"``, and what :func:`jacopt.least_squares` runs when given
    ``jac_sparsity``.

    Options: those of :class:`~jacopt.solvers.matrix_free.MatrixFreeLevenbergMarquardt`
    (``linear_solver``, ``max_inner_steps``, ``initial_damping``, tolerances), except:

    - ``forcing``: ``None`` (default) for the forcing sequence (module docstring), or a fixed
      relative tolerance in (0, 1) (LSQR's ``atol`` and ``btol``).
    - ``forcing_max``: the loosest inner tolerance of the sequence (default 0.1).
    - ``scaling``: ``"probes"`` (default; here the exact column norms) or ``"identity"``.
    - ``mode``: ``"auto"``, ``"fwd"`` or ``"rev"``: how the nonzeros are computed (the mode
      with fewer colours by default).
    - ``plan``: set by :func:`jacopt.least_squares` from ``jac_sparsity``; leave it ``None``.

    The result's ``jac`` is ``None``.
    """

    forcing_max: float = 0.1
    mode: str = "auto"
    plan: Optional[SparseJacobianPlan] = None

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.forcing_max, (int, float)) and 0 < self.forcing_max < 1):
            raise ValueError(f"forcing_max must be a number in (0, 1), got {self.forcing_max!r}.")
        if self.mode not in ("auto", "fwd", "rev"):
            raise ValueError(f"mode must be 'auto', 'fwd' or 'rev', got {self.mode!r}.")
        if self.plan is not None and not isinstance(self.plan, SparseJacobianPlan):
            raise ValueError("plan is set by least_squares from jac_sparsity; leave it None.")

    def _plan(self):
        if self.plan is None:
            raise ValueError("SparseLevenbergMarquardt needs the Jacobian's pattern: call it "
                             "through jacopt.least_squares (jac_sparsity='auto' or a pattern).")
        return self.plan

    def _linearise(self, problem, x, carry, point=None):
        plan = self._plan()
        if point is None:
            r, values = jacobian_values(problem, plan, x)
        else:
            r, values = point.r, carry.values
        op = sparse_operator(plan, r, values)
        r, grad, lin = linearise(problem, x, None if point is None else point.grad, op)
        if point is None:
            cost = problem.cost(r)
            carry = SparseCarry(values, jnp.where(carry.cost0 >= 0, carry.cost0, cost))
        return r, grad, lin, carry

    def _column_norms(self, lin: Linearisation, r, x, seed, carry):
        """Exact column norms of the raw ``J`` from its nonzeros."""
        plan = self._plan()
        return jnp.sqrt(jax.ops.segment_sum(carry.values[jnp.asarray(plan.csc_order)] ** 2,
                                            jnp.asarray(plan.csc_cols), plan.shape[1],
                                            indices_are_sorted=True))

    def _forcing(self, point, carry):
        floor = 100 * float(jnp.finfo(point.grad.dtype).eps)
        if self.forcing is not None:
            return self.forcing
        top = self.forcing_max
        ratio = jnp.sqrt(point.cost / jnp.where(carry.cost0 > 0, carry.cost0, 1.0))
        cosine = jnp.abs(point.gtol_measure)
        cosine = jnp.where(jnp.isfinite(cosine), jnp.minimum(cosine, 1.0), 1.0)
        btol = jnp.where(jnp.isfinite(ratio), jnp.minimum(ratio, top), top)
        atol = jnp.minimum(cosine, top) * cosine
        return jnp.clip(atol, floor, top), jnp.clip(btol, floor, top)

    def _evaluations(self, first, accepted):
        """A trial costs one residual evaluation; the start and each accepted point one
        computation of ``J``'s nonzeros (with their residuals)."""
        return jnp.where(first, 1, 1 + accepted), jnp.where(first, 1, accepted)

    def init(self, problem, x0):
        state = super().init(problem, x0)
        values = jnp.zeros((self._plan().nnz,), x0.dtype)
        return state._replace(carry=SparseCarry(values, -jnp.ones((), x0.dtype)))


def _flat(fun, x0, args):
    """``(g, x_flat)``: ``g(x_flat, args)`` the raveled residuals of ``fun``."""
    x_flat, unravel = jax.flatten_util.ravel_pytree(x0)

    def g(v, a):
        return jax.flatten_util.ravel_pytree(fun(unravel(v), *a))[0]

    return g, x_flat


_PLANS: dict = {}


def plan_for(fun, x0, args, jac_sparsity, mode: str = "auto") -> SparseJacobianPlan:
    """The :class:`SparseJacobianPlan` of ``fun(x0, *args)``'s flat Jacobian, on the host,
    before any solving: the pattern from ``jac_sparsity`` (``"auto"``: detected from the jaxpr
    by :func:`jacopt.sparsity.jacobian_sparsity`; or a boolean array, SciPy sparse matrix or
    BCOO of shape ``(m, n)``, else a ValueError naming ``jac_sparsity``) and its colouring. A
    user pattern is checked once against JVPs at ``x0`` (not when ``x0`` or ``args`` are
    traced: the pattern is then taken as given): one that misses a nonzero raises a
    ValueError. Cached per ``fun``, pattern object
    and shapes, so repeated calls reuse the compiled solve."""
    from jacopt.coloring import as_pattern
    from jacopt.sparse import _avals, _check, _jacobian_plan
    from jacopt.sparsity import jacobian_sparsity

    key_pattern = jac_sparsity if isinstance(jac_sparsity, str) else id(jac_sparsity)
    key = (fun, key_pattern, mode, jax.tree_util.tree_structure((x0, args)),
           tuple((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(_avals((x0, args)))))
    if key in _PLANS and (isinstance(jac_sparsity, str) or _PLANS[key][1] is jac_sparsity):
        return _PLANS[key][0]
    g, x_flat = _flat(fun, x0, args)
    x_aval, args_aval = _avals(x_flat), _avals(args)
    m = int(np.prod(jax.eval_shape(g, x_aval, args_aval).shape))
    n = int(x_flat.shape[0])
    if isinstance(jac_sparsity, str):
        if jac_sparsity != "auto":
            raise ValueError(f"jac_sparsity must be None, 'auto' or an (m, n) pattern (boolean "
                             f"array, SciPy sparse matrix or BCOO); got {jac_sparsity!r}.")
        pattern = jacobian_sparsity(g, x_aval, args_aval)
    else:
        try:
            pattern = as_pattern(jac_sparsity, shape=(m, n), name="jac_sparsity")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{exc}" if "jac_sparsity" in str(exc) else
                             f"jac_sparsity is not a usable pattern: {exc}") from None
    plan = SparseJacobianPlan(_jacobian_plan(pattern, mode))
    if not isinstance(jac_sparsity, str):
        if not is_traced((x0, args)):
            def h(v):
                return g(v, args)
            try:
                _check(h, jnp.asarray(x_flat), plan.plan, True)
            except ValueError as exc:
                raise ValueError(f"jac_sparsity: {exc}") from None
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[key] = (plan, jac_sparsity)
    return plan
