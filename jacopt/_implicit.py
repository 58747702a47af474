"""Derivatives of a solution with respect to the problem's ``args``, by the implicit function
theorem, so a solve can sit inside a larger differentiable program.

At a minimiser ``x*`` of a smooth ``phi(x, args)`` the stationarity condition
``g(x*, args) = grad_x phi(x*, args) = 0`` holds; differentiating it gives
``H dx* = -(d g / d args) dargs`` with ``H = hess_x phi(x*, args)`` (Krantz & Parks, *The Implicit
Function Theorem*, 2002; as used for optimisation layers by Blondel et al., "Efficient and
Modular Implicit Differentiation", NeurIPS 2022). For least squares ``phi = 0.5 ||r||^2`` (after
the robust loss), so the condition is ``J^T r = 0`` and ``H`` is the exact Hessian including the
second-order residual terms.

The rule is a ``jax.custom_jvp``: forward mode uses it directly and reverse mode transposes it.
``H`` is formed densely (``n x n``, forward-over-reverse) and applied through its
eigendecomposition as a pseudo-inverse, which stays finite when ``H`` is singular (a
rank-deficient fit): directions of zero curvature get zero derivative. Derivatives flow through
the solution only; the solver's counters and diagnostics are constants. Values the objective
closes over that a transformation may differentiate (for example the variable of an outer
``jax.grad``) are moved into ``args`` first (:func:`hoist_closure`), so they are differentiated
like ``args``; other closed-over data are constants.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.linalg import pinv_symmetric_apply

try:  # the trace-state query behind hoist_closure's fast path (private; optional)
    from jax._src import core as jax_core
except ImportError:  # pragma: no cover - always convert
    jax_core = None


def hoist_closure(funs: tuple, x0, args: tuple):
    """``(funs, args)`` with the tracers each of ``funs`` (each called as ``f(x, *args)``; None
    entries pass through) closes over moved into trailing arguments (``jax.closure_convert``).
    A function closing over, say, the variable of an outer ``jax.grad`` would otherwise leak
    that tracer into the solver's compiled loop (JAX fails with "No constant handler for type
    ... Tracer"). Every returned function takes the extended ``args`` and passes each its own
    share. Outside any transformation nothing can be closed over that way, and ``funs`` and
    ``args`` are returned as they are, at no cost, keeping the compiled solve cached on the
    functions' identities."""
    clean = getattr(jax_core, "trace_state_clean", None)
    if clean is not None and clean():
        return funs, args
    num_args = len(args)
    converted = [None if f is None else jax.closure_convert(f, x0, *args) for f in funs]
    if not any(c is not None and c[1] for c in converted):
        return funs, args
    out, extra = [], []
    for f, conv in zip(funs, converted):
        if conv is None:
            out.append(None)
            continue
        g, consts = conv
        start = num_args + len(extra)
        extra.extend(consts)
        out.append(_with_share(g, num_args, start, start + len(consts)))
    return tuple(out), tuple(args) + tuple(extra)


def _with_share(converted, num_args: int, start: int, stop: int):
    def call(x, *args):
        return converted(x, *args[:num_args], *args[start:stop])

    return call


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, dtype=jax.dtypes.float0)


def active_bounds(x, grad, lower, upper):
    """``(mask, values)`` for ``pinned``: the components of ``x`` at a bound whose negative
    gradient points out of the box (Bertsekas' active set), and the bound each sits on (the
    side the gradient presses on, which decides when ``lower == upper``)."""
    on_upper = (x >= upper) & (grad < 0)
    return ((x <= lower) & (grad > 0)) | on_upper, jnp.where(on_upper, upper, lower)


def with_implicit_gradient(solve: Callable, objective: Callable,
                           pinned: Callable | None = None) -> Callable:
    """Wrap ``solve(x0, args) -> (x_star, aux)`` (``x0`` and ``x_star`` flat 1-D arrays, ``aux``
    any pytree) so that ``x_star`` carries implicit derivatives with respect to ``args``.

    ``objective(x, args)`` is the scalar that ``x_star`` minimises. ``x0`` gets a zero derivative
    (a minimiser does not depend on where the search started). ``aux`` gets zero tangents.
    ``pinned(x, args) -> (mask, values)``, when given, names the components held at values that
    ``args`` set (the active bounds of a box-constrained solve; ``objective`` must not depend on
    ``x`` there): their derivatives are those of ``values``, the others' come from the
    stationarity of ``objective`` in the free components.
    """

    @jax.custom_jvp
    def solved(x0, args):
        return solve(x0, args)

    @solved.defjvp
    def solved_jvp(primals, tangents):
        x0, args = primals
        _, dargs = tangents
        x_star, aux = solve(x0, args)

        def stationarity(a):
            return jax.grad(objective)(x_star, a)

        _, dg = jax.jvp(stationarity, (args,), (dargs,))
        h = jax.hessian(objective)(x_star, args)
        dx = -pinv_symmetric_apply(h, dg)
        if pinned is not None:  # one evaluation gives the mask and the values' tangents
            (mask, _), (_, dvalues) = jax.jvp(lambda a: pinned(x_star, a), (args,), (dargs,))
            dx = jnp.where(mask, dvalues, dx)
        return (x_star, aux), (dx, jax.tree.map(_zero_tangent, aux))

    return solved
