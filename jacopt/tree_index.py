"""Map between flat indices and the leaves of a pytree.

``jacopt.jacobian(f, as_matrix=True)`` returns one 2-D array whose columns are the flattened
inputs and whose rows are the flattened outputs. ``TreeIndex`` says which column (or row) is
which element of which leaf, and turns a flat row or column back into the pytree.

Ravel order (the same as ``jax.flatten_util.ravel_pytree``): leaves in ``jax.tree_util`` order
(lists and tuples by position, dicts by sorted key), each leaf raveled row-major (C order) and
the pieces concatenated.

A *path* names one scalar element: the keys that lead from the root to a leaf, followed by the
element's index inside that leaf. For ``params = [(W0, b0), (W1, b1)]`` with ``W1`` of shape
(3, 4), the element ``params[1][0][2, 1]`` has path ``(1, 0, 2, 1)`` (``(1, 0, (2, 1))`` is also
accepted), and ``b1[2]`` has path ``(1, 1, 2)``. Keys are list/tuple positions (ints), dict keys,
and attribute names (strings) for dataclasses and named tuples. A scalar (0-d) leaf is named
by its keys alone.

Example::

    idx = TreeIndex(params)
    idx.size                  # number of columns of jacobian(f, as_matrix=True)(params)
    idx.index((1, 1, 2))      # column of params[1][1][2]
    idx.path(17)              # (1, 0, 2, 1): column 17 is params[1][0][2, 1]
    idx.label(17)             # "[1][0][2, 1]"
    idx.leaf_slice((1, 0))    # the columns of the whole leaf params[1][0]
    idx.unravel(J[0])         # row 0 of J shaped like params
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _key_value(key) -> Any:
    """The plain Python value of one ``jax.tree_util`` path entry (index, dict key or name)."""
    for attribute in ("idx", "key", "name"):
        if hasattr(key, attribute):
            return getattr(key, attribute)
    return key


class TreeIndex:
    """Flat-index bookkeeping for one pytree of arrays (see the module docstring).

    Args:
        tree: any pytree whose leaves are arrays or scalars (only their shapes are used, so
            ``jax.ShapeDtypeStruct`` leaves work too).

    Attributes:
        size: total number of scalar elements (the length of the raveled tree).
        keys: per leaf, the tuple of plain keys leading to it, in ravel order.
        shapes: per leaf, its shape.
        offsets: per leaf, the flat index of its first element.
    """

    def __init__(self, tree: Any):
        paths_and_leaves, self.treedef = jax.tree_util.tree_flatten_with_path(tree)
        self.keys = tuple(tuple(_key_value(k) for k in path) for path, _ in paths_and_leaves)
        self.shapes = tuple(tuple(np.shape(leaf)) for _, leaf in paths_and_leaves)
        self.dtypes = tuple(getattr(leaf, "dtype", None) for _, leaf in paths_and_leaves)
        self._keystr = tuple(jax.tree_util.keystr(path) for path, _ in paths_and_leaves)
        sizes = [math.prod(shape) for shape in self.shapes]
        self.offsets = tuple(int(o) for o in np.cumsum([0] + sizes[:-1]))
        self.sizes = tuple(sizes)
        self.size = int(sum(sizes))
        self._leaf_of_keys = {keys: i for i, keys in enumerate(self.keys)}

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        leaves = ", ".join(f"{s}{list(shape)}" for s, shape in zip(self._keystr, self.shapes))
        return f"TreeIndex(size={self.size}, leaves: {leaves})"

    # --- path <-> flat index -------------------------------------------------------------
    def _split(self, path: tuple) -> tuple[int, tuple[int, ...]]:
        """(leaf number, element multi-index) for a path; raises KeyError when unknown."""
        path = tuple(path)
        for n_keys in range(len(path), -1, -1):
            leaf = self._leaf_of_keys.get(path[:n_keys])
            if leaf is None:
                continue
            element = []
            for entry in path[n_keys:]:
                element.extend(entry if isinstance(entry, tuple) else (entry,))
            shape = self.shapes[leaf]
            if len(element) != len(shape) or any(
                not isinstance(e, (int, np.integer)) or not -d <= e < d
                for e, d in zip(element, shape)
            ):
                raise KeyError(
                    f"path {path!r}: leaf {self._keystr[leaf] or '<root>'} has shape {shape}, "
                    f"element index {tuple(element)!r} does not fit it"
                )
            return leaf, tuple(int(e) % d for e, d in zip(element, shape))
        raise KeyError(f"path {path!r} names no leaf; the leaves are {list(self.keys)}")

    def index(self, path: tuple) -> int:
        """Flat index of the element named by ``path`` (keys then element index)."""
        leaf, element = self._split(path)
        within = int(np.ravel_multi_index(element, self.shapes[leaf])) if element else 0
        return self.offsets[leaf] + within

    def leaf_slice(self, keys: tuple) -> slice:
        """The flat indices of a whole leaf, named by its keys, e.g.
        ``J[:, idx.leaf_slice((1, 0))]``."""
        keys = tuple(keys)
        if keys not in self._leaf_of_keys:
            raise KeyError(f"keys {keys!r} name no leaf; the leaves are {list(self.keys)}")
        leaf = self._leaf_of_keys[keys]
        return slice(self.offsets[leaf], self.offsets[leaf] + self.sizes[leaf])

    def _locate(self, i: int) -> tuple[int, tuple[int, ...]]:
        if not isinstance(i, (int, np.integer)) or not -self.size <= i < self.size:
            raise IndexError(f"flat index {i!r} out of range for a tree of size {self.size}")
        i = int(i) % self.size
        leaf = int(np.searchsorted(self.offsets, i, side="right")) - 1
        while self.sizes[leaf] == 0:  # skip empty leaves sharing the same offset
            leaf -= 1
        element = (np.unravel_index(i - self.offsets[leaf], self.shapes[leaf])
                   if self.shapes[leaf] else ())
        return leaf, tuple(int(e) for e in element)

    def path(self, i: int) -> tuple:
        """The path (keys, then element index) of flat index ``i``."""
        leaf, element = self._locate(i)
        return self.keys[leaf] + element

    def label(self, i: int) -> str:
        """A printable name for flat index ``i``, e.g. ``"[1][0][2, 1]"`` or ``"['w'][3]"``."""
        leaf, element = self._locate(i)
        suffix = f"[{', '.join(map(str, element))}]" if element else ""
        return (self._keystr[leaf] + suffix) or "[]"

    def labels(self) -> list[str]:
        """``label(i)`` for every flat index, in order (for printing rows/columns of a Jacobian)."""
        return [self.label(i) for i in range(self.size)]

    # --- vectors <-> trees --------------------------------------------------------------
    def unravel(self, vector) -> Any:
        """Shape a 1-D array of length ``size`` back into the tree (leaves keep the vector's dtype).

        Works on traced arrays too (inside ``jit``/``vmap``).
        """
        vector = jnp.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"unravel needs a vector of shape ({self.size},), got {vector.shape}")
        leaves = [
            vector[o : o + s].reshape(shape)
            for o, s, shape in zip(self.offsets, self.sizes, self.shapes)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def ravel(self, tree: Any) -> jax.Array:
        """Concatenate a tree with this structure into one 1-D array (the ravel order above)."""
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        if treedef != self.treedef:
            raise ValueError(f"ravel: tree structure {treedef} differs from the indexed "
                             f"{self.treedef}")
        for leaf, shape, path in zip(leaves, self.shapes, self._keystr):
            if tuple(jnp.shape(leaf)) != tuple(shape):
                raise ValueError(f"ravel: leaf {path or '<root>'} has shape {jnp.shape(leaf)}, "
                                 f"the indexed tree has {tuple(shape)} there")
        if not leaves:
            return jnp.zeros((0,))
        return jnp.concatenate([jnp.ravel(leaf) for leaf in leaves])
