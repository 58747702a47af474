"""Nielsen's update of a Levenberg-Marquardt damping parameter from the gain ratio.

A damped Gauss-Newton step solves ``(G + lam I) p = -g``; the step is judged by the gain ratio
``rho = (f(x) - f(x + p)) / (m(0) - m(p))`` (:func:`jacopt.solvers.trust_region.gain_ratio`)
and, with Nielsen's rule, accepted when ``rho > 0``. Then

    accepted:  lam <- lam * max(1/3, 1 - (2 rho - 1)^3),   nu <- 2
    rejected:  lam <- lam * nu,                            nu <- 2 nu

The damping falls smoothly (to a third at most) after a good step and rises geometrically,
faster after every consecutive rejection, after a bad one, which avoids the oscillation of
Marquardt's fixed factors. References: H. B. Nielsen (1999), "Damping parameter in Marquardt's
method", IMM-REP-1999-05, DTU; K. Madsen, H. B. Nielsen, O. Tingleff (2004), *Methods for
non-linear least squares problems*, 2nd ed., IMM, DTU, section 3.2 (Algorithm 3.16).
"""
from __future__ import annotations

import jax.numpy as jnp

NU_RESET = 2.0
"""``nu`` after an accepted step, and its usual start value."""


def nielsen_update(lam, nu, ratio, accepted):
    """Nielsen's rule (module docstring): returns the next ``(lam, nu)``.

    ``lam``, ``nu``: the damping the step was computed with and its growth factor (scalars);
    ``ratio``: the step's gain ratio (``-inf`` for a failed trial); ``accepted``: whether the
    caller took the step (Nielsen: ``ratio > 0``; a caller may also reject a step for a reason
    of its own, which this treats as any rejection). ``lam`` never falls below the smallest
    normal number of its dtype, so a damped matrix stays positive definite after many good
    steps. A few scalar operations, no branches; works under ``jit`` and ``vmap``.
    """
    dtype = jnp.result_type(lam)
    shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
    new_lam = jnp.where(accepted, lam * shrink, lam * nu)
    new_lam = jnp.maximum(new_lam, jnp.finfo(dtype).tiny).astype(dtype)
    new_nu = jnp.where(accepted, jnp.asarray(NU_RESET, dtype), 2.0 * nu).astype(dtype)
    return new_lam, new_nu
