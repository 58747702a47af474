"""``jacopt.minimize``: minimisation of a smooth scalar function of a pytree, unconstrained or
within bounds.

Quick start::

    import jax.numpy as jnp
    import jacopt

    def rosenbrock(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    x0 = jnp.array([-1.2, 1.0])
    result = jacopt.minimize(rosenbrock, x0)                  # BFGS
    result.params, result.value, result.success, result.message
    jacopt.minimize(rosenbrock, x0, solver="newton")          # exact Hessians

Solvers (a name or an instance from :mod:`jacopt.solvers`):

- ``"bfgs"`` (:class:`~jacopt.solvers.BFGS`): dense inverse-Hessian quasi-Newton, strong-Wolfe
  line search; the default, for small and medium ``n``.
- ``"lbfgs"`` (:class:`~jacopt.solvers.LBFGS`): limited memory, for large ``n``.
- ``"newton"`` (:class:`~jacopt.solvers.Newton`): exact Hessians by forward-over-reverse
  differentiation, trust region solved exactly (Moré-Sorensen); small ``n``.
- ``"lbfgsb"`` or ``"l-bfgs-b"`` (:class:`~jacopt.solvers.LBFGSB`): L-BFGS-B, limited memory
  with bounds (``bounds=``; ``"newton"`` takes them too).
- ``"newton-cg"`` (:class:`~jacopt.solvers.NewtonCG`): Hessian-vector products, trust region
  solved by Steihaug-Toint truncated conjugate gradients; large ``n``.

The whole solve is one XLA computation (a ``lax.while_loop`` under ``jit``): ``minimize`` works
under ``jax.jit`` and ``jax.vmap`` (each batch member gets its own ``status``) and never raises
once the loop has started. It is cached: ``fun`` and the solver are static (compiled once per
function object, solver settings and input shapes), ``x0`` and ``args`` are traced. Define
``fun`` once (not a fresh ``lambda`` per call) to reuse the compiled solve.

Derivatives of the solution with respect to ``args`` (not ``x0``) are available by the implicit
function theorem (``grad_x fun(x*, args) = 0``), so ``jax.grad`` / ``jax.jacobian`` / ``jax.jvp``
of anything computed from ``result.params`` work; the Hessian at the solution is formed densely
for that (``n x n``, see :mod:`jacopt._implicit`). Only ``params`` carries derivatives: to
differentiate the optimal value, recompute ``fun(result.params, *args)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jacopt import _scipy_keywords
from jacopt._bounds import parse_bounds
from jacopt._compile import cpu_fast_jit
from jacopt._given_gradient import with_given_gradient
from jacopt._implicit import active_bounds, hoist_closure, with_implicit_gradient
from jacopt._loop import run
from jacopt._validate import (
    TRACING_ERRORS,
    as_float_tree,
    check_args,
    check_verbose,
    common_dtype,
    ravel,
    resolve_solver,
    static_number,
    tracing_error,
    warn_float64_leaves,
)
from jacopt.results import MinimizeResult
from jacopt.solvers.bfgs import BFGS
from jacopt.solvers.lbfgs import LBFGS
from jacopt.solvers.lbfgsb import LBFGSB
from jacopt.solvers.minimize_problem import MinimizeProblem, Minimizer
from jacopt.solvers.newton import Newton, NewtonCG
from jacopt.status import minimize_success

SOLVERS = {"bfgs": BFGS, "lbfgs": LBFGS, "newton": Newton, "newton-cg": NewtonCG,
           "lbfgsb": LBFGSB, "l-bfgs-b": LBFGSB}
"""Solver names accepted by ``minimize(solver=...)``."""

DEFAULT_MAX_STEPS = 2000


def minimize(
    fun: Callable,
    x0: Any,
    *,
    args: tuple = (),
    bounds: Any = None,
    solver: str | Minimizer | None = None,
    gtol: float | None = None,
    ftol: float | None = None,
    xtol: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    history: bool = False,
    verbose: int = 0,
    jac: Any = None,
    tol: float | None = None,
    **scipy_keywords,
) -> MinimizeResult:
    """Minimise ``fun(x, *args)`` over ``x`` starting from ``x0``.

    Args:
      fun: ``fun(x, *args) -> scalar``, smooth, written in JAX (differentiated automatically).
        It must return a real floating scalar of ``x0``'s dtype. Compiled once per function
        and shapes, as by ``jax.jit``: data it reads from globals or object attributes are
        frozen at the first call; pass data that change through ``args``.
      x0: the start, a pytree of float arrays (one dtype; integer leaves and plain Python
        numbers take JAX's default float dtype, and a list of numbers is a 1-D array, as in
        SciPy). ``params`` in the result has the same structure.
      args: a tuple of extra arguments (pytrees, traced: changing their values does not
        recompile). The solution is differentiable with respect to them.
      bounds: ``None``, or bounds ``lower <= x <= upper`` (``"lbfgsb"``, ``"newton"``): a pair
        ``(lower, upper)``, each ``None``, a scalar, or an array or pytree like ``x0``
        (``-inf``/``inf`` for no bound); SciPy's sequence of ``(min, max)`` pairs (``None``
        for no bound); or a :class:`scipy.optimize.Bounds`. An ``x0`` outside is clipped into
        the box, as SciPy does. ``gtol`` then applies to the projected gradient, and a
        component held at an active bound has the bound's derivative (:mod:`jacopt._bounds`).
      solver: a name (``"bfgs"``, ``"lbfgs"``, ``"newton"``, ``"newton-cg"``, ``"lbfgsb"`` or
        ``"l-bfgs-b"``) or a solver instance (e.g. ``jacopt.solvers.LBFGS(memory=20)``).
        Default: ``"bfgs"``, or ``"lbfgsb"`` when ``bounds`` are given (SciPy's choice).
      gtol, ftol, xtol: override the solver's tolerances when given: stop when
        ``max|grad| <= gtol`` (default 1e-5), when an accepted step reduces ``f`` by at most
        ``ftol * max(|f|, |f_prev|, 1)`` (default 0: off), or when an accepted step ``s`` has
        ``||s|| <= xtol (xtol + ||x||)`` (default 0: off).
      max_steps: the iteration cap; an iteration is one trial step (a line-search trial or a
        trust-region trial, accepted or not).
      history: record a :class:`jacopt.History` row per iteration (value, ``max|grad|``, step
        norm, the solver's step control as ``damping``, accepted).
      verbose: 0 silent, 1 one line at the end, 2 one row per iteration.
      jac: ``None`` (JAX differentiates ``fun``), ``True`` (SciPy's: ``fun`` returns
        ``(value, grad)``, ``grad`` shaped like ``x0``) or ``jac(x, *args) -> grad``; the
        solvers then use that gradient (second derivatives, for ``"newton"`` and the implicit
        derivatives, differentiate its JAX code).
      tol: SciPy's ``tol``: sets ``gtol``, as SciPy's BFGS and trust-region methods read it
        (SciPy's L-BFGS-B also sets its ``ftol`` from it: pass ``ftol=`` for that).
      **scipy_keywords: SciPy's keywords with no counterpart here (``method``, ``options``,
        ``hess``, ``callback``, ``constraints``...) raise a ``TypeError`` that names what to
        use instead (:mod:`jacopt._scipy_keywords`).

    Returns:
      :class:`jacopt.MinimizeResult`: ``params``, ``value``, ``grad``, ``success``, ``status``
      (:class:`jacopt.Status`), ``message``, ``num_steps``, ``nfev``, ``ngev``, ``nhev``,
      ``history``, ``hess_inv`` (BFGS). ``success`` means a convergence test stopped the
      solve (``GTOL``, ``FTOL`` or ``XTOL``); ``PRECISION_LIMIT`` (no trial step decreases
      ``f`` in floating point) is not one, as SciPy reports its "precision loss"
      (:func:`jacopt.status.minimize_success`).
      In float32 the default ``gtol = 1e-5`` can lie below the gradient's resolution: such runs
      reach the minimiser but end with ``PRECISION_LIMIT``, whose message says so; pass a
      larger ``gtol``. With x64 off, a double-precision ``x0`` (NumPy float64, Python floats)
      or NumPy float64 ``args`` run in float32 with one :class:`jacopt.PrecisionWarning` per
      process.

    Raises (before any work): ``ValueError`` if ``fun`` does not return a scalar, ``x0`` is
    non-finite or empty, ``bounds`` cannot be read, do not match ``x0``, hold NaN or have
    ``lower > upper``, or are given to ``"bfgs"``, ``"lbfgs"`` or ``"newton-cg"``, ``solver`` is an
    unknown name (the message lists the valid ones), a
    tolerance is not a number >= 0 or ``verbose`` is not 0, 1 or 2; ``TypeError`` if ``x0`` or
    ``fun``'s output is not real floating, their dtypes differ, a tolerance is traced, ``args`` is
    not a tuple, ``fun`` calls NumPy on traced values (use ``jax.numpy``), or for a SciPy
    keyword. A non-finite ``fun(x0)`` is not an exception: the result has
    ``status == Status.NONFINITE``.
    """
    if scipy_keywords:
        _scipy_keywords.refuse("minimize", scipy_keywords)
    if tol is not None:
        if gtol is not None:
            raise TypeError("minimize() got tol and gtol; tol is SciPy's name for gtol: "
                            "give one.")
        gtol = static_number(tol, "tol")  # checked here, so that an error names tol
    if jac is not None and jac is not False:
        if not (jac is True or callable(jac)) or not callable(fun):
            raise TypeError(f"jac must be None (JAX differentiates fun), True (fun returns "
                            f"(value, grad)) or a function jac(x, *args), got {jac!r}; "
                            f"SciPy's '2-point', '3-point' and 'cs' have no use here: leave "
                            f"jac out.")
        fun = with_given_gradient(fun, jac)
    if solver is None:  # SciPy's choice: BFGS, or L-BFGS-B when there are bounds
        solver = "bfgs" if bounds is None else "lbfgsb"
    solver = _resolve(solver, gtol=gtol, ftol=ftol, xtol=xtol)
    args = check_args(args)
    warn_float64_leaves(args, "args")
    x0 = as_float_tree(x0, "x0", host=True)
    lower, upper = parse_bounds(bounds, x0, common_dtype(x0, "x0"))
    if lower is not None and not solver.takes_bounds:
        raise ValueError(f"solver {type(solver).__name__} does not take bounds; use "
                         f"solver='lbfgsb' (L-BFGS-B) or solver='newton' (exact Hessians) "
                         f"for bounded minimisation.")
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}.")
    if (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
            or max_steps < 0):
        raise ValueError(f"max_steps must be an int >= 0, got {max_steps!r}.")
    check_verbose(verbose)
    try:
        (fun,), args = hoist_closure((fun,), x0, args)
        return _solve(x0, args, lower, upper, fun=fun, solver=solver,
                      max_steps=int(max_steps), history=bool(history), verbose=int(verbose))
    except TRACING_ERRORS as exc:
        raise tracing_error(exc, "fun") from exc


def _resolve(solver, **tolerances) -> Minimizer:
    solver = resolve_solver(solver, SOLVERS, Minimizer)
    overrides = {k: static_number(v, k) for k, v in tolerances.items() if v is not None}
    return dataclasses.replace(solver, **overrides) if overrides else solver


def _check_fun(fun, x0, args) -> None:
    """``fun``'s output, checked from shapes alone when ``_solve`` is traced: once per compiled
    variant, so a warm call does not trace the user's function again (tracing costs more than a
    small solve)."""
    dtype = common_dtype(x0, "x0")
    out = jax.eval_shape(lambda x: fun(x, *args), x0)
    if not (hasattr(out, "shape") and hasattr(out, "dtype")):
        raise ValueError(f"fun must return a scalar array; it returned a {type(out).__name__}.")
    if out.shape != ():
        raise ValueError(f"fun must return a scalar (shape ()); it returned shape {out.shape}. "
                         "For a sum of squares of residuals use jacopt.least_squares.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"fun must return a real floating scalar; it returned dtype {out.dtype}.")
    if out.dtype != dtype:
        raise TypeError(f"fun returns {out.dtype} for x0 of dtype {dtype}; jacopt works in x0's "
                        f"dtype and never casts silently: make fun keep the dtype of x (check "
                        f"the dtypes of args and constants) or give x0 dtype {out.dtype}.")


def _solve_impl(x0, args, lower, upper, *, fun, solver, max_steps, history, verbose):
    _check_fun(fun, x0, args)
    x0_flat, unravel = ravel(x0)

    def flat_fun(x, args):
        return fun(unravel(x), *args)

    title = f"jacopt.minimize ({type(solver).__name__}, n = {x0_flat.shape[0]})"

    def solve(x_start, data):
        out = run(solver, MinimizeProblem(flat_fun, *data), x_start, max_steps=max_steps,
                  history=history, verbose=verbose, title=title)
        return out.state.x, out

    def pinned(x, data):
        """The active bounds at the solution pin their components (derivative: the bound's)."""
        xs, a = jax.lax.stop_gradient(x), jax.lax.stop_gradient(data[0])
        return active_bounds(xs, jax.grad(flat_fun)(xs, a), data[1], data[2])

    def objective(x, data):
        if lower is not None:  # pinned components read their bounds (traced ones move them)
            mask, values = pinned(x, data)
            x = jnp.where(mask, values, x)
        return flat_fun(x, data[0])

    x, out = with_implicit_gradient(solve, objective, None if lower is None else pinned)(
        x0_flat, (args, lower, upper))
    state = out.state
    return MinimizeResult(
        params=unravel(x),
        value=state.value,
        grad=unravel(state.grad),
        success=minimize_success(out.status),
        status=out.status,
        num_steps=out.num_steps,
        nfev=state.nfev,
        ngev=state.ngev,
        nhev=state.nhev,
        history=out.history,
        hess_inv=state.inverse_hessian if isinstance(solver, BFGS) else None,
    )


# The compiled solve (cached on the static arguments), with XLA's classic CPU fusion emitters
# when called directly (jacopt._compile).
_solve = cpu_fast_jit(_solve_impl, ("fun", "solver", "max_steps", "history", "verbose"))
