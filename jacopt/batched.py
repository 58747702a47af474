"""Jacobians with a known block-diagonal structure, in min(d_in, d_out) passes instead of n:
per-row Jacobians of a batched function (:func:`batch_jacobian`) and the derivatives of an
elementwise one (:func:`elementwise_grad`).

Each rests on an assumption about ``f`` (rows, or elements, do not interact) that ``check=True``
tests with one random probe JVP (``_probe_rows``, ``_probe_elementwise``). Conventions (flat
order, modes, keyword arguments, dtype, bad input) are those of :mod:`jacopt.jacobian`.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jacopt import _validate
from jacopt._basis import one_hot_rows, push_basis
from jacopt.jacobian import _check_mode, auto_mode
from jacopt.tree_index import TreeIndex


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
        chunk_size: as in :func:`~jacopt.jacobian`, over the d_in (fwd) or d_out (rev) directions.

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
