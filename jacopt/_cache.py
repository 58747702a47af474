"""A cache of compiled solves, in memory and on disk, keyed by the lowered program.

A solve is traced and lowered to StableHLO as ``jax.jit`` does; the key is a SHA-256 of that
program's text (every operation, shape, dtype and constant, without source locations) and of
everything else that changes the executable: the jax, jaxlib, jacopt and Python versions, the
backend and its devices, the host CPU, the compiler options, every ``jax.config`` option,
``XLA_FLAGS`` and the argument types. Equal keys mean the same program for the same compiler, so a hit can never be stale; a
changed function, dtype, option or version is a new key. Programs that carry data outside
their text (arrays hoisted out of the program by JAX, host callbacks such as ``verbose``
printing) are compiled as ``jax.jit`` would and never cached. Lowering always runs first, which
also registers the runtime routines (LAPACK) that a loaded executable calls.

On disk (``jax.experimental.serialize_executable``; loading an entry runs code, so it is
trusted only from a directory that no one else can write): ``$JACOPT_CACHE_DIR``, else
``$XDG_CACHE_HOME/jacopt``, else ``~/.cache/jacopt``, created with mode 0700. A directory not
owned by the user or writable by group or others is refused with a warning and the disk cache
is off. ``JACOPT_CACHE=0`` switches the disk cache off. Entries are written to a temporary file
and renamed into place (``os.replace``), so two processes filling one entry both end with a
whole entry; each entry carries a checksum of its payload, and a truncated or corrupt entry is
ignored and rebuilt. Past :data:`MAX_ENTRIES` entries the least recently used are deleted, and so are
temporary files an hour old (left by a writer that died). JAX's own persistent compilation cache (``jax_compilation_cache_dir``) is
left as the user set it; when set, it also serves these compiles.
"""
from __future__ import annotations

import collections
import hashlib
import os
import platform
import sys
import tempfile
import time
import warnings

import jax

MAGIC = b"jacopt-xla-1\n"
"""The first bytes of an entry (the format's version)."""

MAX_ENTRIES = 500
"""Entries kept on disk (each a few hundred kB); the least recently used go first."""

_SUFFIX = ".xla"
_OFF = ("0", "false", "no", "off")

stats = collections.Counter()
"""What this process did: ``compiles`` (XLA compilations), ``memory_hits``, ``disk_hits``,
``disk_writes``, ``bad_entries`` (corrupt or unreadable, rebuilt), ``uncacheable``, and the
seconds spent in ``trace_s``, ``lower_s``, ``compile_s``, ``load_s``, ``store_s``."""

_programs: dict = {}  # key -> compiled executable, for this process
_MAX_PROGRAMS = 128
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
        import jacopt
        import jaxlib

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


def program_key(lowered, compiler_options: dict) -> str:
    """The SHA-256 key of ``lowered`` compiled with ``compiler_options`` (module docstring)."""
    h = hashlib.sha256(_environment_key())
    h.update(repr(sorted(compiler_options.items())).encode())
    # every JAX option (those that set XLA's compile options among them), XLA's flags
    h.update(repr((sorted(jax.config.values.items()), os.environ.get("XLA_FLAGS", ""),
                   os.environ.get("LIBTPU_INIT_ARGS", ""))).encode())
    avals = [(a.shape, str(a.dtype), getattr(a, "weak_type", None))
             for a in jax.tree_util.tree_leaves(lowered.in_avals)]
    args = lowered._lowering.compile_args
    h.update(repr((avals, str(lowered.in_tree), str(lowered.out_tree), args.get("tuple_args"),
                   sorted(args.get("kept_var_idx", ())), args.get("committed"))).encode())
    h.update(lowered.as_text().encode())
    return h.hexdigest()


def compile_lowered(lowered, compiler_options: dict):
    """``lowered.compile()``, served from this process's programs or the disk cache when the
    same program was compiled before (module docstring)."""
    if _uncacheable(lowered):
        stats["uncacheable"] += 1
        return _compile(lowered)
    key = program_key(lowered, compiler_options)
    entry = _programs.get(key)
    if entry is not None and entry[1:] == (lowered.in_tree, lowered.out_tree):
        stats["memory_hits"] += 1
        return entry[0]
    folder = directory()
    path = None if folder is None else os.path.join(folder, key + _SUFFIX)
    compiled = None if path is None else _load(path, lowered)
    if compiled is None:
        compiled = _compile(lowered)
        if path is not None:
            _store(path, compiled)
    if len(_programs) >= _MAX_PROGRAMS:
        _programs.pop(next(iter(_programs)))
    _programs[key] = (compiled, lowered.in_tree, lowered.out_tree)
    return compiled


def _compile(lowered):
    started = time.perf_counter()
    compiled = lowered.compile()
    stats["compile_s"] += time.perf_counter() - started
    stats["compiles"] += 1
    return compiled


def _load(path: str, lowered):
    """The executable stored at ``path``, or ``None`` when there is none or it is unusable (a
    bad entry is counted and left to be overwritten)."""
    from jax.experimental import serialize_executable

    started = time.perf_counter()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        stats["bad_entries"] += 1
        return None
    head = len(MAGIC) + 32
    payload = data[head:]
    if (len(data) <= head or not data.startswith(MAGIC)
            or hashlib.sha256(payload).digest() != data[len(MAGIC):head]):
        stats["bad_entries"] += 1
        return None
    try:
        compiled = serialize_executable.deserialize_and_load(payload, lowered.in_tree,
                                                             lowered.out_tree)
    except Exception:  # an entry this jax cannot load: rebuild it
        stats["bad_entries"] += 1
        return None
    stats["load_s"] += time.perf_counter() - started
    stats["disk_hits"] += 1
    try:
        os.utime(path)  # recently used: pruned last
    except OSError:
        pass
    return compiled


def _store(path: str, compiled) -> None:
    """Write ``compiled`` to ``path`` atomically (temporary file, then ``os.replace``); a
    failure to write only costs the next process a compile."""
    from jax.experimental import serialize_executable

    started = time.perf_counter()
    try:
        payload, _, _ = serialize_executable.serialize(compiled)
    except Exception:  # an executable this backend cannot serialise
        return
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-",
                                   suffix=_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
        tmp = None
        stats["disk_writes"] += 1
        _prune(os.path.dirname(path))
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    stats["store_s"] += time.perf_counter() - started


_STALE_TMP_S = 3600.0  # a temporary file this old was left by a writer that died


def _prune(folder: str) -> None:
    """Delete the least recently used entries when there are more than :data:`MAX_ENTRIES`,
    and temporary files left by writers that died mid-write."""
    try:
        found = [e for e in os.scandir(folder) if e.name.endswith(_SUFFIX)]
        old = time.time() - _STALE_TMP_S
        for e in found:
            if e.name.startswith(".tmp-") and e.stat().st_mtime < old:
                os.unlink(e.path)
        entries = [e for e in found if not e.name.startswith(".")]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime)
        for e in entries[: len(entries) - MAX_ENTRIES * 4 // 5]:
            os.unlink(e.path)
    except OSError:
        pass
