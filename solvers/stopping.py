"""What every least-squares solver counts and how it decides to stop, written once: the named
counters, the start's status, MINPACK's stopping tests with one meaning of ``ftol``, ``xtol``
and ``gtol``, and jacopt's rule that an f or x stop is a success only when a first-order test
backs it.

References: J. J. Moré, B. S. Garbow, K. E. Hillstrom (1980), MINPACK-1 (``lmder``'s tests);
P. E. Gill, W. Murray, M. H. Wright (1981), *Practical Optimization*, section 8.2.3.2 (the
rounding levels of the first-order test).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from jacopt.status import Status


class Counters(NamedTuple):
    """The int32 counters of a least-squares run (with any batch axes in front):

    - ``num_accepted``, ``num_rejected``: trials accepted and rejected;
    - ``nfev``, ``njev``: residual and Jacobian evaluations (for the matrix-free solver a
      linearisation counts as one of each);
    - ``stalled``: accepted steps in a row that made no progress (Levenberg-Marquardt's
      rounding-level stall test);
    - ``nonfinite``: non-finite trials since the last accepted step
      (:func:`nonfinite_since_accept`);
    - ``inner_steps``: inner (LSQR or CG) iterations of the matrix-free solver.

    A solver that has no use for a field leaves it 0."""

    num_accepted: Any
    num_rejected: Any
    nfev: Any
    njev: Any
    stalled: Any
    nonfinite: Any
    inner_steps: Any

    @classmethod
    def start(cls, nfev=0, njev=0) -> "Counters":
        """Counters at the start (``nfev``, ``njev``: evaluations done before the loop)."""
        zero = jnp.zeros((), jnp.int32)
        return cls(zero, zero, zero + nfev, zero + njev, zero, zero, zero)

    def tally(self, accepted, rejected, nfev, njev, **named) -> "Counters":
        """The counters after one iteration: ``accepted`` / ``rejected`` (bools) add to their
        counts, ``nfev`` / ``njev`` evaluations are added, and ``named`` fields are set."""
        return self._replace(num_accepted=self.num_accepted + accepted.astype(jnp.int32),
                             num_rejected=self.num_rejected + rejected.astype(jnp.int32),
                             nfev=self.nfev + nfev, njev=self.njev + njev,
                             **{k: jnp.asarray(v, jnp.int32) for k, v in named.items()})


def nonfinite_since_accept(previous, trial_finite, accepted):
    """The count of non-finite trials since the last accepted step (0 after one). A step
    control that collapses while it is positive collapsed on non-finite values (``NONFINITE``),
    even when the very last, tiny trial happened to be finite: the status must not depend on
    that luck."""
    return jnp.where(accepted, 0, previous + (~trial_finite).astype(jnp.int32))


def start_status(point, gtol):
    """The status at the start ``point`` (a ``PointEvaluation``): ``NONFINITE`` when anything
    there is non-finite, ``GTOL`` when the gradient test already holds, else ``RUNNING``."""
    finite = point.finite & jnp.all(jnp.isfinite(point.x))
    return jnp.where(~finite, Status.NONFINITE,
                     jnp.where(point.gtol_measure <= gtol, Status.GTOL,
                               Status.RUNNING)).astype(jnp.int32)


def stop_status(tols, *, cost, actual, predicted, ratio, step_bound, xnorm, accepted,
                gtol_measure, judged=True, nonfinite=None, limit=False):
    """MINPACK's stopping tests after one trial, with one meaning for every solver; ``tols``
    has ``ftol``, ``xtol``, ``gtol``. Relative to the ``cost`` and ``xnorm = ||D x||`` of the
    point the trial started from. Returns the int32 :class:`Status`, ``RUNNING`` if none holds,
    the first of:

    - ``NONFINITE``: ``nonfinite`` (non-finite trials since the last accepted step) is
      positive and the step bound collapsed (``XTOL`` or ``PRECISION_LIMIT`` below);
    - ``GTOL``: an ``accepted`` trial's scaled gradient ``gtol_measure <= gtol``;
    - ``FTOL``: the actual and predicted relative reductions are both ``<= ftol`` and
      ``ratio = actual / predicted <= 2`` (``ftol = 0``: both exactly zero);
    - ``XTOL``: ``step_bound <= xtol ||D x||``, with ``step_bound`` the new trust-region radius
      (MINPACK) or the scaled length of the step taken (line search, damping control);
    - ``PRECISION_LIMIT``: the same with machine epsilon (no representable progress), or
      ``limit`` (a solver's own rounding-level test).

    ``judged`` (bool) gates the f and x tests: a line search's step that it cut short says how
    far the search got, not how far the method can go."""
    eps = jnp.finfo(jnp.result_type(xnorm)).eps
    cost0 = jnp.where(cost > 0, cost, 1.0)
    if tols.ftol > 0:  # traced only when on (the default is off)
        small_f = ((jnp.abs(actual) <= tols.ftol * cost0) & (predicted <= tols.ftol * cost0)
                   & (ratio <= 2.0))
    else:  # ftol = 0: only an exactly zero step and reduction
        small_f = (actual == 0) & (predicted == 0)
    small_x = step_bound <= tols.xtol * xnorm
    limit = (step_bound <= eps * xnorm) | limit
    small_g = accepted & (gtol_measure <= tols.gtol)
    status = jnp.where(small_g, Status.GTOL,
             jnp.where(judged & small_f, Status.FTOL,
             jnp.where(judged & small_x, Status.XTOL,
             jnp.where(limit, Status.PRECISION_LIMIT, Status.RUNNING))))
    if nonfinite is not None:
        status = jnp.where((nonfinite > 0) & (small_x | limit), Status.NONFINITE, status)
    return status.astype(jnp.int32)


def first_order_backed(tols, point, start_cost, gn_step, gn_gain, column_norms=None):
    """Whether a first-order test backs a stop at ``point`` (a ``PointEvaluation``; the rule of
    :func:`confirm_stop`).

    ``gn_step`` is the full (undamped, unrestricted) Gauss-Newton step ``p`` from ``point``
    (non-finite where there is none: a singular ``R``, the dual form; ``None`` for a solver
    without ``J``, which passes estimated ``column_norms`` instead of ``point.column_norms``)
    and ``gn_gain`` its model reduction ``-(g.p + ||J~ p||^2 / 2)``; ``tols`` has ``ftol``,
    ``xtol``, ``gtol``. The rounding levels are Gill, Murray & Wright's: near a minimum a
    relative change of ``x`` below ``sqrt(eps)`` changes the cost by less than rounding, and a
    gradient computed there is only known to about ``eps^(1/3)``. One of these holds:

    - MINPACK's scaled gradient ``<= max(gtol, eps^(1/3))`` (a minimiser where ``J`` is nearly
      singular, as Chebyquad's, passes this test only);
    - the full step would gain at most ``max(ftol, eps) C``: the gradient is small in the
      Gauss-Newton metric relative to the cost (large residuals);
    - the full step has ``||D p|| <= max(xtol, sqrt(eps)) ||D x||``, with ``D`` the column norms
      of ``J`` at ``point`` (not the running maximum, which a far start can leave huge): it
      would change nothing at the tolerance (zero residuals, where the first test cannot hold);
    - the residuals vanished (zero-residual minimisers where ``J`` is singular, so the
      Gauss-Newton step does not shrink faster than ``x``, or where there is no Gauss-Newton
      step): ``||r|| <= sqrt(eps) sum_j ||J_j|| |x_j|``, below what a relative change of ``x``
      at the rounding level above makes, or ``C <= eps^2 C(x0)``."""
    eps = jnp.finfo(jnp.result_type(point.cost)).eps
    norms = point.column_norms if column_norms is None else column_norms
    rnorm = jnp.sqrt(jnp.sum(point.r * point.r))
    vanished = ((rnorm <= jnp.sqrt(eps) * jnp.sum(norms * jnp.abs(point.x)))
                | (point.cost <= eps * eps * start_cost))
    small_g = point.gtol_measure <= jnp.maximum(tols.gtol, jnp.cbrt(eps))
    if gn_step is None:  # matrix-free: the gradient and residual tests only
        return small_g | vanished
    scale = jnp.where(norms > 0, norms, 1.0)
    pnorm = jnp.sqrt(jnp.sum((scale * gn_step) ** 2))
    xnorm = jnp.sqrt(jnp.sum((scale * point.x) ** 2))
    gain_ok = jnp.isfinite(gn_gain) & (gn_gain <= jnp.maximum(tols.ftol, eps) * point.cost)
    step_ok = jnp.isfinite(pnorm) & (pnorm <= jnp.maximum(tols.xtol, jnp.sqrt(eps)) * xnorm)
    return small_g | gain_ok | step_ok | vanished


def confirm_stop(status, backed):
    """jacopt's rule for a success: a stop on the cost (``FTOL``), step (``XTOL``) or rounding
    (``PRECISION_LIMIT``) test counts only when a first-order test backs it
    (:func:`first_order_backed`); otherwise the run ends ``STALLED`` (a failure) at the best
    point found. MINPACK (``lmder``, ``info`` 1-4) and Ceres (function, parameter and gradient
    tolerance) report their f and x tests as convergence without such a check; SciPy's
    ``least_squares`` too."""
    claims = ((status == Status.FTOL) | (status == Status.XTOL)
              | (status == Status.PRECISION_LIMIT))
    return jnp.where(claims & ~backed, Status.STALLED, status).astype(jnp.int32)
