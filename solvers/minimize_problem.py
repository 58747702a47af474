"""The flat minimisation problem every minimiser sees, and what the minimisers share: the marker
base class, the state fields :func:`jacopt.minimize` reads, and the termination tests.

Everything works on flat vectors: ``x`` and the gradient have shape ``(n,)``.
:func:`jacopt.minimize` ravels the user's pytrees and builds a :class:`MinimizeProblem`;
solvers never see pytrees.

Termination (:meth:`Minimizer.check_termination`), tested after every iteration on the current
(accepted) point, in this order of priority:

- ``NONFINITE``: the objective or its gradient at the current point is NaN or inf (only
  possible at the start: a non-finite trial is never accepted).
- ``GTOL``: ``max|grad| <= gtol`` (SciPy's ``norm=inf`` test).
- ``FTOL`` (off when ``ftol = 0``): the last iteration accepted a step and
  ``(f_prev - f) <= ftol * max(|f_prev|, |f|, 1)`` (L-BFGS-B's test).
- ``XTOL`` (off when ``xtol = 0``): the last iteration accepted a step and
  ``||step|| <= xtol * (xtol + ||x||)`` (MINPACK's form).
- the solver's own failure code, ``PRECISION_LIMIT`` (no trial step can change ``f`` or ``x``
  any more in this floating-point precision) or ``LINE_SEARCH_FAILED``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jacopt.results import History
from jacopt.status import Status


class MinimizeProblem(NamedTuple):
    """Minimise the scalar ``fun(x, args)`` over flat ``x`` of shape ``(n,)``, within
    ``lower <= x <= upper`` when those are given (``(n,)`` arrays, ``-inf``/``inf`` for no
    bound; only solvers with ``takes_bounds`` read them).

    ``fun`` is traced inside the solver's loop body; ``args`` is any pytree (traced).
    """

    fun: Callable
    args: Any
    lower: Any = None
    upper: Any = None

    def value(self, x):
        """``f(x)``: one evaluation."""
        return self.fun(x, self.args)

    def value_and_grad(self, x):
        """``(f(x), grad f(x))``: one forward and one reverse pass (about 3x ``f``)."""
        return jax.value_and_grad(self.fun)(x, self.args)

    def box(self, x):
        """``(lower, upper)`` as arrays like ``x`` (``-inf``/``inf`` where unset)."""
        lower = jnp.full_like(x, -jnp.inf) if self.lower is None else jnp.asarray(
            self.lower, x.dtype)
        upper = jnp.full_like(x, jnp.inf) if self.upper is None else jnp.asarray(
            self.upper, x.dtype)
        return lower, upper

    def projected_gradient(self, x, g):
        """``P(x - g) - x``, zero exactly at a first-order stationary point in the box, written
        ``clip(-g, lower - x, upper - x)`` so that it is ``-g`` exactly where unbounded (the
        first form loses ``g`` next to a large ``x``; SciPy's ``projgr`` does the same)."""
        lower, upper = self.box(x)
        return jnp.clip(-g, lower - x, upper - x)


class Minimizer:
    """Marker base of the minimisers (``solver=`` accepts any instance).

    A minimiser is a frozen dataclass with ``init/step/terminate/record`` for
    :func:`jacopt._loop.run` and the fields ``gtol``, ``ftol``, ``xtol``. Its state has the
    fields :func:`jacopt.minimize` reads: ``x``, ``value``, ``grad`` (the current point),
    ``nfev``, ``ngev``, ``nhev`` (int32 counters), and those :meth:`check_termination` reads:
    ``accepted`` (bool, the last iteration moved ``x``), ``step_norm`` (2-norm of the last trial
    step), ``value_change`` (``f_prev - f`` of the last accepted step) and ``failure`` (an int32
    :class:`Status` code, ``RUNNING`` while the solver can go on).
    """

    gtol: float
    ftol: float
    xtol: float

    takes_bounds = False
    """Whether the solver honours ``MinimizeProblem.lower/upper`` (``minimize(bounds=...)``)."""

    def check_termination(self, state):
        """``(done, status)`` from the tests in the module docstring."""
        f, g, x = state.value, state.grad, state.x
        grad_norm = jnp.max(jnp.abs(g))  # NaN or inf when any component is
        finite = jnp.isfinite(f) & jnp.isfinite(grad_norm)
        gtol_hit = grad_norm <= self.gtol
        # ftol and xtol are static: when off (0) their tests are not even traced.
        ftol_hit = xtol_hit = jnp.asarray(False)
        if self.ftol > 0:
            scale = jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f + state.value_change)), 1.0)
            ftol_hit = state.accepted & (state.value_change <= self.ftol * scale)
        if self.xtol > 0:
            xtol_hit = state.accepted & (
                state.step_norm <= self.xtol * (self.xtol + jnp.linalg.norm(x)))
        failed = state.failure != Status.RUNNING
        code = lambda c: jnp.int32(c)
        status = jnp.where(failed, state.failure.astype(jnp.int32), code(Status.RUNNING))
        status = jnp.where(xtol_hit, code(Status.XTOL), status)
        status = jnp.where(ftol_hit, code(Status.FTOL), status)
        status = jnp.where(gtol_hit, code(Status.GTOL), status)
        status = jnp.where(finite, status, code(Status.NONFINITE))
        return status != Status.RUNNING, status

    def stationarity(self, problem, state):
        """``state`` with ``grad`` replaced by the projected gradient when ``problem`` has
        bounds, for :meth:`check_termination` and :meth:`history_row` (``gtol`` is SciPy's
        ``pgtol`` there); ``state`` itself when unbounded."""
        if problem.lower is None and problem.upper is None:
            return state
        return state._replace(grad=problem.projected_gradient(state.x, state.grad))

    def history_row(self, state, damping):
        """The :class:`History` row of ``state``; ``damping`` is the solver's step control."""
        f = state.value
        return History(
            value=f,
            grad_norm=jnp.max(jnp.abs(state.grad)).astype(f.dtype),
            step_norm=jnp.asarray(state.step_norm, f.dtype),
            damping=jnp.asarray(damping, f.dtype),
            accepted=jnp.asarray(state.accepted, bool),
        )


def matvec(a, x):
    """``a @ x`` (``a`` of shape ``(..., n)``, ``x`` of shape ``(n,)``) as an elementwise
    product and a sum. XLA fuses it with its neighbours, and on CPU it compiles several times
    faster than a ``dot`` (design notes, BFGS), at no cost for the small and medium ``n`` the
    dense methods serve."""
    return jnp.sum(a * x, axis=-1)


def vdot(a, b):
    """``a . b`` for vectors, as :func:`matvec` does it."""
    return jnp.sum(a * b)


def check_tolerances(solver) -> None:
    """Tolerances must be non-negative numbers (raised when the solver is built)."""
    for name in ("gtol", "ftol", "xtol"):
        value = getattr(solver, name)
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
