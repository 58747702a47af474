"""A cache of compiled solves, in memory and on disk, keyed by the traced program.

A solve is traced to a jaxpr as ``jax.jit`` does; the key is a SHA-256 of that program written
out in full (:func:`traced_key`: every equation with its parameters, types, literals and
constants by content, nested jaxprs, the lowering parameters and argument types ``jit``
recorded) and of everything else that changes the executable: the jax, jaxlib, jacopt and
Python versions, the backend and its devices, the host CPU, the compiler options, every
``jax.config`` option and the thread-local ones ``jax.jit`` keys its own cache on,
``XLA_FLAGS`` and the pytrees. Lowering is a function of exactly these for jax's own
primitives, so equal keys mean the same lowered program for the same compiler and a hit can
never be stale, while it skips lowering. A program the key cannot write out exactly (a
primitive not defined by jax, whose lowering rule is the user's; a parameter that is a
function) is lowered and keyed by its StableHLO text instead (:func:`program_key`). Programs
that carry data outside their text (arrays hoisted out of the program by JAX, host callbacks
such as ``verbose`` printing) are compiled as ``jax.jit`` would and never cached. A loaded
executable calling LAPACK needs jaxlib's kernels initialised, as lowering would have done
(:func:`lapack_ready`).

On disk (``jax.experimental.serialize_executable``; loading an entry runs code, so it is
trusted only from a directory that no one else can write): ``$JACOPT_CACHE_DIR``, else
``$XDG_CACHE_HOME/jacopt``, else ``~/.cache/jacopt``, created with mode 0700. A directory not
owned by the user or writable by group or others is refused with a warning and the disk cache
is off. ``JACOPT_CACHE=0`` switches the disk cache off. Entries are written to a temporary file
and renamed into place (``os.replace``), so two processes filling one entry both end with a
whole entry; each entry carries a checksum of its payload, and a truncated or corrupt entry is
ignored and rebuilt. Past :data:`MAX_ENTRIES` entries the least recently used are deleted, and
so are temporary files an hour old (left by a writer that died). JAX's own persistent
compilation cache (``jax_compilation_cache_dir``) is left as the user set it; when set, it also
serves these compiles.
"""
from __future__ import annotations

import collections
import enum
import functools
import hashlib
import inspect
import io
import os
import platform
import sys
import tempfile
import threading
import time
import warnings

import jax
import numpy as np

MAGIC = b"jacopt-xla-1\n"
"""The first bytes of an entry (the format's version)."""

MAX_ENTRIES = 500
"""Entries kept on disk (each a few hundred kB); the least recently used go first."""

_SUFFIX = ".xla"
_OFF = ("0", "false", "no", "off")

stats = collections.Counter()
"""What this process did: ``compiles`` (XLA compilations), ``memory_hits``, ``disk_hits``
(``prefetch_hits`` of them loaded while tracing), ``disk_writes``, ``bad_entries`` (corrupt
or unreadable, rebuilt), ``uncacheable``, and the seconds spent in ``trace_s``, ``key_s``,
``lapack_s``, ``lower_s``, ``compile_s``, ``load_s`` (waiting for a load), ``prefetch_s`` (on
the prefetch thread), ``store_s``."""

_programs: dict = {}  # key -> compiled executable, for this process
_MAX_PROGRAMS = 128


def clear_memory() -> None:
    """Forget the compiled programs held in memory (the disk entries stay)."""
    _programs.clear()
_refused: set = set()  # directories already warned about


class CacheWarning(UserWarning):
    """The on-disk cache of compiled solves could not be used (it is then off)."""


def directory() -> str | None:
    """The cache directory, created private to the user if missing; ``None`` when the disk
    cache is switched off or the directory is refused (module docstring)."""
    if os.environ.get("JACOPT_CACHE", "1").strip().lower() in _OFF:
        return None
    path = os.environ.get("JACOPT_CACHE_DIR")
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        path = os.path.join(base, "jacopt")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        path = os.path.realpath(path)  # checked and used as resolved: no link to swap later
        st = os.stat(path)
    except OSError as exc:
        return _refuse(path, f"it cannot be created ({exc})")
    if not os.path.isdir(path):
        return _refuse(path, "it is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return _refuse(path, "it is owned by another user")
    if st.st_mode & 0o022:
        return _refuse(path, f"group or others can write it (mode {st.st_mode & 0o777:o}); "
                             f"run chmod 700 on it")
    return path


def _refuse(path: str, why: str) -> None:
    if path not in _refused:
        _refused.add(path)
        warnings.warn(f"jacopt's cache of compiled solves at {path} is not used: {why}. Loading "
                      f"a compiled program runs code, so jacopt only reads a directory that no "
                      f"one else can write. Solves are compiled as usual; set JACOPT_CACHE_DIR "
                      f"to a private directory, or JACOPT_CACHE=0 to silence this.",
                      CacheWarning, stacklevel=4)
    return None


def _host_cpu() -> str:
    """The host CPU's model and instruction-set flags (compiled CPU code uses them)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read(1 << 16).splitlines()
                     if ln.startswith(("flags", "model name", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


_environment: list = []


def _environment_key() -> bytes:
    """Versions, backend, devices and host CPU: fixed for the life of the process."""
    if not _environment:
        import jaxlib

        import jacopt

        backend = jax.devices()[0].client
        parts = [MAGIC.decode(), sys.version, jax.__version__,
                 getattr(jaxlib, "__version__", "?"), jacopt.__version__,
                 backend.platform, backend.platform_version,
                 repr([d.device_kind for d in jax.devices()]), _host_cpu()]
        _environment.append("\0".join(parts).encode())
    return _environment[0]


def _uncacheable(lowered) -> bool:
    """Whether the program depends on more than its text: hoisted constant arguments, host
    callbacks, or effects (JAX's internals for these are read defensively)."""
    lowering = getattr(lowered, "_lowering", None)
    compile_args = getattr(lowering, "compile_args", None)
    if lowering is None or not isinstance(compile_args, dict):
        return True
    return bool(getattr(lowering, "const_args", [1])
                or compile_args.get("host_callbacks", [1])
                or compile_args.get("ordered_effects", [1])
                or compile_args.get("unordered_effects", [1])
                or compile_args.get("keepalive"))


class _Unkeyable(Exception):
    """The traced program holds something its text cannot name exactly."""


def traced_key(traced, compiler_options: dict):
    """``(key, linalg)`` for a traced program (a ``jax.stages.Traced``), or ``None`` when it
    cannot be keyed exactly by its trace; ``linalg`` says whether it holds a linear-algebra
    primitive (whose CPU kernels are LAPACK's: :func:`lapack_ready`).

    Lowering is a function of the closed jaxpr, its constants, the lowering parameters and
    argument types that ``jit`` recorded with it, JAX's options and the versions of jax and
    jaxlib (its lowering rules). The key writes out every equation of the jaxpr and of the
    jaxprs nested in it: primitive, parameters, variables with their full abstract values,
    literals and constants by content, and the equation's context; plus the lowering
    parameters, argument types and pytrees, and everything :func:`program_key` adds. Only
    primitives defined by jax itself (lowered by jax's rules, fixed by its version) are
    accepted, and parameters whose text could alias (a function, an object printed by its
    address) make the program unkeyable, except the derivative rules of ``custom_jvp`` and
    ``custom_vjp``, which lowering drops."""
    try:
        jaxpr = traced.jaxpr
        if getattr(jaxpr, "is_high", False):  # lowered through another jaxpr
            return None
        writer = _JaxprWriter()
        writer.closed(jaxpr)
        params = {k: v for k, v in traced._params.items() if k != "jaxpr"}
        writer.out.append(writer.value(params))
        writer.out.append(repr(traced._meta_tys_flat))
        writer.out.append(writer.value(tuple(traced._consts)))
        writer.out.append(f"{traced._in_tree}\0{traced.out_tree}")
        # the options jax.jit keys its own compiled programs on, thread-local values included
        # (the axis environment, empty outside transformations, prints by address)
        writer.out.append(repr([x for x in _trace_context() if type(x).__name__ != "AxisEnv"]))
    except Exception:  # _Unkeyable, or a JAX whose internals differ: key the lowering instead
        return None
    written = _written(writer)
    if written is None:
        return None
    h = _hasher(b"traced\0", compiler_options)
    for part in written:
        h.update(part)
    return h.hexdigest(), writer.linalg


def jaxpr_text(closed, derivatives: bool = False) -> bytes | None:
    """A closed jaxpr written out in full as :func:`traced_key` writes a program (constants
    by content), or ``None`` when it cannot be; with ``derivatives``, a custom derivative rule
    (a function) makes it unkeyable too."""
    try:
        writer = _JaxprWriter(derivatives)
        writer.closed(closed)
    except Exception:  # _Unkeyable, or a JAX whose internals differ
        return None
    written = _written(writer)
    return None if written is None else written[0] + b"\0" + written[1]


def _written(writer) -> tuple[bytes, bytes] | None:
    """What a :class:`_JaxprWriter` wrote: ``(text, digest of the arrays)``, or ``None`` when
    the text names an object by its address (it would not say what the object is)."""
    text = "\n".join(writer.out)
    if " at 0x" in text:
        return None
    return text.encode(), writer.arrays.digest()


def aval_text(aval) -> str:
    """An abstract value written out in full: its type and every slot (shape, dtype, weak
    type, sharding and whatever else this JAX keeps)."""
    slots = [s for klass in type(aval).__mro__ for s in getattr(klass, "__slots__", ())
             if s != "__weakref__"]
    return type(aval).__name__ + repr([(s, getattr(aval, s, None)) for s in slots])


# custom_jvp_call and custom_vjp_call lower their call_jaxpr only (derivative rules dropped)
_LOWERED_PARAMS = {"custom_jvp_call": ("call_jaxpr",), "custom_vjp_call": ("call_jaxpr",)}
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


class _JaxprWriter:
    """Writes a jaxpr out in full (see :func:`traced_key`); array contents go to a hash."""

    def __init__(self, derivatives: bool = False):
        from jax._src import core

        self.derivatives = derivatives  # custom derivative rules (functions) are unkeyable

        self.core = core
        self.out: list = []
        self.arrays = hashlib.sha256()
        self.names: dict = {}
        self.memo: dict = {}  # id -> name, for types and contexts
        self.types: dict = {}  # text -> name
        self.keep: list = []
        self.jaxprs: dict = {}
        self.linalg = False
        self.primitives = _jax_primitives()

    def var(self, v) -> str:
        core = self.core
        if isinstance(v, core.Literal):
            return "lit(" + self.value(v.val) + ":" + self.aval(v.aval) + ")"
        if isinstance(v, core.DropVar):
            return "_:" + self.aval(v.aval)
        name = self.names.get(v)
        if name is None:
            name = self.names[v] = f"v{len(self.names)}"
            return name + ":" + self.aval(v.aval)  # a binder: written with its type
        return name

    def aval(self, aval) -> str:
        name = self.memo.get(id(aval))
        if name is None:
            name = self._named(aval_text(aval))
            self.memo[id(aval)] = name
            self.keep.append(aval)  # ids stay unique while the writer lives
        return name

    def _named(self, full: str) -> str:
        """A short name for ``full``, written out in full at its first use."""
        name = self.types.get(full)
        if name is None:
            name = self.types[full] = f"t{len(self.types)}"
            self.out.append(f"type {name} = {full}")
        return name

    def closed(self, closed) -> None:
        core = self.core
        if isinstance(closed, core.ClosedJaxpr):
            self.out.append("consts " + self.value(tuple(closed.consts)))
            closed = closed.jaxpr
        self.jaxpr(closed)

    def jaxpr(self, jaxpr) -> None:
        out = self.out
        seen = self.jaxprs.get(id(jaxpr))
        if seen is not None:  # the same jaxpr again (written once)
            out.append(f"jaxpr#{seen[0]}")
            return
        self.jaxprs[id(jaxpr)] = (len(self.jaxprs), jaxpr)
        out.append("{ " + " ".join(map(self.var, jaxpr.constvars)) + " ; "
                   + " ".join(map(self.var, jaxpr.invars)) + " ; " + repr(jaxpr.effects))
        for eqn in jaxpr.eqns:
            prim = eqn.primitive
            if prim not in self.primitives:
                raise _Unkeyable
            if prim in _linalg_primitives():
                self.linalg = True
            keep = None if self.derivatives else _LOWERED_PARAMS.get(prim.name)
            ins = " ".join(map(self.var, eqn.invars))
            out.append(f"{prim.name} {ins} ; {repr(eqn.effects)} ; {self.context(eqn.ctx)}")
            for k in sorted(eqn.params):
                if keep is None or k in keep:
                    out.append(f" {k}=" + self.value(eqn.params[k]))
            out.append(" -> " + " ".join(map(self.var, eqn.outvars)))
        out.append("return " + " ".join(map(self.var, jaxpr.outvars)) + " }")

    def context(self, ctx) -> str:
        name = self.memo.get(id(ctx))
        if name is None:
            name = self.memo[id(ctx)] = self._named(repr(ctx))
            self.keep.append(ctx)
        return name

    def value(self, v) -> str:
        """``v`` written out in full; an array by dtype and shape, its bytes to the hash."""
        core = self.core
        if isinstance(v, _PLAIN):
            return f"{type(v).__name__}:{v!r}:{getattr(v, 'dtype', '')}"
        if isinstance(v, (core.Jaxpr, core.ClosedJaxpr)):
            self.closed(v)
            return "<jaxpr above>"
        if isinstance(v, enum.Enum):
            return f"{type(v).__qualname__}.{v.name}"
        if isinstance(v, np.ndarray) or (hasattr(v, "shape") and hasattr(v, "dtype")
                                         and hasattr(v, "__array__")):
            a = v if isinstance(v, np.ndarray) else np.asarray(v)
            self.arrays.update(a.tobytes())
            return f"array:{a.dtype.name}:{a.dtype.str}:{a.shape}:{getattr(v, 'weak_type', '')}"
        if isinstance(v, (tuple, list)):
            return f"{type(v).__qualname__}(" + ",".join(self.value(x) for x in v) + ")"
        if isinstance(v, dict):
            return "dict(" + ",".join(f"{self.value(k)}={self.value(x)}"
                                      for k, x in sorted(v.items(), key=repr)) + ")"
        if inspect.isroutine(v) or isinstance(v, functools.partial) \
                or type(v).__name__ == "WrappedFun":
            raise _Unkeyable  # a function's text does not say what it computes
        text = f"{type(v).__qualname__}:{v!r}"
        if " at 0x" in text or " object at " in text:
            raise _Unkeyable
        return text


try:  # the configuration that jax.jit's own cache is keyed on (private; optional)
    from jax._src.config import trace_context as _trace_context
except ImportError:  # pragma: no cover
    def _trace_context():
        raise _Unkeyable


_primitives: dict = {}


def _jax_primitives() -> frozenset:
    """The primitives defined by jax and jaxlib's modules (each module read once, when it is
    first seen; a primitive missed would only make a program unkeyable, never stale)."""
    scanned = _primitives.setdefault("scanned", set())
    new = [(name, m) for name, m in list(sys.modules.items())
           if name not in scanned and m is not None
           and (name == "jax" or name.startswith(("jax.", "jaxlib.")))]
    if new or "set" not in _primitives:
        from jax._src import core

        found = set(_primitives.get("set", ()))
        for name, module in new:
            scanned.add(name)
            for v in list(vars(module).values()):
                if isinstance(v, core.Primitive):
                    found.add(v)
        _primitives["set"] = frozenset(found)
    return _primitives["set"]


def _linalg_primitives() -> frozenset:
    if "linalg" not in _primitives:
        from jax._src import core
        from jax._src.lax import linalg

        _primitives["linalg"] = frozenset(v for v in vars(linalg).values()
                                          if isinstance(v, core.Primitive))
    return _primitives["linalg"]


def program_key(lowered, compiler_options: dict) -> str:
    """The SHA-256 key of ``lowered`` compiled with ``compiler_options`` (module docstring)."""
    h = _hasher(b"lowered\0", compiler_options)
    avals = [(a.shape, str(a.dtype), getattr(a, "weak_type", None))
             for a in jax.tree_util.tree_leaves(lowered.in_avals)]
    args = lowered._lowering.compile_args
    h.update(repr((avals, str(lowered.in_tree), str(lowered.out_tree), args.get("tuple_args"),
                   sorted(args.get("kept_var_idx", ())), args.get("committed"))).encode())
    h.update(lowered.as_text().encode())
    return h.hexdigest()


def _hasher(kind: bytes, compiler_options: dict):
    """A SHA-256 fed with ``kind`` and everything outside the program that changes the
    executable: versions, backend, devices, host CPU, compiler options, JAX's options, XLA's
    flags."""
    h = hashlib.sha256(kind + _environment_key())
    h.update(repr(sorted(compiler_options.items())).encode())
    # every JAX option (those that set XLA's compile options among them), XLA's flags
    h.update(repr((sorted(jax.config.values.items()), os.environ.get("XLA_FLAGS", ""),
                   os.environ.get("LIBTPU_INIT_ARGS", ""))).encode())
    return h


def compile_lowered(lowered, compiler_options: dict):
    """``lowered.compile()``, served from this process's programs or the disk cache when the
    same program was compiled before (module docstring)."""
    if _uncacheable(lowered):
        stats["uncacheable"] += 1
        return _compile(lowered)
    return _cached(program_key(lowered, compiler_options), lowered.in_tree,
                   lowered.out_tree, lambda: lowered, False)


def compile_traced(traced, compiler_options: dict, prefetch: "Prefetch | None" = None,
                   report: list | None = None):
    """``traced.lower().compile()``, served as :func:`compile_lowered` serves it but keyed by
    the traced program (:func:`traced_key`), so that a hit skips lowering; a program that
    cannot be keyed so is lowered and keyed by its lowering. ``prefetch`` (from
    :func:`prefetch`, started before tracing) is used when it loaded this very key. A cached
    program's ``(key, linalg)`` is appended to ``report`` (for :mod:`jacopt._shortcut`)."""
    started = time.perf_counter()
    key = traced_key(traced, compiler_options)
    stats["key_s"] += time.perf_counter() - started
    if key is None:
        return compile_lowered(_lower(traced), compiler_options)
    key, linalg = key
    in_tree = jax.tree_util.tree_structure(traced.args_info)
    compiled = _cached(key, in_tree, traced.out_tree, lambda: _lower(traced), linalg,
                       prefetch)
    if prefetch is not None and prefetch.key != key:
        prefetch.remember(key)
    if report is not None and _programs.get(key, (None,))[0] is compiled:
        report.append((key, linalg))
    return compiled


def _lower(traced):
    started = time.perf_counter()
    lowered = traced.lower()
    stats["lower_s"] += time.perf_counter() - started
    return lowered


def _cached(key: str, in_tree, out_tree, lower, linalg: bool, prefetch=None):
    """The executable of the program ``key`` (with these argument and result trees): from this
    process's programs, else ``prefetch`` when it loaded ``key``, else the disk cache, else
    compiled from ``lower()`` and stored."""
    compiled = find(key, in_tree, out_tree, linalg, prefetch)
    if compiled is not None:
        return compiled
    lowered = lower()
    if _uncacheable(lowered):  # only reached by keys of traced programs
        stats["uncacheable"] += 1
        return _compile(lowered)
    compiled = _compile(lowered)
    folder = directory()
    if folder is not None:
        _store(os.path.join(folder, key + _SUFFIX), compiled)
    _keep(key, compiled, in_tree, out_tree)
    return compiled


def find(key: str, in_tree, out_tree, linalg: bool, prefetch=None, count: bool = True):
    """The executable of the program ``key`` from this process's programs, else ``prefetch``
    when it loaded ``key``, else the disk cache; ``None`` when none has it (a bad entry is
    counted in ``stats`` when ``count``)."""
    entry = _programs.get(key)
    if entry is not None and _same_trees(entry[1:], (in_tree, out_tree)):
        stats["memory_hits"] += 1
        return entry[0]
    if linalg:
        started = time.perf_counter()
        lapack_ready()
        stats["lapack_s"] += time.perf_counter() - started
    folder = directory()
    compiled = None
    if prefetch is not None and prefetch.key == key:
        compiled = prefetch.executable(in_tree, out_tree)
    if compiled is None and folder is not None:
        compiled = _load(os.path.join(folder, key + _SUFFIX), in_tree, out_tree, count)
    if compiled is not None:
        _keep(key, compiled, in_tree, out_tree)
    return compiled


def _same_trees(a, b) -> bool:
    """Equal pytree structures, node classes included: a class redefined under the same name
    (a notebook cell run again) can compare equal by ``==`` while its hash differs."""
    return a == b and hash(a) == hash(b)


def _keep(key: str, compiled, in_tree, out_tree) -> None:
    if len(_programs) >= _MAX_PROGRAMS:
        _programs.pop(next(iter(_programs)))
    _programs[key] = (compiled, in_tree, out_tree)


_lapack_done: list = []
_lapack_lock = threading.Lock()


def lapack_ready() -> None:
    """Make jaxlib's CPU LAPACK kernels callable, as lowering a linear-algebra primitive does
    (a loaded executable skips lowering). jaxlib takes LAPACK's routines from SciPy's Cython
    modules ``scipy.linalg.cython_blas`` and ``cython_lapack``, and importing those runs
    ``scipy.linalg``'s package (most of SciPy's linear algebra, a large share of a cached
    solve). Unless ``scipy.linalg`` is loaded already, the two extension modules are loaded
    here on their own and taken off ``sys.modules`` again once jaxlib has read them, so a
    later ``import scipy.linalg`` runs as it would have; on any failure jaxlib imports them
    its own way. Thread-safe: a thread that finds another readying the kernels waits until
    they are ready (:func:`find` calls this before it loads a program that uses linear
    algebra)."""
    if _lapack_done:
        return
    with _lapack_lock:
        if _lapack_done:
            return
        try:
            _initialize_lapack()
        finally:
            _lapack_done.append(True)


def _initialize_lapack() -> None:
    try:
        from jaxlib.cpu import _lapack
    except ImportError:  # pragma: no cover (a jaxlib without CPU LAPACK kernels)
        return
    added: list = []
    try:
        if "scipy.linalg" not in sys.modules:
            _load_scipy_lapack(added)
        _lapack.initialize()
        return
    except Exception:
        pass
    finally:
        for name in added:
            sys.modules.pop(name, None)
    _lapack.initialize()


def _load_scipy_lapack(added: list) -> None:
    """Load ``scipy.linalg.cython_blas`` and ``cython_lapack`` without their package, listing
    the names put in ``sys.modules`` in ``added``."""
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("scipy")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "linalg")
    for name in ("cython_blas", "cython_lapack"):
        full = "scipy.linalg." + name
        if full in sys.modules:
            continue
        sub = importlib.machinery.PathFinder.find_spec(full, [folder])
        if sub is None or not isinstance(sub.loader, importlib.machinery.ExtensionFileLoader):
            raise ImportError(full)
        module = importlib.util.module_from_spec(sub)
        sys.modules[full] = module
        added.append(full)
        sub.loader.exec_module(module)


def _compile(lowered):
    started = time.perf_counter()
    compiled = lowered.compile()
    stats["compile_s"] += time.perf_counter() - started
    stats["compiles"] += 1
    return compiled


def _read(path: str, count: bool = True):
    """The checked payload of the entry at ``path``, or ``None`` when there is none or it is
    corrupt (counted in ``stats`` when ``count``; the prefetch thread leaves that to the
    load that follows)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        stats["bad_entries"] += count
        return None
    head = len(MAGIC) + 32
    payload = data[head:]
    if (len(data) <= head or not data.startswith(MAGIC)
            or hashlib.sha256(payload).digest() != data[len(MAGIC):head]):
        stats["bad_entries"] += count
        return None
    return payload


def _loaded(path: str, started: float) -> None:
    stats["load_s"] += time.perf_counter() - started
    stats["disk_hits"] += 1
    try:
        os.utime(path)  # recently used: pruned last
    except OSError:
        pass


def _load(path: str, in_tree, out_tree, count: bool = True):
    """The executable stored at ``path``, or ``None`` when there is none or it is unusable (a
    bad entry is counted when ``count`` and left to be overwritten)."""
    from jax.experimental import serialize_executable

    started = time.perf_counter()
    payload = _read(path, count)
    if payload is None:
        return None
    try:
        compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # an entry this jax cannot load: rebuild it
        stats["bad_entries"] += count
        return None
    _loaded(path, started)
    return compiled


# ------------------------------------------------------------------------------------------
# Prefetch: the entry a call is likely to need, loaded while the call is traced
# ------------------------------------------------------------------------------------------

_HINT = ".hint"


class Prefetch:
    """The entry that a call like this one (same function code, argument types and static
    values: its *hint*) needed last time, read and deserialised on a thread while the call is
    traced (XLA deserialises without Python's lock). It is only a guess: the executable is
    used only when the traced program's key (:func:`traced_key`) is the one it was loaded
    for, and the hint is pointed at the right key otherwise."""

    def __init__(self, hint_path: str, key: str | None):
        self.hint_path, self.key = hint_path, key
        self._result = None
        self._thread = None
        if key is not None:
            self._thread = threading.Thread(target=self._run, name="jacopt-prefetch",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            from jax.experimental import serialize_executable as se

            started = time.perf_counter()
            path = os.path.join(os.path.dirname(self.hint_path), self.key + _SUFFIX)
            payload = _read(path, count=False)
            if payload is not None:
                backend = jax.devices()[0].client
                unloaded = se._JaxPjrtUnpickler(io.BytesIO(payload), backend).load()
                self._result = (path, time.perf_counter() - started, unloaded)
        except Exception:  # a JAX whose internals differ, or a bad entry: load as usual
            self._result = None

    def executable(self, in_tree, out_tree):
        """The prefetched executable, or ``None`` (then the entry is loaded as usual)."""
        if self._thread is None:
            return None
        started = time.perf_counter()
        self._thread.join()
        if self._result is None:
            return None
        path, _, (unloaded, args_info_flat, no_kwargs) = self._result
        try:
            compiled = jax.stages.Compiled(unloaded.load(), [],
                                           in_tree.unflatten(args_info_flat), out_tree,
                                           no_kwargs=no_kwargs)
        except Exception:
            return None
        stats["prefetch_hits"] += 1
        stats["prefetch_s"] += self._result[1]  # on the thread, while tracing
        _loaded(path, started)  # load_s: the wait for the thread and the rest
        return compiled

    def remember(self, key: str) -> None:
        """Point the hint at ``key`` (written atomically; a failure costs a later prefetch)."""
        _write_atomically(self.hint_path, key.encode())


def prefetch(hint: str, compiler_options: dict) -> Prefetch | None:
    """Start loading the entry last used by calls with this ``hint`` (a text naming the
    entry point, the function's code location, argument types and static values), or
    ``None`` when the disk cache is off."""
    folder = directory()
    if folder is None:
        return None
    h = _hasher(b"hint\0", compiler_options)
    h.update(hint.encode())
    path = os.path.join(folder, h.hexdigest() + _HINT)
    key = None
    try:
        with open(path, "rb") as f:
            text = f.read(65).decode("ascii")
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text) \
                and os.path.exists(os.path.join(folder, text + _SUFFIX)):
            key = text
            os.utime(path)
    except (OSError, UnicodeDecodeError):
        pass
    return Prefetch(path, key)


def _store(path: str, compiled) -> None:
    """Write ``compiled`` to ``path`` atomically; a failure to write only costs the next
    process a compile."""
    from jax.experimental import serialize_executable

    started = time.perf_counter()
    try:
        payload, _, _ = serialize_executable.serialize(compiled)
    except Exception:  # an executable this backend cannot serialise
        return
    if write_entry(path, payload):
        stats["disk_writes"] += 1
        _prune(os.path.dirname(path))
    stats["store_s"] += time.perf_counter() - started


def write_entry(path: str, payload: bytes) -> bool:
    """Write ``payload`` as an entry (:data:`MAGIC`, its checksum, itself) that
    :func:`_read` checks; whether it was written."""
    return _write_atomically(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def _write_atomically(path: str, data: bytes) -> bool:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place
    (``os.replace``); whether it was written."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-",
                                   suffix=_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError:
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


_STALE_TMP_S = 3600.0  # a temporary file this old was left by a writer that died


def _prune(folder: str) -> None:
    """Delete the least recently used entries, prefetch hints and call records
    (:mod:`jacopt._shortcut`) when there are more than :data:`MAX_ENTRIES` of a kind, and
    temporary files left by writers that died mid-write."""
    try:
        listing = list(os.scandir(folder))
        old = time.time() - _STALE_TMP_S
        for e in listing:
            if (e.name.startswith(".tmp-") and e.name.endswith(_SUFFIX)
                    and e.stat().st_mtime < old):
                os.unlink(e.path)
        for suffix in (_SUFFIX, _HINT, ".sig", ".call"):
            kept = [e for e in listing if e.name.endswith(suffix) and not e.name.startswith(".")]
            if len(kept) > MAX_ENTRIES:
                kept.sort(key=lambda e: e.stat().st_mtime)
                for e in kept[: len(kept) - MAX_ENTRIES * 4 // 5]:
                    os.unlink(e.path)
    except OSError:
        pass
