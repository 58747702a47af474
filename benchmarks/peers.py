"""The solves the suites compile and time: jacopt's and its peers' (Optimistix, JAXopt, optax),
each built once here so that every suite runs a peer with the same settings.

A builder takes the user's function and returns a ``solve`` of arrays only, which the suites
wrap in ``jax.jit`` (:func:`jacopt.benchmarks._records.compile_timed`):

- least squares, ``residual(x, *args) -> r``: ``solve(x0, *args) -> dict`` with ``x``, ``cost``
  (``0.5 sum r^2`` at ``x``), ``steps``, ``success``, ``status`` (jacopt's status code; ``0``
  success and ``1`` failure for the peers) and, where the method counts them, ``nfev`` and
  ``njev``: :func:`jacopt_least_squares`, :func:`optimistix_least_squares`,
  :func:`jaxopt_least_squares`. The peers run with tight tolerances
  (:data:`PEER_TOLERANCE`) and :data:`PEER_MAX_STEPS`; Optimistix's success is
  ``RESULTS.successful``, JAXopt's is stopping before ``maxiter``.
- minimisation, ``fun(x) -> f``: ``solve(x0) -> (value, steps, nfev, status)`` (``nfev`` is
  ``-1`` where the method does not count it): :func:`jacopt_minimize`,
  :func:`optimistix_minimize`, :func:`optax_lbfgs`.

:func:`missing` says why an optional peer (the ``bench`` extra) cannot run.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

PEER_TOLERANCE = 1e-12
"""``rtol``/``atol`` (Optimistix) and ``tol``/``xtol``/``gtol`` (JAXopt) of the least-squares
peers."""

PEER_MAX_STEPS = 10_000
"""The least-squares peers' step budget."""


def missing(module: str) -> Optional[str]:
    """Why the peer ``module`` cannot run (not installed, or failing to import), or ``None``."""
    try:
        __import__(module)
    except Exception as exc:  # not installed (the `bench` extra) or broken
        return (f"{module} not available ({type(exc).__name__}: {exc}); "
                "install jacopt[bench]")
    return None


def _cost(residual: Callable, x, args) -> jnp.ndarray:
    r = residual(x, *args)
    return 0.5 * jnp.sum(r * r)


# ------------------------------------------------------------------------------------------
# Least squares
# ------------------------------------------------------------------------------------------


def jacopt_least_squares(residual: Callable, solver="lm", **options) -> Callable:
    """:func:`jacopt.least_squares` with ``solver`` and ``options`` (its defaults otherwise)."""
    import jacopt

    def solve(x0, *args):
        res = jacopt.least_squares(residual, x0, args=args, solver=solver, **options)
        return {"x": res.params, "cost": res.cost, "steps": res.num_steps, "nfev": res.nfev,
                "njev": res.njev, "success": res.success, "status": res.status}

    return solve


def optimistix_least_squares(residual: Callable, kind: str = "LevenbergMarquardt") -> Callable:
    """``optimistix.least_squares`` with ``optimistix.<kind>`` (``LevenbergMarquardt`` or
    ``Dogleg``), ``throw=False``."""
    import optimistix as optx

    solver = getattr(optx, kind)(rtol=PEER_TOLERANCE, atol=PEER_TOLERANCE)

    def fn(x, args):
        return residual(x, *args)

    def solve(x0, *args):
        sol = optx.least_squares(fn, solver, x0, args=args, max_steps=PEER_MAX_STEPS,
                                 throw=False)
        success = sol.result == optx.RESULTS.successful
        return {"x": sol.value, "cost": _cost(residual, sol.value, args),
                "steps": sol.stats["num_steps"], "success": success,
                "status": jnp.where(success, 0, 1)}

    return solve


def jaxopt_least_squares(residual: Callable) -> Callable:
    """``jaxopt.LevenbergMarquardt`` with its default linear solver."""
    import jaxopt

    solver = jaxopt.LevenbergMarquardt(residual_fun=residual, tol=PEER_TOLERANCE,
                                       xtol=PEER_TOLERANCE, gtol=PEER_TOLERANCE,
                                       maxiter=PEER_MAX_STEPS)

    def solve(x0, *args):
        params, state = solver.run(x0, *args)
        success = state.iter_num < PEER_MAX_STEPS
        return {"x": params, "cost": _cost(residual, params, args), "steps": state.iter_num,
                "success": success, "status": jnp.where(success, 0, 1)}

    return solve


# ------------------------------------------------------------------------------------------
# Minimisation
# ------------------------------------------------------------------------------------------


def jacopt_minimize(fun: Callable, solver: str, max_steps: int) -> Callable:
    """:func:`jacopt.minimize` with ``solver``, its defaults otherwise."""
    import jacopt

    def solve(x0):
        r = jacopt.minimize(fun, x0, solver=solver, max_steps=max_steps)
        return r.value, r.num_steps, r.nfev, r.status

    return solve


def optimistix_minimize(fun: Callable, kind: str, max_steps: int,
                        tolerance: float = 1e-9) -> Callable:
    """``optimistix.minimise`` with ``BFGS`` (``kind="bfgs"``) or ``LBFGS``, ``rtol = atol =
    tolerance`` (its Cauchy test on the change of ``y`` and ``f``), ``throw=False``; the status
    is Optimistix's result code."""
    import optimistix as optx

    solver = (optx.BFGS if kind == "bfgs" else optx.LBFGS)(rtol=tolerance, atol=tolerance)

    def objective(x, args):
        return fun(x)

    def solve(x0):
        sol = optx.minimise(objective, solver, x0, max_steps=max_steps, throw=False)
        return fun(sol.value), sol.stats["num_steps"], jnp.asarray(-1), sol.result._value

    return solve


def optax_lbfgs(fun: Callable, max_steps: int, gtol: float) -> Callable:
    """``optax.lbfgs()`` (zoom line search) driven to ``max|grad| <= gtol`` or ``max_steps``
    updates in one ``lax.while_loop``, reusing the line search's value and gradient with
    ``optax.value_and_grad_from_state`` as optax documents. ``nfev`` is 1 + the line-search
    evaluations; the status is 1 when the gradient test holds at the end, else 0."""
    import optax
    import optax.tree_utils as otu

    def solve(x0):
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(fun)

        def cond(carry):
            _, state, k, _ = carry
            grad = otu.tree_get(state, "grad")
            return (k == 0) | ((k < max_steps) & (jnp.max(jnp.abs(grad)) > gtol))

        def body(carry):
            x, state, k, nfev = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
            trials = otu.tree_get(state, "num_linesearch_steps")
            return optax.apply_updates(x, updates), state, k + 1, nfev + trials

        state = opt.init(x0)
        x, state, k, nfev = jax.lax.while_loop(cond, body, (x0, state, 0, 1))
        grad_ok = jnp.max(jnp.abs(jax.grad(fun)(x))) <= gtol
        return fun(x), k, nfev, grad_ok.astype(jnp.int32)

    return solve
