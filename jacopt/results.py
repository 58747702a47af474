"""Result types shared by every solver.

Results are ``NamedTuple``s, hence pytrees: they pass through ``jit`` and batch under ``vmap``
(every field gains a leading batch axis, so each member keeps its own ``status``). Fields that are
strings in SciPy (``message``) are properties computed from the integer ``status``, available on
concrete results (outside ``jit``).

They read like SciPy's ``OptimizeResult``: SciPy's names are read-only aliases (``x``, ``fun``,
``nit``, ...), ``scipy_status`` gives SciPy's status number for the same stop (the table in
:mod:`jacopt.status`), ``res["x"]``, ``"x" in res`` and ``res.keys()`` work as on SciPy's
mapping, and the repr is short (status, value, counts; arrays as dtype and shape).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from jacopt import status as _status
from jacopt._validate import is_traced


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
      ``success`` means a minimiser as far as the solver can tell: ``GTOL``, or a stop on the
      cost (``FTOL``), step (``XTOL``) or rounding (``PRECISION_LIMIT``) that a first-order
      test backs at ``params`` (a small scaled gradient, or a full Gauss-Newton step that would
      gain or move almost nothing, or vanished residuals); otherwise ``STALLED``, a failure,
      at the best point found (:func:`jacopt.solvers.stopping.confirm_stop`). MINPACK, Ceres
      and SciPy report their cost and step tests as convergence without such a check.
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
    - ``hess_inv``: BFGS's inverse Hessian approximation at the end, a dense ``(n, n)`` array
      in the ravel order of ``x0`` (:class:`jacopt.TreeIndex` names its rows), as SciPy's BFGS
      returns it; ``None`` for the other solvers.

    SciPy's names are aliases: ``x`` is ``params``, ``fun`` is ``value``, ``jac`` is ``grad``,
    ``nit`` is ``num_steps``, ``njev`` is ``ngev`` (gradient evaluations).
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
    hess_inv: Any = None


def _message(self):
    """Why the run stopped, in words (a ``str``, or an object array for a batch)."""
    return _status.messages(self.status)


def _minimize_message(self):
    """:func:`_message`, with a ``PRECISION_LIMIT`` in less than float64 said for what it
    usually is: the gradient at the resolution of the dtype, short of ``gtol``."""
    text = _status.messages(self.status)
    dtype = np.dtype(jax.numpy.result_type(self.value))
    if np.finfo(dtype).eps < 1e-10 or not np.any(np.asarray(self.status)
                                                 == _status.Status.PRECISION_LIMIT):
        return text
    status = np.asarray(self.status)
    axes = status.ndim
    gmax = np.max([np.max(np.abs(np.asarray(g, np.float64)),
                          axis=tuple(range(axes, np.ndim(g)))) if np.ndim(g) > axes
                   else np.abs(np.asarray(g, np.float64))
                   for g in jax.tree_util.tree_leaves(self.grad)], axis=0)

    def one(code, g, base):
        if code != _status.Status.PRECISION_LIMIT:
            return base
        return (f"The gradient cannot be reduced to gtol in {dtype.name}: no trial step "
                f"decreases f any more, with max|grad| = {g:.2e} at the resolution of "
                f"{dtype.name} for this problem (the point is about as accurate as "
                f"{dtype.name} allows). Raise gtol above {g:.1e}, or enable float64 with "
                f"jax.config.update('jax_enable_x64', True) and float64 inputs.")

    if status.ndim == 0:
        return one(int(status), float(gmax), text)
    return np.vectorize(one, otypes=[object])(status, gmax, text)


def _status_name(self):
    """The name of ``status`` (``"GTOL"``, ``"MAX_STEPS"``...), elementwise for a batch."""
    return _status.names(self.status)


class _Summary:
    """An array shown as its dtype and shape (a 0-d concrete one as its value) in a repr."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        v = self.value
        if not hasattr(v, "shape") or not hasattr(v, "dtype"):
            return repr(v)
        if np.ndim(v) == 0 and not is_traced(v):
            number = np.asarray(v).item()
            return f"{number:.6g}" if isinstance(number, float) else repr(number)
        return f"{np.dtype(v.dtype).name}[{','.join(map(str, np.shape(v)))}]"


def _short(value):
    return repr(jax.tree_util.tree_map(_Summary, value))


_FIRST = ("status", "success", "cost", "value", "num_steps", "nfev")


def _repr(self):
    """Status, value and counts first; arrays summarised, never printed whole."""
    parts = []
    status = self.status
    if np.ndim(status) == 0 and not is_traced(status):
        parts.append(f"status={_status.Status(int(status)).name}")
    else:
        parts.append(f"status={_short(status)}")
    order = [f for f in _FIRST if f in self._fields and f != "status"]
    order += [f for f in self._fields if f not in _FIRST]
    for name in order:
        value = getattr(self, name)
        if value is None and name in ("history", "hess_inv"):
            continue
        parts.append(f"{name}={_short(value)}")
    return f"{type(self).__name__}({', '.join(parts)})"


_ALIASES = {
    "LeastSquaresResult": ("x", "fun", "nit"),
    "MinimizeResult": ("x", "fun", "jac", "nit", "njev"),
}
_DERIVED = ("message", "status_name", "scipy_status")


def _keys(self):
    """The names ``res[name]`` answers: the fields, SciPy's aliases and the derived
    ``message``, ``status_name`` and ``scipy_status`` (as ``OptimizeResult.keys()``)."""
    return tuple(self._fields) + _ALIASES[type(self).__name__] + _DERIVED


def _getitem(self, key):
    """``res["x"]`` as on SciPy's ``OptimizeResult``; an int indexes the tuple as before."""
    if isinstance(key, str):
        if key not in _keys(self):
            raise KeyError(key)
        return getattr(self, key)
    return tuple.__getitem__(self, key)


def _contains(self, key):
    return isinstance(key, str) and key in _keys(self)


# NamedTuple allows no mixin base, so the shared properties are attached here.
# scipy.optimize's names for the same things (OptimizeResult) are read-only aliases.
for _cls, _kind in ((LeastSquaresResult, "least_squares"), (MinimizeResult, "minimize")):
    _cls.status_name = property(_status_name)
    _cls.x = property(lambda self: self.params, doc="``params`` (SciPy's name).")
    _cls.nit = property(lambda self: self.num_steps, doc="``num_steps`` (SciPy's name).")
    _cls.scipy_status = property(
        lambda self, kind=_kind: _status.scipy_status(self.status, kind),
        doc="SciPy's status number for this stop (the table in :mod:`jacopt.status`).")
    _cls.keys = _keys
    _cls.__getitem__ = _getitem
    _cls.__contains__ = _contains
    _cls.__repr__ = _repr
LeastSquaresResult.message = property(_message)
MinimizeResult.message = property(_minimize_message)
LeastSquaresResult.fun = property(lambda self: self.residuals, doc="``residuals`` (SciPy's name).")
MinimizeResult.fun = property(lambda self: self.value, doc="``value`` (SciPy's name).")
MinimizeResult.jac = property(lambda self: self.grad, doc="``grad`` (SciPy's name).")
MinimizeResult.njev = property(lambda self: self.ngev, doc="``ngev`` (SciPy's name).")
