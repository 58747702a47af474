"""``minimize(bounds=...)``: the forms SciPy users write, read into flat ``(lower, upper)``.

Accepted (``n`` the number of elements of ``x0``):

- ``(lower, upper)``: each ``None`` (no bound), a scalar, or an array or pytree shaped like
  ``x0`` (each leaf a scalar or of its ``x0`` leaf's shape); ``-inf``/``inf`` mean no bound.
- SciPy's sequence of ``n`` pairs ``[(lo_0, hi_0), ...]`` of numbers or ``None`` (a list or
  tuple of ``n`` lists or tuples of two numbers; with ``n == 2`` such a pair of pairs is read
  this way too: write arrays for ``(lower, upper)``).
- a :class:`scipy.optimize.Bounds` (``lb``, ``ub``, broadcast to ``n``).

Bounds are flat ``(n,)`` arrays in ``x0``'s dtype (NumPy when concrete, so they are checked
before any work; traced ones, under ``jit``/``vmap``/``grad``, are passed through unchecked).
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jacopt._validate import check_box, flat_like, is_traced


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool)) or (
        isinstance(v, (np.ndarray, np.generic)) and np.ndim(v) == 0)


def _scipy_pairs(bounds, n: int) -> bool:
    return (isinstance(bounds, (list, tuple)) and len(bounds) == n and n > 0
            and all(isinstance(b, (list, tuple)) and len(b) == 2
                    and all(_number_or_none(v) for v in b) for b in bounds))


def parse_bounds(bounds, x0, dtype):
    """``(lower, upper)`` flat ``(n,)`` arrays for ``x0`` (a pytree), or ``(None, None)`` for
    ``bounds=None`` or bounds that are all infinite. Raises ``ValueError`` naming ``bounds`` for
    a form it cannot read, a shape that does not match ``x0``, NaN, or ``lower > upper``."""
    if bounds is None:
        return None, None
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(x0))
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        try:
            lb = np.broadcast_to(np.asarray(bounds.lb, np.float64), (n,))
            ub = np.broadcast_to(np.asarray(bounds.ub, np.float64), (n,))
        except ValueError:
            raise ValueError(f"bounds (a Bounds) has lb of shape {np.shape(bounds.lb)} and ub "
                             f"of shape {np.shape(bounds.ub)}; x0 has {n} elements.") from None
        lower, upper = lb.astype(dtype), ub.astype(dtype)
    elif _scipy_pairs(bounds, n):
        lower = np.array([-np.inf if lo is None else float(lo) for lo, _ in bounds], dtype)
        upper = np.array([np.inf if hi is None else float(hi) for _, hi in bounds], dtype)
    elif isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        try:
            treedef = jax.tree_util.tree_structure(x0)
            shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(x0)]
            lower = flat_like(bounds[0], treedef, shapes, dtype, "bounds[0] (lower)",
                              fill=-np.inf)
            upper = flat_like(bounds[1], treedef, shapes, dtype, "bounds[1] (upper)",
                              fill=np.inf)
        except ValueError as exc:
            if _scipy_pairs(bounds, len(bounds)):
                raise ValueError(f"bounds has 2 (min, max) pairs for the {n} elements of x0 "
                                 f"(SciPy's form needs one pair per element); as (lower, "
                                 f"upper): {exc}") from None
            raise
    elif _scipy_pairs(bounds, len(bounds) if isinstance(bounds, (list, tuple)) else -1):
        raise ValueError(f"bounds has {len(bounds)} (min, max) pairs for the {n} elements of "
                         f"x0; SciPy's form needs one pair per element.")
    else:
        raise ValueError(
            "bounds must be (lower, upper) (scalars, arrays or pytrees like x0), SciPy's "
            f"sequence of {n} (min, max) pairs, or a scipy.optimize.Bounds; got "
            f"{type(bounds).__name__}" + (f" of length {len(bounds)}."
                                          if isinstance(bounds, (list, tuple)) else "."))
    if is_traced(lower) or is_traced(upper):
        return jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)
    return check_box(lower, upper)
