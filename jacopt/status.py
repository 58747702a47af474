"""Why a solve stopped.

Every jacopt solver stores its outcome as an integer ``status`` array (so results batch under
``vmap``, one status per member) whose values are the members of :class:`Status`. Compare with
``result.status == Status.GTOL``, or turn a scalar into its name with ``Status(int(s))``.
"""
from __future__ import annotations

import enum

import numpy as np


class Status(enum.IntEnum):
    """The test that stopped a run (the numbering is jacopt's own, not SciPy's)."""

    RUNNING = 0
    GTOL = 1
    FTOL = 2
    XTOL = 3
    PRECISION_LIMIT = 4
    MAX_STEPS = 5
    NONFINITE = 6
    LINE_SEARCH_FAILED = 7

    @property
    def success(self) -> bool:
        """Whether this stop is a success for the least-squares solvers. For
        :func:`jacopt.minimize`, ``PRECISION_LIMIT`` is not (:func:`minimize_success`): read
        ``result.success``."""
        return self in _SUCCESS

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_SUCCESS = frozenset({Status.GTOL, Status.FTOL, Status.XTOL, Status.PRECISION_LIMIT})

_MESSAGES = {
    Status.RUNNING: "The solve has not finished.",
    Status.GTOL: "`gtol` termination condition is satisfied: the gradient is small.",
    Status.FTOL: "`ftol` termination condition is satisfied: the relative reduction of the "
    "objective is small.",
    Status.XTOL: "`xtol` termination condition is satisfied: the relative step is small.",
    Status.PRECISION_LIMIT: "No further reduction is possible in this floating-point precision: "
    "every trial step around the current point fails to decrease the objective.",
    Status.MAX_STEPS: "The maximum number of steps was reached before convergence.",
    Status.NONFINITE: "The objective, its residuals or its derivatives became non-finite "
    "(NaN or inf); the result holds the best finite point found.",
    Status.LINE_SEARCH_FAILED: "The line search could not find a step satisfying its conditions; "
    "the result holds the best point found.",
}

SUCCESS_CODES = np.array(sorted(int(s) for s in _SUCCESS))


def is_success(status):
    """Elementwise: does ``status`` (an int array, possibly traced) name a successful stop?"""
    import jax.numpy as jnp

    return jnp.isin(status, jnp.asarray(SUCCESS_CODES))


def minimize_success(status):
    """Elementwise success of a :func:`jacopt.minimize` stop: :func:`is_success` except
    ``PRECISION_LIMIT``. Least-squares solvers stop there by design once their steps reach
    rounding level (it takes NIST fits to float64's accuracy); a minimiser stops there when no
    trial step along its direction decreases ``f`` in floating point, which also happens short
    of a minimum: at a NaN wall, on an objective unbounded below near overflow, or on a badly
    scaled one. Without the gradient test met that is not a success, as SciPy reports "precision
    loss" (``success=False``)."""
    import jax.numpy as jnp

    return is_success(status) & (jnp.asarray(status) != Status.PRECISION_LIMIT)


def messages(status):
    """The message for a concrete status: a ``str`` for a scalar, an object array when batched."""
    s = np.asarray(status)
    if s.ndim == 0:
        return Status(int(s)).message
    return np.vectorize(lambda v: Status(int(v)).message, otypes=[object])(s)


def names(status):
    """The status name (``"GTOL"``...) for a concrete status, elementwise like :func:`messages`."""
    s = np.asarray(status)
    if s.ndim == 0:
        return Status(int(s)).name
    return np.vectorize(lambda v: Status(int(v)).name, otypes=[object])(s)
