"""Input validation shared by the Jacobian functions: clear errors, raised before any work.

Rules (stated once here and in ``jacopt.jacobian``'s docstring):

* ``argnums`` is an int or a tuple of distinct ints; negative values count from the end, as in
  Python indexing. Out of range -> ``ValueError`` naming ``argnums`` and the number of arguments.
* A differentiated argument is a pytree whose leaves are JAX or NumPy arrays or Python floats.
  Python floats (and NumPy float scalars) are converted with ``jnp.asarray`` (so they take JAX's
  default float dtype: float32, or float64 when x64 is enabled). ``None`` is an empty subtree,
  as everywhere in JAX.
* Every differentiated leaf must have a real floating dtype, and all of them the same dtype.
  Integer or boolean leaves (including Python ints) -> ``TypeError`` suggesting a float dtype:
  jacopt never casts silently. Complex leaves -> ``TypeError``. Any other leaf (a string, an
  object) -> ``TypeError`` naming the argument and the leaf's path.
* An argument with no elements at all (no leaves, or only zero-size leaves) -> ``ValueError``.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def normalize_argnums(argnums: Any) -> int | tuple[int, ...]:
    """Validate the *type* of ``argnums`` at transformation time (range is checked per call)."""
    def bad(reason):
        return TypeError(f"argnums must be an int or a tuple of ints, got {argnums!r} ({reason})")

    if isinstance(argnums, (bool, np.bool_)):
        raise bad("a bool")
    if isinstance(argnums, (int, np.integer)):
        return int(argnums)
    if isinstance(argnums, (tuple, list)):
        if len(argnums) == 0:
            raise ValueError("argnums is an empty tuple: "
                             "name at least one argument to differentiate")
        for a in argnums:
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
                raise bad(f"entry {a!r} is not an int")
        return tuple(int(a) for a in argnums)
    raise bad(f"type {type(argnums).__name__}")


def resolve_argnums(argnums: int | tuple[int, ...], n_args: int) -> tuple[int, ...]:
    """Positions (non-negative, in the given order) of the differentiated arguments."""
    as_tuple = argnums if isinstance(argnums, tuple) else (argnums,)
    resolved = []
    for a in as_tuple:
        if not -n_args <= a < n_args:
            raise ValueError(
                f"argnums={argnums!r} is out of range: the function was called with "
                f"{n_args} positional argument(s)"
            )
        resolved.append(a % n_args)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"argnums={argnums!r} names the same argument twice")
    return tuple(resolved)


def _convert_leaf(leaf: Any, where: str) -> Any:
    if isinstance(leaf, jax.Array) or isinstance(leaf, np.ndarray):
        return leaf
    if isinstance(leaf, (bool, np.bool_)) or isinstance(leaf, numbers.Integral):
        raise TypeError(
            f"{where} is the Python/NumPy integer {leaf!r}; differentiation needs a float: "
            f"write {float(leaf)!r} or pass a float array"
        )
    if isinstance(leaf, (float, np.floating)):
        return jnp.asarray(leaf)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):  # tracers, ShapeDtypeStruct-like
        return leaf
    raise TypeError(
        f"{where} is a {type(leaf).__name__} ({leaf!r:.60}); every leaf of a differentiated "
        f"argument must be an array or a float"
    )


def check_differentiable(tree: Any, name: str) -> Any:
    """Validate and convert one differentiated argument (rules in the module docstring).

    Returns the tree with Python floats converted to arrays. ``name`` is used in the messages,
    e.g. ``"argument 0 (argnums=0)"``.
    """
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    converted, dtypes = [], {}
    for path, leaf in paths_and_leaves:
        where = f"{name}, leaf {jax.tree_util.keystr(path) or '<root>'}"
        leaf = _convert_leaf(leaf, where)
        dtype = np.dtype(leaf.dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else "integer/bool"
            hint = (
                "jacopt differentiates real floating inputs only"
                if kind == "complex"
                else "cast it first, e.g. x.astype(jnp.float64) (jacopt never casts silently)"
            )
            raise TypeError(f"{where} has {kind} dtype {dtype}; {hint}")
        dtypes.setdefault(dtype, where)
        converted.append(leaf)
    if len(dtypes) > 1:
        listing = "; ".join(f"{d} at {w}" for d, w in dtypes.items())
        raise TypeError(
            f"{name} mixes floating dtypes ({listing}); use one dtype so the Jacobian has one dtype"
        )
    if sum(int(np.prod(np.shape(leaf))) for leaf in converted) == 0:
        raise ValueError(f"{name} is empty (it has no array elements): "
                         "there is nothing to differentiate")
    return jax.tree_util.tree_unflatten(treedef, converted)


def check_args(args: Sequence[Any],
               argnums: int | tuple[int, ...]) -> tuple[tuple[Any, ...], tuple[int, ...]]:
    """Resolve ``argnums`` against ``args`` and validate each differentiated argument.

    Returns (args with the differentiated ones converted, resolved positions).
    """
    positions = resolve_argnums(argnums, len(args))
    args = list(args)
    for p in positions:
        args[p] = check_differentiable(args[p], f"argument {p} (argnums={argnums!r})")
    return tuple(args), positions


def check_floating_output(out: Any, who: str) -> None:
    """Raise TypeError when an output leaf (a ShapeDtypeStruct or array) is not real floating."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        dtype = np.dtype(leaf.dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{who}: output leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; "
                f"only real floating outputs can be differentiated"
            )


def check_chunking(chunk_size: Any, max_memory_bytes: Any) -> None:
    """Validate the chunking options (at most one of them, positive ints)."""
    if chunk_size is not None and max_memory_bytes is not None:
        raise ValueError("give chunk_size or max_memory_bytes, not both")
    for name, value in (("chunk_size", chunk_size), ("max_memory_bytes", max_memory_bytes)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
