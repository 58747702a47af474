"""Build a Jacobian by pushing basis vectors through a linear map, all at once or in chunks.

A Jacobian is a linear map applied to every basis vector: the JVP of each input direction e_j
gives a column, the VJP of each output direction e_i gives a row. ``push_basis`` does that with
``vmap`` over all basis vectors (fastest; scratch memory ~ number of vectors x one pass) or, when
a chunk size is given, ``chunk_size`` vectors at a time in a ``lax.fori_loop`` that writes each
block into the result in place (scratch ~ chunk_size x one pass). When the chunk does not divide
the number of vectors, the last block is shifted back to end at the last vector (it overlaps the
previous block and recomputes at most chunk_size - 1 vectors, the same waste as padding with zero
vectors, but with no padded result to cut). The basis is generated block by block from integer
indices, so the n x n identity is never formed when chunking.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def one_hot_rows(indices: jax.Array, size: int, dtype) -> jax.Array:
    """Rows e_{indices[k]} of the size x size identity (an index >= size gives a zero row)."""
    return (indices[:, None] == jnp.arange(size)[None, :]).astype(dtype)


def push_basis(
    linear_fn: Callable[[jax.Array], jax.Array],
    n_basis: int,
    make_basis: Callable[[jax.Array], jax.Array],
    chunk_size: int | None,
    axis: int,
) -> jax.Array:
    """Apply ``linear_fn`` to the ``n_basis`` basis vectors and stack the results along ``axis``.

    Args:
        linear_fn: maps one basis vector to one array; must work under ``vmap``.
        n_basis: number of basis vectors.
        make_basis: maps an int vector of k indices (all < n_basis) to the batch of k basis
            vectors (leading axis k).
        chunk_size: None (one ``vmap`` over all vectors) or the block size of the loop.
        axis: where the basis index goes in the result (e.g. 1 for the columns of a forward-mode
            Jacobian, 0 for the rows of a reverse-mode one).

    Returns:
        An array with the shape of ``linear_fn``'s result and a new axis of length ``n_basis``
        at ``axis``. Chunked and unchunked results agree in exact arithmetic (each basis vector
        takes the same path through ``linear_fn``); in floating point they can differ by a few
        ulps, since XLA may sum a batched matrix product in a different order for a different
        batch width, and eager (op-by-op, unfused) execution rounds differently from the
        compiled loop.
    """
    if chunk_size is None or chunk_size >= n_basis:
        return jax.vmap(linear_fn, out_axes=axis)(make_basis(jnp.arange(n_basis)))
    n_chunks = math.ceil(n_basis / chunk_size)
    one = jax.eval_shape(lambda idx: linear_fn(make_basis(idx)[0]),
                         jax.ShapeDtypeStruct((1,), jnp.int32))
    shape = one.shape[:axis] + (n_basis,) + one.shape[axis:]

    def write_block(k, result):
        start = jnp.minimum(k * chunk_size, n_basis - chunk_size)  # last block shifted back
        block = jax.vmap(linear_fn, out_axes=axis)(make_basis(start + jnp.arange(chunk_size)))
        return lax.dynamic_update_slice_in_dim(result, block, start, axis)

    return lax.fori_loop(0, n_chunks, write_block, jnp.zeros(shape, one.dtype))


def _bytes(var) -> int:
    aval = getattr(var, "aval", None)
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        return math.prod(shape) * np.dtype(dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys, float0)
        return 0


def _created_bytes(jaxpr) -> int:
    """Summed size of the inputs, outputs and every value a jaxpr (and its sub-jaxprs) creates."""
    total, seen = 0, set()

    def walk(jx):
        nonlocal total
        if id(jx) in seen:
            return
        seen.add(id(jx))
        total += sum(_bytes(v) for v in list(jx.invars) + list(jx.outvars))
        for eqn in jx.eqns:
            total += sum(_bytes(v) for v in eqn.outvars)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jaxpr)
    return total


def memory_model(linear_fn: Callable, example: jax.Array) -> tuple[int, int]:
    """(fixed bytes, bytes per basis vector) of pushing basis vectors through ``linear_fn``.

    From the traced linear map (its jaxpr): *fixed* is twice the size of the values it closes
    over (the residuals of the linearisation, which a compiled loop may copy once); *per vector*
    is the summed size of its input, output and every intermediate, ignoring buffer reuse. Both
    over-estimate what XLA allocates (``benchmarks/jacobians.py`` compares with XLA's
    compiled memory analysis).
    """
    closed = jax.make_jaxpr(linear_fn)(example)
    fixed = 2 * sum(_bytes(v) for v in closed.jaxpr.constvars)
    return fixed, max(1, _created_bytes(closed.jaxpr))


def chunk_for_budget(linear_fn: Callable, example: jax.Array, n_basis: int,
                     max_memory_bytes: int) -> int:
    """Largest chunk whose working memory, fixed + chunk x per vector (:func:`memory_model`),
    fits ``max_memory_bytes``; at least 1, at most ``n_basis``.

    A budget below the fixed part (plus one vector) cannot be met: it gives chunk 1 with a
    ``UserWarning`` saying how much the computation needs at least.
    """
    fixed, per_vector = memory_model(linear_fn, example)
    chunk = (max_memory_bytes - fixed) // per_vector
    if chunk < 1:
        warnings.warn(
            f"max_memory_bytes={max_memory_bytes} is below the estimated minimum "
            f"{fixed + per_vector} bytes (residuals of the linearisation plus one basis vector); "
            "building the Jacobian one vector at a time",
            stacklevel=4,
        )
    return int(min(n_basis, max(1, chunk)))
