"""Compiling the public entry points: ``jax.jit`` with XLA's classic CPU fusion emitters, and
compiled solves reused across processes through :mod:`jacopt._cache`.

XLA's classic CPU fusion emitters compile a solver loop's many small fused kernels faster than
the default emitters and run them as fast (``jacopt bench overhead`` prints
both). Compiler options only apply to a top-level ``jit``: inside a user's own ``jit`` (or
``vmap``) the user's options apply and the plain ``jit`` is used. If this XLA does not know the
option, the plain ``jit`` is used from then on.

Called directly with concrete arrays on a single CPU device, a solve is traced, lowered and
compiled in explicit stages (``jit(...).trace(...)``, then ``lower().compile()``) so that the
compiled executable can come from :mod:`jacopt._cache` (same program compiled before, in this
process or an earlier one; a hit skips lowering, and the entry that a call like this one
used last is loaded on a thread while it is traced); a call whose configuration and functions
were seen before skips tracing the solve too (:mod:`jacopt._shortcut`). The executables are
then kept per static arguments and argument types, as ``jax.jit`` keeps them. A function that
is new at every call (defined inside a loop) costs a trace of itself each time, and of the
whole solve where the shortcut cannot key it; when one function's code has been traced with
its solve for more than :data:`RETRACE_LIMIT` distinct function objects, a
:class:`RecompileWarning` names the fix.
"""
from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import time
import warnings
from typing import Callable, Sequence

import jax

from jacopt import _cache, _shortcut
from jacopt._validate import is_traced

try:  # the configuration that jax.jit's own cache is keyed on (private; optional)
    from jax._src.config import trace_context as _trace_context
except ImportError:  # pragma: no cover
    def _trace_context():
        return jax.config.read("jax_enable_x64")

try:  # whether any transformation is tracing (private; optional: then arguments are checked)
    from jax._src.core import trace_state_clean as _trace_state_clean
except ImportError:  # pragma: no cover
    _trace_state_clean = None

CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

RETRACE_LIMIT = 5
"""Function objects with the same code traced before :class:`RecompileWarning` is raised."""

_MAX_EXECUTABLES = 128  # per entry point, as a bound on memory
_ALL_EXECUTABLES: list = []  # every entry point's executables, for clear_compiled


def clear_compiled() -> None:
    """Drop the compiled solves this process keeps in memory (every entry point's and
    :mod:`jacopt._cache`'s), with JAX's own caches (``jax.clear_caches``): each compiled program
    holds mapped code pages, and a process that compiles thousands of programs (a long test
    session) would otherwise run into the kernel's limit on memory maps."""
    for executables in _ALL_EXECUTABLES:
        executables.clear()
    _cache.clear_memory()
    _shortcut.clear_memory()
    jax.clear_caches()


class RecompileWarning(UserWarning):
    """A function with the same code was traced again and again (a new function object at
    every call); the message names the fix."""


def cpu_fast_jit(fn: Callable, static_argnames: Sequence[str]) -> Callable:
    """``jax.jit(fn, static_argnames=...)`` that compiles with :data:`CPU_COMPILER_OPTIONS`
    and through :mod:`jacopt._cache` when called with concrete arrays on one CPU device
    (module docstring). The static argument ``fun`` is the function watched for retracing."""
    static = tuple(static_argnames)
    static_set = frozenset(static)
    plain = jax.jit(fn, static_argnames=static)
    fast = jax.jit(fn, static_argnames=static, compiler_options=CPU_COMPILER_OPTIONS)
    fast_ok = [True]
    executables: dict = {}
    _ALL_EXECUTABLES.append(executables)
    entry = fn.__module__.rsplit(".", 1)[-1]
    params = list(inspect.signature(fn).parameters)
    # a static argument given by position goes to the plain jit (executables take keywords)
    positional = min([params.index(name) for name in static if name in params], default=None)

    def build(args, kwargs, key):
        jitted, options = (fast, CPU_COMPILER_OPTIONS) if fast_ok[0] else (plain, {})
        ahead = _cache.prefetch(_hint(entry, key), options)  # loads while this traces
        statics = {k: v for k, v in kwargs.items() if k in static_set}
        short = _shortcut.plan(f"{fn.__module__}.{fn.__qualname__}", key, statics, options)
        traced_kwargs, recorders = kwargs, {}
        call_tree = key[0]  # the structure of (args, dynamic keyword arguments)
        if short is not None:
            found = short.lookup(statics, call_tree, ahead)
            if found is not None:
                return found
            traced_kwargs, recorders = short.recording(kwargs)
        started = time.perf_counter()
        traced = jitted.trace(*args, **traced_kwargs)
        _cache.stats["trace_s"] += time.perf_counter() - started
        _watch(kwargs.get("fun"), entry)
        report: list = []
        try:
            compiled = _cache.compile_traced(traced, options, ahead, report)
        except jax.errors.JaxRuntimeError as exc:  # an XLA without the option
            if not fast_ok[0] or "No such compile option" not in str(exc):
                raise
            fast_ok[0] = False
            return build(args, kwargs, key)
        if (short is not None and report
                and jax.tree_util.tree_structure(traced.args_info) == call_tree):
            short.remember(recorders, report[0], traced.out_tree)
        return compiled

    def call(*args, **kwargs):
        dynamic = {k: v for k, v in kwargs.items() if k not in static_set}
        leaves, treedef = jax.tree_util.tree_flatten((args, dynamic))
        if (not _outside_transformations(leaves) or not _one_cpu()
                or (positional is not None and len(args) > positional) or _debugging()):
            return plain(*args, **kwargs)
        try:
            key = (treedef, tuple(map(_signature, leaves)),
                   tuple([kwargs.get(k, _ABSENT) for k in static]), _trace_context())
            executable = executables.get(key)
        except TypeError:  # an unhashable static argument: jax.jit says so
            return plain(*args, **kwargs)
        if executable is None:
            executable = build(args, kwargs, key)
            if len(executables) >= _MAX_EXECUTABLES:
                executables.pop(next(iter(executables)))
            executables[key] = executable
        return executable(*args, **dynamic)

    call.__wrapped__ = fn
    call.__doc__ = fn.__doc__
    call.cache_size = lambda: (len(executables) + fast._cache_size()
                               + plain._cache_size())  # compiled variants
    return call


def _hint(entry: str, key) -> str:
    """A text naming a call (the entry point, argument types, static values, functions by
    their code and place) for :func:`jacopt._cache.prefetch`: only a guess at the program,
    so addresses are dropped and nothing needs to be exact."""
    treedef, signatures, statics, context = key
    described = [(_code_identity(v) or v) if callable(v) else v for v in statics]
    text = repr((entry, str(treedef), signatures, described, context))
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _outside_transformations(leaves) -> bool:
    """No ``jit``, ``vmap`` or ``grad`` is tracing: neither the arguments nor anything the
    static ``fun`` closes over can be a tracer."""
    if _trace_state_clean is not None:
        return _trace_state_clean()
    return not is_traced(leaves)


@functools.lru_cache(maxsize=1)
def _one_cpu() -> bool:
    return jax.default_backend() == "cpu" and jax.device_count() == 1


_DEBUG_FLAGS = ("jax_disable_jit", "jax_debug_nans", "jax_debug_infs")

try:  # the flags' states, read directly (private; optional: then through jax.config)
    from jax._src import config as _config

    _DEBUG_STATES = tuple(getattr(_config, name[len("jax_"):]) for name in _DEBUG_FLAGS)
    assert all(isinstance(state.value, bool) for state in _DEBUG_STATES)
except Exception:  # pragma: no cover
    _DEBUG_STATES = None


def _debugging() -> bool:
    """``jax.disable_jit`` or NaN/inf checking, which ``jax.jit`` honours at each call."""
    if _DEBUG_STATES is not None:
        return any([state.value for state in _DEBUG_STATES])
    return any(getattr(jax.config, name) for name in _DEBUG_FLAGS)


_ABSENT = object()  # a static argument not passed
try:  # the type of concrete JAX arrays (private; optional: then the generic signature)
    from jax._src.array import ArrayImpl as _ArrayImpl

    _ARRAY_TYPES = frozenset({_ArrayImpl})
except ImportError:  # pragma: no cover
    _ARRAY_TYPES = frozenset()


def _signature(leaf):
    """What ``jax.jit`` specialises an argument on: a JAX array's abstract value (shape, dtype,
    weak type, kept on the array), else its type, shape, dtype and weak type."""
    if type(leaf) in _ARRAY_TYPES:
        return leaf.aval
    return (type(leaf), getattr(leaf, "shape", None), getattr(leaf, "dtype", None),
            getattr(leaf, "weak_type", None))


# ------------------------------------------------------------------------------------------
# Retracing: the same code traced again for new function objects
# ------------------------------------------------------------------------------------------

_traced_functions: dict = {}  # code identity -> ids of the function objects traced
_warned: set = set()


def _user_function(fun):
    """``fun``, or the user's function inside one of jacopt's wrappers (which close over it)."""
    while getattr(fun, "__module__", "").startswith("jacopt") and fun.__closure__:
        inner = [c.cell_contents for c in fun.__closure__
                 if callable(getattr(c, "cell_contents", None))]
        if not inner:
            break
        fun = inner[0]
    return fun


def _code_identity(fun, depth: int = 0):
    """The code of ``fun`` and of the functions it closes over (``None`` for objects that
    are not Python functions)."""
    while isinstance(fun, functools.partial):
        fun = fun.func
    code = getattr(fun, "__code__", None)
    if code is None:
        return None
    inner = ()
    if depth < 3 and getattr(fun, "__closure__", None):
        inner = tuple(_code_identity(c.cell_contents, depth + 1) for c in fun.__closure__
                      if callable(getattr(c, "cell_contents", None)))
    return code, inner


def _watch(fun, entry: str) -> None:
    """Count ``fun`` among the function objects traced with its code; warn once per code when
    there are more than :data:`RETRACE_LIMIT`."""
    identity = _code_identity(fun)
    if identity is None:
        return
    seen = _traced_functions.setdefault(identity, set())
    seen.add(id(fun))
    if len(seen) <= RETRACE_LIMIT or identity in _warned:
        return
    _warned.add(identity)
    user = _user_function(fun)
    code = getattr(user, "__code__", None)
    where = (f"{getattr(user, '__qualname__', user)!s} at {code.co_filename}:"
             f"{code.co_firstlineno}" if code is not None else repr(user))
    warnings.warn(
        f"jacopt.{entry} traced its solve for {len(seen)} different function objects with "
        f"the same code ({where}). A function (or lambda) created anew at every call, as "
        f"inside a loop, is new to JAX: the solve is traced again each time, and compiled "
        f"again when the values the function closes over change. Define it once, outside the "
        f"loop, and pass the values that change through args=(...): then the compiled solve "
        f"is reused.", RecompileWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """The ``stacklevel`` (from the caller's frame) of the first frame outside jacopt."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
