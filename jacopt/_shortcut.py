"""A call seen before skips tracing the solve: its compiled program is found from the call's
configuration and the traced programs of the user's functions alone.

Tracing a whole solve (the solver's loop, its linear algebra, the Jacobian) costs far more than
loading its compiled program from :mod:`jacopt._cache`, and far more than tracing the user's
residual or objective function. A solve's trace is a function of jacopt's code, the static
arguments (solver, loss, options), the argument types, JAX's configuration and versions, and
what the user's functions return when the solve calls them on traced arguments: a function
whose jaxpr (output types included) equals another's at every argument type the solve called
it with gives the solve the same values, so the solve calls it at the same types and is traced
to the same program. So the first time a call is traced, every user function among the static
arguments (``fun``, ``jac``, a curve-fit model's wrapper) is called through a recorder that
notes those argument types; the record is stored beside the compiled program. A later call
with the same *configuration* (:func:`plan`: the static arguments written out in full, each
user function as its type and attributes, the argument types, jacopt's source files by
content, and everything :func:`jacopt._cache._hasher` adds) traces only its functions at the
recorded types and keys each jaxpr as :func:`jacopt._cache.traced_key` keys a program, with
the constants it closes over by content; equal keys name the compiled program, which is then
loaded without tracing the solve. Anything that cannot be written out exactly (an object of a
type jacopt does not know, a function inside a static object, a function called on a value
rather than a traced argument, a custom derivative rule, whose code a jaxpr does not show, a
primitive not defined by jax, a callback) takes the ordinary path: trace, key, load or compile.
The records live in memory and in the cache directory (``.sig``: the argument types per
configuration; ``.call``: the program per configuration and function keys), checked and
written as entries are.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import pickle
import sys
import time

import jax
import numpy as np

from jacopt import _cache

_SIG, _CALL = ".sig", ".call"
_signatures: dict = {}  # configuration -> recorded argument types per slot
_calls: dict = {}  # configuration and function keys -> (program key, linalg, out_tree)
_MAX_RECORDS = 512


def _bounded(records: dict) -> dict:
    """``records`` with room for one more (the oldest dropped past :data:`_MAX_RECORDS`)."""
    while len(records) >= _MAX_RECORDS:
        records.pop(next(iter(records)))
    return records


def clear_memory() -> None:
    """Forget the records held in memory (those on disk stay)."""
    _signatures.clear()
    _calls.clear()


class _Undescribable(Exception):
    """A static argument whose text would not say exactly what it is."""


@functools.lru_cache(maxsize=1)
def _source_digest() -> bytes:
    """SHA-256 of jacopt's core and solver modules' files (names and contents): the code that
    turns a configuration into a program."""
    h = hashlib.sha256()
    for root in _source_roots():
        for folder, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as f:
                        h.update(os.path.relpath(path, root).encode() + b"\0" + f.read())
    return h.digest()


_module_digests: dict = {}  # module name -> (its globals when last written out, digest)


def _module_state() -> bytes:
    """SHA-256 of the values jacopt's loaded core and solver modules hold now: functions and
    classes by where they were defined (a function made at run time, a closure or lambda, by
    its identity in this process), plain values by value, other objects by type. A
    module patched at run time (a constant or a function replaced, as tests do) changes it,
    so its programs are not served to, or from, an unpatched process. A module whose globals
    are the very objects of the last call is not written out again. jacopt's frozen
    dataclasses (settings such as a radius rule) are written field by field
    (:func:`_describe`); a mutable one could change without a global being reassigned."""
    h = hashlib.sha256()
    for name, module in list(sys.modules.items()):
        if module is None or not _is_jacopt_code(name):
            continue
        items = tuple(vars(module).items())
        cached = _module_digests.get(name)
        if cached is None or len(cached[0]) != len(items) or not all(
                k == k0 and v is v0 for (k, v), (k0, v0) in zip(items, cached[0])):
            cached = _module_digests[name] = (items, _module_digest(name, items))
        h.update(cached[1])
    return h.digest()


def _module_digest(name: str, items) -> bytes:
    parts = [name]
    for k, v in items:
        if isinstance(v, _cache._PLAIN):
            text = repr(v)
        elif callable(v):
            v = getattr(v, "__wrapped__", v)  # an entry point's compiling wrapper
            qualname = getattr(v, "__qualname__", None)
            if qualname is None or "<" in qualname or getattr(v, "__closure__", None):
                text = f"local@{id(v)}"  # a function made at run time: this object only
            else:
                text = f"{getattr(v, '__module__', '')}.{qualname}"
        elif dataclasses.is_dataclass(v) and type(v).__dataclass_params__.frozen:
            # a frozen setting (a solver's radius rule), field by field
            try:
                text = _describe(v)
            except (_Undescribable, RecursionError):
                text = type(v).__qualname__
        else:  # containers hold this process's state (records, flags): by type
            text = type(v).__qualname__
        parts.append(f"{k}={text}")
    return hashlib.sha256("\0".join(parts).encode()).digest()


@functools.lru_cache(maxsize=1)
def _source_roots() -> tuple:
    """The folders of jacopt's core and solver packages (each ending in a separator)."""
    import jacopt
    import jacopt.solvers

    return tuple(os.path.dirname(os.path.abspath(p.__file__)) + os.sep
                 for p in (jacopt, jacopt.solvers))


def _describe(v) -> str:
    """``v`` written out in full: plain values, containers, arrays by content, jacopt's own
    dataclasses and named tuples field by field, and jacopt's module-level functions by name
    (their code is in :func:`_source_digest`)."""
    if isinstance(v, _cache._PLAIN):
        return f"{type(v).__name__}:{v!r}"
    if isinstance(v, enum.Enum):
        return f"{type(v).__module__}.{type(v).__qualname__}.{v.name}"
    if isinstance(v, (np.ndarray, np.generic)):
        a = np.asarray(v)
        if a.dtype == object:
            raise _Undescribable
        return (f"array:{a.dtype.str}:{a.shape}:"
                + hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())
    cls = type(v)
    mine = _is_jacopt_code(getattr(cls, "__module__", ""))
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        if not mine:
            raise _Undescribable
        return f"{cls.__module__}.{cls.__qualname__}(" + ",".join(map(_describe, v)) + ")"
    if type(v) in (tuple, list):
        return f"{cls.__name__}(" + ",".join(map(_describe, v)) + ")"
    if type(v) is dict:
        items = sorted((_describe(k), _describe(x)) for k, x in v.items())
        return "dict(" + ",".join(f"{k}={x}" for k, x in items) + ")"
    if dataclasses.is_dataclass(v) and not isinstance(v, type) and mine:
        fields = ",".join(f"{f.name}={_describe(getattr(v, f.name))}"
                          for f in dataclasses.fields(v))
        return f"{cls.__module__}.{cls.__qualname__}({fields})"
    if _is_jacopt_function(v):
        return f"function:{v.__module__}.{v.__qualname__}"
    raise _Undescribable


def _is_jacopt_code(module: str) -> bool:
    return module == "jacopt" or (module.startswith("jacopt.")
                                  and not module.startswith(("jacopt.problems",
                                                             "jacopt.benchmarks")))


def _is_jacopt_function(f) -> bool:
    """A module-level function of jacopt's core or solvers (no closure, no defaults that could
    differ between processes)."""
    code = getattr(f, "__code__", None)
    return (code is not None and not getattr(f, "__closure__", None)
            and "<locals>" not in getattr(f, "__qualname__", "<locals>")
            and not getattr(f, "__defaults__", None) and not getattr(f, "__kwdefaults__", None)
            and os.path.abspath(code.co_filename).startswith(_source_roots()))


def _plain_tree(treedef) -> bool:
    """Whether ``treedef`` is built of tuples, lists, dicts with str or int keys, and None
    only: containers whose printed form says everything about them (a user's pytree class
    could be redefined under the same name, or hide data in an abbreviated repr)."""
    node = treedef.node_data()
    if node is None:
        return True
    kind, aux = node
    if kind not in (tuple, list, dict, type(None)):
        return False
    if kind is dict and not all(type(k) in (str, int) for k in aux):
        return False
    return all(_plain_tree(child) for child in treedef.children())


@dataclasses.dataclass
class Plan:
    """A call's configuration key (``prefix``) and the static arguments that are user
    functions (``slots``, by name)."""

    prefix: str
    slots: tuple

    def lookup(self, statics: dict, in_tree, ahead=None):
        """The compiled program of this call, or ``None`` (then trace as usual)."""
        try:
            record = self._record(statics)
        except Exception:  # anything unexpected: the ordinary path decides
            record = None
        if record is None:
            return None
        key, linalg, out_tree = record
        found = _cache.find(key, in_tree, out_tree, linalg, ahead, count=False)
        if found is not None:
            _cache.stats["shortcut_hits"] += 1
        return found

    def _record(self, statics):
        """The stored ``(program key, linalg, out_tree)`` of this configuration and these
        functions, or ``None``."""
        started = time.perf_counter()
        try:
            return self._find_record(statics)
        finally:
            _cache.stats["shortcut_s"] += time.perf_counter() - started

    def _find_record(self, statics):
        signatures = _recall(_signatures, self.prefix, _SIG)
        if signatures is None or len(signatures) != len(self.slots):
            return None
        call = self._call_key([_function_key(statics[name], sigs, timed=True)
                               for name, sigs in zip(self.slots, signatures)])
        if call is None:
            return None
        return _recall(_calls, call, _CALL)

    def _call_key(self, function_keys):
        if None in function_keys:
            return None
        h = hashlib.sha256(self.prefix.encode())
        for k in function_keys:
            h.update(b"\0" + k.encode())
        return h.hexdigest()

    def recording(self, kwargs: dict):
        """``(kwargs, recorders)``: the static user functions replaced by recorders."""
        recorders = {name: _Recorder(kwargs[name]) for name in self.slots}
        return {**kwargs, **recorders}, recorders

    def remember(self, recorders: dict, program, out_tree) -> None:
        """Store what a traced call found: the argument types of each function and the
        program (``(key, linalg)`` from :func:`jacopt._cache.compile_traced`)."""
        try:
            signatures = tuple(recorders[name].signatures for name in self.slots)
            if any(r.bad for r in recorders.values()) or program is None:
                return
            if any(not s for s in signatures):
                return
            call = self._call_key([_function_key(recorders[name].fun, sigs)
                                   for name, sigs in zip(self.slots, signatures)])
            if call is None:
                return
            _keep(_signatures, self.prefix, _SIG, signatures)
            _keep(_calls, call, _CALL, (program[0], program[1], out_tree))
        except Exception:  # a record that cannot be made costs a later trace only
            return


def plan(entry: str, key, statics: dict, options: dict) -> Plan | None:
    """The configuration of a call (``key``: the argument tree, types and trace context as
    :mod:`jacopt._compile` keys its executables; ``statics``: the static arguments by name),
    or ``None`` when it cannot be written out exactly."""
    treedef, signatures, _, context = key
    if not _plain_tree(treedef):
        return None
    slots = tuple(sorted(name for name, v in statics.items()
                         if callable(v) and not _is_jacopt_function(v)
                         and not isinstance(v, type)))
    try:
        described = [(name, _slot(v) if name in slots else _describe(v))
                     for name, v in sorted(statics.items())]
        types = [_cache.aval_text(s) if hasattr(s, "shape") and hasattr(s, "dtype")
                 and not isinstance(s, tuple) else repr(s) for s in signatures]
        context = [x for x in context if type(x).__name__ != "AxisEnv"]
        text = repr((entry, str(treedef), types, described, repr(context)))
    except (_Undescribable, RecursionError):
        return None
    if " at 0x" in text or " object at " in text:
        return None
    h = _cache._hasher(b"call\0", options)
    h.update(_source_digest())
    h.update(_module_state())
    h.update(text.encode())
    return Plan(h.hexdigest(), slots)


def _slot(fun) -> str:
    """A user function's type and attributes (what jacopt's code could read of it besides
    calling it); what it computes is keyed by :func:`_function_key`."""
    cls = type(fun)
    return (f"slot:{cls.__module__}.{cls.__qualname__}:"
            + _describe(dict(getattr(fun, "__dict__", None) or {})))


class _Recorder:
    """Calls ``fun`` and notes the tree and abstract values of its arguments."""

    def __init__(self, fun):
        functools.update_wrapper(self, fun)  # the name and attributes jax may read
        self.fun, self.signatures, self.bad = fun, [], False

    def __call__(self, *args, **kwargs):
        try:
            leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
            if not all(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
                raise TypeError("a value, not a traced argument: keyed by its type only")
            if not _plain_tree(tree):
                raise TypeError("a pytree class: keyed by its name only")
            avals = tuple(jax.typeof(leaf) for leaf in leaves)
            shapes = tuple((tuple(a.shape), np.dtype(a.dtype).str, bool(a.weak_type))
                           for a in avals)
            if (tree, shapes) not in self.signatures:
                self.signatures.append((tree, shapes))
        except Exception:
            self.bad = True
        return self.fun(*args, **kwargs)


def _function_key(fun, signatures, timed: bool = False) -> str | None:
    """A key of what ``fun`` computes at each recorded argument type: its jaxprs written out
    as :func:`jacopt._cache.traced_key` writes a program, with custom derivative rules
    unkeyable (a solve differentiates ``fun``; the rule's code is not in the jaxpr). With
    ``timed``, its tracing counts in ``stats["shortcut_trace_s"]``."""
    h = hashlib.sha256()
    for tree, shapes in signatures:
        structs = [jax.ShapeDtypeStruct(s, np.dtype(d), weak_type=w) for s, d, w in shapes]

        def flat(*leaves, tree=tree):
            args, kwargs = jax.tree_util.tree_unflatten(tree, leaves)
            return fun(*args, **kwargs)

        started = time.perf_counter()
        closed, out = jax.make_jaxpr(flat, return_shape=True)(*structs)
        if timed:
            _cache.stats["shortcut_trace_s"] += time.perf_counter() - started
        text = _cache.jaxpr_text(closed, derivatives=True)
        if text is None:
            return None
        out_leaves, out_tree = jax.tree_util.tree_flatten(out)
        h.update(repr((str(tree), shapes, str(out_tree),
                       [(o.shape, str(o.dtype), o.weak_type) for o in out_leaves])).encode())
        h.update(text)
    return h.hexdigest()


def _recall(memory: dict, key: str, suffix: str):
    """The record ``key`` from ``memory``, else from its file (then kept in memory), else
    ``None``."""
    value = memory.get(key)
    if value is None:
        value = _read(key + suffix)
        if value is not None:
            _bounded(memory)[key] = value
    return value


def _keep(memory: dict, key: str, suffix: str, value) -> None:
    """Hold the record ``key`` in ``memory`` and write it to its file."""
    _bounded(memory)[key] = value
    _write(key + suffix, value)


def _read(name: str):
    folder = _cache.directory()
    if folder is None:
        return None
    payload = _cache._read(os.path.join(folder, name))
    if payload is None:
        return None
    return pickle.loads(payload)


def _write(name: str, value) -> None:
    folder = _cache.directory()
    if folder is None:
        return
    _cache.write_entry(os.path.join(folder, name), pickle.dumps(value))
