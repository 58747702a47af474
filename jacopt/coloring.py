"""Graph colourings that compress sparse Jacobians and Hessians into few JVPs/VJPs/HVPs.

Columns of a Jacobian pattern that share no row (structurally orthogonal) can be recovered from
one JVP with the sum of their unit vectors: a *distance-2 colouring* of the bipartite graph of
the pattern (equivalently a distance-1 colouring of its column intersection graph ``A^T A``).
Rows colour the same way for VJPs (colour the transpose). A symmetric Hessian needs fewer
colours with a *star colouring* of its adjacency graph (a proper colouring in which every path
on four vertices uses at least three colours) and a symmetric recovery.

References: Gebremedhin, Manne & Pothen (2005), "What color is your Jacobian? Graph coloring
for computing derivatives", SIAM Review 47(4):629-705 (greedy distance-2 and star colourings,
largest-first and smallest-last orders; Algorithm 4.1 for the greedy star colouring);
Gebremedhin, Tarafdar, Manne & Pothen (2007), "New acyclic and star coloring algorithms with
application to computing Hessians", SIAM J. Sci. Comput. 29(3):1042-1072. A valid column
colouring needs at least as many colours as the largest number of nonzeros in one row
(:func:`lower_bound`).

Colours are ``int`` arrays numbered from 0; all functions take a pattern as a SciPy sparse
matrix, a boolean NumPy array or a ``jax.experimental.sparse.BCOO``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

__all__ = ["as_pattern", "color_columns", "color_rows", "choose_mode", "star_coloring",
           "lower_bound", "graph_size", "is_valid_column_coloring", "is_valid_row_coloring",
           "is_valid_star_coloring", "Coloring"]


class Coloring(NamedTuple):
    """A compression of a pattern: ``mode`` "fwd" (columns coloured, one JVP per colour) or
    "rev" (rows coloured, one VJP per colour); ``colors`` one entry per column or row."""

    mode: str
    colors: np.ndarray
    num_colors: int
    lower_bound: int


def as_pattern(pattern, shape=None, name: str = "sparsity") -> sp.csr_array:
    """A boolean CSR array from a SciPy sparse matrix, a boolean/0-1 NumPy array or a BCOO;
    ``shape`` (when given) must match, else a ValueError naming ``name``."""
    if hasattr(pattern, "indices") and hasattr(pattern, "data") and hasattr(pattern, "nse"):
        indices = np.asarray(pattern.indices)  # a BCOO
        if indices.ndim != 2 or indices.shape[1] != 2 or pattern.n_batch or pattern.n_dense:
            raise ValueError(f"{name} as a BCOO must be a plain 2-D matrix; got shape "
                             f"{pattern.shape} with {pattern.n_batch} batch and "
                             f"{pattern.n_dense} dense dimensions")
        rows, cols = indices[:, 0], indices[:, 1]
        keep = (rows < pattern.shape[0]) & (cols < pattern.shape[1])  # padding entries
        out = sp.csr_array((np.ones(int(keep.sum()), bool), (rows[keep], cols[keep])),
                           shape=pattern.shape)
    elif sp.issparse(pattern):
        out = sp.csr_array(pattern, dtype=bool)
    else:
        array = np.asarray(pattern)
        if array.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (m, n) pattern; got shape {array.shape}")
        out = sp.csr_array(array != 0)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)} but the Jacobian of this "
                         f"function is {tuple(shape)} (outputs x inputs, flattened)")
    return out


def _intersection_graph(pattern: sp.csr_array) -> sp.csr_array:
    """Adjacency of the column intersection graph (columns sharing a row), no self loops."""
    A = sp.csr_array(pattern, dtype=np.int32)
    G = sp.csr_array(A.T @ A)
    G.setdiag(0)
    G.eliminate_zeros()
    G.sort_indices()
    return G


def _greedy(G: sp.csr_array, order: np.ndarray) -> np.ndarray:
    """First-fit colouring of graph ``G`` visiting vertices in ``order``."""
    n = G.shape[0]
    colors = [-1] * n
    indptr, indices = G.indptr.tolist(), G.indices.tolist()
    mark = [-1] * (n + 1)  # mark[c] == v: colour c is forbidden for v
    for v in order.tolist():
        for w in indices[indptr[v]:indptr[v + 1]]:
            mark[colors[w]] = v  # colour -1 marks the spare last slot
        c = 0
        while mark[c] == v:
            c += 1
        colors[v] = c
    return np.asarray(colors, np.int64)


def _smallest_last(G: sp.csr_array) -> np.ndarray:
    """Smallest-last order (Matula & Beck 1983): repeatedly remove a vertex of minimum degree
    in the remaining graph; colour in the reverse order of removal."""
    n = G.shape[0]
    degree = np.diff(G.indptr).astype(np.int64)
    indptr, indices = G.indptr, G.indices
    max_deg = int(degree.max()) if n else 0
    buckets = [set() for _ in range(max_deg + 1)]
    for v, d in enumerate(degree.tolist()):
        buckets[d].add(v)
    removed = np.zeros(n, bool)
    order = []
    low = 0
    deg = degree.tolist()
    for _ in range(n):
        low = max(low - 1, 0)
        while not buckets[low]:
            low += 1
        v = buckets[low].pop()
        removed[v] = True
        order.append(v)
        for w in indices[indptr[v]:indptr[v + 1]].tolist():
            if not removed[w]:
                buckets[deg[w]].discard(w)
                deg[w] -= 1
                buckets[deg[w]].add(w)
    return np.asarray(order[::-1], np.int64)


def _color_graph(G: sp.csr_array, order: str, passes: int = 0, lower: int = 0) -> np.ndarray:
    """The fewest-colour greedy colouring over the orders ``order`` names, then ``passes``
    iterated-greedy passes; stops once a colouring reaches ``lower`` colours (a lower bound:
    nothing later could be kept, as only strictly fewer colours replace the best)."""
    n = G.shape[0]
    degree = np.diff(G.indptr)
    orders = {
        "natural": lambda: np.arange(n),
        "largest_first": lambda: np.argsort(-degree, kind="stable"),
        "smallest_last": lambda: _smallest_last(G),
    }
    if order != "best" and order not in orders:
        raise ValueError(f"order must be 'best' or one of {sorted(orders)}; got {order!r}")
    names = list(orders) if order == "best" else [order]
    best = None
    for name in names:
        colors = _greedy(G, orders[name]())
        if best is None or colors.max(initial=-1) < best.max(initial=-1):
            best = colors
        if best.max(initial=-1) + 1 <= lower:
            return best
    return _iterated_greedy(G, best, passes) if passes else best


def _iterated_greedy(G: sp.csr_array, colors: np.ndarray, passes: int) -> np.ndarray:
    """Culberson & Luo (1996), "Exploring the k-colorable landscape with iterated greedy":
    re-run first-fit with the vertices grouped by colour class (classes in reverse order,
    largest first, or shuffled); a pass never uses more colours than the last."""
    rng = np.random.default_rng(0)
    best = colors
    for p in range(passes):
        k = int(colors.max(initial=-1)) + 1
        if k <= 1:
            break
        if p % 3 == 0:
            class_order = np.arange(k)[::-1]
        elif p % 3 == 1:
            class_order = np.argsort(-np.bincount(colors, minlength=k), kind="stable")
        else:
            class_order = rng.permutation(k)
        rank = np.empty(k, np.int64)
        rank[class_order] = np.arange(k)
        colors = _greedy(G, np.argsort(rank[colors], kind="stable"))
        if colors.max() < best.max():
            best = colors
    return best


def color_columns(pattern, order: str = "best", passes: int | None = None,
                  effort: int = 0) -> np.ndarray:
    """Greedy distance-2 colouring of the columns of ``pattern``: columns that share a row get
    different colours. ``order``: "natural", "largest_first", "smallest_last", or "best"
    (all three, the fewest colours kept); then ``passes`` iterated-greedy passes (default:
    20, fewer for large patterns, so that colouring stays a small part of the work); then,
    when ``effort > 0``, up to ``effort`` tabu-search moves spent removing colours
    (:func:`_tabu_reduce`)."""
    P = as_pattern(pattern)
    G = _intersection_graph(P)
    if passes is None:
        passes = int(min(20, max(2, 4_000_000 // max(G.nnz, 1))))
    lower = lower_bound(P)
    colors = _color_graph(G, order, passes, lower)
    if effort > 0:
        colors = _tabu_reduce(G, colors, lower, effort)
    return colors


def color_rows(pattern, order: str = "best", passes: int | None = None,
               effort: int = 0) -> np.ndarray:
    """Greedy distance-2 colouring of the rows of ``pattern`` (rows sharing a column differ)."""
    return color_columns(as_pattern(pattern).T, order, passes, effort)


def _tabu_reduce(G: sp.csr_array, colors: np.ndarray, lower: int, moves: int,
                 seed: int = 0) -> np.ndarray:
    """Remove colours one at a time by tabu search (Hertz & de Werra 1987, "Using tabu search
    techniques for graph coloring", TabuCol): recolour the last class at random among the
    others, then move conflicting vertices to the colour that removes most conflicts,
    forbidding a vertex's old colour for a while; stop at the lower bound or when the budget
    of ``moves`` is spent. Returns the best proper colouring found."""
    rng = np.random.default_rng(seed)
    n = G.shape[0]
    indptr, indices = G.indptr, G.indices
    rows = np.repeat(np.arange(n), np.diff(indptr))
    best = colors
    k = int(colors.max(initial=-1)) + 1
    used = 0
    big = 1 << 40
    while k - 1 >= max(lower, 1) and used < moves:
        k -= 1
        col = best.copy()
        extra = col >= k
        col[extra] = rng.integers(0, k, int(extra.sum()))
        gamma = np.zeros((n, k), np.int64)  # gamma[v, c]: neighbours of v coloured c
        np.add.at(gamma, (rows, col[indices]), 1)
        tabu = np.zeros((n, k), np.int64)
        conflicts = int(gamma[np.arange(n), col].sum()) // 2
        fewest = conflicts
        while conflicts and used < moves:
            used += 1
            cv = np.flatnonzero(gamma[np.arange(n), col] > 0)
            g = gamma[cv]
            own = g[np.arange(cv.size), col[cv]]
            delta = g - own[:, None]
            delta[np.arange(cv.size), col[cv]] = big
            allowed = (tabu[cv] <= used) | (conflicts + delta < fewest)
            delta = np.where(allowed, delta, big)
            m = int(delta.min())
            if m >= big:
                continue
            choices = np.argwhere(delta == m)
            i, c = choices[rng.integers(len(choices))]
            v, old = cv[i], col[cv[i]]
            col[v] = c
            nbrs = indices[indptr[v]:indptr[v + 1]]
            gamma[nbrs, old] -= 1
            gamma[nbrs, c] += 1
            conflicts += m
            fewest = min(fewest, conflicts)
            tabu[v, old] = used + int(0.6 * cv.size) + int(rng.integers(10))
        if conflicts:
            break
        best = col
    return best


def lower_bound(pattern, mode: str = "fwd") -> int:
    """The most nonzeros in one row (``mode="fwd"``, column colouring) or one column
    (``"rev"``): those columns (rows) pairwise need distinct colours."""
    P = as_pattern(pattern)
    if mode == "rev":
        P = sp.csr_array(P.T)
    return int(np.diff(P.indptr).max(initial=0))


GRAPH_RATIO = 16
"""In ``choose_mode(mode="auto")`` an intersection graph is not built when its size bound
(:func:`graph_size`) exceeds both this many times the other mode's and :data:`GRAPH_FLOOR`."""
GRAPH_FLOOR = 1 << 22


def graph_size(pattern, mode: str = "fwd") -> int:
    """An upper bound on the entries of the intersection graph a colouring in ``mode`` builds,
    from the pattern alone: the sum over rows (``"fwd"``: the column graph ``A^T A``) or over
    columns (``"rev"``: the row graph ``A A^T``) of their squared nonzero counts."""
    P = as_pattern(pattern)
    counts = (np.diff(P.indptr) if mode == "fwd"
              else np.bincount(P.indices, minlength=P.shape[1])).astype(np.int64)
    return int(np.sum(counts * counts))


def choose_mode(pattern, mode: str = "auto", order: str = "best", effort: int = 0) -> Coloring:
    """Colour columns (``"fwd"``), rows (``"rev"``) or, for ``"auto"``, the mode with fewer
    colours (ties go to forward mode); ``effort`` as for :func:`color_columns`.

    ``"auto"`` colours first the mode whose intersection graph is smaller (:func:`graph_size`;
    forward on a tie) and colours the other only if it could win: not when its
    :func:`lower_bound` already reaches the colours found (exceeds them, when the other is
    forward, which wins ties). So the result equals colouring both. One exception keeps the
    host cost bounded: the other mode is not coloured when its graph would exceed both
    :data:`GRAPH_RATIO` times the first's and :data:`GRAPH_FLOOR` entries (a few columns in
    very many rows, as the cameras of bundle adjustment, make a row graph of cliques)."""
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"mode must be 'auto', 'fwd' or 'rev'; got {mode!r}")
    P = as_pattern(pattern)

    def colour(m):
        colors = (color_columns(P, order, effort=effort) if m == "fwd"
                  else color_rows(P, order, effort=effort))
        return Coloring(m, colors, int(colors.max(initial=-1)) + 1, lower_bound(P, m))

    if mode != "auto":
        return colour(mode)
    if P.shape[0] == P.shape[1] and (P != P.T).nnz == 0:
        return colour("fwd")  # a symmetric pattern: rows colour exactly like columns
    size = {m: graph_size(P, m) for m in ("fwd", "rev")}
    first = "fwd" if size["fwd"] <= size["rev"] else "rev"
    other = "rev" if first == "fwd" else "fwd"
    found = colour(first)
    bound = lower_bound(P, other)
    if bound > found.num_colors or (bound == found.num_colors and other == "rev"):
        return found
    if size[other] > max(GRAPH_RATIO * size[first], GRAPH_FLOOR):
        return found
    second = colour(other)
    if second.num_colors < found.num_colors or (
            second.num_colors == found.num_colors and other == "fwd"):
        return second
    return found


def star_coloring(pattern, order: str = "best") -> np.ndarray:
    """Greedy star colouring of the adjacency graph of a symmetric pattern (Gebremedhin,
    Manne & Pothen 2005, Algorithm 4.1): a proper colouring in which no path on four vertices
    is bicoloured, so every off-diagonal entry of a symmetric matrix can be read from one of
    ``H @ S`` (``S`` one 0/1 column per colour). The pattern is symmetrised; falls back to a
    distance-2 colouring (always a star colouring) if that uses fewer colours."""
    P = as_pattern(pattern)
    if P.shape[0] != P.shape[1]:
        raise ValueError(f"a Hessian pattern must be square; got shape {P.shape}")
    G = sp.csr_array((P + P.T).astype(bool).astype(np.int32))
    G.setdiag(0)
    G.eliminate_zeros()
    G.sort_indices()
    n = G.shape[0]
    indptr, indices = G.indptr, G.indices
    nbrs = [indices[indptr[v]:indptr[v + 1]].tolist() for v in range(n)]
    degree = np.diff(indptr)
    orders = {"natural": np.arange(n), "largest_first": np.argsort(-degree, kind="stable")}
    if order == "smallest_last" or order == "best":
        orders["smallest_last"] = _smallest_last(G)
    candidates = list(orders) if order == "best" else [order]
    best = None
    for name in candidates:
        color = [-1] * n
        forbidden = [-1] * (n + 1)
        for v in orders[name].tolist():
            for w in nbrs[v]:
                cw = color[w]
                if cw >= 0:
                    forbidden[cw] = v
                for x in nbrs[w]:
                    if x == v:
                        continue
                    cx = color[x]
                    if cx < 0:
                        continue
                    if cw < 0:
                        forbidden[cx] = v
                    else:
                        for y in nbrs[x]:
                            if y != w and color[y] == cw:
                                forbidden[cx] = v
                                break
            c = 0
            while forbidden[c] == v:
                c += 1
            color[v] = c
        colors = np.asarray(color, np.int64)
        if best is None or colors.max(initial=-1) < best.max(initial=-1):
            best = colors
    d2 = _color_graph(_intersection_graph(sp.csr_array(G + sp.identity(n, format="csr"))),
                      "best" if order == "best" else order)
    if not is_valid_star_coloring(G, best) or d2.max(initial=-1) < best.max(initial=-1):
        best = d2
    return best


def is_valid_column_coloring(pattern, colors) -> bool:
    """No two columns of one colour share a row."""
    P = as_pattern(pattern)
    colors = np.asarray(colors)
    if colors.shape != (P.shape[1],) or (colors < 0).any():
        return False
    coo = sp.coo_array(P)
    # Within a row, the colours of its columns must be distinct.
    keys = coo.row.astype(np.int64) * (int(colors.max(initial=0)) + 1) + colors[coo.col]
    return np.unique(keys).size == keys.size


def is_valid_row_coloring(pattern, colors) -> bool:
    """No two rows of one colour share a column."""
    return is_valid_column_coloring(as_pattern(pattern).T, colors)


def is_valid_star_coloring(pattern, colors) -> bool:
    """A proper colouring of the adjacency graph of the symmetrised pattern in which no path
    on four vertices is bicoloured: no edge (w, x) where w has two or more neighbours of x's
    colour and x two or more of w's colour."""
    P = as_pattern(pattern)
    colors = np.asarray(colors)
    n = P.shape[0]
    if P.shape[0] != P.shape[1] or colors.shape != (n,) or (colors < 0).any():
        return False
    G = sp.coo_array((P + P.T).astype(bool))
    off = G.row != G.col
    rows, cols = G.row[off], G.col[off]
    if (colors[rows] == colors[cols]).any():
        return False
    if rows.size == 0:  # no edges (a diagonal pattern): every proper colouring is a star one
        return True
    num = int(colors.max(initial=0)) + 1
    counts = sp.csr_array((np.ones(rows.size, np.int64), (rows, colors[cols])), shape=(n, num))
    counts.sum_duplicates()
    deg_w = np.asarray(counts[rows, colors[cols]]).reshape(-1)
    deg_x = np.asarray(counts[cols, colors[rows]]).reshape(-1)
    return not ((deg_w >= 2) & (deg_x >= 2)).any()
