"""The Jacobian core: Jacobians, Hessians, batched and elementwise derivatives, matrix-free
products.

Every transformation has JAX's shape: it takes a function and returns a function, so the results
compose with ``jit``, ``vmap`` and with each other (``jacobian(jacobian(f))`` is a Hessian).

Conventions shared by this module:

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
* **Bad input** raises before any work, naming the argument (rules in ``jacopt._checks``):
  leaves must be float arrays or Python floats of one dtype (integer/bool/complex leaves and
  Python ints -> ``TypeError`` suggesting a float dtype; strings and other objects ->
  ``TypeError``), an argument with no elements -> ``ValueError``, ``argnums`` out of range ->
  ``ValueError``.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


# ----------------------------------------------------------------------------------------
# Batched Jacobians: one Jacobian per row of a batch, in min(d_in, d_out) passes.
# ----------------------------------------------------------------------------------------
def _batch_leading(tree, name: str) -> int:
    """The common leading (batch) size of every leaf of ``tree`` (arrays or ShapeDtypeStructs)."""
    sizes = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if len(leaf.shape) == 0:
            raise ValueError(
                f"{name}, leaf {jax.tree_util.keystr(path) or '<root>'} is a scalar; every leaf "
                f"needs a leading batch axis"
            )
        sizes.add(leaf.shape[0])
    if len(sizes) != 1:
        raise ValueError(f"{name}: the leaves have different leading (batch) sizes {sorted(sizes)}")
    return sizes.pop()


def _per_sample_index(tree) -> TreeIndex:
    """TreeIndex of one sample (each leaf without its leading batch axis)."""
    return TreeIndex(jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), tree))


def _rows_to_matrix(tree, batch: int) -> jax.Array:
    """Concatenate the per-sample ravel of every leaf: (B, d)."""
    return jnp.concatenate(
        [jnp.reshape(leaf, (batch, -1)) for leaf in jax.tree_util.tree_leaves(tree)], axis=1)


def _matrix_to_rows(matrix, index: TreeIndex):
    """Inverse of _rows_to_matrix: (B, d) -> tree of (B, *leaf_shape)."""
    batch = matrix.shape[0]
    leaves = [
        matrix[:, o : o + s].reshape((batch,) + shape)
        for o, s, shape in zip(index.offsets, index.sizes, index.shapes)
    ]
    return jax.tree_util.tree_unflatten(index.treedef, leaves)


def _probe_tolerance(dtype, width: int) -> float:
    """Allowed mismatch, relative to a scale (:func:`_probe_mismatch`): rounding of two
    width-term sums."""
    return 100.0 * (width + 10) * float(jnp.finfo(dtype).eps)


def _probe_mismatch(response, predicted, scale, perturbed, dtype, width: int):
    """Per output element: ``(bad, tolerance)``, ``perturbed`` marking the elements (or rows)
    the probe's tangent touched.

    Outside them an elementwise (row-wise) ``f`` responds with exactly zero, so any response
    there beyond the rounding of the probe's median scale is a coupling; a large derivative
    elsewhere cannot hide it (it did when every tolerance followed the largest scale, unless
    large derivatives are over half of the probe). On the perturbed elements the response is
    compared with ``J t`` within the rounding of the largest scale, as before: a derivative
    that cancels to nearly zero keeps the rounding of the terms that cancelled there (a floor
    at each element's own scale raised false alarms). Elements where a derivative or the
    response is not finite (inf at ``sqrt(0)``) cannot be compared and are never ``bad``."""
    unchecked = ~(np.isfinite(response) & np.isfinite(predicted) & np.isfinite(scale))
    checked = scale[~unchecked & (scale > 0)]
    tiny = float(np.finfo(dtype).tiny)
    median = max(float(np.median(checked)) if checked.size else 0.0, tiny)
    largest = max(float(checked.max()) if checked.size else 0.0, tiny)
    tolerance = _probe_tolerance(dtype, width) * np.where(
        np.broadcast_to(perturbed, response.shape), largest, median)
    bad = ~unchecked & (np.abs(response - predicted) > tolerance)
    if unchecked.all():
        warnings.warn("check=True could not check anything: every derivative or response of the "
                      "probe is inf or NaN.", stacklevel=4)
    return bad, tolerance


def _as_probe_array(values) -> np.ndarray:
    """NumPy float64 (float32 for narrower floats such as bfloat16, which NumPy's einsum does not
    take) for the probe's arithmetic."""
    arr = np.asarray(values)
    return arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)


def batch_jacobian(
    f: Callable,
    *,
    mode: str = "auto",
    check: bool = False,
    chunk_size: int | None = None,
) -> Callable:
    """Per-row Jacobians of a function that maps a batch ``X[B, ...]`` to ``Y[B, ...]``.

    **Assumption (documented, checkable):** row i of Y depends only on row i of X (no batch
    statistics, no mixing along axis 0). Then the full Jacobian is block diagonal, and pushing one
    basis direction tiled over the whole batch (the same one-hot tangent in every row) gives that
    direction for all B samples in a single pass.

    Args:
        f: ``f(X, *args)``; X is an array (or a pytree whose leaves share the leading axis B);
            the output likewise has leading axis B on every leaf. Only X is differentiated.
        mode: ``"fwd"`` (d_in JVPs over the batch), ``"rev"`` (d_out VJPs over the batch) or
            ``"auto"`` (forward when d_in <= d_out), where d_in and d_out are the per-row sizes.
        check: verify the assumption at call time with one extra JVP: a random tangent on a
            random half of the rows must produce exactly the response predicted by the per-row
            Jacobians (zero on the other rows). Raises ``ValueError`` naming the interacting rows.
            Needs concrete inputs (it raises a Python error), so it cannot run inside ``jit``:
            check once eagerly, then use ``check=False`` inside compiled code.
        chunk_size: as in :func:`jacobian`, over the d_in (fwd) or d_out (rev) directions.

    Returns:
        A function of ``(X, *args)`` returning ``J`` with ``J[b] = dY[b]/dX[b]``: for array X and
        Y, shape ``(B, *Y.shape[1:], *X.shape[1:])``; for pytrees, ``jax.jacfwd``'s nesting with
        blocks ``(B, *out_leaf.shape[1:], *in_leaf.shape[1:])``.

    Cost: min(d_in, d_out) JVPs or VJPs of f over the whole batch (not B x d), vmapped, plus one
    with ``check=True``. Memory: the result B x d_out x d_in plus the batched passes.
    """
    _check_mode(mode)
    _validate.check_chunking(chunk_size, None)

    @functools.wraps(f)
    def batch_jacobian_fn(x, *args, **kwargs):
        x = _validate.check_differentiable(x, "argument 0 (x, the batch)")
        batch = _batch_leading(x, "batch_jacobian x")
        if check and _validate.is_traced(x):
            raise ValueError(
                "batch_jacobian(check=True) needs concrete inputs "
                "(the probe raises a Python error); "
                "run it once outside jit/vmap, then use check=False inside"
            )
        in_index = _per_sample_index(x)
        out_shape = jax.eval_shape(functools.partial(f, **kwargs), x, *args)
        _validate.check_floating_output(out_shape, "batch_jacobian")
        out_batch = _batch_leading(out_shape, "batch_jacobian output")
        if out_batch != batch:
            raise ValueError(f"batch_jacobian: f maps a batch of {batch} rows to {out_batch} rows")
        out_index = _per_sample_index(out_shape)
        d_in, d_out = in_index.size, out_index.size

        def g(x_rows):  # (B, d_in) -> (B, d_out)
            return _rows_to_matrix(f(_matrix_to_rows(x_rows, in_index), *args, **kwargs), batch)

        x_rows = _rows_to_matrix(x, batch)
        chosen = auto_mode(d_in, d_out) if mode == "auto" else mode
        if chosen == "fwd":
            _, linear_fn = jax.linearize(g, x_rows)
            n_basis, dtype = d_in, x_rows.dtype
        else:
            out_rows, vjp_fn = jax.vjp(g, x_rows)
            linear_fn, n_basis, dtype = (lambda u: vjp_fn(u)[0]), d_out, out_rows.dtype

        def tiled_basis(idx):  # (k,) -> (k, B, n_basis): the same one-hot in every row
            return jnp.broadcast_to(one_hot_rows(idx, n_basis, dtype)[:, None, :],
                                    (idx.shape[0], batch, n_basis))

        # per_row[b] = dY[b]/dX[b], (B, d_out, d_in): a JVP gives (B, d_out) for one input
        # direction (axis 2); a VJP gives (B, d_in) for one output direction (axis 1)
        per_row = push_basis(linear_fn, n_basis, tiled_basis, chunk_size,
                             axis=2 if chosen == "fwd" else 1)
        if check:
            _probe_rows(g, x_rows, per_row)
        blocks = []
        for o_off, o_size, o_shape in zip(out_index.offsets, out_index.sizes, out_index.shapes):
            inner = [
                per_row[:, o_off : o_off + o_size, i_off : i_off + i_size].reshape(
                    (batch,) + o_shape + i_shape)
                for i_off, i_size, i_shape in zip(in_index.offsets, in_index.sizes, in_index.shapes)
            ]
            blocks.append(jax.tree_util.tree_unflatten(in_index.treedef, inner))
        return jax.tree_util.tree_unflatten(out_index.treedef, blocks)

    return batch_jacobian_fn


def _random_half_tangent(shape_rows: tuple[int, ...], dtype, seed: int = 0):
    """A random tangent supported on a random half of the leading axis (at least one row in,
    and one row out when there are two or more). Returns (tangent as numpy, support mask)."""
    rng = np.random.default_rng(seed)
    rows = shape_rows[0]
    support = rng.random(rows) < 0.5
    if not support.any():
        support[rng.integers(rows)] = True
    if rows > 1 and support.all():
        support[rng.integers(rows)] = False
    tangent = rng.standard_normal(shape_rows) * support.reshape(
        (rows,) + (1,) * (len(shape_rows) - 1))
    return tangent.astype(dtype), support


def _probe_rows(g, x_rows, per_row) -> None:
    """Raise ValueError when g's rows interact: one JVP with a random sparse tangent must equal
    the block-diagonal prediction J[b] @ v[b] on every row (see batch_jacobian's ``check``)."""
    tangent, support = _random_half_tangent(x_rows.shape, x_rows.dtype)
    _, response = jax.jvp(g, (x_rows,), (jnp.asarray(tangent),))
    response, per_row, t = map(_as_probe_array, (response, per_row, tangent))
    predicted = np.einsum("boi,bi->bo", per_row, t)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.einsum("boi,bi->bo", np.abs(per_row), np.abs(t)), np.abs(response))
        bad, tolerance = _probe_mismatch(response, predicted, scale, support[:, None],
                                         x_rows.dtype, x_rows.shape[1])
    bad_rows = np.flatnonzero(bad.any(axis=1))
    if bad_rows.size:
        mismatch = np.where(bad, np.abs(response - predicted), 0.0)
        worst = np.unravel_index(np.argmax(mismatch), mismatch.shape)
        raise ValueError(
            "batch_jacobian(check=True): the rows of f interact, so the per-row Jacobians are not "
            f"the whole story. Perturbing rows {np.flatnonzero(support)[:8].tolist()} (a random "
            f"half) changed output rows {bad_rows[:8].tolist()} differently from the per-row "
            f"Jacobians (largest mismatch {mismatch[worst]:.3g} in row {worst[0]}, tolerance there "
            f"{tolerance[worst]:.3g}). batch_jacobian assumes row i of the output depends only on "
            "row i of the input (no batch statistics, no mixing along axis 0); use jacobian for "
            "the full Jacobian."
        )


# ----------------------------------------------------------------------------------------
# Elementwise derivatives: the diagonal of a diagonal Jacobian, in one JVP.
# ----------------------------------------------------------------------------------------
def elementwise_grad(f: Callable, *, check: bool = False) -> Callable:
    """The derivatives df(x)_i / dx_i of an elementwise ``f``, in a single JVP.

    **Assumption:** f is elementwise: output element i depends only on input element i (so the
    Jacobian is diagonal). Then the JVP with an all-ones tangent is exactly that diagonal.

    Args:
        f: ``f(x, *args)`` returning an array (or pytree) with the same structure and shapes as
            x. Only x is differentiated.
        check: verify the assumption with one extra JVP: a random tangent on a random half of
            the elements must give f's response only on that half, equal to ``diag * tangent``;
            raises ``ValueError`` otherwise. Needs concrete inputs (not inside ``jit``).

    Returns:
        A function of ``(x, *args)`` returning the derivatives, shaped like x, in the dtype of
        f's output (as ``jax.jvp`` gives them). A non-floating output is a ``TypeError``.

    Cost: one JVP of f (about 1.5-3x f alone, memory about 2x), never the n x n Jacobian; with
    ``check=True`` one more JVP.
    """

    @functools.wraps(f)
    def elementwise_grad_fn(x, *args, **kwargs):
        x = _validate.check_differentiable(x, "argument 0 (x)")
        if check and _validate.is_traced(x):
            raise ValueError(
                "elementwise_grad(check=True) needs concrete inputs (the probe raises a Python "
                "error); run it once outside jit/vmap, then use check=False inside"
            )

        def f_of_x(value):
            return f(value, *args, **kwargs)

        _validate.check_floating_output(jax.eval_shape(f_of_x, x), "elementwise_grad")
        ones = jax.tree_util.tree_map(jnp.ones_like, x)
        _, diagonal = jax.jvp(f_of_x, (x,), (ones,))
        shapes_in = jax.tree_util.tree_map(jnp.shape, x)
        shapes_out = jax.tree_util.tree_map(jnp.shape, diagonal)
        if (jax.tree_util.tree_structure(shapes_in) != jax.tree_util.tree_structure(shapes_out)
                or shapes_in != shapes_out):
            raise ValueError(
                f"elementwise_grad: f must return the same structure and shapes as x for an "
                f"elementwise derivative; x has {shapes_in}, f(x) has {shapes_out}"
            )
        if check:
            _probe_elementwise(f_of_x, x, diagonal)
        return diagonal

    return elementwise_grad_fn


def _probe_elementwise(f_of_x, x, diagonal) -> None:
    """Raise ValueError when f is not elementwise (see elementwise_grad's ``check``)."""
    x_flat, unravel = ravel_pytree(x)
    tangent, support = _random_half_tangent(x_flat.shape, x_flat.dtype)
    _, response = jax.jvp(f_of_x, (x,), (unravel(jnp.asarray(tangent)),))
    response = _as_probe_array(ravel_pytree(response)[0])
    diag = _as_probe_array(ravel_pytree(diagonal)[0])
    with np.errstate(invalid="ignore", over="ignore"):
        predicted = diag * _as_probe_array(tangent)
        bad, tolerance = _probe_mismatch(response, predicted,
                                         np.maximum(np.abs(predicted), np.abs(response)),
                                         support, x_flat.dtype, 1)
    bad = np.flatnonzero(bad)
    if bad.size:
        outside = bad[~support[bad]]
        mismatch = np.abs(response - predicted)[bad]
        worst = int(np.argmax(mismatch))
        example = outside if outside.size else bad
        raise ValueError(
            "elementwise_grad(check=True): f is not elementwise. A random tangent on a random "
            f"half of the {x_flat.size} elements changed {bad.size} output element(s) "
            f"differently from diag * tangent ({outside.size} of them outside the perturbed "
            f"half, e.g. flat indices {example[:8].tolist()}; largest mismatch "
            f"{mismatch[worst]:.3g} at flat index {bad[worst]}, tolerance there "
            f"{tolerance[bad[worst]]:.3g}). Use jacobian (or batch_jacobian) instead."
        )


# ----------------------------------------------------------------------------------------
# Matrix-free operators for the solvers: linearise once, reuse for many products.
# ----------------------------------------------------------------------------------------
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
