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
    STALLED = 8

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
    Status.STALLED: "No progress: the tests on the cost or the step fired, but no first-order "
    "test holds (the gradient is not small, and a full Gauss-Newton step would still move the "
    "point); the result holds the best point found.",
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


# SciPy's status numbers for the same stops (``scipy_status`` on the results). SciPy's numbers
# from scipy/optimize/_lsq/least_squares.py (TERMINATION_MESSAGES) and _optimize.py (BFGS's
# warnflag, _status_message). A stop SciPy has no number for takes the nearest failure.
#
# least_squares (SciPy: ``success = status > 0``):
#   -1  SciPy: improper input. jacopt raises on improper input before any work; here: the
#       residuals turned non-finite (SciPy raises when they are at x0), the line search
#       failed, or the solve stalled.
#    0  SciPy: max_nfev reached.                       jacopt: MAX_STEPS (RUNNING: unfinished)
#    1  `gtol` satisfied.                              jacopt: GTOL
#    2  `ftol` satisfied.                              jacopt: FTOL
#    3  `xtol` satisfied.                              jacopt: XTOL; PRECISION_LIMIT (steps at
#       rounding level: SciPy's trf stops there by its xtol test)
#    4  both `ftol` and `xtol` (jacopt reports the test it met first).
# minimize (SciPy's BFGS, L-BFGS and trust-region ``status``; ``success = status == 0``):
#    0  success.                                       jacopt: GTOL, FTOL, XTOL
#    1  maximum number of iterations.                  jacopt: MAX_STEPS (RUNNING: unfinished)
#    2  "Desired error not necessarily achieved due to precision loss" (the line search
#       failed).                                       jacopt: PRECISION_LIMIT,
#                                                      LINE_SEARCH_FAILED, a stall
#    3  NaN result encountered.                        jacopt: NONFINITE
_SCIPY_LEAST_SQUARES = {
    Status.RUNNING: 0, Status.GTOL: 1, Status.FTOL: 2, Status.XTOL: 3,
    Status.PRECISION_LIMIT: 3, Status.MAX_STEPS: 0, Status.NONFINITE: -1,
    Status.LINE_SEARCH_FAILED: -1,
}
_SCIPY_MINIMIZE = {
    Status.RUNNING: 1, Status.GTOL: 0, Status.FTOL: 0, Status.XTOL: 0,
    Status.PRECISION_LIMIT: 2, Status.MAX_STEPS: 1, Status.NONFINITE: 3,
    Status.LINE_SEARCH_FAILED: 2,
}
_OTHER = {"least_squares": -1, "minimize": 2}  # any other stop (a stall) is a failure


def _scipy_table(kind: str) -> np.ndarray:
    """SciPy's numbers indexed by jacopt's status value."""
    table = {"least_squares": _SCIPY_LEAST_SQUARES, "minimize": _SCIPY_MINIMIZE}[kind]
    codes = np.full(max(Status) + 1, _OTHER[kind], np.int32)
    for member, code in table.items():
        codes[member] = code
    return codes


def scipy_status(status, kind: str):
    """SciPy's status number for jacopt's ``status`` (elementwise; traced values too), for
    ``kind`` ``"least_squares"`` or ``"minimize"`` (the table above)."""
    import jax.numpy as jnp

    if isinstance(status, (np.ndarray, np.integer, int)):
        return _scipy_table(kind)[np.asarray(status)]
    return jnp.asarray(_scipy_table(kind))[status]


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
