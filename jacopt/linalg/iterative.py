"""Matrix-free Krylov solvers: conjugate gradients (:func:`cg`), LSQR (:func:`lsqr`) and
Steihaug-Toint truncated CG for a trust-region subproblem (:func:`steihaug_cg`).

Everything here works on **flat 1-D vectors** (ravel a pytree first, e.g. with
``jax.flatten_util.ravel_pytree``). An operator is a plain function of one such vector:
``matvec(v) -> A v`` and ``rmatvec(u) -> A^T u`` (``jacopt.jacobian_operator(f, x)`` provides
``.mv``, ``.rmv`` and ``.gn_mv`` of this form). Operators are traced once, inside the loop body.

Each solver runs one ``lax.while_loop`` with a fixed-shape state, so it works under ``jit`` and
``vmap`` (under ``vmap`` each member stops on its own test; finished members keep their answer
while the others iterate), never raises inside the loop, and returns a NamedTuple with the
solution, the iteration count and a ``converged`` flag (:func:`steihaug_cg`: ``boundary``).
They compute in the dtype of ``b``. Their default tolerances aim at the accuracy of a dense
solve in that dtype (``eps`` its machine epsilon: ``cg`` ``tol = 10 eps``, ``lsqr`` ``atol = btol
= eps``, which then stops on Paige and Saunders' machine-precision tests); an inexact-Newton caller
wanting fewer iterations passes looser values (e.g. ``sqrt(eps)``). Non-convergence within
``maxiter`` is reported by ``converged``, never raised.

Cost: :func:`cg` and :func:`steihaug_cg` do one ``matvec`` per iteration, :func:`lsqr` one
``matvec`` and one ``rmatvec``, plus O(n + m) vector work.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax.numpy as jnp
from jax import lax

from jacopt.linalg.dense import _real_dtype

__all__ = ["CGResult", "LSQRResult", "LSQR_STOP_MESSAGES", "cg", "lsqr", "SteihaugResult",
           "steihaug_cg", "boundary_root"]


def _check_vector(b, name="b"):
    if jnp.ndim(b) != 1:
        raise ValueError(f"{name} must be a flat 1-D vector, got shape {jnp.shape(b)}; "
                         f"ravel a pytree first (jax.flatten_util.ravel_pytree)")


def _check_maxiter(maxiter, default):
    if maxiter is None:
        return default
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 0:
        raise ValueError(f"maxiter must be a non-negative int or None, got {maxiter!r}")
    return maxiter


# ------------------------------------------------------------------------------------------
# Conjugate gradients
# ------------------------------------------------------------------------------------------

class CGResult(NamedTuple):
    """Result of :func:`cg`.

    - ``x``: the solution, shape ``(n,)``.
    - ``num_steps``: iterations taken (int32).
    - ``converged``: ``||b - A x|| <= max(tol * ||b||, atol)`` held at the end (the residual is
      the recurrence's, which tracks the true one closely for the small iteration counts used
      here).
    - ``residual_norm``: the 2-norm of that residual.
    """

    x: Any
    num_steps: Any
    converged: Any
    residual_norm: Any


def cg(matvec: Callable, b, *, x0=None, tol=None, atol=0.0, maxiter: Optional[int] = None,
       preconditioner: Optional[Callable] = None) -> CGResult:
    """Solve ``A x = b`` for a symmetric positive (semi)definite ``A`` by conjugate gradients.

    Hestenes and Stiefel (1952), "Methods of conjugate gradients for solving linear systems",
    J. Res. Nat. Bur. Standards 49(6); the preconditioned form of Golub and Van Loan, *Matrix
    Computations*, Alg. 11.5.1. Typical use: the Gauss-Newton / Levenberg-Marquardt normal
    equations ``(J^T J + lambda D^2) p = -J^T r`` with ``matvec = lambda v: op.gn_mv(v) +
    lam * d**2 * v`` (prefer :func:`lsqr` on ``J`` itself, which does not square the condition
    number).

    Args:
      matvec: ``v -> A v`` on flat vectors of shape ``(n,)``; ``A`` must be symmetric positive
        semidefinite, and for a singular ``A``, ``b`` must lie in its range.
      b: right-hand side, shape ``(n,)``, real floating; sets the working dtype.
      x0: starting guess, shape ``(n,)`` (default zeros).
      tol, atol: stop when ``||r|| <= max(tol * ||b||, atol)``; ``tol`` defaults to
        ``10 * eps`` of ``b``'s dtype. Both may be traced scalars.
      maxiter: iteration cap (a Python int; default ``10 * n``).
      preconditioner: optional ``v -> M^{-1} v`` for a symmetric positive definite ``M``
        (e.g. ``lambda v: v / diag_of_A`` for Jacobi).

    The loop also stops (not converged, unless the tolerance already holds) on a breakdown:
    a search direction with ``p^T A p <= 0``, which means ``A`` is not positive definite on the
    Krylov space (e.g. ``b`` outside the range of a singular ``A``), or a non-finite value.

    Returns:
      :class:`CGResult`. Cost: one ``matvec`` (and one ``preconditioner``) per iteration.
    """
    _check_vector(b)
    dtype = _real_dtype(b)
    n = b.shape[0]
    maxiter = _check_maxiter(maxiter, 10 * n)
    eps = jnp.finfo(dtype).eps
    tol = 10 * eps if tol is None else tol
    precond = (lambda v: v) if preconditioner is None else preconditioner
    if x0 is None:
        x = jnp.zeros_like(b)
        r = b
    else:
        _check_vector(x0, "x0")
        if x0.shape != b.shape:
            raise ValueError(f"x0 has shape {x0.shape} but b has shape {b.shape}")
        x = jnp.asarray(x0, dtype)
        r = b - matvec(x)
    threshold = jnp.maximum(jnp.asarray(tol, dtype) * jnp.linalg.norm(b), jnp.asarray(atol, dtype))
    z = precond(r)
    rz = jnp.vdot(r, z)
    rnorm = jnp.linalg.norm(r)

    # state: x, r, z, p, rz, rnorm, k, broken
    def cond(state):
        _, _, _, _, _, rnorm, k, broken = state
        return (rnorm > threshold) & (k < maxiter) & ~broken

    def body(state):
        x, r, z, p, rz, rnorm, k, _ = state
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        ok = (pap > 0) & jnp.isfinite(pap)
        alpha = jnp.where(ok, rz / jnp.where(ok, pap, 1), 0)
        x_new = x + alpha * p
        r_new = r - alpha * ap
        z_new = precond(r_new)
        rz_new = jnp.vdot(r_new, z_new)
        beta = jnp.where(rz != 0, rz_new / jnp.where(rz != 0, rz, 1), 0)
        p_new = z_new + beta * p
        rnorm_new = jnp.linalg.norm(r_new)
        broken = ~ok | ~jnp.isfinite(rnorm_new)
        # On a breakdown keep the previous iterate (the new one is meaningless).
        keep = lambda new, old: jnp.where(broken, old, new)
        return (keep(x_new, x), keep(r_new, r), keep(z_new, z), keep(p_new, p),
                keep(rz_new, rz), keep(rnorm_new, rnorm), k + 1, broken)

    state = (x, r, z, z, rz, rnorm, jnp.asarray(0, jnp.int32), jnp.asarray(False))
    x, _, _, _, _, rnorm, k, _ = lax.while_loop(cond, body, state)
    return CGResult(x=x, num_steps=k, converged=rnorm <= threshold, residual_norm=rnorm)


# ------------------------------------------------------------------------------------------
# LSQR
# ------------------------------------------------------------------------------------------

#: Meaning of :attr:`LSQRResult.stop` (Paige and Saunders' ``istop``).
LSQR_STOP_MESSAGES = {
    0: "x = 0 is the exact solution (b = 0 or A^T b = 0)",
    1: "A x = b is solved to within atol, btol (compatible system)",
    2: "the least-squares solution is good enough, given atol",
    3: "the estimate of cond(A) exceeded conlim",
    4: "A x = b is solved to machine precision",
    5: "the least-squares solution is good to machine precision",
    6: "cond(A) seems too large for this machine precision",
    7: "the iteration limit was reached",
    8: "a non-finite value appeared (the operator or b is not finite)",
}


class LSQRResult(NamedTuple):
    """Result of :func:`lsqr`. Norms refer to the damped problem ``Abar = [A; damp*D]``,
    ``bbar = [b; 0]`` in the scaled variable ``y = D x`` (``D = I`` without ``diag``).

    - ``x``: the solution, shape ``(n,)``.
    - ``num_steps``: iterations (int32), each one ``matvec`` and one ``rmatvec``.
    - ``converged``: ``stop`` is 0, 1, 2, 4 or 5 (a tolerance test, or an exact zero solution).
    - ``stop``: which test stopped the loop, a key of :data:`LSQR_STOP_MESSAGES`.
    - ``residual_norm``: estimate of ``||bbar - Abar y||`` (includes the damping term).
    - ``normal_residual_norm``: estimate of ``||Abar^T (bbar - Abar y)||``.
    - ``norm_a``, ``cond_a``: Frobenius-norm and condition-number estimates of ``Abar``.
    - ``norm_x``: estimate of ``||y||``.
    """

    x: Any
    num_steps: Any
    converged: Any
    stop: Any
    residual_norm: Any
    normal_residual_norm: Any
    norm_a: Any
    cond_a: Any
    norm_x: Any


def _sym_ortho(a, b):
    """Givens rotation (c, s, r) with [c s; -s c] [a; b] = [r; 0] and r = hypot(a, b) >= 0,
    (0, 0, 0) when a = b = 0. ``jnp.hypot`` scales internally, so this has the stability of
    Choi's SymOrtho (2006, PhD thesis, Stanford, Table 2.9) without its branches."""
    r = jnp.hypot(a, b)
    safe_r = jnp.where(r > 0, r, 1)
    return a / safe_r, b / safe_r, r


class _LSQRState(NamedTuple):
    x: Any
    u: Any
    v: Any
    w: Any
    alpha: Any
    rhobar: Any
    phibar: Any
    anorm: Any
    ddnorm: Any
    res2: Any
    xxnorm: Any
    z: Any
    cs2: Any
    sn2: Any
    rnorm: Any
    arnorm: Any
    acond: Any
    xnorm: Any
    k: Any
    stop: Any


def lsqr(matvec: Callable, rmatvec: Callable, b, *, damp=0.0, diag=None, atol=None, btol=None,
         conlim=None, maxiter: Optional[int] = None) -> LSQRResult:
    """Solve ``min_x ||A x - b||^2 + damp^2 ||D x||^2`` by LSQR, without forming ``A``.

    Paige and Saunders (1982), "LSQR: An algorithm for sparse linear equations and sparse least
    squares", ACM TOMS 8(1):43-71, with the stopping rules of their Algorithm 583 (and of
    ``scipy.sparse.linalg.lsqr``) and Choi's stable Givens rotations. LSQR works on ``A``
    itself (Golub-Kahan bidiagonalisation), so it does not square ``cond(A)`` as CG on the
    normal equations does.

    A matrix-free Levenberg-Marquardt step ``min ||J p + r||^2 + lambda ||D p||^2`` is
    ``lsqr(op.mv, op.rmv, -r, damp=sqrt(lambda), diag=D)``.

    Args:
      matvec: ``v -> A v``, shape ``(n,) -> (m,)``.
      rmatvec: ``u -> A^T u``, shape ``(m,) -> (n,)``.
      b: right-hand side, shape ``(m,)``, real floating; sets the working dtype.
      damp: damping ``>= 0`` (a traced scalar is fine; one value per member under ``vmap``).
      diag: optional positive scaling ``D``, shape ``(n,)`` (e.g. the Jacobian's column norms).
        It is applied by the change of variable ``y = D x`` (solve with ``A D^{-1}``), which also
        preconditions the iteration; every entry must be positive and finite (zeros give inf/NaN
        and stop with ``stop == 8``).
      atol, btol: stopping tolerances (default ``eps`` of the dtype). The loop stops when
        ``||r|| <= btol ||b|| + atol ||Abar|| ||y||`` (compatible system) or
        ``||Abar^T r|| <= atol ||Abar|| ||r||`` (least squares), ``r`` the damped residual.
      conlim: stop when the estimate of ``cond(Abar)`` exceeds ``conlim`` (default: no limit
        beyond machine precision, test 6).
      maxiter: iteration cap (a Python int; default ``4 * n``: in exact arithmetic LSQR ends
        within ``n`` steps, rounding on ill-conditioned problems costs a few ``n`` more).

    Returns:
      :class:`LSQRResult`. Cost per iteration: one ``matvec``, one ``rmatvec``, O(m + n).
    """
    _check_vector(b)
    dtype = _real_dtype(b)
    eps = jnp.finfo(dtype).eps
    atol = eps if atol is None else atol
    btol = eps if btol is None else btol
    atol = jnp.asarray(atol, dtype)
    btol = jnp.asarray(btol, dtype)
    ctol = jnp.asarray(0 if conlim is None else 1.0 / conlim, dtype)
    damp = jnp.asarray(damp, dtype)
    if jnp.ndim(damp) != 0:
        raise ValueError(f"damp must be a scalar, got shape {jnp.shape(damp)}")
    if diag is not None:
        _check_vector(diag, "diag")
        diag = jnp.asarray(diag, dtype)
        a_mv = lambda y: matvec(y / diag)
        a_rmv = lambda u: rmatvec(u) / diag
    else:
        a_mv, a_rmv = matvec, rmatvec
    dampsq = damp * damp

    def normalise(vec):
        nrm = jnp.linalg.norm(vec)
        return vec / jnp.where(nrm > 0, nrm, 1), nrm

    bnorm = jnp.linalg.norm(b)
    u, beta = normalise(b)
    v_raw = a_rmv(u)
    _check_vector(v_raw, "rmatvec(u)")
    n = v_raw.shape[0]
    maxiter = _check_maxiter(maxiter, 4 * n)
    v_raw = jnp.where(beta > 0, v_raw, 0)
    v, alpha = normalise(v_raw)
    zero = jnp.zeros((), dtype)
    arnorm = alpha * beta
    bad_start = ~(jnp.isfinite(arnorm) & jnp.isfinite(bnorm))
    start_stop = jnp.where(bad_start, 8, jnp.where(arnorm == 0, 0, -1)).astype(jnp.int32)

    state = _LSQRState(
        x=jnp.zeros((n,), dtype), u=u, v=v, w=v, alpha=alpha, rhobar=alpha, phibar=beta,
        anorm=zero, ddnorm=zero, res2=zero, xxnorm=zero, z=zero,
        cs2=-jnp.ones((), dtype), sn2=zero, rnorm=beta, arnorm=arnorm, acond=zero, xnorm=zero,
        k=jnp.asarray(0, jnp.int32), stop=start_stop)

    def cond(s):
        return s.stop < 0

    def body(s):
        k = s.k + 1
        # Golub-Kahan bidiagonalisation: beta u = A v - alpha u; alpha v = A^T u - beta v.
        u, beta = normalise(a_mv(s.v) - s.alpha * s.u)
        anorm = jnp.where(beta > 0, jnp.sqrt(s.anorm ** 2 + s.alpha ** 2 + beta ** 2 + dampsq),
                          s.anorm)
        v_new, alpha_new = normalise(a_rmv(u) - beta * s.v)
        v = jnp.where(beta > 0, v_new, s.v)
        alpha = jnp.where(beta > 0, alpha_new, s.alpha)
        # Eliminate the damping term with a rotation (identity when damp == 0).
        rhobar1 = jnp.where(damp > 0, jnp.sqrt(s.rhobar ** 2 + dampsq), s.rhobar)
        safe_rhobar1 = jnp.where(rhobar1 != 0, rhobar1, 1)
        cs1 = jnp.where(damp > 0, s.rhobar / safe_rhobar1, 1)
        sn1 = jnp.where(damp > 0, damp / safe_rhobar1, 0)
        psi = sn1 * s.phibar
        phibar = cs1 * s.phibar
        # Plane rotation eliminating the subdiagonal beta.
        cs, sn, rho = _sym_ortho(rhobar1, beta)
        safe_rho = jnp.where(rho != 0, rho, 1)
        theta = sn * alpha
        rhobar = -cs * alpha
        phi = cs * phibar
        phibar = sn * phibar
        tau = sn * phi
        # Update x and w.
        dk = s.w / safe_rho
        x = s.x + (phi / safe_rho) * s.w
        w = v - (theta / safe_rho) * s.w
        ddnorm = s.ddnorm + jnp.vdot(dk, dk)
        # Estimate ||x|| (Paige and Saunders, section 5.2).
        delta = s.sn2 * rho
        gambar = -s.cs2 * rho
        rhs = phi - delta * s.z
        zbar = rhs / jnp.where(gambar != 0, gambar, 1)
        xnorm = jnp.sqrt(s.xxnorm + zbar ** 2)
        gamma = jnp.sqrt(gambar ** 2 + theta ** 2)
        safe_gamma = jnp.where(gamma != 0, gamma, 1)
        cs2 = gambar / safe_gamma
        sn2 = theta / safe_gamma
        z = rhs / safe_gamma
        xxnorm = s.xxnorm + z ** 2
        # Norm estimates and stopping tests.
        acond = anorm * jnp.sqrt(ddnorm)
        res2 = s.res2 + psi ** 2
        rnorm = jnp.sqrt(phibar ** 2 + res2)
        arnorm = alpha * jnp.abs(tau)
        test1 = rnorm / bnorm
        test2 = arnorm / (anorm * rnorm + eps)
        test3 = 1 / (acond + eps)
        t1 = test1 / (1 + anorm * xnorm / bnorm)
        rtol = btol + atol * anorm * xnorm / bnorm
        stop = jnp.asarray(-1, jnp.int32)
        stop = jnp.where(k >= maxiter, 7, stop)
        stop = jnp.where(1 + test3 <= 1, 6, stop)
        stop = jnp.where(1 + test2 <= 1, 5, stop)
        stop = jnp.where(1 + t1 <= 1, 4, stop)
        stop = jnp.where(test3 <= ctol, 3, stop)
        stop = jnp.where(test2 <= atol, 2, stop)
        stop = jnp.where(test1 <= rtol, 1, stop)
        finite = jnp.isfinite(rnorm) & jnp.isfinite(arnorm) & jnp.all(jnp.isfinite(x))
        stop = jnp.where(finite, stop, 8).astype(jnp.int32)
        # On a non-finite value keep the last finite iterate.
        x = jnp.where(finite, x, s.x)
        return _LSQRState(x=x, u=u, v=v, w=w, alpha=alpha, rhobar=rhobar, phibar=phibar,
                          anorm=anorm, ddnorm=ddnorm, res2=res2, xxnorm=xxnorm, z=z, cs2=cs2,
                          sn2=sn2, rnorm=rnorm, arnorm=arnorm, acond=acond, xnorm=xnorm, k=k,
                          stop=stop)

    if maxiter == 0:
        s = state._replace(stop=jnp.where(state.stop < 0, 7, state.stop).astype(jnp.int32))
    else:
        s = lax.while_loop(cond, body, state)
    x = s.x if diag is None else s.x / diag
    converged = jnp.isin(s.stop, jnp.array([0, 1, 2, 4, 5], jnp.int32))
    return LSQRResult(x=x, num_steps=s.k, converged=converged, stop=s.stop,
                      residual_norm=s.rnorm, normal_residual_norm=s.arnorm, norm_a=s.anorm,
                      cond_a=s.acond, norm_x=s.xnorm)

# ------------------------------------------------------------------------------------------
# Steihaug-Toint truncated conjugate gradients
# ------------------------------------------------------------------------------------------

def boundary_root(z, d, radius):
    """The ``tau >= 0`` with ``||z + tau d|| = radius`` (for ``||z|| <= radius``)."""
    dd = jnp.sum(d * d)
    zd = jnp.sum(z * d)
    zz = jnp.sum(z * z)
    disc = jnp.sqrt(jnp.maximum(zd * zd + dd * (radius * radius - zz), 0.0))
    return (disc - zd) / jnp.where(dd > 0, dd, 1.0)


class SteihaugResult(NamedTuple):
    """``step`` (n,); ``predicted_reduction``; ``num_products`` (Hessian-vector products);
    ``boundary``: the step ended on the trust-region boundary."""

    step: Any
    predicted_reduction: Any
    num_products: Any
    boundary: Any


def steihaug_cg(hvp, g, radius, *, max_iterations: int, forcing=None) -> SteihaugResult:
    """Steihaug-Toint truncated CG for ``min g^T p + 0.5 p^T H p``, ``||p|| <= radius``
    (N&W Algorithm 7.2), with ``hvp(v) = H v``. Stops at the boundary, on a direction of
    non-positive curvature (followed to the boundary), when ``||r|| <= forcing`` (default
    ``min(0.5, sqrt(||g||)) ||g||``), or after ``max_iterations`` products. Runs one
    ``lax.while_loop``; ``H p`` is tracked along the way so the predicted reduction costs no
    extra product."""
    gnorm = jnp.linalg.norm(g)
    tol = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm if forcing is None else forcing
    zero = jnp.zeros_like(g)

    # carry: z, Hz, r, d, rr, k, done, boundary
    def cond(c):
        return ~c[6] & (c[5] < max_iterations)

    def body(c):
        z, hz, r, d, rr, k, _, _ = c
        hd = hvp(d)
        dhd = jnp.sum(d * hd)
        alpha = rr / jnp.where(dhd > 0, dhd, 1.0)
        z_next = z + alpha * d
        negative = ~(dhd > 0)
        outside = jnp.linalg.norm(z_next) >= radius
        to_boundary = negative | outside
        tau = boundary_root(z, d, radius)
        z_b, hz_b = z + tau * d, hz + tau * hd
        r_next = r + alpha * hd
        rr_next = jnp.sum(r_next * r_next)
        converged = jnp.sqrt(rr_next) <= tol
        beta = rr_next / jnp.where(rr > 0, rr, 1.0)
        d_next = -r_next + beta * d
        z_new = jnp.where(to_boundary, z_b, z_next)
        hz_new = jnp.where(to_boundary, hz_b, hz + alpha * hd)
        done = to_boundary | converged | ~jnp.isfinite(rr_next)
        return (z_new, hz_new, r_next, d_next, rr_next, k + 1, done, to_boundary)

    start = (zero, zero, g, -g, jnp.sum(g * g), jnp.asarray(0, jnp.int32), gnorm <= tol,
             jnp.asarray(False))
    z, hz, _, _, _, k, _, boundary = lax.while_loop(cond, body, start)
    predicted = -(jnp.sum(g * z) + 0.5 * jnp.sum(z * hz))
    return SteihaugResult(z, predicted, k, boundary)
