"""Host-side input checks of the entry points (the solvers' and the Jacobian functions'); they
run before any tracing or solving, and skip what a tracer hides (:func:`is_traced`).

Dtype rule (documented in the README): floating leaves of ``x0`` keep their dtype; integer and
boolean leaves, and plain Python numbers (``x0=[1, 2]`` or ``[1.0, 0.1]``, as SciPy accepts), take
JAX's default float dtype (float32, or float64 with ``jax_enable_x64``); anything else is a
``TypeError`` naming the argument. Double-precision input while ``jax_enable_x64`` is off (a NumPy
float64 start or data, a start of Python floats) runs in float32, as JAX would run it, with one
:class:`PrecisionWarning` per process (:func:`warn_float32`) instead of JAX's silence.

The Jacobian functions' rules (also in :mod:`jacopt.jacobian`'s docstring): ``argnums`` is an int
or a tuple of distinct ints, negative values counting from the end (out of range: ``ValueError``
naming ``argnums``); a differentiated argument is a pytree of JAX or NumPy arrays or Python
floats (converted with ``jnp.asarray``), all of one real floating dtype (integer, boolean or
complex leaves: ``TypeError`` suggesting a float dtype; jacopt never casts silently); an
argument with no elements is a ``ValueError``.
"""
from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


class PrecisionWarning(UserWarning):
    """Double-precision input (NumPy float64 arrays, Python floats) runs in float32 because
    ``jax_enable_x64`` is off. Issued once per process: a SciPy script ported as it is keeps
    working, and says once that it computes in single precision."""


_warned_float32 = False
_PACKAGE_DIRS = (os.path.dirname(os.path.abspath(__file__)),)


def is_traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer (a value inside ``jit``, ``vmap`` or
    ``grad``): the one test the host-side checks use to skip what they cannot see."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def warn_float32(where: str) -> None:
    """The one :class:`PrecisionWarning` of the process, naming the first argument met
    (``where``, e.g. ``"x0"`` or ``"args[1]"``); later calls return at once."""
    global _warned_float32
    if _warned_float32:
        return
    _warned_float32 = True
    level, frame = 2, sys._getframe(1)  # stacklevel 2: warn_float32's caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIRS):
        level, frame = level + 1, frame.f_back
    warnings.warn(
        f"{where} is double precision (NumPy float64 or Python floats) but JAX computes in "
        f"float32 (jax_enable_x64 is off): the solve runs in float32, with about 7 significant "
        f"digits, and tolerances below float32's resolution cannot be met. Enable float64 with "
        f"jax.config.update('jax_enable_x64', True) at start-up, or pass float32 arrays to run "
        f"in float32 without this warning (shown once per process).",
        PrecisionWarning, stacklevel=level)


def as_float32_if_needed(arr, where: str):
    """A concrete NumPy float64 array as float32 (with :func:`warn_float32`) while x64 is off;
    anything else unchanged. JAX arrays are left alone: they already have JAX's dtype."""
    if (not isinstance(arr, jax.Array) and np.dtype(getattr(arr, "dtype", object)) == np.float64
            and not jax.config.jax_enable_x64):
        warn_float32(where)
        return np.asarray(arr, np.float32)
    return arr


def warn_float64_leaves(tree, name: str) -> None:
    """:func:`warn_float32` for the first NumPy float64 leaf of ``tree`` (data in ``args``,
    which JAX would truncate to float32 without a word) while x64 is off; nothing once warned
    or with x64 on, so warm calls pay nothing."""
    if _warned_float32 or jax.config.jax_enable_x64:
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, (np.ndarray, np.floating)) and leaf.dtype == np.float64:
            warn_float32(_leaf_name(name, path))
            return


def _leaf_name(name, path):
    return name + jax.tree_util.keystr(path)


def all_finite(values) -> bool:
    """Whether every entry of a concrete array is finite, checked in NumPy: inside an outer
    ``jit`` a jnp reduction of a closed-over constant is traced and cannot become a bool."""
    return bool(np.all(np.isfinite(np.asarray(values))))


def check_box(lower, upper):
    """Concrete flat bounds ``(lower, upper)`` checked before any work: NaN or ``lower > upper``
    is a ``ValueError`` naming ``bounds``; bounds that are all infinite are no bounds
    (``(None, None)``)."""
    if np.any(np.isnan(lower)) or np.any(np.isnan(upper)):
        raise ValueError("bounds contain NaN; use -inf/inf (or None) for no bound.")
    bad = np.nonzero(lower > upper)[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds: lower > upper at flat index {i} ({lower[i]} > {upper[i]}).")
    if np.all(np.isneginf(lower)) and np.all(np.isposinf(upper)):
        return None, None
    return lower, upper


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
    entry, or Python floats with no explicitly typed entry, give float64 (so that
    :func:`as_float32_if_needed` can say so when x64 is off)."""
    if type(value) not in (list, tuple) or not value or not all(_is_number(v) for v in value):
        return value
    if any(isinstance(v, jax.Array) for v in value):  # JAX scalars or tracers
        return jnp.stack([jnp.asarray(v) for v in value])
    explicit = [np.asarray(v).dtype for v in value if type(v) not in (bool, int, float)]
    double = (any(d == np.float64 for d in explicit)
              or (not explicit and any(type(v) is float for v in value)))
    dtype = np.dtype(np.float64) if double else jnp.result_type(*value)
    return np.asarray(value, dtype=dtype)


def static_number(value, name: str, *, positive: bool = False) -> float:
    """A tolerance (a setting the solve is compiled for) as a Python float: a real number >= 0
    (> 0 and finite with ``positive``), given as a Python or NumPy scalar or a concrete 0-d
    array; else a ``ValueError`` (``TypeError`` for a traced value) naming it."""
    if is_traced(value):
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
    non-finite value. Double precision while x64 is off becomes float32 with the one
    :class:`PrecisionWarning` (:func:`as_float32_if_needed`)."""
    if type(leaf) is float:
        arr = np.asarray(leaf, dtype=np.float64)
    elif type(leaf) in (int, bool):
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
    arr = as_float32_if_needed(arr, where)
    if check_finite and not is_traced(arr) and not all_finite(arr):
        raise ValueError(f"{where} contains non-finite values (NaN or inf).")
    return arr


def as_float_tree(tree, name: str = "x0", *, check_finite: bool = True, host: bool = False):
    """Return ``tree`` with every leaf a floating JAX array, or raise naming the bad leaf.

    A plain list of numbers becomes an array first (:func:`numbers_as_array`); each leaf goes
    through :func:`float_leaf`. An empty tree is a ``ValueError``. With ``host=True`` leaves
    that are not JAX arrays stay NumPy arrays: converting them eagerly compiles a small program
    in every new process, which the cache of compiled solves cannot serve.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(numbers_as_array(tree))
    if not leaves_with_path:
        raise ValueError(f"{name} is empty: it must hold at least one number.")
    out = []
    for path, leaf in leaves_with_path:
        where = _leaf_name(name, path)
        arr = float_leaf(leaf, where, check_finite=check_finite)
        out.append(arr if host and isinstance(arr, np.ndarray) else jnp.asarray(arr))
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


TRACING_ERRORS = (jax.errors.TracerArrayConversionError, jax.errors.TracerBoolConversionError,
                  jax.errors.TracerIntegerConversionError)
"""JAX's errors for a function written for NumPy meeting traced values; the entry points turn
them into :func:`tracing_error`."""


def tracing_error(exc: Exception, name: str) -> TypeError:
    """What to do about one of :data:`TRACING_ERRORS` raised while tracing the user's function
    ``name`` (raise it ``from exc``, so JAX's own message and the line stay in the chain)."""
    if isinstance(exc, jax.errors.TracerArrayConversionError):
        what = ("converts a traced array to NumPy (a NumPy function such as np.exp, or "
                "np.asarray, applied to the parameters or to the data passed with them, "
                "which JAX traces too)")
        fix = ("use jax.numpy inside it: jnp.exp instead of np.exp, jnp.asarray for "
               "np.asarray (a NumPy transform of the data alone can be done before the call)")
    else:
        what = ("needs a concrete value of a traced array (a Python if, bool(), int() or "
                "float() on a value that depends on the parameters)")
        fix = ("use jnp.where or jax.lax.cond for a branch, and pass data that set shapes or "
               "counts as Python numbers")
    return TypeError(f"{name} {what}: jacopt traces {name} with JAX to differentiate and "
                     f"compile it; {fix}. JAX's message: {type(exc).__name__}.")


def outer_broadcast_error(who: str, shape, first, second) -> ValueError:
    """The error for output of shape ``shape`` made by broadcasting ``first`` against
    ``second`` (each ``(name, shape)``), e.g. data of shape ``(m, 1)`` against ``(m,)``."""
    (name_a, shape_a), (name_b, shape_b) = first, second
    return ValueError(
        f"{who} of shape {tuple(shape)} is the broadcast of {name_a} of shape {tuple(shape_a)} "
        f"against {name_b} of shape {tuple(shape_b)}: data of shape (m, 1) (as from "
        f"df[['y']].values) against (m,) make an (m, m) matrix instead of m residuals, and the "
        f"fit goes wrong without a word. Give both the same shape (y.ravel() or y[:, 0]); if a "
        f"{tuple(shape)} residual is really meant, return it ravelled (jnp.ravel(r)).")


def check_outer_broadcast(out_shapes, inputs, fun_name: str, inputs_name: str) -> None:
    """Raise :func:`outer_broadcast_error` for a leaf ``fun_name`` returns (shapes, at trace
    time) that can only be an accident of broadcasting two leaves of ``inputs`` (the data):
    a leaf of two or more dimensions, with more elements than any input leaf, whose shape is
    the broadcast of two input leaves of other shapes, as ``(m, 1)`` against ``(m,)`` gives
    ``(m, m)``. Residuals that are images or stacks of curves keep working: their data have
    the residual's shape (or as many elements). A ravelled residual is never refused."""
    leaves = [(_leaf_name(inputs_name, path), tuple(np.shape(leaf)))
              for path, leaf in jax.tree_util.tree_flatten_with_path(inputs)[0]]
    largest = max((math.prod(shape) for _, shape in leaves), default=0)
    for path, out in jax.tree_util.tree_flatten_with_path(out_shapes)[0]:
        shape = tuple(np.shape(out))
        if len(shape) < 2 or math.prod(shape) <= largest:
            continue
        parts = [leaf for leaf in leaves if leaf[1] and leaf[1] != shape]
        for i, first in enumerate(parts):
            for second in parts[i + 1:]:
                try:
                    joint = np.broadcast_shapes(first[1], second[1])
                except ValueError:
                    continue
                if joint == shape:
                    who = f"{fun_name} returned residuals" + jax.tree_util.keystr(path)
                    raise outer_broadcast_error(who, shape, first, second)


# ------------------------------------------------------------------------------------------
# least_squares' and curve_fit's x0, bounds and x_scale; minimize's bounds use flat_like.
# ------------------------------------------------------------------------------------------


def least_squares_x0(x0):
    """``(x0, dtype, treedef, shapes)``: each leaf through :func:`jacopt._validate.float_leaf`
    (concrete leaves stay on the host), one floating dtype for all; a lone number (or 0-d
    array) is a 1-element array, as SciPy's ``np.atleast_1d(x0)``."""
    x0 = numbers_as_array(x0)
    if hasattr(x0, "shape") and np.ndim(x0) == 0 or type(x0) in (float, int) or \
            isinstance(x0, np.generic):
        x0 = jnp.reshape(x0, (1,)) if isinstance(x0, jax.Array) else np.reshape(x0, (1,))
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(x0)
    if not leaves_with_path:
        raise ValueError("x0 is empty: it must hold at least one number.")
    out = [float_leaf(leaf, "x0" + jax.tree_util.keystr(path)) for path, leaf in leaves_with_path]
    dtypes = {jnp.dtype(arr.dtype) for arr in out}
    if len(dtypes) != 1:
        raise TypeError(f"x0 mixes dtypes {sorted(map(str, dtypes))}; give every leaf the same "
                        "floating dtype.")
    dtype = dtypes.pop()
    shapes = [tuple(arr.shape) for arr in out]
    return jax.tree_util.tree_unflatten(treedef, out), dtype, treedef, shapes


def real_array(leaf, name):
    """A concrete leaf of bounds or x_scale as a float64 NumPy array, or a TypeError naming
    ``name`` (complex, strings, objects)."""
    a = np.asarray(leaf)
    if a.dtype.kind not in "biuf":
        kind = "complex" if a.dtype.kind == "c" else f"not a real number (dtype {a.dtype})"
        raise TypeError(f"{name} must hold real numbers; got {leaf!r}, {kind}.")
    return a.astype(np.float64)


def flat_like(value, treedef, shapes, dtype, name, x0_name="x0", fill=None):
    """A scalar or a pytree with x0's structure whose leaves are scalars or have the shapes of
    x0's leaves -> flat (n,) array (numpy when concrete). Any other shape is an error, as in
    SciPy ("Inconsistent shapes between bounds and x0"): a length-1 array is not a scalar.
    ``x0_name`` is what the user called the start (curve_fit's ``p0``). With ``fill``,
    ``None`` (the whole value or a leaf) stands for ``fill`` (minimize's open bounds)."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    n = int(sum(sizes))
    if fill is not None and value is None:
        return np.full((n,), fill, dtype)
    leaves = jax.tree_util.tree_leaves(value)
    if len(leaves) == 1 and np.ndim(leaves[0]) == 0 and treedef.num_leaves != 1 or \
            (not isinstance(value, (list, tuple, dict)) and np.ndim(value) == 0):
        if is_traced(value):
            return jnp.full((n,), value, dtype)
        return np.full((n,), float(real_array(value, name)), dtype)
    try:
        value_leaves = treedef.flatten_up_to(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a scalar or have the structure of {x0_name}: "
                         f"{exc}") from None
    parts = []
    for leaf, shape, size in zip(value_leaves, shapes, sizes):
        if fill is not None and leaf is None:
            parts.append(np.full((size,), fill, dtype))
            continue
        leaf_shape = tuple(np.shape(leaf))
        if leaf_shape not in ((), shape):
            raise ValueError(f"{name} has a leaf of shape {leaf_shape} where {x0_name}'s leaf "
                             f"has shape {shape} (inconsistent shapes: give a scalar or one "
                             f"value per element of {x0_name}).")
        if is_traced(leaf):
            parts.append(jnp.broadcast_to(jnp.ravel(leaf), (size,)).astype(dtype))
        else:
            a = real_array(leaf, name)
            parts.append(np.broadcast_to(a.ravel(), (size,)).astype(dtype))
    if any(is_traced(p) for p in parts):
        return jnp.concatenate([jnp.asarray(p) for p in parts])
    return np.concatenate(parts)


def least_squares_bounds(bounds, x0, treedef, shapes, dtype, x0_name="x0"):
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds, as SciPy takes
        bounds = (bounds.lb, bounds.ub)
    if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
        raise ValueError(f"bounds must be a pair (lower, upper) of scalars or pytrees like "
                         f"{x0_name}, or a scipy.optimize.Bounds.")
    lower = flat_like(bounds[0], treedef, shapes, dtype, "bounds[0] (lower)", x0_name)
    upper = flat_like(bounds[1], treedef, shapes, dtype, "bounds[1] (upper)", x0_name)
    concrete = not (is_traced(lower) or is_traced(upper))
    if concrete:
        lower, upper = check_box(lower, upper)
        if lower is None:
            return None, None
        leaves = jax.tree_util.tree_leaves(x0)
        if not any(is_traced(leaf) for leaf in leaves):
            x = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves])
            outside = np.nonzero((x < lower) | (x > upper))[0]
            if outside.size:
                i = int(outside[0])
                raise ValueError(f"{x0_name} is outside bounds at flat index {i}: {x[i]} not "
                                 f"in [{lower[i]}, {upper[i]}].")
    return lower, upper


def least_squares_x_scale(x_scale, treedef, shapes, dtype):
    if isinstance(x_scale, str):
        if x_scale != "jac":
            raise ValueError(f"x_scale must be 'jac' or positive numbers, got {x_scale!r}.")
        return None
    scale = flat_like(x_scale, treedef, shapes, dtype, "x_scale")
    if not is_traced(scale) and not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError("x_scale must be 'jac' or positive finite numbers.")
    return scale


# ------------------------------------------------------------------------------------------
# The Jacobian functions' checks (jacopt.jacobian).
# ------------------------------------------------------------------------------------------


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


def check_differentiated_args(args: Sequence[Any], argnums: int | tuple[int, ...]
                              ) -> tuple[tuple[Any, ...], tuple[int, ...]]:
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
