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

The initial scaling makes the iterates invariant to the scale of ``f``; it stays on although
SciPy's unscaled ``H0 = I`` needs fewer evaluations on ill-conditioned quadratics, an advantage
of units only (Powell, "How bad are the BFGS and DFP methods when the objective function is
quadratic?", Math. Prog. 34, 1986; the design notes give the measurements, and
:mod:`jacopt.benchmarks.minimize` prints the units check).

Yuan's modified BFGS (``update="yuan"``; Y. Yuan, "A modified BFGS algorithm for unconstrained
optimization", IMA J. Numer. Anal. 11, 1991) makes the same update with ``y`` replaced by
``t y``, ``t = 2 (f_k - f_{k+1} + s^T g_{k+1}) / s^T y`` (kept in ``[0.01, 100]``): then
``s^T B+ s`` is the curvature along ``s`` of the quadratic through ``f_k``, ``f_{k+1}`` and
``s^T g_{k+1}``, which uses the function values the plain update ignores. ``t = 1`` when ``f``
is quadratic along ``s``, ``t > 0`` keeps ``H`` positive definite, and scale invariance stays.
It is an option, not the default (design notes).

Cost per iteration: one objective-and-gradient evaluation, plus ``O(n^2)`` for the direction and
the update on iterations that end a line search (written as elementwise products and sums,
which XLA fuses on CPU, rather than matrix-vector ``dot``s).
Memory ``O(n^2)``: use :class:`LBFGS` for large ``n``.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jacopt.solvers.line_search import StrongWolfe
from jacopt.solvers.minimize_problem import check_tolerances, matvec
from jacopt.solvers.quasi_newton import Pair, QuasiNewton, curvature_ok, dots

UPDATES = ("bfgs", "yuan")
"""Values of ``BFGS.update``."""

YUAN_BOUNDS = (0.01, 100.0)
"""The interval Yuan's factor ``t`` is kept in: a safeguard against a wild ``t`` from a long
step (it keeps the update's curvature within a factor 100 of the plain one)."""


def yuan_factor(decrease, s_g_new, sy, ok):
    """Yuan's factor ``t = 2 (f_k - f_{k+1} + s^T g_{k+1}) / s^T y``, kept in
    :data:`YUAN_BOUNDS`; 1 where the pair fails the curvature test or ``t`` is not finite.
    ``decrease = f_k - f_{k+1}``, ``s_g_new = s^T g_{k+1}``. ``t s^T y`` is the curvature
    along ``s`` of the quadratic through ``f_k``, ``f_{k+1}`` and ``s^T g_{k+1}``; ``t = 1``
    exactly when ``f`` is quadratic along ``s``."""
    t = 2.0 * (decrease + s_g_new) / sy
    lo, hi = YUAN_BOUNDS
    return jnp.where(ok & jnp.isfinite(t), jnp.clip(t, lo, hi), 1.0)


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
    - ``update``: ``"bfgs"`` (the default) or ``"yuan"``, Yuan's modified BFGS (see the module
      docstring): the update is made with ``t y`` instead of ``y``, ``t`` measured from the
      function values.
    """

    gtol: float = 1e-5
    ftol: float = 0.0
    xtol: float = 0.0
    line_search: StrongWolfe = StrongWolfe()
    scale_initial: bool = True
    update: str = "bfgs"

    def __post_init__(self):
        check_tolerances(self)
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {self.update!r}.")

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

    def next_direction(self, state, alpha, grad, value=None):
        """The update and the next direction in one pass over ``H`` (algebraically equal to
        :meth:`update_inverse_hessian` then ``-H+ grad``). With ``s = alpha d``,
        ``y = grad - grad_old``, ``hg = H grad`` and ``hy = H y = hg + d`` (the direction was
        ``d = -H grad_old``), the update is the symmetric rank-two correction
        ``H+ = H + s u^T + u s^T`` with ``u = (rho^2 y^T H y + rho) s / 2 - rho hy``, and
        ``H+ grad = hg + (u^T grad) s + (s^T grad) u``: one matrix-vector product, one batch
        of dot products and one pass over ``H``. ``value`` (``f`` at the new point) is read by
        ``update="yuan"`` only, which updates with ``t y`` (:func:`yuan_factor`): every
        product with ``y`` is then multiplied by ``t``."""
        h, identity, d = state.inverse_hessian, state.identity, state.direction
        slope_old = state.search.slope0  # grad_old^T d
        y = grad - state.grad
        hg = jnp.where(identity, grad, matvec(h, grad))
        yy, yd, ghg, gd, gy = dots([(y, y), (y, d), (grad, hg), (grad, d), (grad, y)])
        sy, ss = alpha * yd, jnp.square(alpha * state.direction_norm)
        ok = curvature_ok(sy, ss, yy)
        safe_sy = jnp.where(ok, sy, 1.0)
        t = None
        if self.update == "yuan":
            t = yuan_factor(state.value - value, alpha * gd, safe_sy, ok)
            safe_sy, sy, yy, gy = t * safe_sy, t * sy, t * t * yy, t * gy
        # H is read as c I while it is the identity: c = s^T y / y^T y before the first update
        # (N&W eq. 6.20), else 1.
        c = jnp.ones_like(sy)
        if self.scale_initial:
            c = jnp.where(identity & ok, safe_sy / jnp.where(ok, yy, 1.0), c)
        hg = jnp.where(identity, c * grad, hg)
        if t is None:
            hy = jnp.where(identity, c * y, hg + d)
            yhy = jnp.where(identity, c * yy, ghg + 2.0 * gd - slope_old)
            ghy = jnp.where(identity, c * gy, ghg + gd)
        else:  # products with t y: hy = H (t y), yhy = (t y)^T H (t y), ghy = grad^T H (t y)
            hy = t * jnp.where(identity, c * y, hg + d)
            yhy = jnp.where(identity, c * yy, t * t * (ghg + 2.0 * gd - slope_old))
            ghy = jnp.where(identity, c * gy, t * (ghg + gd))
        rho = jnp.where(ok, 1.0 / safe_sy, 0.0)  # 0: no update
        half_coef = 0.5 * (rho * rho * yhy + rho)
        s = alpha * d
        u = half_coef * s - rho * hy
        ug = half_coef * alpha * gd - rho * ghy  # u^T grad
        base = jnp.where(identity, c * self.init_inverse_hessian(d), h)
        new_h = base + jnp.outer(s, u) + jnp.outer(u, s)
        direction = -(hg + ug * s + (alpha * gd) * u)
        return new_h, direction, identity & ~ok

