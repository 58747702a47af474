"""Input checks shared by the solver entry points; they run before any tracing or solving.

Dtype rule (documented in the README): floating leaves of ``x0`` keep their dtype; integer and
boolean leaves, and plain Python numbers (``x0=[1, 2]`` or ``[1.0, 0.1]``, as SciPy accepts), take
JAX's default float dtype (float32, or float64 with ``jax_enable_x64``); a NumPy float64 leaf
while ``jax_enable_x64`` is off is a ``TypeError`` (JAX would truncate it silently); anything else
is a ``TypeError`` naming the argument.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def _leaf_name(name, path):
    return name + jax.tree_util.keystr(path)


def all_finite(values) -> bool:
    """Whether every entry of a concrete array is finite, checked in NumPy: inside an outer
    ``jit`` a jnp reduction of a closed-over constant is traced and cannot become a bool."""
    return bool(np.all(np.isfinite(np.asarray(values))))


def _is_number(v) -> bool:
    """A Python, NumPy or JAX scalar (a 0-d array, a tracer inside ``jit``/``vmap``/``grad``)."""
    if isinstance(v, (numbers.Number, np.bool_)):
        return True
    return isinstance(v, (np.ndarray, jax.Array)) and np.ndim(v) == 0


def numbers_as_array(value):
    """A plain ``list`` or ``tuple`` of numbers (``x0=[1.0, 0.1]``, as SciPy users write it) as a
    1-D array; anything else (arrays, pytrees, named tuples, empty lists) unchanged. As a pytree
    such a list would reach ``fun`` as a list, on which arithmetic fails, and come back as a list
    of 0-d arrays; SciPy turns it into an array. Entries may be Python, NumPy or JAX scalars and
    tracers (``[a, 1.0]`` inside ``jit`` stacks like ``[1.0, 1.0]`` outside it). The dtype follows
    JAX's promotion, Python numbers being weakly typed, except that an explicit NumPy float64
    entry keeps float64 (so that :func:`check_x64` can refuse it when x64 is off)."""
    if type(value) not in (list, tuple) or not value or not all(_is_number(v) for v in value):
        return value
    if any(isinstance(v, jax.Array) for v in value):  # JAX scalars or tracers
        return jnp.stack([jnp.asarray(v) for v in value])
    explicit = [np.asarray(v).dtype for v in value if type(v) not in (bool, int, float)]
    dtype = (np.dtype(np.float64) if any(d == np.float64 for d in explicit)
             else jnp.result_type(*value))
    return np.asarray(value, dtype=dtype)


def check_x64(dtype, name: str) -> None:
    """A float64 input while ``jax_enable_x64`` is off would be truncated to float32 by JAX
    without a word: raise instead, naming the argument."""
    if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        raise TypeError(f"{name} is float64 but JAX runs in float32 (jax_enable_x64 is off); "
                        f"enable x64 with jax.config.update('jax_enable_x64', True) or pass "
                        f"float32.")


def static_number(value, name: str, *, positive: bool = False) -> float:
    """A tolerance (a setting the solve is compiled for) as a Python float: a real number >= 0
    (> 0 and finite with ``positive``), given as a Python or NumPy scalar or a concrete 0-d
    array; else a ``ValueError`` (``TypeError`` for a traced value) naming it."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} is a traced value; it is a setting the solve is compiled for: "
                        f"pass a concrete number.")
    ok = not isinstance(value, bool) and (isinstance(value, numbers.Real) or (
        isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0
        and (np.asarray(value).dtype.kind in "iu"
             or jnp.issubdtype(np.asarray(value).dtype, jnp.floating))))
    number = float(np.asarray(value)) if ok else math.nan
    if not (number > 0 and math.isfinite(number) if positive else number >= 0):
        kind = "positive finite" if positive else "non-negative"
        raise ValueError(f"{name} must be a {kind} number, got {value!r}.")
    return number


def float_leaf(leaf, where: str, *, check_finite: bool = True):
    """One leaf of a start as a floating array, or raise naming it (``where``, e.g. ``x0['a']``).

    Plain Python numbers and integer or boolean arrays take JAX's default float dtype (Python
    numbers are weakly typed, as in JAX); other concrete values stay NumPy arrays on the host,
    and JAX arrays and tracers stay as they are. Raises ``TypeError`` for a non-numeric or
    complex leaf, ``ValueError`` for an empty leaf or (when concrete and ``check_finite``) a
    non-finite value. The float64-while-x64-is-off rule is the caller's (:func:`check_x64`)."""
    if type(leaf) in (float, int, bool):
        arr = np.asarray(leaf, dtype=jnp.result_type(float))
    elif isinstance(leaf, jax.Array):  # concrete JAX arrays and tracers
        arr = leaf
    else:
        try:
            arr = np.asarray(leaf)
        except Exception as exc:  # pragma: no cover - numpy rarely fails here
            raise TypeError(f"{where} is not an array: {type(leaf).__name__}.") from exc
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(
                f"{where} must be numeric, got {type(leaf).__name__} (dtype {arr.dtype})."
            )
    if arr.dtype.kind == "c":
        raise TypeError(f"{where} is complex; jacopt solves over the reals.")
    if arr.dtype.kind in "biu":
        arr = arr.astype(jnp.result_type(float))
    if arr.size == 0:
        raise ValueError(f"{where} is empty (shape {arr.shape}).")
    if check_finite and not isinstance(arr, jax.core.Tracer) and not all_finite(arr):
        raise ValueError(f"{where} contains non-finite values (NaN or inf).")
    return arr


def as_float_tree(tree, name: str = "x0", *, check_finite: bool = True):
    """Return ``tree`` with every leaf a floating JAX array, or raise naming the bad leaf.

    A plain list of numbers becomes an array first (:func:`numbers_as_array`); each leaf goes
    through :func:`float_leaf` and :func:`check_x64` (a NumPy float64 leaf while x64 is off is a
    ``TypeError``). An empty tree is a ``ValueError``.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(numbers_as_array(tree))
    if not leaves_with_path:
        raise ValueError(f"{name} is empty: it must hold at least one number.")
    out = []
    for path, leaf in leaves_with_path:
        where = _leaf_name(name, path)
        arr = float_leaf(leaf, where, check_finite=check_finite)
        check_x64(arr.dtype, where)
        out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out)


def common_dtype(tree, name: str = "x0"):
    """The single floating dtype of ``tree``'s leaves; mixed precisions are an error."""
    dtypes = {jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(tree)}
    if len(dtypes) != 1:
        raise TypeError(
            f"{name} mixes dtypes {sorted(str(d) for d in dtypes)}; give every leaf the same "
            "floating dtype."
        )
    return dtypes.pop()


def ravel(tree):
    """Flatten a pytree of arrays to one 1-D array and return ``(flat, unravel)``."""
    return ravel_pytree(tree)


def resolve_solver(solver, registry: Mapping[str, Callable], base: type, argument: str = "solver"):
    """Turn a solver name (case-insensitive) or instance into an instance.

    ``registry`` maps names to zero-argument constructors; ``base`` is the class every instance
    must derive from. Unknown names raise ``ValueError`` listing the valid ones.
    """
    if isinstance(solver, str):
        key = solver.strip().lower()
        if key not in registry:
            valid = ", ".join(repr(k) for k in registry)
            raise ValueError(f"Unknown {argument} {solver!r}; valid names are {valid}.")
        return registry[key]()
    if isinstance(solver, base):
        return solver
    valid = ", ".join(repr(k) for k in registry)
    raise TypeError(
        f"{argument} must be a name ({valid}) or a {base.__name__} instance, "
        f"got {type(solver).__name__}."
    )


def check_verbose(verbose) -> None:
    """``verbose`` must be 0, 1 or 2 (the entry points' shared setting)."""
    if not isinstance(verbose, (int, np.integer)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")


def check_args(args, argument: str = "args"):
    """``args`` must be a tuple (a lone array is a common slip: wrap it as ``(a,)``)."""
    if not isinstance(args, tuple):
        raise TypeError(
            f"{argument} must be a tuple of extra arguments, got {type(args).__name__}; "
            f"write args=(value,) for a single one."
        )
    return args
