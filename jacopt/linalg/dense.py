"""Dense kernels of the least-squares solvers: Householder QR (:func:`r_factor`,
:func:`triangular_factor`), triangular solves, the damped (Levenberg-Marquardt) and dual
factorisations, the rank-safe triangular least-squares solve, and truncated SVD / eigenvalue
pseudo-inverses.

Shapes are flat: ``J`` ``(m, n)``, ``R`` ``(n, n)`` upper triangular, vectors ``(n,)`` or
``(m,)``. Every function is jittable and vmappable. The truncated pseudo-inverses discard
singular values below ``rcond * s_max`` (default ``rcond = eps * max(m, n)``, the rule of
``numpy.linalg.lstsq`` and ``scipy.optimize.curve_fit``) and report the numerical rank.

References: G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed. (Householder QR,
Algorithm 5.2.1); Å. Björck, *Numerical Methods for Least Squares Problems*, 1996 (the stacked
damped system, section 2.7.1 and 5.1.3); J. J. Moré (1978), LNM 630 (the damped QR).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

__all__ = ["UNROLLED_MAX_N", "r_factor", "triangular_factor", "solve_upper",
           "solve_upper_transposed", "damped_step", "dual_factor", "triangular_lstsq",
           "SVDSolve", "lstsq_svd", "GramPinv", "gram_pinv", "pinv_symmetric_apply"]


def _real_dtype(b):
    dtype = jnp.result_type(b)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"b must have a real floating dtype, got {dtype}; jacopt never casts "
                        f"silently (cast it first, e.g. b.astype(jnp.float64))")
    return dtype


# ------------------------------------------------------------------------------------------
# QR factorisations and triangular solves
# ------------------------------------------------------------------------------------------

UNROLLED_MAX_N = 4
"""Up to this many parameters the triangular solves below are unrolled into plain array
operations instead of LAPACK calls: under ``vmap`` (a batch of small fits) they then run across
the whole batch at once, where a batched LAPACK call loops over the members, for a few more
compiled kernels (design notes). The QR is unrolled only under ``vmap`` (:func:`r_factor`)."""


def r_factor(a, unrolled=False):
    """The ``R`` of a QR factorisation of ``a`` (``p x q``, ``p >= q``): ``(q, q)`` upper
    triangular with ``R^T R = a^T a`` (row signs not normalised). LAPACK ``geqrf`` (``Q`` never
    formed); with ``unrolled`` and ``q <= UNROLLED_MAX_N + 1`` columns, the same Householder
    reflections (Golub & Van Loan, *Matrix Computations*, 4th ed., Algorithm 5.2.1) applied
    column by column, each column a separate array updated with elementwise products and
    sums only (no ``dot``, scatter or in-place slice update, which XLA's CPU backend runs as
    separate, slow kernels on small batched blocks). Under ``vmap`` these run across the whole
    batch at once, where batched LAPACK loops over the members (:mod:`jacopt.benchmarks.batch`;
    design notes); single solves keep LAPACK, which is not slower there. Norms are not
    rescaled: a column whose squares underflow (float64 entries below about 1e-154) gives a
    zero diagonal, where LAPACK's scaled norms do not. Cost O(p q^2)."""
    p, q = a.shape
    if not unrolled or q > UNROLLED_MAX_N + 1:
        return jnp.linalg.qr(a, mode="r")
    cols = [a[:, k] for k in range(q)]  # the rows not yet reduced, one array per column
    rows = []
    for j in range(q):
        x = cols[j]
        norm = jnp.sqrt(jnp.sum(x * x))
        alpha = jnp.where(x[0] >= 0, -norm, norm)
        v = jnp.concatenate([x[:1] - alpha, x[1:]])
        vv = jnp.sum(v * v)
        beta = jnp.where(vv > 0, 2.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        row = [jnp.zeros((), a.dtype)] * j + [alpha]
        for k in range(j + 1, q):
            c = cols[k] - (beta * jnp.sum(v * cols[k])) * v
            row.append(c[0])
            cols[k] = c[1:]
        rows.append(jnp.stack(row))
    return jnp.stack(rows)


def solve_upper(R, b):
    """``R^{-1} b`` for upper-triangular ``R`` (one triangular solve, O(n^2); back
    substitution unrolled into array operations for ``n <= UNROLLED_MAX_N``)."""
    n = R.shape[0]
    if n <= UNROLLED_MAX_N:
        x = [None] * n
        for i in reversed(range(n)):
            rest = sum((R[i, j] * x[j] for j in range(i + 1, n)), jnp.zeros((), R.dtype))
            x[i] = (b[i] - rest) / R[i, i]
        return jnp.stack(x)
    return lax.linalg.triangular_solve(R, b[:, None], left_side=True, lower=False)[:, 0]


def solve_upper_transposed(R, b):
    """``R^{-T} b`` for upper-triangular ``R`` (one triangular solve, O(n^2); forward
    substitution unrolled into array operations for ``n <= UNROLLED_MAX_N``)."""
    n = R.shape[0]
    if n <= UNROLLED_MAX_N:
        x = [None] * n
        for i in range(n):
            rest = sum((R[j, i] * x[j] for j in range(i)), jnp.zeros((), R.dtype))
            x[i] = (b[i] - rest) / R[i, i]
        return jnp.stack(x)
    return lax.linalg.triangular_solve(
        R, b[:, None], left_side=True, lower=False, transpose_a=True
    )[:, 0]


def triangular_factor(J, r, fixed=None, fixed_scale=None, unrolled=False):
    """QR of the augmented ``[J | r]``: returns ``(R, qtr)`` with ``J = Q R`` (``R`` upper
    triangular ``(n, n)``) and ``qtr = Q^T r`` ``(n,)``, from one Householder factorisation
    (LAPACK ``geqrf``; ``Q`` is never formed). Then ``||J p + r||^2 = ||R p + qtr||^2 +
    const`` for every ``p``, so every later damped solve works on the small ``R``.

    ``fixed`` (bool ``(n,)``) pins those components of the step to zero: their columns are
    dropped from ``J`` and rows ``fixed_scale[j] * e_j`` (right-hand side 0) appended, so
    ``R`` stays non-singular. ``unrolled``: see :func:`r_factor`. Cost O(m n^2) (O((m + n) n^2)
    with ``fixed``).
    """
    m, n = J.shape
    if fixed is not None:
        J = jnp.where(fixed[None, :], 0.0, J)
        pins = jnp.diag(jnp.where(fixed, fixed_scale, 0.0)).astype(J.dtype)
        J = jnp.concatenate([J, pins], axis=0)
        r = jnp.concatenate([r, jnp.zeros((n,), r.dtype)])
        m = m + n
    a = jnp.concatenate([J, r[:, None]], axis=1)
    if m < n + 1:
        a = jnp.concatenate([a, jnp.zeros((n + 1 - m, n + 1), a.dtype)], axis=0)
    top = r_factor(a, unrolled)[:n]  # Q is not formed
    return top[:, :n], top[:, n]


def damped_step(R, qtr, scale, lam, unrolled=False):
    """``p`` minimising ``||R p + qtr||^2 + lam ||D p||^2`` (equivalently ``||J p + r||^2 +
    lam ||D p||^2``) from the QR of the stacked ``[R | qtr; sqrt(lam) D | 0]`` (``2n x (n+1)``,
    equal to the QR of ``[J; sqrt(lam) D]`` since ``Q`` is orthogonal) and one triangular solve;
    also returns that QR's ``S`` (``n x n``, ``S^T S = R^T R + lam D^T D``). Cost O(n^3)."""
    n = R.shape[0]
    top = jnp.concatenate([R, qtr[:, None]], axis=1)
    bottom = jnp.concatenate(
        [jnp.diag(jnp.sqrt(lam) * scale), jnp.zeros((n, 1), R.dtype)], axis=1
    )
    h = r_factor(jnp.concatenate([top, bottom], axis=0), unrolled)
    S = h[:n, :n]
    return -solve_upper(S, h[:n, n]), S


def dual_factor(A, lam):
    """The dual (row-space) form's factorisation of a damped least-squares problem
    (:mod:`jacopt.solvers.levenberg_marquardt`) for ``A = J~ D^{-1}`` (``m x n``,
    ``m < n``): the QR ``Q S`` of the stacked ``[A^T; sqrt(lam) I_m]`` (``(n+m) x m``), as
    ``(Q_top, S)`` with ``Q_top`` the first ``n`` rows of ``Q``. Since ``S^T S = A A^T + lam I``
    and ``Q_top = A^T S^{-1}``, ``(A^T A + lam I)^{-1} A^T b = Q_top S^{-T} b`` for every ``b``
    (the damped step is ``q = D p = -Q_top S^{-T} r~``). Cost O((n + m) m^2)."""
    m, n = A.shape
    stacked = jnp.concatenate([A.T, jnp.sqrt(lam) * jnp.eye(m, dtype=A.dtype)], axis=0)
    Q, S = jnp.linalg.qr(stacked, mode="reduced")
    return Q[:n], S


def triangular_lstsq(R, qtr, scale):
    """``p`` minimising ``||R p + qtr||``: ``-R^{-1} qtr`` by one triangular solve when ``R`` is
    numerically non-singular, else the minimum-``||D p||`` solution from a truncated SVD of
    ``R D^{-1}`` (:func:`lstsq_svd`: singular values ``<= n eps sigma_max`` dropped), so flat
    directions get no step rather than an infinite one. Shapes ``(n, n)``, ``(n,)``, ``(n,)``;
    O(n^2), O(n^3) in the singular case."""
    n = R.shape[0]
    eps = jnp.finfo(R.dtype).eps
    diag = jnp.abs(jnp.diagonal(R))
    p_tri = -solve_upper(R, qtr)
    singular = (jnp.min(diag) <= n * eps * jnp.max(diag)) | ~jnp.all(jnp.isfinite(p_tri))

    def minimum_norm():
        return -lstsq_svd(R / scale[None, :], qtr).x / scale

    return lax.cond(singular, minimum_norm, lambda: p_tri)


# ------------------------------------------------------------------------------------------
# Dense SVD helpers
# ------------------------------------------------------------------------------------------

def _svd_cutoff(a, rcond):
    """SVD of ``a`` (m, n) with the mask of kept singular values and the numerical rank."""
    if jnp.ndim(a) != 2:
        raise ValueError(f"a must be a 2-D matrix, got shape {jnp.shape(a)}")
    dtype = _real_dtype(a)
    m, n = a.shape
    if rcond is None:
        rcond = jnp.finfo(dtype).eps * max(m, n)
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    s_max = s[0] if s.shape[0] else jnp.zeros((), dtype)
    keep = (s > jnp.asarray(rcond, dtype) * s_max) & jnp.isfinite(s)
    rank = jnp.sum(keep).astype(jnp.int32)
    s_inv = jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)
    return u, s, vt, s_inv, rank


class SVDSolve(NamedTuple):
    """Result of :func:`lstsq_svd`: ``x`` (n,) or (n, k), numerical ``rank``, ``singular_values``
    (descending, shape ``(min(m, n),)``)."""

    x: Any
    rank: Any
    singular_values: Any


def lstsq_svd(a, b, rcond=None) -> SVDSolve:
    """Minimum-norm least-squares solution of ``a x = b`` by a truncated SVD pseudo-inverse.

    Singular values ``<= rcond * s_max`` are treated as zero (default ``rcond = eps * max(m,
    n)``, as ``numpy.linalg.lstsq``). ``a``: (m, n); ``b``: (m,) or (m, k). Jittable and
    vmappable; works for any rank. Cost: one SVD, O(m n min(m, n)).
    """
    u, s, vt, s_inv, rank = _svd_cutoff(a, rcond)
    if jnp.ndim(b) not in (1, 2) or jnp.shape(b)[0] != a.shape[0]:
        raise ValueError(f"b must have shape ({a.shape[0]},) or ({a.shape[0]}, k), "
                         f"got {jnp.shape(b)}")
    utb = u.T @ b
    keep = s_inv > 0 if jnp.ndim(b) == 1 else (s_inv > 0)[:, None]
    divisor = s if jnp.ndim(b) == 1 else s[:, None]
    scaled = jnp.where(keep, utb / jnp.where(keep, divisor, 1), 0)  # one rounding, not two
    return SVDSolve(x=vt.T @ scaled, rank=rank, singular_values=s)


class GramPinv(NamedTuple):
    """Result of :func:`gram_pinv`.

    - ``inverse``: (n, n), ``(a^T a)^+``.
    - ``rank``: the numerical rank of ``a``.
    - ``singular_values``: of ``a``, descending, ``(min(m, n),)``.
    - ``identifiable``: (n,) bool, whether the coordinate direction ``e_j`` lies in the row space
      of ``a`` (to a relative ``sqrt(eps)``): then ``x_j`` is determined by ``a x`` and
      ``inverse[j, j]`` is its variance; otherwise only combinations involving ``x_j`` are.
    """

    inverse: Any
    rank: Any
    singular_values: Any
    identifiable: Any


def gram_pinv(a, rcond=None) -> GramPinv:
    """Pseudo-inverse of the Gram matrix ``a^T a`` from the SVD of ``a`` (never forms ``a^T a``).

    ``(a^T a)^+ = V diag(1/s^2) V^T`` over the kept singular values (``s > rcond * s_max``,
    default ``rcond = eps * max(m, n)``, the rule of ``scipy.optimize.curve_fit``). This is the
    unscaled covariance of a least-squares fit with Jacobian ``a``; ``rank < n`` means some
    parameter combinations are not identified (their directions get zero variance here, so a
    caller must report them: see ``identifiable``). ``a``: (m, n). Cost: one SVD.
    """
    _, s, vt, s_inv, rank = _svd_cutoff(a, rcond)
    inverse = (vt.T * s_inv ** 2) @ vt
    # ||P_row e_j||^2 = sum over kept singular vectors of vt[k, j]^2; 1 when e_j is in the row
    # space (the rows of vt past min(m, n) are never kept, so m < n is covered).
    in_row_space = jnp.sum(jnp.where((s_inv > 0)[:, None], vt * vt, 0), axis=0)
    tol = jnp.sqrt(jnp.finfo(in_row_space.dtype).eps)
    return GramPinv(inverse=inverse, rank=rank, singular_values=s,
                    identifiable=in_row_space >= 1 - tol)


def pinv_symmetric_apply(h, b):
    """``pinv(h) @ b`` for a symmetric ``h`` via ``eigh``; eigenvalues below
    ``n * eps * max|eig|`` are treated as zero."""
    w, v = jnp.linalg.eigh(h)
    cutoff = h.shape[-1] * jnp.finfo(h.dtype).eps * jnp.max(jnp.abs(w))
    inv = jnp.where(jnp.abs(w) > cutoff, 1.0 / jnp.where(w == 0, 1.0, w), 0.0)
    return v @ (inv * (v.T @ b))
