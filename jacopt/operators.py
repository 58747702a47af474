"""Matrix-free Jacobian and Hessian operators for the solvers: linearise ``f`` once at a point,
then reuse the linearisation for many products (J v, J^T u, J^T J v, H v) without forming the
matrix.

The operators work on flat vectors in ``ravel_pytree`` order, as in :mod:`jacopt.jacobian`'s
conventions.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jacopt import _validate


class JacobianOperator(NamedTuple):
    """The Jacobian J (m x n) of a function at one point, as products only (J never formed).

    Works on **flat vectors** in ``ravel_pytree`` order (use ``jacopt.TreeIndex(x).ravel`` /
    ``.unravel`` to go to and from pytrees). It is a pytree (its fields are arrays and
    ``jax.tree_util.Partial`` closures), so it can be returned from ``jit`` and carried in
    ``lax.while_loop``.

    Fields:
        value: f(x) raveled, shape (m,).
        linear: the linearised map v -> J v (from ``jax.linearize``).
        transpose: the transposed map u -> (J^T u,) (``jax.linear_transpose`` of ``linear``).
    """

    value: jax.Array
    linear: Callable
    transpose: Callable

    @property
    def shape(self) -> tuple[int, int]:
        """(m, n): flat output size by flat input size."""
        # the transpose takes u of shape (m,) and returns a 1-tuple holding an (n,) array
        return (self.value.shape[0], jax.eval_shape(self.transpose, self.value)[0].shape[0])

    def mv(self, v: jax.Array) -> jax.Array:
        """J v: (n,) -> (m,). One JVP through the stored linearisation (~1x f)."""
        return self.linear(v)

    def rmv(self, u: jax.Array) -> jax.Array:
        """J^T u: (m,) -> (n,). One transposed pass through the stored linearisation (~1-2x f)."""
        return self.transpose(u)[0]

    def gn_mv(self, v: jax.Array) -> jax.Array:
        """Gauss-Newton product J^T (J v): (n,) -> (n,). One forward and one transposed pass."""
        return self.rmv(self.mv(v))

    def as_matrix(self) -> jax.Array:
        """The dense (m, n) J, built from n products (for tests and small problems)."""
        return jax.vmap(self.mv, out_axes=1)(jnp.eye(self.shape[1], dtype=self.value.dtype))


def _flat_closure(f, x, args, who):
    """Validate ``x`` and ``f``'s output; return ``(x_flat, unravel, out_shape)``: ``x`` raveled,
    the map back to its pytree, and the shape/dtype structure of ``f(x, *args)``."""
    x = _validate.check_differentiable(x, "argument 1 (x, the point)")
    x_flat, unravel = ravel_pytree(x)
    out_shape = jax.eval_shape(lambda v: f(unravel(v), *args), x_flat)
    _validate.check_floating_output(out_shape, who)
    return x_flat, unravel, out_shape


def jacobian_operator(f: Callable, x: Any, *args: Any) -> JacobianOperator:
    """Linearise ``f(x, *args)`` at ``x`` once and return J as a matrix-free
    :class:`JacobianOperator`.

    Args:
        f: function of a pytree x (and extra arguments, not differentiated) returning a pytree of
            floating arrays (e.g. residuals).
        x: the point (pytree of float arrays); n = its flat size.
        *args: passed to f unchanged.

    Returns:
        ``op`` with ``op.value`` = f(x) raveled (m,), ``op.mv(v)`` = J v, ``op.rmv(u)`` = J^T u,
        ``op.gn_mv(v)`` = J^T J v, all on flat vectors (ravel_pytree order).

    Cost: one ``jax.linearize`` of f (a forward pass; its residuals are stored), then each
    product reuses them: ``mv`` one JVP, ``rmv`` one transposed JVP, ``gn_mv`` both. Suited to
    conjugate gradients or LSQR without forming J.
    """
    x_flat, unravel, _ = _flat_closure(f, x, args, "jacobian_operator")

    def g(v):
        return ravel_pytree(f(unravel(v), *args))[0]

    value, linear = jax.linearize(g, x_flat)
    transpose = jax.linear_transpose(linear, x_flat)
    return JacobianOperator(value, linear, transpose)


class HessianOperator(NamedTuple):
    """The Hessian H (n x n, symmetric) of a scalar function at one point, as products only.

    Works on **flat vectors** in ``ravel_pytree`` order; a pytree (can cross ``jit``).

    Fields:
        value: f(x), a scalar.
        grad: the gradient at x, raveled, shape (n,).
        linear: the linearised gradient map v -> H v (``jax.linearize`` of ``jax.grad``).
    """

    value: jax.Array
    grad: jax.Array
    linear: Callable

    @property
    def shape(self) -> tuple[int, int]:
        """(n, n)."""
        return (self.grad.shape[0], self.grad.shape[0])

    def mv(self, v: jax.Array) -> jax.Array:
        """H v: (n,) -> (n,). One JVP through the stored linearised gradient
        (forward-over-reverse)."""
        return self.linear(v)

    rmv = mv  # H is symmetric

    def as_matrix(self) -> jax.Array:
        """The dense (n, n) H, from n products (for tests and small problems)."""
        return jax.vmap(self.mv, out_axes=1)(jnp.eye(self.grad.shape[0], dtype=self.grad.dtype))


def hessian_operator(f: Callable, x: Any, *args: Any) -> HessianOperator:
    """Linearise the gradient of a scalar ``f(x, *args)`` at ``x`` once: Hessian-vector products.

    Args:
        f: scalar-valued function of a pytree x (extra arguments are not differentiated).
        x: the point (pytree of float arrays); n = its flat size.

    Returns:
        ``op`` with ``op.value`` = f(x), ``op.grad`` (n,), ``op.mv(v)`` = H v on flat vectors.

    Cost: one forward and one reverse pass (value and gradient) linearised with ``jax.linearize``
    (forward-over-reverse); each ``mv`` is then one JVP of the gradient, about 2-4x f, with no
    repeated forward pass. H is never formed.
    """
    x_flat, unravel, out_shape = _flat_closure(f, x, args, "hessian_operator")
    if out_shape.shape != ():
        raise ValueError("hessian_operator needs f to return a scalar; "
                         f"it returned shape {out_shape.shape}")

    def grad_and_value(v):
        value, grad = jax.value_and_grad(lambda w: f(unravel(w), *args))(v)
        return grad, value

    grad, linear, value = jax.linearize(grad_and_value, x_flat, has_aux=True)
    return HessianOperator(value, grad, linear)
