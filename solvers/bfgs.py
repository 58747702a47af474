"""BFGS: quasi-Newton minimisation with a dense inverse-Hessian approximation.

Broyden (1970), Fletcher (1970), Goldfarb (1970), Shanno (1970); as in Nocedal & Wright,
*Numerical Optimization*, 2nd ed., 2006, Algorithm 6.1. The inverse Hessian approximation ``H``
(``n x n``) is updated after every accepted step ``s`` with gradient change ``y``
(``rho = 1 / s^T y``)::

    H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T
       = H - rho (H y s^T + s y^T H) + (rho^2 y^T H y + rho) s s^T

(the second form costs one product ``H y`` and is exactly symmetric in floating point; the
loop uses an equal form, :meth:`BFGS.next_direction`, that also yields the next direction from
the same pass over ``H``). Before the first update ``H`` is rescaled to ``(s^T y / y^T y) I``
(N&W eq. 6.20), so the very first quasi-Newton step already has the right length, and every
quasi-Newton search tries ``alpha = 1`` first (N&W section 6.1: the unit step is eventually
always accepted, which gives superlinear convergence). The update is skipped when the
curvature condition ``s^T y > eps ||s|| ||y||`` fails, which keeps ``H`` positive definite in
any precision. The line search is the strong-Wolfe search of
:mod:`jacopt.solvers.line_search` (``c1 = 1e-4``, ``c2 = 0.9``), which guarantees
``s^T y > 0`` whenever it converges.

Why the initial scaling stays on although SciPy's unscaled ``H0 = I`` needs fewer function
evaluations on the ill-conditioned test quadratics: with unit steps BFGS quickly corrects an
``H`` that is too large, but one that is too small in some directions only slowly (Powell,
"How bad are the BFGS and DFP methods when the objective function is quadratic?", Math. Prog.
34, 1986). Those quadratics have Hessian eigenvalues in ``[1, cond]``, so ``I`` overestimates
their inverse Hessian everywhere, while the scale ``s^T y / y^T y`` of the first
(steepest-descent) step is set by the largest eigenvalues and underestimates it elsewhere.
That advantage of ``H0 = I`` is one of units: with the objective multiplied by ``1e-2``
(``gtol`` alike) SciPy's BFGS needs 49 instead of 34 evaluations on
``quadratic_n20_cond1e4`` (145 at ``1e-4``), while this BFGS, invariant to the scale of ``f``,
needs 136 at every scale (and fewer than SciPy's on extended Rosenbrock and Wood at every
scale). The benchmark :mod:`jacopt.benchmarks.minimize` prints this check.

Cost per iteration: one objective-and-gradient evaluation, plus ``O(n^2)`` for the direction and
the update on iterations that end a line search (written as elementwise products and sums,
which XLA fuses and compiles several times faster on CPU than matrix-vector ``dot``s).
Memory ``O(n^2)``: use :class:`LBFGS` for large ``n``.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jacopt.solvers.line_search import StrongWolfe
from jacopt.solvers.minimize_problem import check_tolerances, matvec
from jacopt.solvers.quasi_newton import Pair, QuasiNewton, curvature_ok, dots


@dataclasses.dataclass(frozen=True)
class BFGS(QuasiNewton):
    """BFGS with a strong-Wolfe line search (``solver="bfgs"``).

    Fields (hashable; the solver is a static argument of ``jit``):

    - ``gtol``: stop when ``max|grad| <= gtol`` (1e-5, SciPy's default).
    - ``ftol``: stop when an accepted step reduces ``f`` by at most
      ``ftol * max(|f|, |f_prev|, 1)`` (0: off).
    - ``xtol``: stop when an accepted step has ``||s|| <= xtol (xtol + ||x||)`` (0: off).
    - ``line_search``: a :class:`~jacopt.solvers.line_search.StrongWolfe` instance.
    - ``scale_initial``: rescale ``H`` to ``(s^T y / y^T y) I`` before the first update (N&W
      eq. 6.20; True). False keeps ``H0 = I`` as SciPy's BFGS does, which is not invariant to
      the units of ``x``.
    """

    gtol: float = 1e-5
    ftol: float = 0.0
    xtol: float = 0.0
    line_search: StrongWolfe = StrongWolfe()
    scale_initial: bool = True

    def __post_init__(self):
        check_tolerances(self)

    def init_inverse_hessian(self, x):
        """The identity ``(n, n)``, as a constant of the compiled program (no work at run
        time)."""
        return jnp.asarray(np.eye(x.shape[0]), x.dtype)

    def update_inverse_hessian(self, h, s, y, pair: Pair):
        ok = pair.ok
        safe_sy = jnp.where(ok, pair.sy, 1.0)
        if self.scale_initial:
            # N&W eq. 6.20: scale the identity before the first update.
            gamma = safe_sy / jnp.where(ok, pair.yy, 1.0)
            h = jnp.where(pair.first, gamma * jnp.eye(s.shape[0], dtype=s.dtype), h)
        rho = 1.0 / safe_sy
        hy = matvec(h, y)
        new = (h - rho * (jnp.outer(hy, s) + jnp.outer(s, hy))
               + (rho * rho * jnp.sum(y * hy) + rho) * jnp.outer(s, s))
        return jnp.where(ok, new, h)

    def apply_inverse_hessian(self, h, g):
        return matvec(h, g)

    def next_direction(self, state, alpha, grad):
        """The update and the next direction in one pass over ``H`` (algebraically equal to
        :meth:`update_inverse_hessian` then ``-H+ grad``). With ``s = alpha d``,
        ``y = grad - grad_old``, ``hg = H grad`` and ``hy = H y = hg + d`` (the direction was
        ``d = -H grad_old``), the update is the symmetric rank-two correction
        ``H+ = H + s u^T + u s^T`` with ``u = (rho^2 y^T H y + rho) s / 2 - rho hy``, and
        ``H+ grad = hg + (u^T grad) s + (s^T grad) u``: one matrix-vector product, one batch
        of dot products and one pass over ``H``."""
        h, identity, d = state.inverse_hessian, state.identity, state.direction
        slope_old = state.search.slope0  # grad_old^T d
        y = grad - state.grad
        hg = jnp.where(identity, grad, matvec(h, grad))
        yy, yd, ghg, gd, gy = dots([(y, y), (y, d), (grad, hg), (grad, d), (grad, y)])
        sy, ss = alpha * yd, jnp.square(alpha * state.direction_norm)
        ok = curvature_ok(sy, ss, yy)
        safe_sy = jnp.where(ok, sy, 1.0)
        # H is read as c I while it is the identity: c = s^T y / y^T y before the first update
        # (N&W eq. 6.20), else 1.
        c = jnp.ones_like(sy)
        if self.scale_initial:
            c = jnp.where(identity & ok, safe_sy / jnp.where(ok, yy, 1.0), c)
        hg = jnp.where(identity, c * grad, hg)
        hy = jnp.where(identity, c * y, hg + d)
        yhy = jnp.where(identity, c * yy, ghg + 2.0 * gd - slope_old)
        ghy = jnp.where(identity, c * gy, ghg + gd)
        rho = jnp.where(ok, 1.0 / safe_sy, 0.0)  # 0: no update
        half_coef = 0.5 * (rho * rho * yhy + rho)
        s = alpha * d
        u = half_coef * s - rho * hy
        ug = half_coef * alpha * gd - rho * ghy  # u^T grad
        base = jnp.where(identity, c * self.init_inverse_hessian(d), h)
        new_h = base + jnp.outer(s, u) + jnp.outer(u, s)
        direction = -(hg + ug * s + (alpha * gd) * u)
        return new_h, direction, identity & ~ok

