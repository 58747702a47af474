"""Sparse Jacobians and Hessians from compressed JVPs, VJPs and HVPs.

:func:`sparse_jacobian` finds the pattern of ``df/dx`` (:func:`jacopt.sparsity.jacobian_sparsity`,
or takes the user's), colours it (:mod:`jacopt.coloring`) and computes the Jacobian from ``c``
JVPs (forward mode: one seed per colour of the columns) or ``c`` VJPs (reverse mode: one per
colour of the rows), instead of ``n`` or ``m``; the nonzeros are read out of the compressed
products: with forward mode, ``J[i, j] = (J S)[i, colour[j]]``. This is the compression of
Curtis, Powell & Reid (1974) and Coleman & Moré (1983); see Gebremedhin, Manne & Pothen
(2005), "What color is your Jacobian?". :func:`sparse_hessian` uses a star colouring and the
symmetric (direct) recovery of Gebremedhin, Tarafdar, Manne & Pothen (2007) with
forward-over-reverse Hessian-vector products.

Pattern and colouring are computed on the host once per shapes and dtypes of the arguments
(cached in the returned function) and enter the program as constant index arrays, so the
returned function works under ``jax.jit`` and ``jax.vmap`` (where it returns a batched BCOO).
"""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

from jacopt._validate import is_traced
from jacopt.coloring import as_pattern, choose_mode, lower_bound, star_coloring
from jacopt.sparsity import _argnums_tuple, jacobian_sparsity

__all__ = ["sparse_jacobian", "sparse_hessian", "SparsePlan"]


class SparsePlan(NamedTuple):
    """What a sparse derivative is computed from: the pattern (boolean CSR, outputs x inputs),
    the mode ("fwd", "rev" or "hvp"), one colour per column (fwd, hvp) or row (rev), the number
    of colours, the lower bound on it, and the flat positions of the nonzeros in the
    ``(colours, length)`` array of compressed products."""

    pattern: sp.csr_array
    mode: str
    colors: np.ndarray
    num_colors: int
    lower_bound: int
    gather: np.ndarray


def _avals(args):
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)), args)


def _key(args, nums):
    leaves, treedef = jax.tree_util.tree_flatten(_avals(args))
    return (treedef, nums, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves))


def _flat_fn(f, args, nums):
    """``g(v)``: ravel(f) as a function of the raveled differentiated arguments, and ``v``."""
    diff = tuple(args[a] for a in nums)
    flat, unravel = jax.flatten_util.ravel_pytree(diff)

    def g(v):
        new = list(args)
        for a, value in zip(nums, unravel(v)):
            new[a] = value
        return jax.flatten_util.ravel_pytree(f(*new))[0]

    return g, flat


def _user_or_auto(f, args, nums, sparsity, hessian: bool):
    avals = _avals(args)
    diff = tuple(avals[a] for a in nums)
    n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(diff))
    if isinstance(sparsity, str):
        if sparsity != "auto":
            raise ValueError(f"sparsity must be 'auto' or a pattern; got {sparsity!r}")
        if hessian:
            grad = jax.grad(f, argnums=nums)
            return jacobian_sparsity(grad, *avals, argnums=nums), n
        return jacobian_sparsity(f, *avals, argnums=nums if len(nums) > 1 else nums[0]), n
    if hessian:
        return as_pattern(sparsity, shape=(n, n), name="sparsity"), n
    out = jax.eval_shape(f, *avals)
    m = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(out))
    return as_pattern(sparsity, shape=(m, n), name="sparsity"), n


def _jacobian_plan(pattern, mode, effort: int = 0) -> SparsePlan:
    coloring = choose_mode(pattern, mode, effort=effort)
    coo = sp.coo_array(pattern)
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    if coloring.mode == "fwd":  # compressed (c, m): J[i, j] = JS[colour[j], i]
        gather = coloring.colors[cols] * pattern.shape[0] + rows
    else:  # compressed (c, n): J[i, j] = (S^T J)[colour[i], j]
        gather = coloring.colors[rows] * pattern.shape[1] + cols
    return SparsePlan(pattern, coloring.mode, coloring.colors, coloring.num_colors,
                      coloring.lower_bound, gather)


def _hessian_plan(pattern) -> SparsePlan:
    n = pattern.shape[0]
    sym = sp.csr_array((pattern + pattern.T + sp.identity(n, format="csr")).astype(bool))
    sym.sort_indices()
    colors = star_coloring(sym)
    num = int(colors.max(initial=-1)) + 1
    coo = sp.coo_array(sym)
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    # counts[i, c]: how many entries of row i have colour c; H[i, j] is read from row i of
    # colour(j) when j is the only one there, else from row j of colour(i) (star property).
    counts = sp.csr_array((np.ones(rows.size, np.int64), (rows, colors[cols])), shape=(n, num))
    counts.sum_duplicates()
    direct = np.asarray(counts[rows, colors[cols]]).reshape(-1) == 1
    gather = np.where(direct, colors[cols] * n + rows, colors[rows] * n + cols)
    sym = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(n, n))
    return SparsePlan(sym, "hvp", colors, num, lower_bound(sym), gather)


def _compressed(g, flat, plan: SparsePlan, m: int):
    colors = jnp.asarray(plan.colors, jnp.int32)
    dtype = flat.dtype
    seeds = (colors[None, :] == jnp.arange(plan.num_colors, dtype=jnp.int32)[:, None])
    seeds = seeds.astype(dtype)
    if plan.mode == "fwd":
        return jax.vmap(lambda s: jax.jvp(g, (flat,), (s,))[1])(seeds)
    if plan.mode == "hvp":
        grad = jax.grad(lambda v: g(v)[0])
        return jax.vmap(lambda s: jax.jvp(grad, (flat,), (s,))[1])(seeds)
    out, vjp_fn = jax.vjp(g, flat)
    return jax.vmap(lambda s: vjp_fn(s.astype(out.dtype))[0])(seeds)


def _to_bcoo(compressed, plan: SparsePlan):
    coo = sp.coo_array(plan.pattern)
    indices = np.stack([coo.row, coo.col], axis=1).astype(np.int32)
    values = compressed.reshape(-1)[jnp.asarray(plan.gather, jnp.int32)]
    return jsparse.BCOO((values, jnp.asarray(indices)), shape=plan.pattern.shape,
                        indices_sorted=True, unique_indices=True)


def _check(g, flat, plan: SparsePlan, concrete: bool, probes: int = 3):
    """Compare ``J v`` (one JVP each) with the sparse Jacobian times ``v`` for random ``v``
    at the call's point (when concrete) or a random point; raise ValueError naming missed
    entries (found from the offending rows by VJPs). For ``plan.mode == "hvp"``, ``g`` is
    the scalar function (as a (1,) vector) and ``J`` its Hessian."""
    vector = jax.grad(lambda v: g(v)[0]) if plan.mode == "hvp" else g
    m = plan.pattern.shape[0]

    @jax.jit
    def probe(point, vs):
        compressed = _compressed(g, point, plan, m)
        dense = jax.vmap(lambda v: jax.jvp(vector, (point,), (v,))[1])(vs)
        return compressed, dense

    # Under an outer trace the probe must still run now; outside one, plain evaluation keeps
    # the function's constants in the probe's program (compile-time evaluation would run
    # every operation on them eagerly, one compilation each). The sparse products are formed
    # on the host from the compressed products: the program is only the JVPs.
    context = contextlib.nullcontext() if concrete else jax.ensure_compile_time_eval()
    rng = np.random.default_rng(0)
    dtype = np.dtype(flat.dtype)
    with context:
        point = flat if concrete else jnp.asarray(rng.standard_normal(flat.shape), dtype)
        vs = rng.standard_normal((probes,) + tuple(flat.shape)).astype(dtype)
        compressed, dense = (np.asarray(a) for a in probe(point, jnp.asarray(vs)))
        # in 64 bits on the host (SciPy has no 16-bit floats); the tolerance is the input's
        wide = np.complex128 if np.iscomplexobj(compressed) else np.float64
        coo = sp.coo_array(plan.pattern)
        values = compressed.reshape(-1)[plan.gather].astype(wide)
        jac = sp.csr_array((values, (coo.row, coo.col)), shape=plan.pattern.shape)
        abs_jac = abs(jac)
        wide_vs, wide_dense = vs.astype(wide), dense.astype(wide)
        ours = (jac @ wide_vs.T).T
        scale = (abs_jac @ np.abs(wide_vs).T).T + np.abs(wide_dense)
        eps = float(jnp.finfo(dtype).eps)
        bad = (np.abs(ours - wide_dense) > 1e3 * eps * (scale + 1e-30)).any(axis=0)
        if not bad.any():
            return
        rows = np.flatnonzero(bad)[:5].tolist()
        _, vjp_fn = jax.vjp(vector, point)
        seeds = np.zeros((len(rows), m), dense.dtype)
        seeds[np.arange(len(rows)), rows] = 1
        found = np.asarray(jax.vmap(vjp_fn)(jnp.asarray(seeds))[0])
        missed = []
        for i, row in zip(rows, found):
            extra = np.flatnonzero((row != 0) & ~plan.pattern[[i], :].toarray().reshape(-1))
            missed += [(i, int(j)) for j in extra[:5]]
    raise ValueError(
        f"the sparsity pattern misses nonzeros of the Jacobian: (row, column) entries "
        f"{missed or '(in rows ' + str(rows) + ')'} are nonzero at the checked point but not "
        f"in the pattern of shape {plan.pattern.shape}; pass a pattern that includes them, or "
        f"sparsity='auto'")


def sparse_jacobian(f: Callable, argnums=0, *, sparsity="auto", mode: str = "auto",
                    check: bool = False, color_effort: int = 0) -> Callable:
    """A function computing the Jacobian of ``f`` as a sparse ``(m, n)`` BCOO.

    Args:
        f: a function of pytrees of arrays returning a pytree of arrays.
        argnums: the argument (int) or arguments (tuple) to differentiate, as in
            ``jax.jacfwd``.
        sparsity: ``"auto"`` (detected from the jaxpr by
            :func:`jacopt.sparsity.jacobian_sparsity`) or the pattern: a boolean NumPy array,
            a SciPy sparse matrix or a BCOO of shape ``(m, n)``.
        mode: ``"auto"`` (the mode with fewer colours), ``"fwd"`` (JVPs) or ``"rev"`` (VJPs).
        check: when the pattern is built (first call for given shapes), compare ``J v`` with
            the sparse product for random ``v`` and raise a ValueError naming missed nonzeros.
        color_effort: tabu-search moves spent removing colours after the greedy colouring
            (:func:`jacopt.coloring.color_columns`): fewer JVPs per call for a one-time host
            cost; 0 (greedy only) by default.

    Returns:
        ``jac(*args) -> jax.experimental.sparse.BCOO`` of shape ``(m, n)``: ``m`` the size of
        ``ravel_pytree(f(*args))``, ``n`` that of ``ravel_pytree(args[argnums])`` (of the tuple
        of arguments when ``argnums`` is a tuple). Under ``jax.vmap`` it returns a batched BCOO
        ``(batch, m, n)``. ``jac.plan(*args)`` returns the :class:`SparsePlan` (pattern,
        colours, lower bound) for those shapes.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"mode must be 'auto', 'fwd' or 'rev'; got {mode!r}")
    if not isinstance(sparsity, str):
        as_pattern(sparsity)  # a bad pattern type fails here, before any work
    return _sparse_derivative(f, f, argnums, lambda args, nums: _jacobian_plan(
        _user_or_auto(f, args, nums, sparsity, hessian=False)[0], mode, color_effort), check)


def _sparse_derivative(f, g_source, argnums, build, check):
    """The function returned by sparse_jacobian / sparse_hessian: ``build(args, nums)`` makes
    the plan (cached per shapes and dtypes), ``g_source`` is the function whose raveled
    derivative the plan's mode computes."""
    plans: dict = {}

    def plan(*args) -> SparsePlan:
        nums = _argnums_tuple(argnums, len(args))
        key = _key(args, nums)
        if key not in plans:
            plans[key] = build(args, nums)
            if check:
                g, flat = _flat_fn(g_source, args, nums)
                _check(g, flat, plans[key], not is_traced(args))
        return plans[key]

    def derivative(*args):
        nums = _argnums_tuple(argnums, len(args))
        p = plan(*args)
        g, flat = _flat_fn(g_source, args, nums)
        return _to_bcoo(_compressed(g, flat, p, p.pattern.shape[0]), p)

    derivative.plan = plan
    return derivative


def sparse_hessian(f: Callable, argnums=0, *, sparsity="auto", check: bool = False) -> Callable:
    """A function computing the Hessian of a scalar ``f`` as a sparse ``(n, n)`` BCOO, from
    one forward-over-reverse Hessian-vector product per colour of a star colouring.

    ``sparsity``: ``"auto"`` (the Jacobian pattern of ``jax.grad(f)``, symmetrised) or a
    pattern of shape ``(n, n)`` as for :func:`sparse_jacobian`. The returned function has
    ``.plan(*args)`` like :func:`sparse_jacobian`'s and works under ``jit`` and ``vmap``;
    ``check=True`` compares ``H v`` with the sparse product when the plan is built."""
    if not isinstance(sparsity, str):
        as_pattern(sparsity)

    def _scalar(*args):
        out = f(*args)
        if jnp.shape(out) != ():
            raise ValueError(f"sparse_hessian needs a scalar function; f returned shape "
                             f"{jnp.shape(out)}")
        return jnp.reshape(out, (1,))

    def build(args, nums):
        jax.eval_shape(_scalar, *_avals(args))
        return _hessian_plan(_user_or_auto(f, args, nums, sparsity, hessian=True)[0])

    return _sparse_derivative(f, _scalar, argnums, build, check)
