"""Jacobian sparsity patterns from the jaxpr: which inputs each output depends on.

:func:`jacobian_sparsity` traces ``f`` to a jaxpr and propagates, for every array element, the
set of differentiated input elements it depends on (its *index set*), primitive by primitive.
This is global (value-independent) sparsity detection by operator overloading on the program
rather than on the numbers: the approach of Julia's SparseConnectivityTracer and of the JAX
package asdex (github.com/adrhill/asdex), described by Hill & Dalle (2025), "Sparser, Better,
Faster, Stronger: Sparsity Detection for Efficient Automatic Differentiation" (TMLR).

Representation: the index sets of a variable are the rows of a boolean sparse matrix of shape
``(var.size, n)`` (``n`` = the number of differentiated input elements, in
``jax.flatten_util.ravel_pytree`` order), or ``None`` when the variable depends on no input.
Most primitives are linear in their dependency structure: ``out = S @ in`` with ``S`` the
primitive's own 0/1 dependency matrix, built from index arithmetic (element ids pushed through
the primitive for data movement, Kronecker products of per-axis maps for reductions, cumulative
ops, dynamic slices and convolutions). Constants closed over by ``f`` are known values: indices
computed from them are static (exact gathers and scatters), and a multiplication or a dot with
a constant's zeros drops those dependencies. Anything that depends on ``f``'s arguments is
treated as unknown, so the pattern holds for every argument value.

Soundness: a primitive without a rule gets the conservative rule (every output element depends
on every input element of every operand), so a pattern never misses a nonzero of the true
Jacobian; it may contain structural nonzeros that are zero at a given point (``max``, ``where``
on traced predicates, ...). ``custom_jvp``/``custom_vjp`` functions are analysed through their
primal computation (their derivative rules are assumed to respect its dependencies).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

__all__ = ["jacobian_sparsity"]

_MAX_KNOWN_SIZE = 1 << 22  # evaluate constant subexpressions up to this many elements
_MAX_SCAN_UNROLL = 256  # scans at most this long are unrolled exactly, longer ones iterate

# Elementwise primitives whose output element i depends on element i of every operand.
_ELEMENTWISE = frozenset("""
abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt clamp complex conj
convert_element_type copy copy_p cos cosh digamma div erf erf_inv erfc exp exp2 expm1 igamma
igammac imag integer_pow is_finite lgamma log log1p logistic max min mul neg nextafter or pow
real reduce_precision regularized_incomplete_beta rem rsqrt select_n sin sinh sqrt square sub
tan tanh polygamma zeta bessel_i0e bessel_i1e random_gamma_grad
""".split())
# Float-valued primitives with a zero derivative everywhere it exists.
_ZERO_DERIVATIVE = frozenset("""
sign floor ceil round stop_gradient iota rng_uniform random_bits random_seed random_wrap
random_unwrap argmax argmin sort_indices top_k_indices
""".split())
# Pure data movement: output elements are copies of single operand elements (or constants).
_MOVEMENT = frozenset("""
reshape transpose broadcast_in_dim squeeze expand_dims slice rev concatenate pad gather
dynamic_slice dynamic_update_slice scatter split stack unstack
""".split())
# Identities on each operand (output i is operand i).
_IDENTITY = frozenset("""
sharding_constraint mesh_cast reshard optimization_barrier device_put copy_p copy
""".split())
_REDUCTIONS = frozenset("""
reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin
reduce_logsumexp
""".split())
_CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())


# --------------------------------------------------------------------------- pattern algebra


def _norm(P):
    """Drop empty patterns to ``None``; reset stored values to 1 (products count paths)."""
    if P is None:
        return None
    P = sp.csr_array(P)
    P.sum_duplicates()
    P.eliminate_zeros()
    if P.nnz == 0:
        return None
    P.data = np.ones_like(P.data, dtype=np.float32)
    return P


def _apply(S, P):
    """``S @ P`` for a 0/1 dependency matrix ``S`` (out.size x in.size)."""
    if P is None or S is None:
        return None
    return _norm(sp.csr_array(S) @ P)


def _union(patterns, size: int, n: int):
    present = [P for P in patterns if P is not None]
    if not present:
        return None
    total = present[0]
    for P in present[1:]:
        total = total + P
    return _norm(total)


def _broadcast_rows(P, from_shape, to_shape):
    """The pattern of ``P`` (an operand of shape ``from_shape``) broadcast to ``to_shape``
    (NumPy rules, leading axes added)."""
    if P is None or tuple(from_shape) == tuple(to_shape):
        return P
    size = math.prod(from_shape)
    ids = np.broadcast_to(np.arange(size).reshape(from_shape), to_shape).reshape(-1)
    return _select(ids, P, size)


def _select(ids, P, in_size: int):
    """Rows ``P[ids]`` with ``ids == -1`` meaning "no dependency"."""
    if P is None:
        return None
    ids = np.asarray(ids).reshape(-1)
    keep = ids >= 0
    S = sp.csr_array((np.ones(int(keep.sum()), np.float32), (np.flatnonzero(keep), ids[keep])),
                     shape=(ids.size, in_size))
    return _apply(S, P)


def _conservative(in_patterns, out_size: int, n: int):
    """Every output element depends on every input element of every operand."""
    present = [P for P in in_patterns if P is not None]
    if not present or out_size == 0:
        return None
    cols = np.unique(np.concatenate([P.indices for P in present]))
    if cols.size == 0:
        return None
    indptr = np.arange(out_size + 1, dtype=np.int64) * cols.size
    return sp.csr_array((np.ones(out_size * cols.size, np.float32), np.tile(cols, out_size),
                         indptr), shape=(out_size, n))


def _eye(k):
    return sp.identity(k, dtype=np.float32, format="csr")


def _kron_all(factors):
    """Kronecker product of per-axis dependency matrices (row-major axis order)."""
    total = sp.csr_array(np.ones((1, 1), np.float32))
    for F in factors:
        total = sp.csr_array(sp.kron(total, F, format="csr"))
    return total


def _transpose_matrix(shape, perm):
    """0/1 matrix mapping an array of ``shape`` to its transpose by ``perm``."""
    size = math.prod(shape)
    if list(perm) == sorted(perm):
        return _eye(size)
    ids = np.arange(size).reshape(shape).transpose(perm).reshape(-1)
    return sp.csr_array((np.ones(size, np.float32), (np.arange(size), ids)), shape=(size, size))


# --------------------------------------------------------------------------- interpreter


def _is_float(aval) -> bool:
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and (jnp.issubdtype(dtype, jnp.inexact))


def _size(aval) -> int:
    return int(math.prod(getattr(aval, "shape", ())))


class _Interpreter:
    def __init__(self, n: int):
        self.n = n

    # Each environment maps a Var to (pattern, known value or None).
    def run(self, jaxpr, consts: Sequence, in_patterns: Sequence, in_known: Sequence):
        env = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return None, np.asarray(v.val)
            return env.get(v, (None, None))

        def write(v, P, value):
            if isinstance(v, jcore.DropVar):
                return
            env[v] = (P, value)

        for v, c in zip(jaxpr.constvars, consts):
            write(v, None, _as_numpy(c))
        for v, P, k in zip(jaxpr.invars, in_patterns, in_known):
            write(v, P, k)
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            pats = [p for p, _ in ins]
            known = [k for _, k in ins]
            out_known = self._evaluate(eqn, known)
            if out_known is not None:
                for v, val in zip(eqn.outvars, out_known):
                    write(v, None, val)
                continue
            outs = self._eqn(eqn, pats, known)
            for v, P in zip(eqn.outvars, outs):
                write(v, P, None)
        return [read(v) for v in jaxpr.outvars]

    def _evaluate(self, eqn, known):
        """Concrete outputs of an equation whose inputs are all known constants (or None)."""
        if any(k is None for k in known):
            return None
        if any(_size(v.aval) > _MAX_KNOWN_SIZE for v in eqn.outvars):
            return None
        if eqn.effects:
            return None
        try:
            with jax.ensure_compile_time_eval():
                params = eqn.primitive.get_bind_params(eqn.params)
                outs = eqn.primitive.bind(*[jnp.asarray(k) for k in known], **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            return [_as_numpy(o) for o in outs]
        except Exception:  # noqa: BLE001  (not evaluable eagerly: treat as unknown)
            return None

    def _eqn(self, eqn, pats, known):
        name = eqn.primitive.name
        out_avals = [v.aval for v in eqn.outvars]
        if all(p is None for p in pats) or not any(_is_float(a) for a in out_avals):
            return [None] * len(out_avals)
        if name in _ZERO_DERIVATIVE:
            return [None] * len(out_avals)
        in_avals = [v.aval for v in eqn.invars]
        rule = _RULES.get(name)
        if rule is None and name in _IDENTITY:
            rule = _identity
        if rule is None and name in _ELEMENTWISE:
            rule = _elementwise
        if rule is None and name in _MOVEMENT:
            rule = _movement
        if rule is None and name in _REDUCTIONS:
            rule = _reduction
        if rule is None and name in _CUMULATIVE:
            rule = _cumulative
        if rule is None:
            inner = _inner_jaxpr(eqn)
            if inner is not None:
                rule = _call
        if rule is not None:
            result = rule(self, eqn, pats, known, in_avals, out_avals)
            if result is not NotImplemented:
                return result
        return [_conservative(pats, _size(a), self.n) for a in out_avals]


def _as_numpy(value):
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001  (tokens, opaque types)
        return None


def _inner_jaxpr(eqn):
    """The ClosedJaxpr/Jaxpr of a call-like primitive (pjit, closed_call, custom_jvp_call,
    custom_vjp_call, remat, ...) whose inputs are the equation's inputs, or None."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if inner is None:
            continue
        jaxpr = inner.jaxpr if isinstance(inner, jcore.ClosedJaxpr) else inner
        if isinstance(jaxpr, jcore.Jaxpr) and len(jaxpr.invars) == len(eqn.invars) \
                and len(jaxpr.outvars) == len(eqn.outvars):
            return inner
    return None


def _open(inner):
    if isinstance(inner, jcore.ClosedJaxpr):
        return inner.jaxpr, inner.consts
    return inner, []


# --------------------------------------------------------------------------- rules


def _elementwise(it, eqn, pats, known, in_avals, out_avals):
    shape = out_avals[0].shape
    name = eqn.primitive.name
    operands = list(zip(pats, known, in_avals))
    if name == "select_n":
        pred_known = known[0]
        cases = operands[1:]
        if pred_known is None:
            return [_union([_broadcast_rows(p, a.shape, shape) for p, _, a in cases], 0, it.n)]
        which = np.broadcast_to(np.asarray(pred_known).astype(np.int64), shape).reshape(-1)
        parts = []
        for k, (p, _, a) in enumerate(cases):
            p = _broadcast_rows(p, a.shape, shape)
            if p is not None:
                mask = (which == k).astype(np.float32)
                parts.append(_apply(sp.diags_array(mask, format="csr"), p))
        return [_union(parts, 0, it.n)]
    if name == "mul":
        # A known zero factor kills the dependency on the other factor at that element.
        parts = []
        for i, (p, _, a) in enumerate(operands):
            p = _broadcast_rows(p, a.shape, shape)
            other = known[1 - i]
            if p is not None and other is not None:
                mask = np.broadcast_to(np.asarray(other) != 0, shape).reshape(-1)
                p = _apply(sp.diags_array(mask.astype(np.float32), format="csr"), p)
            parts.append(p)
        return [_union(parts, 0, it.n)]
    return [_union([_broadcast_rows(p, a.shape, shape) for p, _, a in operands], 0, it.n)]


def _identity(it, eqn, pats, known, in_avals, out_avals):
    if len(pats) != len(out_avals) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(in_avals, out_avals)):
        return NotImplemented
    return list(pats)


def _ids_for(pats, known, in_avals):
    """Element-id arrays for the operands of a data-movement primitive: operand k's elements
    get ids ``offset_k + arange`` (float operands) so the output says which element it copies;
    known integer operands (indices) keep their values; unknown integer operands fail."""
    ids, offsets, stacked, offset = [], [], [], 0
    for p, k, a in zip(pats, known, in_avals):
        if _is_float(a):
            size = _size(a)
            ids.append(np.arange(offset, offset + size, dtype=np.int64).reshape(a.shape))
            offsets.append(offset)
            stacked.append(p if p is not None else sp.csr_array((size, 0)))
            offset += size
        else:
            if k is None:
                return None
            ids.append(np.asarray(k))
    return ids, offset, stacked


def _stack(stacked, n):
    blocks = [P if P.shape[1] == n else sp.csr_array(P.shape[:1] + (n,), dtype=np.float32)
              for P in stacked]
    return sp.csr_array(sp.vstack(blocks, format="csr"))


def _movement(it, eqn, pats, known, in_avals, out_avals):
    prepared = _ids_for(pats, known, in_avals)
    if prepared is None:
        return _movement_traced(it, eqn, pats, known, in_avals, out_avals)
    ids, total, stacked = prepared
    name = eqn.primitive.name
    # Shift ids by one so 0 marks "no operand element" (padding, fill values).
    shifted = [(i + 1) if _is_float(a) else i for i, a in zip(ids, in_avals)]
    params = dict(eqn.params)
    try:
        with jax.ensure_compile_time_eval():
            if name == "gather":
                params["fill_value"] = 0
            args = [jnp.asarray(x, dtype=jnp.int32) if _is_float(a) else jnp.asarray(x)
                    for x, a in zip(shifted, in_avals)]
            out = eqn.primitive.bind(*args, **eqn.primitive.get_bind_params(params))
    except Exception:  # noqa: BLE001  (an exotic parameter combination: be conservative)
        return NotImplemented
    outs = out if eqn.primitive.multiple_results else [out]
    source = _stack(stacked, it.n)
    return [_select(np.asarray(o).reshape(-1).astype(np.int64) - 1, source, total)
            for o in outs]


def _movement_traced(it, eqn, pats, known, in_avals, out_avals):
    """dynamic_slice / dynamic_update_slice / gather / scatter with traced indices."""
    name = eqn.primitive.name
    if name == "dynamic_slice":
        operand = in_avals[0]
        sizes = eqn.params["slice_sizes"]
        factors = []
        for d, (dim, size) in enumerate(zip(operand.shape, sizes)):
            k = known[1 + d]
            starts = (np.arange(dim - size + 1) if k is None
                      else np.array([int(np.clip(k, 0, dim - size))]))
            rows = np.repeat(np.arange(size), starts.size)
            cols = (np.arange(size)[:, None] + starts[None, :]).reshape(-1)
            factors.append(sp.csr_array((np.ones(rows.size, np.float32), (rows, cols)),
                                        shape=(size, dim)))
        return [_apply(_kron_all(factors), pats[0])]
    if name == "dynamic_update_slice":
        operand, update = in_avals[0], in_avals[1]
        factors = []
        for d, (dim, size) in enumerate(zip(operand.shape, update.shape)):
            k = known[2 + d]
            starts = (np.arange(dim - size + 1) if k is None
                      else np.array([int(np.clip(k, 0, dim - size))]))
            rows = (np.arange(size)[:, None] + starts[None, :]).reshape(-1)
            cols = np.repeat(np.arange(size), starts.size)
            factors.append(sp.csr_array((np.ones(rows.size, np.float32), (rows, cols)),
                                        shape=(dim, size)))
        from_update = _apply(_kron_all(factors), pats[1])
        return [_union([pats[0], from_update], 0, it.n)]
    if name in ("gather", "dynamic_slice"):
        # Any output element may come from any operand element.
        return [_conservative([pats[0]], _size(out_avals[0]), it.n)]
    if name == "scatter":
        # Each output element: its own operand element, or any update.
        updates = _conservative([pats[-1]], _size(out_avals[0]), it.n)
        return [_union([pats[0], updates], 0, it.n)]
    return NotImplemented


def _scatter_add(it, eqn, pats, known, in_avals, out_avals):
    """scatter-add / scatter-mul / -min / -max: each output element combines its operand
    element with every update scattered onto it (found by the transposed gather)."""
    operand, indices, updates = in_avals[:3]
    p_op, p_up = pats[0], pats[2]
    if known[1] is None:
        everything = _conservative([p_up], _size(out_avals[0]), it.n)
        return [_union([p_op, everything], 0, it.n)]
    dn = eqn.params["dimension_numbers"]
    from jax import lax

    slice_sizes = []
    pos = 0
    for i in range(len(operand.shape)):
        if i in dn.inserted_window_dims or i in getattr(dn, "operand_batching_dims", ()):
            slice_sizes.append(1)
        else:
            slice_sizes.append(updates.shape[dn.update_window_dims[pos]])
            pos += 1
    gather_dn = lax.GatherDimensionNumbers(
        offset_dims=dn.update_window_dims, collapsed_slice_dims=dn.inserted_window_dims,
        start_index_map=dn.scatter_dims_to_operand_dims,
        operand_batching_dims=getattr(dn, "operand_batching_dims", ()),
        start_indices_batching_dims=getattr(dn, "scatter_indices_batching_dims", ()))
    try:
        with jax.ensure_compile_time_eval():
            ids = jnp.arange(_size(operand), dtype=jnp.int32).reshape(operand.shape)
            target = lax.gather(ids, jnp.asarray(known[1]), gather_dn, tuple(slice_sizes),
                                mode=lax.GatherScatterMode.CLIP)
    except Exception:  # noqa: BLE001
        return NotImplemented
    target = np.asarray(target).reshape(-1)
    if target.size != _size(updates):
        return NotImplemented
    S = sp.csr_array((np.ones(target.size, np.float32), (target, np.arange(target.size))),
                     shape=(_size(operand), target.size))
    return [_union([p_op, _apply(S, p_up)], 0, it.n)]


def _reduction(it, eqn, pats, known, in_avals, out_avals):
    if eqn.primitive.name in ("argmax", "argmin"):
        return [None]
    shape = in_avals[0].shape
    axes = set(eqn.params["axes"])
    factors = [np.ones((1, d), np.float32) if i in axes else _eye(d)
               for i, d in enumerate(shape)]
    S = _kron_all([sp.csr_array(F) for F in factors])
    return [_apply(S, pats[0])]


def _cumulative(it, eqn, pats, known, in_avals, out_avals):
    shape = in_avals[0].shape
    axis, reverse = eqn.params["axis"], eqn.params.get("reverse", False)
    factors = []
    for i, d in enumerate(shape):
        if i == axis:
            tri = np.triu(np.ones((d, d), np.float32)) if reverse else np.tril(
                np.ones((d, d), np.float32))
            factors.append(sp.csr_array(tri))
        else:
            factors.append(_eye(d))
    return [_apply(_kron_all(factors), pats[0])]


def _dot_general(it, eqn, pats, known, in_avals, out_avals):
    """out[batch, lhs_free, rhs_free] = sum_k lhs[batch, lhs_free, k] rhs[batch, rhs_free, k].
    A known operand's zeros are used: out depends on lhs[.., k] only where rhs[.., k] != 0."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = in_avals
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    B = math.prod(lhs.shape[d] for d in lb)
    Isz = math.prod(lhs.shape[d] for d in lf)
    J = math.prod(rhs.shape[d] for d in rf)
    K = math.prod(lhs.shape[d] for d in lc)
    # Canonical layouts: lhs (B, Isz, K), rhs (B, J, K), out (B, Isz, J).
    lperm = list(lb) + lf + list(lc)
    rperm = list(rb) + rf + list(rc)
    lcanon = _apply(_transpose_matrix(lhs.shape, lperm), pats[0])
    rcanon = _apply(_transpose_matrix(rhs.shape, rperm), pats[1])
    lval = _known_operand(known[0], lperm, (B, Isz, K), J)
    rval = _known_operand(known[1], rperm, (B, J, K), Isz)
    parts = []
    if lcanon is not None:
        # out (b, i, j) <- lhs (b, i, k) for k with rhs[b, j, k] != 0 (all k when unknown).
        if rval is None:
            reduce = _kron_all([_eye(B), _eye(Isz), sp.csr_array(np.ones((1, K), np.float32))])
            reduced = _apply(reduce, lcanon)  # (B*Isz, n)
            expand = _kron_all([_eye(B), _eye(Isz), sp.csr_array(np.ones((J, 1), np.float32))])
            parts.append(_apply(expand, reduced))
        else:
            blocks = [sp.kron(_eye(Isz), sp.csr_array(rval[b] != 0).astype(np.float32))
                      for b in range(B)]  # rows (i, j), cols (i, k)
            parts.append(_apply(sp.block_diag(blocks, format="csr"), lcanon))
    if rcanon is not None:
        if lval is None:
            reduce = _kron_all([_eye(B), _eye(J), sp.csr_array(np.ones((1, K), np.float32))])
            reduced = _apply(reduce, rcanon)  # (B*J, n)
            expand = _kron_all([_eye(B), sp.csr_array(np.ones((Isz, 1), np.float32)), _eye(J)])
            parts.append(_apply(expand, reduced))
        else:
            blocks = []
            for b in range(B):
                # rows (i, j), cols (j, k) for every nonzero lhs[b, i, k].
                i, k = np.nonzero(lval[b])
                rows = (i[:, None] * J + np.arange(J)[None, :]).reshape(-1)
                cols = (np.arange(J)[None, :] * K + k[:, None]).reshape(-1)
                blocks.append(sp.csr_array((np.ones(rows.size, np.float32), (rows, cols)),
                                           shape=(Isz * J, J * K)))
            parts.append(_apply(sp.block_diag(blocks, format="csr"), rcanon))
    return [_union(parts, 0, it.n)]


def _known_operand(value, perm, shape, other: int):
    """A known dot operand in canonical layout, or None when unknown or when using its zeros
    would build a larger dependency matrix than the structural rule."""
    if value is None:
        return None
    value = np.asarray(value).transpose(perm).reshape(shape)
    if np.count_nonzero(value) * other > 4 * (value.size + shape[0] * shape[1] * other) \
            and np.count_nonzero(value) * other > 1 << 24:
        return None
    return value


def _conv(it, eqn, pats, known, in_avals, out_avals):
    """conv_general_dilated, structurally per spatial window: out[b, o, p] depends on every
    input channel of lhs[b, :, window(p)] and on all of rhs[o] (feature groups ignored:
    conservative)."""
    if eqn.params.get("batch_group_count", 1) != 1:
        return NotImplemented
    dn = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    lhs, rhs = in_avals
    out = out_avals[0]
    strides = eqn.params["window_strides"]
    padding = eqn.params["padding"]
    lhs_dil = eqn.params.get("lhs_dilation") or (1,) * len(strides)
    rhs_dil = eqn.params.get("rhs_dilation") or (1,) * len(strides)
    lshape = [lhs.shape[d] for d in lhs_spec]  # N, C, spatial...
    rshape = [rhs.shape[d] for d in rhs_spec]  # O, Isz, spatial...
    oshape = [out.shape[d] for d in out_spec]  # N, O, spatial...
    spatial = []
    for s in range(len(strides)):
        I_s, K_s, P_s = lshape[2 + s], rshape[2 + s], oshape[2 + s]
        lo = padding[s][0]
        rows, cols = [], []
        for p in range(P_s):
            for k in range(K_s):
                q = p * strides[s] + k * rhs_dil[s] - lo
                if q >= 0 and q % lhs_dil[s] == 0 and q // lhs_dil[s] < I_s:
                    rows.append(p)
                    cols.append(q // lhs_dil[s])
        spatial.append(sp.csr_array((np.ones(len(rows), np.float32), (rows, cols)),
                                    shape=(P_s, I_s)))
    # Canonical <-> actual layouts.
    to_lcanon = _transpose_matrix(lhs.shape, list(lhs_spec))
    to_rcanon = _transpose_matrix(rhs.shape, list(rhs_spec))
    out_canon_shape = tuple(oshape)
    inv = np.argsort(out_spec)
    from_ocanon = _transpose_matrix(out_canon_shape, list(inv))
    parts = []
    if pats[0] is not None:
        S = _kron_all([_eye(lshape[0]), sp.csr_array(np.ones((oshape[1], lshape[1]),
                                                              np.float32))] + spatial)
        parts.append(_apply(from_ocanon, _apply(S, _apply(to_lcanon, pats[0]))))
    if pats[1] is not None:
        P = math.prod(oshape[2:])
        S = _kron_all([sp.csr_array(np.ones((oshape[0], 1), np.float32)), _eye(oshape[1]),
                       sp.csr_array(np.ones((P, math.prod(rshape[1:])), np.float32))])
        parts.append(_apply(from_ocanon, _apply(S, _apply(to_rcanon, pats[1]))))
    return [_union(parts, 0, it.n)]


def _call(it, eqn, pats, known, in_avals, out_avals):
    jaxpr, consts = _open(_inner_jaxpr(eqn))
    return [p for p, _ in it.run(jaxpr, consts, pats, known)]


def _cond(it, eqn, pats, known, in_avals, out_avals):
    branches = eqn.params["branches"]
    index = known[0]
    if index is not None:
        chosen = [branches[int(np.clip(index, 0, len(branches) - 1))]]
    else:
        chosen = branches
    results = []
    for br in chosen:
        jaxpr, consts = _open(br)
        results.append([p for p, _ in it.run(jaxpr, consts, pats[1:], known[1:])])
    return [_union([r[i] for r in results], 0, it.n) for i in range(len(out_avals))]


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and (a != b).nnz == 0


def _while(it, eqn, pats, known, in_avals, out_avals):
    """Carry patterns grow to a fixed point: carry := carry | body(carry)."""
    body_nconsts = eqn.params["body_nconsts"]
    cond_nconsts = eqn.params["cond_nconsts"]
    body = eqn.params["body_jaxpr"]
    consts_p = pats[cond_nconsts:cond_nconsts + body_nconsts]
    consts_k = known[cond_nconsts:cond_nconsts + body_nconsts]
    carry = list(pats[cond_nconsts + body_nconsts:])
    jaxpr, consts = _open(body)
    for _ in range(10_000):
        new = [p for p, _ in it.run(jaxpr, consts, consts_p + carry,
                                    consts_k + [None] * len(carry))]
        merged = [_union([c, m], 0, it.n) for c, m in zip(carry, new)]
        if all(_same(c, m) for c, m in zip(carry, merged)):
            return carry
        carry = merged
    return NotImplemented


def _scan(it, eqn, pats, known, in_avals, out_avals):
    """Exact unrolling for short scans; a carry fixed point with xs merged over iterations
    for long ones (sound, coarser)."""
    params = eqn.params
    length, reverse = params["length"], params["reverse"]
    nc, ncarry = params["num_consts"], params["num_carry"]
    jaxpr, consts = _open(params["jaxpr"])
    c_p, c_k = pats[:nc], known[:nc]
    carry = list(pats[nc:nc + ncarry])
    xs_p = pats[nc + ncarry:]
    xs_avals = in_avals[nc + ncarry:]
    ys_avals = out_avals[ncarry:]
    if length == 0:
        return carry + [None] * len(ys_avals)

    def slice_rows(P, aval, t):
        if P is None:
            return None
        step = _size(aval) // length
        return P[t * step:(t + 1) * step]

    if length <= _MAX_SCAN_UNROLL:
        ys = [[None] * length for _ in ys_avals]
        order = range(length - 1, -1, -1) if reverse else range(length)
        for t in order:
            x_t = [slice_rows(P, a, t) for P, a in zip(xs_p, xs_avals)]
            out = [p for p, _ in it.run(jaxpr, consts, c_p + carry + x_t,
                                        c_k + [None] * (len(carry) + len(x_t)))]
            carry = out[:ncarry]
            for j, P in enumerate(out[ncarry:]):
                ys[j][t] = P
        results = list(carry)
        for j, a in enumerate(ys_avals):
            step = _size(a) // max(length, 1)
            blocks = [P if P is not None else sp.csr_array((step, it.n), dtype=np.float32)
                      for P in ys[j]]
            results.append(_norm(sp.vstack(blocks, format="csr")) if blocks else None)
        return results
    # Long scans: every x slice is the union over iterations; carry to a fixed point.
    x_any = []
    for P, a in zip(xs_p, xs_avals):
        if P is None:
            x_any.append(None)
            continue
        step = _size(a) // length
        S = sp.kron(sp.csr_array(np.ones((1, length), np.float32)), _eye(step), format="csr")
        x_any.append(_apply(S, P))
    ys_any = [None] * len(ys_avals)
    for _ in range(10_000):
        out = [p for p, _ in it.run(jaxpr, consts, c_p + carry + x_any,
                                    c_k + [None] * (len(carry) + len(x_any)))]
        merged = [_union([c, m], 0, it.n) for c, m in zip(carry, out[:ncarry])]
        ys_any = [_union([y, m], 0, it.n) for y, m in zip(ys_any, out[ncarry:])]
        if all(_same(c, m) for c, m in zip(carry, merged)):
            break
        carry = merged
    else:
        return NotImplemented
    # Run once more with the final carry so ys cover every iteration's carry.
    out = [p for p, _ in it.run(jaxpr, consts, c_p + carry + x_any,
                                c_k + [None] * (len(carry) + len(x_any)))]
    ys_any = [_union([y, m], 0, it.n) for y, m in zip(ys_any, out[ncarry:])]
    results = list(carry)
    for y, a in zip(ys_any, ys_avals):
        step = _size(a) // max(length, 1)
        S = sp.kron(sp.csr_array(np.ones((length, 1), np.float32)), _eye(step), format="csr")
        results.append(_apply(S, y))
    return results


_RULES: dict[str, Callable] = {
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "cond": _cond,
    "while": _while,
    "scan": _scan,
    "scatter-add": _scatter_add,
    "scatter_add": _scatter_add,
    "scatter-mul": _scatter_add,
    "scatter_mul": _scatter_add,
    "scatter-min": _scatter_add,
    "scatter_min": _scatter_add,
    "scatter-max": _scatter_add,
    "scatter_max": _scatter_add,
}


# --------------------------------------------------------------------------- public entry


def _argnums_tuple(argnums, nargs: int) -> tuple:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not isinstance(a, int) or not -nargs <= a < nargs:
            raise ValueError(f"argnums={argnums!r} does not name positional arguments of the "
                             f"{nargs} example argument(s) given")
    return tuple(a % nargs for a in nums)


def jacobian_sparsity(f: Callable, *example_args, argnums=0) -> sp.csr_array:
    """The sparsity pattern of the Jacobian of ``f`` with respect to ``args[argnums]``.

    Args:
        f: a function of pytrees of arrays returning a pytree of arrays.
        *example_args: arguments of the right shapes and dtypes (or ``jax.ShapeDtypeStruct``);
            only their shapes and dtypes are used, so the pattern holds for every value.
        argnums: the argument (an int) or arguments (a tuple) to differentiate with respect
            to, as in ``jax.jacfwd``.

    Returns:
        A boolean ``scipy.sparse.csr_array`` of shape ``(m, n)``: ``m`` the size of
        ``ravel_pytree(f(*args))[0]``, ``n`` the size of ``ravel_pytree(args[argnums])[0]``
        (a tuple of the arguments when ``argnums`` is a tuple); entry ``(i, j)`` is True when
        output element ``i`` may depend on input element ``j``. It never misses a nonzero of
        the Jacobian at any point (primitives without a rule are treated conservatively).

    Index sets are propagated through the jaxpr (see the module docstring; Hill & Dalle 2025,
    asdex, SparseConnectivityTracer).
    """
    nums = _argnums_tuple(argnums, len(example_args))
    closed = jax.make_jaxpr(f)(*example_args)
    leaves_per_arg = [len(jax.tree_util.tree_leaves(a)) for a in example_args]
    starts = np.cumsum([0] + leaves_per_arg)
    diff_leaves = []
    for a in nums:
        diff_leaves.extend(range(starts[a], starts[a + 1]))
    in_avals = [v.aval for v in closed.jaxpr.invars]
    n = sum(_size(in_avals[i]) for i in diff_leaves)
    in_patterns = [None] * len(in_avals)
    offset = 0
    for i in diff_leaves:
        size = _size(in_avals[i])
        if size:
            in_patterns[i] = sp.csr_array(
                (np.ones(size, np.float32), (np.arange(size), offset + np.arange(size))),
                shape=(size, n))
        offset += size
    it = _Interpreter(n)
    outs = it.run(closed.jaxpr, closed.consts, in_patterns, [None] * len(in_avals))
    blocks = []
    for v, (P, _) in zip(closed.jaxpr.outvars, outs):
        size = _size(v.aval)
        blocks.append(P if P is not None else sp.csr_array((size, n), dtype=np.float32))
    if not blocks:
        return sp.csr_array((0, n), dtype=bool)
    total = sp.csr_array(sp.vstack(blocks, format="csr"))
    total.sum_duplicates()
    total.sort_indices()
    return sp.csr_array((np.ones(total.nnz, bool), total.indices, total.indptr),
                        shape=total.shape)
