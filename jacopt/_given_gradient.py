"""SciPy's ``minimize(fun, x0, jac=True)`` (``fun`` returns the value and its gradient) and
``jac=grad_fun``: a scalar function whose derivative in ``x`` is the gradient the user gives.

The function is a ``jax.custom_jvp``: the solvers' ``jax.grad`` reads the given gradient (one
call of the user's function gives both, as in SciPy), and second derivatives (Newton's Hessian,
the implicit derivatives of the solution) differentiate that gradient's JAX code. Tangents of
``args`` go through the value by JAX's own rules; symbolic zeros skip that work in the solve,
where only ``x`` is differentiated.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def _split(out, x, who: str):
    """``(value, grad)`` from what the user's function returned, checked against ``x``."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError(f"{who} must return a pair (value, gradient); it returned "
                         f"{type(out).__name__}.")
    value, grad = out
    if jax.tree_util.tree_structure(grad) != jax.tree_util.tree_structure(x) or any(
            jnp.shape(g) != jnp.shape(xi) for g, xi in
            zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(x))):
        raise ValueError(f"{who} returned a gradient of structure "
                         f"{jax.tree_util.tree_map(jnp.shape, grad)}; it must have x0's "
                         f"structure and shapes, {jax.tree_util.tree_map(jnp.shape, x)}.")
    return value, grad


def _is_zero(t) -> bool:
    return all(isinstance(leaf, SymbolicZero) for leaf in jax.tree_util.tree_leaves(
        t, is_leaf=lambda v: isinstance(v, SymbolicZero)))


def _instantiate(t):
    return jax.tree_util.tree_map(
        lambda v: jnp.zeros(v.shape, v.dtype) if isinstance(v, SymbolicZero) else v, t,
        is_leaf=lambda v: isinstance(v, SymbolicZero))


@functools.lru_cache(maxsize=256)
def with_given_gradient(fun, jac):
    """``f(x, *args) -> value`` with ``grad_x f`` taken from the user: ``jac=True`` means
    ``fun`` returns ``(value, grad)``; a callable ``jac`` is ``jac(x, *args) -> grad``. Cached
    per ``(fun, jac)`` so the compiled solve is reused across calls."""
    if jac is True:
        def value_and_grad(x, *args):
            return _split(fun(x, *args), x, "fun (with jac=True)")
    else:
        def value_and_grad(x, *args):
            return _split((fun(x, *args), jac(x, *args)), x, "jac")

    @jax.custom_jvp
    def value(x, *args):
        return value_and_grad(x, *args)[0]

    def value_jvp(primals, tangents):
        x, *args = primals
        dx, *dargs = tangents
        v, g = value_and_grad(x, *args)
        dv = jnp.zeros_like(v)
        if not _is_zero(dx):
            dx = _instantiate(dx)
            dv = dv + sum(jnp.vdot(gi, di) for gi, di in
                          zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(dx)))
        if dargs and not _is_zero(dargs):
            _, dv_args = jax.jvp(lambda *a: value_and_grad(x, *a)[0], tuple(args),
                                 tuple(_instantiate(dargs)))
            dv = dv + dv_args
        return v, dv

    value.defjvp(value_jvp, symbolic_zeros=True)
    return value
