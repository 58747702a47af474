"""Dense Jacobians and Hessians: :func:`jacobian`, :func:`hessian` and the mode rule
:func:`auto_mode`.

This module is the Jacobian core's dense part; :mod:`jacopt.batched` has the per-row and
elementwise derivatives and :mod:`jacopt.operators` the matrix-free operators.
Every transformation has JAX's shape: it takes a function and returns a function, so the results
compose with ``jit``, ``vmap`` and with each other (``jacobian(jacobian(f))`` is a Hessian).

Conventions shared by the Jacobian core (this module, :mod:`jacopt.batched`,
:mod:`jacopt.operators`):

* **Flat order.** ``as_matrix=True`` and the matrix-free operators use the order of
  ``jax.flatten_util.ravel_pytree``: leaves in ``jax.tree_util`` order, each raveled row-major.
  A Jacobian matrix has shape (flat output size m, flat input size n).
  :class:`jacopt.TreeIndex` names the row or column of any leaf element and unravels rows/columns.
* **Mode.** Forward mode (JVPs) builds one column per input element: n passes. Reverse mode
  (VJPs) builds one row per output element: m passes. ``mode="auto"`` picks forward mode when
  n <= m and reverse mode otherwise (:func:`auto_mode`), so the cost is min(n, m) passes, each
  a small constant times the cost of f (about 1.5-3x for a JVP or VJP).
* **Keyword arguments** of the returned functions go to ``f`` unchanged and are not
  differentiated (as with ``jax.jacfwd``); only positional arguments can be in ``argnums``.
* **Dtype.** Nothing is cast: float32 in, float32 out. When ``f`` itself changes dtype the result
  follows JAX (``jax.jacfwd``: the output's dtype; ``jax.jacrev``: the input's).
* **Bad input** raises before any work, naming the argument (rules in ``jacopt._validate``):
  leaves must be float arrays or Python floats of one dtype (integer/bool/complex leaves and
  Python ints -> ``TypeError`` suggesting a float dtype; strings and other objects ->
  ``TypeError``), an argument with no elements -> ``ValueError``, ``argnums`` out of range ->
  ``ValueError``.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
from jax.flatten_util import ravel_pytree

from jacopt import _validate
from jacopt._basis import chunk_for_budget, one_hot_rows, push_basis
from jacopt.tree_index import TreeIndex

_MODES = ("auto", "fwd", "rev")


def auto_mode(input_size: int, output_size: int) -> str:
    """The mode ``mode="auto"`` uses: ``"fwd"`` when ``input_size <= output_size``, else ``"rev"``.

    Forward mode costs ``input_size`` JVPs and reverse mode ``output_size`` VJPs; a VJP also
    stores the forward pass, so ties go to forward mode.
    """
    return "fwd" if input_size <= output_size else "rev"


_CUSTOM_VJP_NO_JVP = "can't apply forward-mode autodiff (jvp) to a custom_vjp function"
"""JAX's message when forward mode meets a ``jax.custom_vjp`` function."""


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _check_dense_only(who: str, **options) -> None:
    """A ``ValueError`` naming the first dense-only option set together with ``sparsity``."""
    for name, value in options.items():
        if value not in (None, False):
            raise ValueError(f"{who}: {name}={value!r} is for dense Jacobians; with sparsity= the "
                             f"result is an (m, n) BCOO built from one product per colour.")


def _flat_jacobian(g, x_flat, mode, chunk_size, max_memory_bytes, has_aux, out_size):
    """Jacobian (m, n) of a flat function g: (n,) -> (m,) [, aux] at x_flat; returns (J, aux)."""
    n = x_flat.shape[0]
    if mode == "fwd":
        linearized = jax.linearize(g, x_flat, has_aux=has_aux)
        linear_fn, aux = linearized[1], (linearized[2] if has_aux else None)
        n_basis, basis_dtype, example = n, x_flat.dtype, x_flat
    else:
        vjped = jax.vjp(g, x_flat, has_aux=has_aux)
        out, vjp_fn, aux = vjped[0], vjped[1], (vjped[2] if has_aux else None)

        def linear_fn(u):
            return vjp_fn(u)[0]

        n_basis, basis_dtype, example = out_size, out.dtype, out
    if max_memory_bytes is not None:
        chunk_size = chunk_for_budget(linear_fn, example, n_basis, max_memory_bytes)
    # forward mode: each basis vector gives a column (axis 1); reverse mode: a row (axis 0)
    matrix = push_basis(
        linear_fn, n_basis, lambda idx: one_hot_rows(idx, n_basis, basis_dtype), chunk_size,
        axis=1 if mode == "fwd" else 0,
    )
    return matrix, aux


def _matrix_to_tree(matrix, out_index: TreeIndex, in_index: TreeIndex):
    """Split a flat (m, n) Jacobian into jax.jacfwd's nesting: output tree of input trees of
    blocks with shape out_leaf.shape + in_leaf.shape."""
    per_output = []
    for o_off, o_size, o_shape in zip(out_index.offsets, out_index.sizes, out_index.shapes):
        rows = matrix[o_off : o_off + o_size]
        blocks = [
            rows[:, i_off : i_off + i_size].reshape(o_shape + i_shape)
            for i_off, i_size, i_shape in zip(in_index.offsets, in_index.sizes, in_index.shapes)
        ]
        per_output.append(jax.tree_util.tree_unflatten(in_index.treedef, blocks))
    return jax.tree_util.tree_unflatten(out_index.treedef, per_output)


def jacobian(
    f: Callable,
    argnums: int | tuple[int, ...] = 0,
    *,
    mode: str = "auto",
    as_matrix: bool = False,
    chunk_size: int | None = None,
    max_memory_bytes: int | None = None,
    has_aux: bool = False,
    sparsity=None,
) -> Callable:
    """The Jacobian of ``f`` with respect to the argument(s) ``argnums``, as a function.

    Args:
        f: function of arrays/pytrees returning an array or pytree of real floating arrays
            (with ``has_aux=True``: a pair ``(output, aux)``).
        argnums: int or tuple of ints, the positional arguments to differentiate (as in JAX;
            negative values count from the end).
        mode: ``"fwd"`` (n JVPs, one per input element), ``"rev"`` (m VJPs, one per output
            element) or ``"auto"``: forward when n <= m, else reverse (:func:`auto_mode`), where
            n and m are the flattened input and output sizes; reverse also when f contains a
            ``jax.custom_vjp`` function, which has no forward mode.
        as_matrix: return one 2-D array of shape (m, n) instead of a pytree. Rows follow the
            ravel order of the output, columns that of the differentiated input(s) (the tuple of
            arguments when ``argnums`` is a tuple), both as ``jax.flatten_util.ravel_pytree``;
            ``jacopt.TreeIndex`` maps indices to leaves.
        chunk_size: build the Jacobian ``chunk_size`` columns (fwd) or rows (rev) at a time with
            a ``lax.fori_loop`` that writes each block into the result in place, bounding the
            working memory at chunk_size passes instead of all n (or m) at once. Every basis
            vector goes through the same JVP/VJP as unchunked, so the result is the same in
            exact arithmetic; in floating point it is bit-identical when
            f has no matrix products, and otherwise within a few ulps, because XLA may order a
            batched matrix product's sums differently for a different batch (chunk) width
            (measured 0 to 3e-7 in float32 by ``benchmarks/jacobians.py``). When the chunk does
            not divide n (or m), the last block is shifted back to end at the last basis vector
            (recomputing at most chunk_size - 1 of them, like padding the basis).
        max_memory_bytes: instead of ``chunk_size``, a working-memory budget (scratch memory,
            excluding the m x n result): the chunk is the largest with fixed + chunk x per-vector
            bytes within budget, where *fixed* is twice the residuals of the linearisation and
            *per-vector* the summed size of every intermediate of one JVP/VJP, both read from the
            traced linear map (``jacopt._basis.memory_model``; an over-estimate, compared with
            XLA's own memory analysis in ``benchmarks/jacobians.py``). A budget below the fixed
            part gives chunk 1 and a warning.
        has_aux: ``f`` returns ``(output, aux)``; the Jacobian function then returns ``(J, aux)``.
        sparsity: ``None`` (dense), ``"auto"`` or a pattern: the Jacobian as an ``(m, n)``
            ``jax.experimental.sparse.BCOO`` from one JVP (or VJP) per colour of the pattern's
            columns (rows), the pattern found from ``f``'s jaxpr with ``"auto"``
            (:func:`jacopt.sparse_jacobian`, which has the options). Not with ``as_matrix``,
            ``chunk_size``, ``max_memory_bytes`` or ``has_aux``.

    Returns:
        A function with ``f``'s signature returning the Jacobian. As a pytree (default) it has
        ``jax.jacfwd``'s structure: the output's tree whose every leaf is replaced by the input's
        tree (a tuple over ``argnums`` when it is a tuple) of arrays of shape
        ``out_leaf.shape + in_leaf.shape``. With ``as_matrix=True`` it is a (m, n) array.
        The dtype follows JAX's rules, as with ``jax.jacfwd`` (forward mode: the output's) and
        ``jax.jacrev`` (reverse mode: the input's); they differ only when ``f`` changes dtype.

    Cost: one linearisation of ``f`` (forward pass stored) plus min(n, m) JVPs/VJPs under
    ``mode="auto"``, batched with ``vmap``. Inputs are validated at call time, before any work.
    """
    _check_mode(mode)
    argnums = _validate.normalize_argnums(argnums)
    _validate.check_chunking(chunk_size, max_memory_bytes)
    if sparsity is not None:
        _check_dense_only("jacobian", as_matrix=as_matrix, chunk_size=chunk_size,
                          max_memory_bytes=max_memory_bytes, has_aux=has_aux)
        from jacopt.sparse import sparse_jacobian

        return sparse_jacobian(f, argnums, sparsity=sparsity, mode=mode)

    @functools.wraps(f)
    def jacobian_fn(*args, **kwargs):
        args, positions = _validate.check_differentiated_args(args, argnums)
        diff = (tuple(args[p] for p in positions) if isinstance(argnums, tuple)
                else args[positions[0]])
        x_flat, unravel_input = ravel_pytree(diff)

        def full(x):
            call_args = list(args)
            values = unravel_input(x)
            for p, value in zip(positions, values if isinstance(argnums, tuple) else (values,)):
                call_args[p] = value
            return f(*call_args, **kwargs)

        out_shape = jax.eval_shape(full, x_flat)
        if has_aux:
            if not (isinstance(out_shape, (tuple, list)) and len(out_shape) == 2):
                raise TypeError("jacobian(has_aux=True): f must return a pair (output, aux)")
            out_shape = out_shape[0]
        _validate.check_floating_output(out_shape, "jacobian")
        out_index = TreeIndex(out_shape)

        def flat_f(x):
            result = full(x)
            if has_aux:
                return ravel_pytree(result[0])[0], result[1]
            return ravel_pytree(result)[0]

        chosen = auto_mode(x_flat.size, out_index.size) if mode == "auto" else mode
        try:
            matrix, aux = _flat_jacobian(
                flat_f, x_flat, chosen, chunk_size, max_memory_bytes, has_aux, out_index.size
            )
        except TypeError as exc:
            # mode="auto" chose forward mode, but f (or a part of it) is a jax.custom_vjp,
            # which has no forward mode: reverse mode gives the same Jacobian
            if not (mode == "auto" and chosen == "fwd" and _CUSTOM_VJP_NO_JVP in str(exc)):
                raise
            matrix, aux = _flat_jacobian(
                flat_f, x_flat, "rev", chunk_size, max_memory_bytes, has_aux, out_index.size
            )
        result = matrix if as_matrix else _matrix_to_tree(matrix, out_index, TreeIndex(diff))
        return (result, aux) if has_aux else result

    return jacobian_fn


def hessian(
    f: Callable,
    argnums: int | tuple[int, ...] = 0,
    *,
    as_matrix: bool = False,
    chunk_size: int | None = None,
    max_memory_bytes: int | None = None,
    sparsity=None,
) -> Callable:
    """The Hessian of a scalar-valued ``f``, forward-over-reverse: the forward-mode Jacobian of
    ``jax.grad(f)``.

    Args:
        f: function returning a real floating scalar (shape ``()``).
        argnums, chunk_size, max_memory_bytes: as in :func:`jacobian`.
        as_matrix: return the (n, n) matrix in ravel order instead of a pytree.
        sparsity: ``None`` (dense), ``"auto"`` or a pattern: the Hessian as an ``(n, n)`` BCOO
            from one Hessian-vector product per colour of a star colouring
            (:func:`jacopt.sparse_hessian`). Not with ``as_matrix``, ``chunk_size`` or
            ``max_memory_bytes``.

    Returns:
        A function with ``f``'s signature returning the Hessian: as a pytree, ``jax.hessian``'s
        structure (input tree of input trees, blocks of shape ``in_leaf.shape + in_leaf2.shape``);
        as a matrix, (n, n). Equal to ``jacobian(jacobian(f))``.

    Cost: n Hessian-vector products (each one JVP through the gradient, about 3-5x f), vmapped.
    """
    argnums = _validate.normalize_argnums(argnums)
    if sparsity is not None:
        _check_dense_only("hessian", as_matrix=as_matrix, chunk_size=chunk_size,
                          max_memory_bytes=max_memory_bytes)
        from jacopt.sparse import sparse_hessian

        return sparse_hessian(f, argnums, sparsity=sparsity)
    hessian_of_grad = jacobian(
        jax.grad(f, argnums), argnums, mode="fwd", as_matrix=as_matrix,
        chunk_size=chunk_size, max_memory_bytes=max_memory_bytes,
    )

    @functools.wraps(f)
    def hessian_fn(*args, **kwargs):
        args, _ = _validate.check_differentiated_args(args, argnums)
        out = jax.eval_shape(functools.partial(f, **kwargs), *args)
        if not (hasattr(out, "shape") and out.shape == ()):
            raise ValueError(
                "hessian needs f to return a scalar; it returned "
                f"{jax.tree_util.tree_map(lambda o: o.shape, out)}"
            )
        _validate.check_floating_output(out, "hessian")
        return hessian_of_grad(*args, **kwargs)

    return hessian_fn
