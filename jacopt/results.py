"""Result types shared by every solver.

Results are ``NamedTuple``s, hence pytrees: they pass through ``jit`` and batch under ``vmap``
(every field gains a leading batch axis, so each member keeps its own ``status``). Fields that are
strings in SciPy (``message``) are properties computed from the integer ``status``, available on
concrete results (outside ``jit``).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from jacopt import status as _status


class History(NamedTuple):
    """Per-iteration record, recorded inside the compiled loop when ``history=True``.

    Every field has shape ``(max_steps + 1,)`` (plus any batch axes): row 0 describes the
    starting point, row k the state after iteration k. Rows past ``num_steps`` are NaN
    (``accepted`` is False there). An iteration is one trial step, accepted or rejected.

    - ``value``: the objective after the iteration: ``0.5 * sum(r**2)`` (least squares, after
      the robust loss if any) or ``f(x)`` (minimisers). ``cost`` is an alias.
    - ``grad_norm``: the infinity norm of the gradient at the current point.
    - ``step_norm``: the 2-norm of the trial step of this iteration (0 in row 0).
    - ``damping``: the solver's step control after the iteration: the Levenberg-Marquardt
      parameter, a trust-region radius, or a line-search step length (the solver's docstring says
      which).
    - ``accepted``: whether the iteration's trial step was accepted.
    """

    value: Any
    grad_norm: Any
    step_norm: Any
    damping: Any
    accepted: Any

    @property
    def cost(self):
        return self.value


class LeastSquaresResult(NamedTuple):
    """The result of :func:`jacopt.least_squares` and :func:`jacopt.curve_fit`'s solve.

    - ``params``: the solution, with the structure of ``x0``.
    - ``cost``: ``0.5 * sum(f_scale**2 * rho((r / f_scale)**2))`` at ``params`` (``rho`` the
      robust loss; ``0.5 * sum(r**2)`` for the default linear loss).
    - ``residuals``: ``fun(params, *args)``, with the structure ``fun`` returns.
    - ``jac``: the Jacobian of the flattened residuals with respect to the flattened parameters,
      a 2-D array ``(m, n)`` (ravel order of ``jax.flatten_util.ravel_pytree``; use
      :class:`jacopt.TreeIndex` to map columns to leaves); ``None`` for the matrix-free
      solver (``solver="lm-matrix-free"``), which never forms it.
    - ``grad``: the gradient of ``cost``, with the structure of ``x0``.
    - ``optimality``: the infinity norm of the (scaled, for bounds) gradient, as SciPy reports it.
    - ``success``, ``status`` (a :class:`jacopt.Status` value), ``message`` (property).
    - ``num_steps``: iterations, each one trial step; ``num_accepted`` + ``num_rejected`` ==
      ``num_steps``.
    - ``nfev``, ``njev``: residual and Jacobian evaluations.
    - ``history``: a :class:`History`, or ``None`` unless ``history=True``.

    SciPy's names are aliases: ``x`` is ``params``, ``fun`` is ``residuals``, ``nit`` is
    ``num_steps``.
    """

    params: Any
    cost: Any
    residuals: Any
    jac: Any
    grad: Any
    optimality: Any
    success: Any
    status: Any
    num_steps: Any
    num_accepted: Any
    num_rejected: Any
    nfev: Any
    njev: Any
    history: Optional[History] = None


class MinimizeResult(NamedTuple):
    """The result of :func:`jacopt.minimize`.

    - ``params``: the solution, with the structure of ``x0``; ``value``: ``fun(params, *args)``;
      ``grad``: its gradient, with the structure of ``x0``.
    - ``success``, ``status`` (a :class:`jacopt.Status` value), ``message`` (property).
    - ``num_steps``: iterations; ``nfev``, ``ngev``, ``nhev``: evaluations of the function, its
      gradient and its Hessian (or Hessian-vector products, counted as Hessians).
    - ``history``: a :class:`History`, or ``None`` unless ``history=True``.

    SciPy's names are aliases: ``x`` is ``params``, ``fun`` is ``value``, ``jac`` is ``grad``,
    ``nit`` is ``num_steps``.
    """

    params: Any
    value: Any
    grad: Any
    success: Any
    status: Any
    num_steps: Any
    nfev: Any
    ngev: Any
    nhev: Any
    history: Optional[History] = None


def _message(self):
    """Why the run stopped, in words (a ``str``, or an object array for a batch)."""
    return _status.messages(self.status)


def _status_name(self):
    """The name of ``status`` (``"GTOL"``, ``"MAX_STEPS"``...), elementwise for a batch."""
    return _status.names(self.status)


# NamedTuple allows no mixin base, so the shared properties are attached here.
# scipy.optimize's names for the same things (OptimizeResult) are read-only aliases.
for _cls in (LeastSquaresResult, MinimizeResult):
    _cls.message = property(_message)
    _cls.status_name = property(_status_name)
    _cls.x = property(lambda self: self.params, doc="``params`` (SciPy's name).")
    _cls.nit = property(lambda self: self.num_steps, doc="``num_steps`` (SciPy's name).")
LeastSquaresResult.fun = property(lambda self: self.residuals, doc="``residuals`` (SciPy's name).")
MinimizeResult.fun = property(lambda self: self.value, doc="``value`` (SciPy's name).")
MinimizeResult.jac = property(lambda self: self.grad, doc="``grad`` (SciPy's name).")
