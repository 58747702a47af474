"""Levenberg-Marquardt with Schur-complement steps, for block-structured sparse problems such
as bundle adjustment: ``solver="lm-schur"``.

References:
- B. Triggs, P. McLauchlan, R. Hartley, A. Fitzgibbon (2000), "Bundle adjustment -- a modern
  synthesis", Vision Algorithms: Theory and Practice, LNCS 1883, section 6.1 (the reduced
  camera system: eliminate the points, solve for the cameras, back-substitute).
- S. Agarwal, N. Snavely, S. M. Seitz, R. Szeliski (2010), "Bundle adjustment in the large",
  ECCV, section 3 (the Schur complement formed block by block, solved exactly when small).

The loop, damping (Nielsen's update), stopping tests, statuses, bounds and losses are those
of :class:`jacopt.solvers.sparse_lm.SparseLevenbergMarquardt` (and so of the matrix-free
solver): the nonzeros of ``J`` come from compressed JVPs at each accepted point. What changes
is the step: instead of LSQR, the damped normal equations
``(J~^T J~ + lam D^2) p = -J~^T r~`` are solved exactly by eliminating a block-diagonal group
of columns.

Structure (found on the host once per pattern, :class:`SchurStructure`). The columns split
into a group ``E`` of blocks such that every row of ``J`` touches at most one block (the
points of bundle adjustment, 3 columns each) and the rest ``C`` (the cameras). Ordered
``[C, E]`` the normal matrix is ``[[U, W], [W^T, V]]`` with ``V`` block diagonal, and

    S p_C = -g_C + W V^{-1} g_E,     S = U - W V^{-1} W^T,
    p_E = V^{-1} (-g_E - W^T p_C).

``E`` is detected from the pattern (``eliminate="auto"``: columns with identical row sets
form supervariables; a greedy independent set, lowest degree first, of the supervariables
that share no row is eliminated) or named by the user as a leaf of ``x0``
(:meth:`SchurLevenbergMarquardt.eliminating`: the leaf's rows are the blocks; a group in
which some row touches two blocks is refused with a ValueError). ``C`` is grouped into
supervariables too (the camera blocks), and rows with identical column sets into row groups
(the two rows of an observation).

Assembly, never a dense ``m x n`` or ``n x n`` matrix: ``V`` by a segment sum of the row
groups' ``E^T E``; per (row group, camera block) term ``t`` the block ``G_t = E_t^T F_t``
(``F_t``: the group's entries in that camera block) and ``H_t = V^{-1} G_t``; for every pair
``a <= b`` of the terms on one point (or of one row group without a point) the camera-block
product ``[same group] F_a^T F_b - G_a^T H_b``, scatter-added at camera-block level into
``S`` (a pair ``a < b`` also stands for its transpose); ``S`` (``|C| x |C|``, small) is
factorised by a dense Cholesky. The work per step is O(sum over points of track length^2
times the block sizes) plus O(|C|^3).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.solvers.sparse_lm import SparseJacobianPlan, SparseLevenbergMarquardt

__all__ = ["SchurLevenbergMarquardt", "SchurStructure", "schur_step"]

MAX_BLOCK = 16
"""The largest block eliminated, and the largest camera block (bigger supervariables of ``C``
are split)."""
MAX_REDUCED = 6000
"""The largest reduced system ``S`` (``|C| x |C|``) factorised densely."""
MAX_GROUP_ROWS = 8
"""Row groups of identical rows are cut into pieces of at most this many rows."""
MAX_UNROLLED_PAIRS = 36
"""Up to this many term pairs per point (8 terms) the pair products are unrolled, one batched
product and block scatter-add per pair; beyond, one vectorised product over all pairs."""


def _supervariables(P, columns):
    """Label per column of ``columns`` (an index array): equal labels for equal row sets of
    the boolean CSC ``P`` (hashed by two random row weightings; empty columns get -1)."""
    rng = np.random.default_rng(12345)
    w = rng.uniform(1.0, 2.0, size=(P.shape[0], 2))
    sub = P[:, columns].tocsc()
    h = sub.T.astype(np.float64) @ w
    counts = np.diff(sub.indptr)
    keys = np.stack([counts.astype(np.float64), h[:, 0], h[:, 1]], axis=1)
    _, labels = np.unique(keys, axis=0, return_inverse=True)
    labels = labels.reshape(-1)
    labels[counts == 0] = -1
    return labels


def _chunks(groups, size):
    """Split each index list of ``groups`` into consecutive pieces of at most ``size``."""
    out = []
    for g in groups:
        out.extend(g[i:i + size] for i in range(0, len(g), size))
    return out


def _grouped(labels):
    """Lists of indices with equal nonnegative labels, in order of first appearance."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    groups = [g for g in np.split(order, cuts) if len(g) and labels[g[0]] >= 0]
    groups.sort(key=lambda g: g[0])
    return groups


class SchurStructure:
    """The index arrays of the Schur-complement step for one pattern (module docstring).

    ``eliminate``: ``"auto"`` or ``(name, start, num_blocks, block_size)`` (the flat columns
    ``start .. start + num_blocks * block_size`` in blocks of ``block_size``). Raises a
    ValueError when the group is not block-diagonal (a row touches two of its blocks), when
    nothing can be eliminated, or when the reduced system would be too large."""

    def __init__(self, plan: SparseJacobianPlan, eliminate: Union[str, tuple] = "auto"):
        import scipy.sparse as sp

        m, n = plan.shape
        rows = plan.rows.astype(np.int64)
        cols = plan.cols.astype(np.int64)
        nnz = plan.nnz
        P = sp.csr_array((np.ones(nnz, bool), (rows, cols)), shape=(m, n))
        Pc = P.tocsc()
        Pc.sort_indices()
        col_count = np.diff(Pc.indptr)

        # 1. The eliminated blocks: block_of[j], slot_of[j] (-1 for C columns).
        block_of = -np.ones(n, np.int64)
        slot_of = -np.ones(n, np.int64)
        if isinstance(eliminate, str):
            nonempty = np.flatnonzero(col_count > 0)
            labels = -np.ones(n, np.int64)
            labels[nonempty] = _supervariables(Pc, nonempty)
            supers = [g for g in _grouped(labels) if len(g) <= MAX_BLOCK]
            label_of = -np.ones(n, np.int64)
            for i, g in enumerate(supers):
                label_of[g] = i
            # incidence rows x supervariables, and the supervariables sharing a row
            inc = sp.csr_array((np.ones(nnz), (rows, np.where(label_of[cols] >= 0,
                               label_of[cols], len(supers)))), shape=(m, len(supers) + 1))
            inc = (inc[:, :len(supers)] > 0).astype(np.int32)
            adj = (inc.T @ inc).tocsr()
            degree = np.diff(adj.indptr)
            excluded = np.zeros(len(supers), bool)
            chosen = []
            for i in np.argsort(degree, kind="stable"):
                if excluded[i]:
                    continue
                chosen.append(i)
                excluded[adj.indices[adj.indptr[i]:adj.indptr[i + 1]]] = True
            chosen.sort(key=lambda i: supers[i][0])
            for b, i in enumerate(chosen):
                block_of[supers[i]] = b
                slot_of[supers[i]] = np.arange(len(supers[i]))
            num_blocks = len(chosen)
            block_size = max((len(supers[i]) for i in chosen), default=0)
            what = "the pattern"
            if num_blocks == 0:
                raise ValueError("lm-schur: no block-diagonal group of columns (blocks of at "
                                 f"most {MAX_BLOCK} columns that no row shares) in the "
                                 "pattern; use solver='lm-sparse'.")
        else:
            name, start, num_blocks, block_size = eliminate
            what = f"eliminate={name!r}"
            stop = start + num_blocks * block_size
            if stop > n:
                raise ValueError(f"lm-schur: {what} covers columns {start}..{stop - 1}, but "
                                 f"the problem has {n} unknowns.")
            span = np.arange(start, stop)
            block_of[span] = (span - start) // block_size
            slot_of[span] = (span - start) % block_size
            nz_block = block_of[cols]
            inside = nz_block >= 0
            lo = np.full(m, np.iinfo(np.int64).max)
            hi = -np.ones(m, np.int64)
            np.minimum.at(lo, rows[inside], nz_block[inside])
            np.maximum.at(hi, rows[inside], nz_block[inside])
            bad = np.flatnonzero((hi >= 0) & (lo != hi))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"lm-schur: {what} is not a block-diagonal group: residual row {i} depends "
                    f"on its blocks {int(lo[i])} and {int(hi[i])} (blocks of {block_size} "
                    f"columns); every row may touch at most one block of the eliminated "
                    f"group.")
            if block_size > MAX_BLOCK:
                raise ValueError(f"lm-schur: {what} has blocks of {block_size} columns; at "
                                 f"most {MAX_BLOCK} are eliminated.")

        # 2. The reduced columns C, in camera blocks (supervariables, split at MAX_BLOCK).
        c_cols = np.flatnonzero(block_of < 0)
        nc = c_cols.size
        if nc > MAX_REDUCED:
            raise ValueError(f"lm-schur: eliminating {what} leaves a reduced system of {nc} "
                             f"unknowns (at most {MAX_REDUCED} are solved densely); use "
                             f"solver='lm-sparse'.")
        c_index = -np.ones(n, np.int64)
        c_index[c_cols] = np.arange(nc)
        c_labels = -np.ones(n, np.int64)
        c_nonempty = c_cols[col_count[c_cols] > 0]
        if c_nonempty.size:
            c_labels[c_nonempty] = _supervariables(Pc, c_nonempty)
        cblocks = _chunks(_grouped(c_labels), MAX_BLOCK)
        kcb = max(len(cblocks), 1)
        cbs = max((len(g) for g in cblocks), default=1)
        cblock_of = -np.ones(n, np.int64)
        cslot_of = -np.ones(n, np.int64)
        for i, g in enumerate(cblocks):
            cblock_of[g] = i
            cslot_of[g] = np.arange(len(g))

        # 3. Row groups (identical column sets), with their block and camera blocks.
        row_count = np.diff(P.indptr)
        Pt = P.T.tocsc()  # columns of Pt are the rows of P
        rlabels = _supervariables(Pt, np.arange(m))
        rlabels[row_count == 0] = -1
        groups = _chunks(_grouped(rlabels), MAX_GROUP_ROWS)
        R = max((len(g) for g in groups), default=1)
        bs = max(block_size, 1)
        k = num_blocks
        num_groups = len(groups)
        group_of = -np.ones(m, np.int64)  # each row's group and its rank there
        rank_of = -np.ones(m, np.int64)
        members = np.zeros(0, np.int64)
        if num_groups:
            members = np.concatenate(groups)
            sizes = np.asarray([len(g) for g in groups])
            group_of[members] = np.repeat(np.arange(num_groups), sizes)
            rank_of[members] = np.arange(members.size) - np.repeat(np.cumsum(sizes) - sizes,
                                                                   sizes)
        group_rows = np.full((num_groups, R), m, np.int64)
        group_rows[group_of[members], rank_of[members]] = members
        position = np.arange(nnz)  # the nonzeros, CSR order
        gi, ri = group_of[rows], rank_of[rows]
        on_e = (gi >= 0) & (block_of[cols] >= 0)
        group_block = np.full(num_groups, k, np.int64)
        group_block[gi[on_e]] = block_of[cols[on_e]]
        group_e = np.full((num_groups, R, bs), nnz, np.int64)
        group_e[gi[on_e], ri[on_e], slot_of[cols[on_e]]] = position[on_e]
        # terms: the (row group, camera block) pairs, by group then camera block
        on_c = (gi >= 0) & (cblock_of[cols] >= 0)
        pair = gi[on_c] * kcb + cblock_of[cols[on_c]]
        pairs, term_of = np.unique(pair, return_inverse=True)
        term_group = list(pairs // kcb)
        term_cb = list(pairs % kcb)
        term_f = np.full((pairs.size, R, cbs), nnz, np.int64)
        term_f[term_of.reshape(-1), ri[on_c], cslot_of[cols[on_c]]] = position[on_c]
        if not term_group:  # nothing couples C and the rows: one empty term keeps shapes
            if num_groups == 0:  # no row has a nonzero: one empty row group too
                group_rows = np.full((1, R), m, np.int64)
                group_block = np.full(1, k, np.int64)
                group_e = np.full((1, R, bs), nnz, np.int64)
            term_group, term_cb = [0], [0]
            term_f = np.full((1, R, cbs), nnz, np.int64)
        term_group = np.asarray(term_group, np.int64)
        term_cb = np.asarray(term_cb, np.int64)
        term_block = np.asarray(group_block, np.int64)[term_group]

        # 4. Segments: the terms on one block (or of one unblocked row group), padded to T
        #    terms (the pad is term ``num_terms``, all zeros); their pairs a <= b.
        num_terms = term_group.size
        order = np.lexsort((term_group, term_block))
        tb, tg = term_block[order], term_group[order]
        key_for = np.where(tb < k, tb, k + tg)
        cuts = np.flatnonzero(np.diff(key_for)) + 1
        segments = np.split(order, cuts)
        T = max(len(seg) for seg in segments)
        seg_terms = np.full((len(segments), T), num_terms, np.int64)
        for i, seg in enumerate(segments):
            seg_terms[i, :len(seg)] = seg
        pa, pb = np.triu_indices(T)
        t1, t2 = seg_terms[:, pa], seg_terms[:, pb]  # (segments, pairs)
        real = (t1 < num_terms) & (t2 < num_terms)
        cb_pad = np.concatenate([term_cb, [0]])
        g_pad = np.concatenate([term_group, [-1]])
        # diagonal pairs (a == b) go to [0, kcb^2), the others to [kcb^2, 2 kcb^2)
        target = np.where(real, cb_pad[t1] * kcb + cb_pad[t2] + (pa != pb) * kcb * kcb,
                          2 * kcb * kcb)
        same = real & (g_pad[t1] == g_pad[t2])

        # 5. Maps: dense S from its blocks; C vectors from camera-block vectors and back.
        zero_slot = kcb * kcb * cbs * cbs
        cb_c = cblock_of[c_cols]
        cs_c = cslot_of[c_cols]
        has = cb_c >= 0
        flat_c = np.where(has, cb_c * cbs + cs_c, kcb * cbs)
        bi, bj = cb_c[:, None], cb_c[None, :]
        dense = ((bi * kcb + bj) * cbs + cs_c[:, None]) * cbs + cs_c[None, :]
        dense = np.where(has[:, None] & has[None, :], dense, zero_slot)
        cblock_cols = np.full((kcb, cbs), nc, np.int64)  # C index of each camera-block slot
        cblock_cols[cb_c[has], cs_c[has]] = np.flatnonzero(has)
        e_cols = np.full((k + 1, bs), n, np.int64)  # column of each block slot (n: padding)
        e_all = np.flatnonzero(block_of >= 0)
        e_cols[block_of[e_all], slot_of[e_all]] = e_all
        # p = concatenate([p_C, p_E (k + 1, bs) raveled])[unpermute]
        unpermute = np.where(block_of >= 0, nc + block_of * bs + slot_of, c_index)

        i32 = np.int32
        self.shape = (m, n)
        self.num_blocks, self.block_size = k, bs
        self.num_reduced, self.num_camera_blocks, self.camera_block_size = nc, kcb, cbs
        self.num_terms, self.num_pairs = int(num_terms), int(real.sum())
        self.nz_rows = plan.rows.astype(i32)
        self.nz_cols = plan.cols.astype(i32)
        self.group_rows = np.asarray(group_rows, np.int64).astype(i32)
        self.group_block = np.asarray(group_block, i32)
        self.group_e = np.asarray(group_e).astype(i32)
        self.term_group = term_group.astype(i32)
        self.term_block = term_block.astype(i32)
        self.term_cb = term_cb.astype(i32)
        self.term_f = np.asarray(term_f).astype(i32)
        self.seg_terms = seg_terms.astype(i32)
        self.pair_a, self.pair_b = pa.astype(i32), pb.astype(i32)
        self.pair_same = same
        self.pair_target = target.astype(i32)
        self.dense = dense.astype(i32)
        self.flat_c = flat_c.astype(i32)
        self.c_cols = c_cols.astype(i32)
        self.cblock_cols = cblock_cols.astype(i32)
        self.e_cols = e_cols.astype(i32)
        self.e_pad = (e_cols == n)
        self.unpermute = unpermute.astype(i32)

    def __repr__(self):
        return (f"SchurStructure(eliminated {self.num_blocks} blocks of {self.block_size}, "
                f"reduced {self.num_reduced} in {self.num_camera_blocks} blocks of "
                f"{self.camera_block_size}, {self.num_terms} terms, {self.num_pairs} pairs)")


def _bdot(A, B):
    """``A^T B`` for batches of small matrices ``(..., q, i)`` and ``(..., q, j)``: a sum of
    ``q`` outer products, unrolled (``q`` is a block size), which XLA fuses into one
    elementwise loop."""
    out = A[..., 0, :, None] * B[..., 0, None, :]
    for q in range(1, A.shape[-2]):
        out = out + A[..., q, :, None] * B[..., q, None, :]
    return out


def _bmv(A, x):
    """``A x`` for a batch of small matrices ``(..., i, j)`` and vectors ``(..., j)``."""
    return _bdot(jnp.swapaxes(A, -1, -2), x[..., :, None])[..., 0]


def _inverse_spd(V):
    """Inverses of a batch of small symmetric positive definite matrices ``(k, b, b)`` by an
    unrolled Cholesky factorisation (elementwise over the batch)."""
    b = V.shape[-1]
    L = [[None] * b for _ in range(b)]
    for j in range(b):
        d = V[:, j, j] - sum(L[j][q] * L[j][q] for q in range(j))
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, b):
            L[i][j] = (V[:, i, j] - sum(L[i][q] * L[j][q] for q in range(j))) / L[j][j]
    # M = L^{-1} (lower triangular), then V^{-1} = M^T M
    M = [[None] * b for _ in range(b)]
    for i in range(b):
        M[i][i] = 1.0 / L[i][i]
        for j in range(i):
            M[i][j] = -sum(L[i][q] * M[q][j] for q in range(j, i)) / L[i][i]
    zero = jnp.zeros_like(V[:, 0, 0])
    Mt = jnp.stack([jnp.stack([M[i][j] if j <= i else zero for j in range(b)], -1)
                    for i in range(b)], -2)
    return _bdot(Mt, Mt)


def schur_step(st: SchurStructure, values, grad, scale, lam):
    """The exact solution ``p`` (n,) of ``(J^T J + lam D^2) p = -grad`` for the ``J`` with the
    nonzeros ``values`` (``nnz``, CSR order of the plan; any row weights and masked columns
    already applied), ``D = diag(scale)``, by the Schur complement on ``st`` (module
    docstring)."""
    dtype = values.dtype
    n = st.shape[1]
    k, bs, kcb, cbs = st.num_blocks, st.block_size, st.num_camera_blocks, st.camera_block_size
    vals = jnp.concatenate([values, jnp.zeros((1,), dtype)])
    d2 = jnp.concatenate([scale * scale, jnp.ones((1,), dtype)])
    g = jnp.concatenate([grad, jnp.zeros((1,), dtype)])

    E = vals[st.group_e]  # (groups, R, bs)
    F = vals[st.term_f]  # (terms, R, cbs)
    EtE = _bdot(E, E)
    V = jax.ops.segment_sum(EtE, st.group_block, k + 1)
    eye = jnp.eye(bs, dtype=dtype)
    damp = jnp.where(st.e_pad, 1.0, lam * d2[st.e_cols])  # padding: identity
    V = V + damp[:, :, None] * eye
    Vinv = _inverse_spd(V)

    Et = E[st.term_group]  # (terms, R, bs)
    G = _bdot(Et, F)  # E_t^T F_t (terms, bs, cbs)
    H = _bdot(jnp.swapaxes(Vinv[st.term_block], 1, 2), G)  # V^{-1} G
    # per segment (a point) its terms, and every pair a <= b of them: [same group] F_a^T F_b
    # - G_a^T H_b, summed into the camera blocks; a < b also stands for (b, a) (transposed)
    zero_term = jnp.zeros((1,) + G.shape[1:], dtype)
    Gs = jnp.concatenate([G, zero_term])[st.seg_terms]  # (segments, T, bs, cbs)
    Hs = jnp.concatenate([H, zero_term])[st.seg_terms]
    Fs = jnp.concatenate([F, jnp.zeros((1,) + F.shape[1:], dtype)])[st.seg_terms]
    # materialised once: fused into each pair's product they would be recomputed per pair
    Gs, Hs, Fs = jax.lax.optimization_barrier((Gs, Hs, Fs))
    num = 2 * kcb * kcb + 1
    if st.pair_a.size <= MAX_UNROLLED_PAIRS:  # one small batched product and scatter a pair
        both = jnp.zeros((num, cbs, cbs), dtype)
        for i, (a, b) in enumerate(zip(st.pair_a.tolist(), st.pair_b.tolist())):
            block = -_bdot(Gs[:, a], Hs[:, b])
            if st.pair_same[:, i].any():
                block = block + (jnp.asarray(st.pair_same[:, i], dtype)[:, None, None]
                                 * _bdot(Fs[:, a], Fs[:, b]))
            both = both.at[st.pair_target[:, i]].add(block)
    else:
        a, b = st.pair_a, st.pair_b
        same = jnp.asarray(st.pair_same, dtype)[:, :, None, None]
        blocks = same * _bdot(Fs[:, a], Fs[:, b]) - _bdot(Gs[:, a], Hs[:, b])
        both = jax.ops.segment_sum(blocks.reshape(-1, cbs, cbs), st.pair_target.reshape(-1),
                                   num)
    both = both[:-1].reshape(2, kcb, kcb, cbs, cbs)
    on, off = both[0], both[1]
    Sb = on + off + jnp.transpose(off, (1, 0, 3, 2))
    S = jnp.concatenate([Sb.reshape(-1), jnp.zeros((1,), dtype)])[st.dense]
    S = S + jnp.diag(lam * d2[st.c_cols])

    ge = g[st.e_cols]  # (k + 1, bs)
    y = _bmv(Vinv, ge)
    wy = _bmv(jnp.swapaxes(G, 1, 2), y[st.term_block])  # G^T y
    wy = jax.ops.segment_sum(wy, st.term_cb, kcb).reshape(-1)
    wy = jnp.concatenate([wy, jnp.zeros((1,), dtype)])[st.flat_c]
    rhs = -g[st.c_cols] + wy
    L = jnp.linalg.cholesky(S)
    pc = jax.scipy.linalg.cho_solve((L, True), rhs)

    pcb = jnp.concatenate([pc, jnp.zeros((1,), dtype)])[st.cblock_cols]  # (kcb, cbs)
    wtp = _bmv(G, pcb[st.term_cb])
    wtp = jax.ops.segment_sum(wtp, st.term_block, k + 1)
    pe = _bmv(Vinv, -ge - wtp)
    return jnp.concatenate([pc, pe.reshape(-1)])[st.unpermute][:n]


class SchurLinearisation(NamedTuple):
    """:class:`jacopt.solvers.matrix_free.Linearisation` plus the raw nonzeros of ``J``
    (``values``) and the loss's row weights (``row_weights``, ``None`` for the linear
    loss)."""

    rc: Any
    mv: Any
    rmv: Any
    fixed: Any
    raw_rmv: Any
    values: Any
    row_weights: Any


@functools.lru_cache(maxsize=32)
def structure_for(plan: SparseJacobianPlan, eliminate) -> SchurStructure:
    """The :class:`SchurStructure` of ``plan`` (cached per plan, hashed by identity, and
    ``eliminate``)."""
    return SchurStructure(plan, eliminate)


def _leaf_columns(x0, leaf):
    """``(name, start, num_blocks, block_size)`` of the leaf of ``x0`` named ``leaf`` (a dict
    key, attribute name or sequence index, or a tuple of them for a nested path), in
    ``ravel_pytree`` order; its last axis is a block (a 1-D leaf: blocks of one)."""
    path_leaves = jax.tree_util.tree_flatten_with_path(x0)[0]
    wanted = leaf if isinstance(leaf, tuple) else (leaf,)
    start = 0
    names = []
    for path, value in path_leaves:
        keys = tuple(getattr(p, "key", getattr(p, "name", getattr(p, "idx", None)))
                     for p in path)
        names.append(keys if len(keys) != 1 else keys[0])
        shape = np.shape(value)
        size = int(np.prod(shape))
        if keys == wanted:
            block = int(shape[-1]) if len(shape) >= 2 else 1
            return (leaf, start, size // block if block else 0, block)
        start += size
    raise ValueError(f"leaf: x0 has no leaf named {leaf!r}; its leaves are {names}.")


@dataclasses.dataclass(frozen=True)
class SchurLevenbergMarquardt(SparseLevenbergMarquardt):
    """Levenberg-Marquardt whose damped steps are solved exactly by eliminating a
    block-diagonal group of unknowns (module docstring): ``solver="lm-schur"`` in
    :func:`jacopt.least_squares` (with ``jac_sparsity``, or the pattern is detected).

    Options: those of :class:`~jacopt.solvers.sparse_lm.SparseLevenbergMarquardt` (the
    tolerances, ``initial_damping``, ``scaling``, ``mode``; the inner-solver options have no
    use here), and ``eliminate``: ``"auto"`` (found from the pattern) or what
    :meth:`eliminating` sets from a leaf of ``x0``. ``mode`` defaults to ``"fwd"``: the
    columns of such problems need few colours (every camera block can share colours with
    the others; ``"auto"`` picks the same after colouring the columns, as the rows' lower
    bound is a camera's number of observations). The result's ``jac`` is ``None``.
    """

    mode: str = "fwd"
    eliminate: Any = "auto"

    def __post_init__(self):
        super().__post_init__()
        e = self.eliminate
        named = isinstance(e, tuple) and len(e) == 4 and all(
            isinstance(v, (int, np.integer)) and v >= 0 for v in e[1:])
        if not (named or (isinstance(e, str) and e == "auto")):
            raise ValueError(f"eliminate must be 'auto' or set by SchurLevenbergMarquardt."
                             f"eliminating(x0, leaf); got {e!r}.")
        if self.plan is not None:  # the structure, and its errors, before any tracing
            structure_for(self.plan, self.eliminate)

    @classmethod
    def eliminating(cls, x0, leaf, **options) -> "SchurLevenbergMarquardt":
        """The solver eliminating the leaf of ``x0`` named ``leaf`` (a dict key, attribute or
        index, or a tuple path): its rows (last axis) are the blocks, e.g. ``"points"`` of
        shape ``(num_points, 3)``. ``least_squares`` raises a ValueError if some residual row
        touches two of its blocks."""
        return cls(eliminate=_leaf_columns(x0, leaf), **options)

    def structure(self) -> SchurStructure:
        return structure_for(self._plan(), self.eliminate)

    def _linearise(self, problem, x, carry, point=None):
        r, grad, lin, carry = super()._linearise(problem, x, carry, point)
        _, w_j = problem.loss.weights(r, problem.f_scale)
        return r, grad, SchurLinearisation(*lin, values=carry.values, row_weights=w_j), carry

    def _inner_solve(self, lin, grad, scale, lam, forcing):
        """The exact damped step by the Schur complement (no inner iterations; ``forcing``
        is not used)."""
        st = self.structure()
        values = lin.values
        if lin.row_weights is not None:
            values = values * lin.row_weights[jnp.asarray(st.nz_rows)]
        values = jnp.where(lin.fixed[jnp.asarray(st.nz_cols)], 0.0, values)
        g = jnp.where(lin.fixed, 0.0, grad)
        return schur_step(st, values, g, scale, lam), jnp.zeros((), jnp.int32)
