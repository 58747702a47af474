"""The cache of compiled solves (jacopt._cache): a second process loads the solve instead of
compiling it, a changed program misses, the cache can be switched off, a directory others can
write is refused, bad entries are rebuilt, and concurrent writers both succeed. Evidence is
counted (``jacopt._cache.stats``) and read from the cache directory, never timed."""
import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt import _cache

pytestmark = pytest.mark.filterwarnings("ignore::jacopt.RecompileWarning")

T = np.linspace(0.0, 4.0, 12)
Y = 2.0 * np.exp(-0.7 * T)

_FIT = r"""
import json, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import jacopt
from jacopt import _cache
t = np.linspace(0.0, 4.0, 12)
res = jacopt.least_squares(lambda p, t, y: p[0] * jnp.exp(-p[1] * t) - y, jnp.array([1.0, 0.1]),
                           args=(jnp.asarray(t), jnp.asarray(2.0 * np.exp(-0.7 * t))))
print(json.dumps({"params": np.asarray(res.params).tolist(), **_cache.stats}))
"""


def _entries(folder):
    """The compiled programs in the cache ``folder`` (not the prefetch hints or call
    records)."""
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(".") and name.endswith(_cache._SUFFIX))


def _start(folder):
    env = {**os.environ, "JACOPT_CACHE": "1", "JACOPT_CACHE_DIR": str(folder)}
    return subprocess.Popen([sys.executable, "-c", _FIT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_fill_one_entry_at_once_and_a_third_loads_it(tmp_path):
    folder = tmp_path / "cache"
    first = [_result(p) for p in [_start(folder), _start(folder)]]  # both run at once
    for r in first:
        np.testing.assert_allclose(r["params"], [2.0, 0.7], rtol=1e-10)
    assert sum(r.get("compiles", 0) for r in first) >= 1
    assert len(_entries(folder)) == 1  # one program, one entry; no temporary file left
    assert not [n for n in os.listdir(folder) if n.startswith(".tmp-")]
    assert (os.stat(folder).st_mode & 0o777) == 0o700
    third = _result(_start(folder))
    assert third.get("disk_hits") == 1 and third.get("compiles", 0) == 0
    # the hint the first processes left let the third load the entry, and the record they
    # left let it skip tracing the solve (jacopt._shortcut): only the residual was traced
    assert third.get("prefetch_hits") == 1 and third.get("shortcut_hits") == 1
    assert "trace_s" not in third and third["shortcut_trace_s"] > 0
    assert third["params"] == first[0]["params"]


def _fit(fun=None, x0=(1.0, 0.1), **kwargs):
    if fun is None:
        def fun(p, t, y):  # a new function object with the same code at each call
            return p[0] * jnp.exp(-p[1] * t) - y
    x0 = jnp.asarray(x0)
    res = jacopt.least_squares(fun, x0, args=(jnp.asarray(T, x0.dtype),
                                              jnp.asarray(Y, x0.dtype)), **kwargs)
    return np.asarray(res.params)


def _delta(before):
    return {k: v for k, v in (_cache.stats - before).items() if not k.endswith("_s")}


def test_a_changed_function_dtype_option_or_version_misses(cache_dir, monkeypatch):
    before = _cache.stats.copy()
    np.testing.assert_allclose(_fit(), [2.0, 0.7], rtol=1e-10)
    assert _delta(before) == {"compiles": 1, "disk_writes": 1}
    # the same code in a new function object: the same program, served from memory without
    # tracing the solve (jacopt._shortcut)
    np.testing.assert_allclose(_fit(), [2.0, 0.7], rtol=1e-10)
    assert _delta(before) == {"compiles": 1, "disk_writes": 1, "memory_hits": 1,
                              "shortcut_hits": 1}
    changes = [
        lambda: _fit(lambda p, t, y: p[0] * jnp.exp(-p[1] * t) - y + 0.0 * p[1] ** 2),
        lambda: _fit(x0=np.array([1.0, 0.1], np.float32)),
        lambda: _fit(loss="soft_l1"),
    ]
    for count, change in enumerate(changes, start=2):
        change()
        assert _delta(before)["compiles"] == count
    assert len(_entries(cache_dir)) == 4
    monkeypatch.setattr(jacopt, "__version__", jacopt.__version__ + ".post1")
    monkeypatch.setattr(_cache, "_environment", [])
    monkeypatch.setattr(_cache, "_programs", {})
    _fit()
    assert _delta(before)["compiles"] == 5 and len(_entries(cache_dir)) == 5


def test_a_corrupt_or_truncated_entry_is_ignored_and_rebuilt(cache_dir, monkeypatch):
    expected = _fit()
    (name,) = _entries(cache_dir)
    path = cache_dir / name
    whole = path.read_bytes()
    head = len(_cache.MAGIC) + 32
    flipped = bytearray(whole)
    flipped[head + len(whole) // 3] ^= 0xFF
    payload = b"not a pickle"
    import hashlib
    forged = _cache.MAGIC + hashlib.sha256(payload).digest() + payload  # checksum right
    for bad in (whole[: len(whole) // 2], bytes(flipped), b"", forged):
        path.write_bytes(bad)
        monkeypatch.setattr(_cache, "_programs", {})
        before = _cache.stats.copy()
        np.testing.assert_array_equal(_fit(), expected)
        assert _delta(before) == {"bad_entries": 1, "compiles": 1, "disk_writes": 1}
        assert path.read_bytes() == whole or len(path.read_bytes()) > head
    monkeypatch.setattr(_cache, "_programs", {})
    before = _cache.stats.copy()
    np.testing.assert_array_equal(_fit(), expected)
    assert _delta(before) == {"disk_hits": 1, "prefetch_hits": 1,  # the rebuilt entry
                              "shortcut_hits": 1}


def test_jacopt_cache_0_switches_the_disk_cache_off(cache_dir, monkeypatch):
    monkeypatch.setenv("JACOPT_CACHE", "0")
    assert _cache.directory() is None
    before = _cache.stats.copy()
    _fit()
    assert _delta(before) == {"compiles": 1}
    assert not cache_dir.exists()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_directory_others_can_write_is_refused(tmp_path, monkeypatch, mode):
    folder = tmp_path / f"shared{mode:o}"
    folder.mkdir()
    os.chmod(folder, mode)
    monkeypatch.setenv("JACOPT_CACHE", "1")
    monkeypatch.setenv("JACOPT_CACHE_DIR", str(folder))
    with pytest.warns(jacopt.CacheWarning, match="group or others can write it"):
        assert _cache.directory() is None
    os.chmod(folder, 0o700)
    assert _cache.directory() == str(folder)


def test_a_directory_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("JACOPT_CACHE", "1")
    monkeypatch.setenv("JACOPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.warns(jacopt.CacheWarning, match="owned by another user"):
        assert _cache.directory() is None


def test_a_new_directory_is_private(tmp_path, monkeypatch):
    folder = tmp_path / "a" / "b"
    monkeypatch.setenv("JACOPT_CACHE", "1")
    monkeypatch.setenv("JACOPT_CACHE_DIR", str(folder))
    old = os.umask(0)
    try:
        assert _cache.directory() == str(folder)
    finally:
        os.umask(old)
    assert (os.stat(folder).st_mode & 0o777) == 0o700


def test_a_program_with_a_host_callback_is_never_cached(cache_dir):
    before = _cache.stats.copy()
    _fit(verbose=2)
    assert _delta(before) == {"compiles": 1, "uncacheable": 1}
    assert not cache_dir.exists() or not _entries(cache_dir)


def test_a_function_redefined_in_a_loop_reuses_the_compiled_program_untraced(cache_dir):
    # the notebook pattern: the solve is traced once; later calls trace only the function
    from jacopt._compile import RETRACE_LIMIT

    before = _cache.stats.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", jacopt.RecompileWarning)
        for scale in [1.0] * (RETRACE_LIMIT + 3):
            def fun(p, t, y):
                return scale * (p[0] * jnp.exp(-p[1] * t) - y)
            np.testing.assert_allclose(_fit(fun), [2.0, 0.7], rtol=1e-10)
    delta = _delta(before)
    assert delta["compiles"] == 1 and delta["memory_hits"] == RETRACE_LIMIT + 2
    assert delta["shortcut_hits"] == RETRACE_LIMIT + 2


@jax.custom_jvp
def _twice(x):
    return 2.0 * x


_twice.defjvp(lambda primals, tangents: (_twice(primals[0]), 2.0 * tangents[0]))


def test_a_function_redefined_in_a_loop_that_must_be_retraced_warns_once(cache_dir):
    # a custom derivative rule's code is not in the function's jaxpr: no shortcut, so the
    # solve is traced at every call and the warning names the fix
    from jacopt._compile import RETRACE_LIMIT

    before = _cache.stats.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for scale in [1.0] * (RETRACE_LIMIT + 3):
            def fun(p, t, y):
                return scale * (p[0] * jnp.exp(-_twice(p[1]) * t) - y)
            np.testing.assert_allclose(_fit(fun), [2.0, 0.35], rtol=1e-10)
    delta = _delta(before)
    assert delta["compiles"] == 1 and delta["memory_hits"] == RETRACE_LIMIT + 2
    assert "shortcut_hits" not in delta
    recompile = [w for w in caught if issubclass(w.category, jacopt.RecompileWarning)]
    assert len(recompile) == 1
    assert "args=" in str(recompile[0].message) and recompile[0].filename == __file__


def test_one_function_called_with_new_data_neither_retraces_nor_warns(cache_dir):
    def fun(p, t, y):
        return p[0] * jnp.exp(-p[1] * t) - y

    before = _cache.stats.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", jacopt.RecompileWarning)
        for k in range(8):
            jacopt.least_squares(fun, jnp.array([1.0, 0.1]),
                                 args=(jnp.asarray(T), jnp.asarray((1.0 + k) * Y)))
    assert _delta(before) == {"compiles": 1, "disk_writes": 1}


def test_disable_jit_runs_the_solve_eagerly_as_jax_jit_does(cache_dir):
    before = _cache.stats.copy()
    with jax.disable_jit():
        res = jacopt.least_squares(lambda p: p - 1.0, jnp.zeros(2))
    np.testing.assert_allclose(res.params, [1.0, 1.0])
    assert _delta(before) == {}


def test_the_least_recently_used_entries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(_cache, "MAX_ENTRIES", 5)
    for k in range(6):
        path = tmp_path / f"{k}{_cache._SUFFIX}"
        path.write_bytes(b"x")
        os.utime(path, (k, k))
    (tmp_path / f"2{_cache._SUFFIX}").touch()  # used last
    _cache._prune(str(tmp_path))
    assert _entries(tmp_path) == [f"{k}{_cache._SUFFIX}" for k in (2, 3, 4, 5)]


def test_a_function_closing_over_a_vmapped_value_is_batched_not_cached(cache_dir):
    before = _cache.stats.copy()
    batched = jax.vmap(lambda c: jacopt.minimize(lambda x: jnp.sum((x - c) ** 2),
                                                 jnp.zeros(2)).params)(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(batched, [[1.0, 1.0], [2.0, 2.0]], atol=1e-5)
    assert _delta(before) == {}


def test_a_link_is_judged_and_used_by_the_directory_it_points_to(tmp_path, monkeypatch):
    private, shared, link = tmp_path / "private", tmp_path / "shared", tmp_path / "link"
    private.mkdir(mode=0o700)
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("JACOPT_CACHE", "1")
    monkeypatch.setenv("JACOPT_CACHE_DIR", str(link))
    link.symlink_to(shared)
    with pytest.warns(jacopt.CacheWarning, match="group or others"):
        assert _cache.directory() is None
    link.unlink()
    link.symlink_to(private)
    assert _cache.directory() == os.path.realpath(private)


def test_the_same_code_closing_over_other_data_is_another_program(cache_dir, monkeypatch):
    # Loading a compiled program runs it: closed-over data (small, or large enough that JAX
    # could hoist it out of the program) must be part of the key, never served from another's.
    before = _cache.stats.copy()
    for n in (3, 20000):
        for seed in range(2):
            data = np.random.default_rng(seed).normal(size=n)

            def mean_residual(p, d=jnp.asarray(data)):
                return p[0] - d

            monkeypatch.setattr(_cache, "_programs", {})  # as a new process: only the disk
            res = jacopt.least_squares(lambda p: mean_residual(p), jnp.zeros(1))
            np.testing.assert_allclose(res.params, [data.mean()], rtol=1e-10)
    # cached, each its own key; the prefetch hint (same code and types) points at the other
    # seed's entry, which is loaded but never served
    assert _delta(before) == {"compiles": 4, "disk_writes": 4}


def test_direct_calls_specialise_on_dtype_and_weak_type_as_jax_jit_does(cache_dir):
    ls = sys.modules["jacopt.least_squares"]

    def shift(p, c):
        return p - c

    sizes = [ls._solve.cache_size()]
    for c in (jnp.asarray(1.5), jnp.asarray(1.5, jnp.float64), jnp.asarray(1.5, jnp.float32),
              np.float64(1.5), jnp.asarray(1.5)):
        res = jacopt.least_squares(shift, jnp.zeros(2), args=(c,))
        np.testing.assert_allclose(res.params, [1.5, 1.5])
        sizes.append(ls._solve.cache_size())
    # weak float64, float64, float32 and a NumPy scalar are four signatures; the weak one again
    # is served from the first executable
    assert np.diff(sizes).tolist() == [1, 1, 1, 1, 0]


def test_temporary_files_left_by_a_writer_that_died_are_removed(tmp_path):
    stale, fresh = tmp_path / f".tmp-a{_cache._SUFFIX}", tmp_path / f".tmp-b{_cache._SUFFIX}"
    for path in (stale, fresh):
        path.write_bytes(b"half an entry")
    old = os.path.getmtime(fresh) - 2 * _cache._STALE_TMP_S
    os.utime(stale, (old, old))
    _cache._prune(str(tmp_path))
    assert not stale.exists() and fresh.exists()  # a write in progress is left alone


_CURVE_FIT = r"""
import json, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jax import monitoring
import jacopt
compiles = []
monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(event)
    if event.endswith("backend_compile_duration") else None)
x = np.linspace(0.0, 4.0, 50)
y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.cos(5.0 * x)
fit = jacopt.curve_fit(lambda x, p: p[0] * jnp.exp(-p[1] * x) + p[2], x, y, [1.0, 1.0, 0.0],
                       sigma=0.1 + 0.05 * x, bounds=([0.0, 0.0, -1.0], [10.0, 5.0, 2.0]))
print(json.dumps({"compiles": len(compiles), "popt": np.asarray(fit.popt).tolist(),
                  "dof": int(fit.dof)}))
"""


def _two_processes(script, folder):
    """What ``script`` prints last (JSON) in two fresh processes run one after the other on
    the cache directory ``folder``."""
    env = {**os.environ, "JACOPT_CACHE": "1", "JACOPT_CACHE_DIR": str(folder)}
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def test_a_second_process_fitting_numpy_data_compiles_nothing(tmp_path):
    # not the solve (loaded from the cache), nor small eager conversions of the NumPy data,
    # which no cache serves and which cost a compile each in every new process
    first, second = _two_processes(_CURVE_FIT, tmp_path)
    assert first["compiles"] >= 2 and second["compiles"] == 0
    assert second["popt"] == first["popt"] and second["dof"] == 47
    import scipy.optimize

    x = np.linspace(0.0, 4.0, 50)
    popt, _ = scipy.optimize.curve_fit(
        lambda x, a, b, c: a * np.exp(-b * x) + c, x,
        2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.cos(5.0 * x), [1.0, 1.0, 0.0],
        sigma=0.1 + 0.05 * x, bounds=([0.0, 0.0, -1.0], [10.0, 5.0, 2.0]))
    np.testing.assert_allclose(second["popt"], popt, rtol=1e-6)


_QR_FIT = r"""
import json, sys, jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jax import monitoring
import jacopt
from jacopt import _cache
events = []
monitoring.register_event_duration_secs_listener(lambda event, secs, **kw: events.append(event))
t = np.linspace(0.0, 4.0, 12)
res = jacopt.least_squares(lambda p, t, y: p[0] * jnp.exp(-p[1] * t) - y, np.array([1.0, 0.1]),
                           args=(t, 2.0 * np.exp(-0.7 * t)), solver="lm")  # NumPy: no eager op
jax.block_until_ready(res.params)
out = {"params": np.asarray(res.params).tolist(), "lapack": "lapack_s" in _cache.stats,
       "lowerings": sum(e.endswith("jaxpr_to_mlir_module_duration") for e in events),
       "compiles": sum(e.endswith("backend_compile_duration") for e in events),
       "disk_hits": _cache.stats["disk_hits"], "scipy_linalg": "scipy.linalg" in sys.modules}
# SciPy's LAPACK modules still import as usual afterwards, and agree with jaxlib's QR
import scipy.linalg.cython_lapack
a = np.vander(np.linspace(1.0, 2.0, 6), 4)
out["capi"] = len(scipy.linalg.cython_lapack.__pyx_capi__) > 0
out["qr_gap"] = float(np.max(np.abs(np.abs(scipy.linalg.qr(a, mode="economic")[1])
                                    - np.abs(np.asarray(jnp.linalg.qr(a)[1])))))
print(json.dumps(out))
"""


def test_a_second_process_runs_a_qr_solve_without_lowering_it_or_importing_scipy_linalg(
        tmp_path):
    # the key is the traced program, so a hit skips lowering; the loaded executable's LAPACK
    # kernels (the LM step's QR) are made ready without SciPy's linalg package
    first, second = _two_processes(_QR_FIT, tmp_path)
    assert first["lowerings"] >= 1 and first["compiles"] >= 1 and first["disk_hits"] == 0
    assert second["lowerings"] == 0 and second["compiles"] == 0 and second["disk_hits"] == 1
    assert first["lapack"] and second["lapack"]
    assert not first["scipy_linalg"] and not second["scipy_linalg"]
    np.testing.assert_allclose(second["params"], [2.0, 0.7], rtol=1e-10)
    assert second["params"] == first["params"]
    assert second["capi"] and second["qr_gap"] < 1e-12


def test_closed_over_numbers_that_differ_are_different_programs(cache_dir, monkeypatch):
    # a Python float closed over is a literal in the traced program: its value is in the key
    before = _cache.stats.copy()
    for c in (1.5, 2.5, 1.5 + 2.0 ** -40):
        monkeypatch.setattr(_cache, "_programs", {})  # as a new process: only the disk
        res = jacopt.least_squares(lambda p: p - c, jnp.zeros(2))
        np.testing.assert_array_equal(res.params, [c, c])
    assert _delta(before) == {"compiles": 3, "disk_writes": 3}


def _key(fun, *args):
    return _cache.traced_key(jax.jit(fun).trace(*args), {})


def test_arrays_are_keyed_by_their_content_not_their_printed_summary():
    # NumPy prints arrays this long with "...": one element in the middle must still count
    base = np.linspace(0.0, 1.0, 5000)
    other = base.copy()
    other[2500] += 1e-12
    x = jnp.zeros(5000)
    keys = [_key(lambda x, c=jnp.asarray(c): x + c, x) for c in (base, other, base.copy())]
    assert None not in keys
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_a_thread_local_option_is_part_of_the_key():
    a = jnp.ones((3, 3))
    plain = _key(lambda a: a @ a, a)
    with jax.default_matmul_precision("highest"):
        highest = _key(lambda a: a @ a, a)
    assert None not in (plain, highest) and plain != highest


def _shift_primitive(amount):
    """A primitive named like another but lowered differently (as a user's own would be)."""
    from jax.extend.core import Primitive
    from jax.interpreters import ad, mlir

    prim = Primitive("jacopt_test_shift")
    prim.def_impl(lambda x: x + amount)
    prim.def_abstract_eval(lambda x: x)
    ad.defjvp(prim, lambda g, x: g)
    mlir.register_lowering(prim, mlir.lower_fun(lambda x: x + amount, multiple_results=False))
    return prim


def test_a_primitive_defined_outside_jax_is_keyed_by_its_lowering(cache_dir, monkeypatch):
    # its lowering rule is not fixed by jax's version: the traced text alone could be stale
    for amount in (1.0, 2.0):
        prim = _shift_primitive(amount)
        assert _key(lambda p: prim.bind(p), jnp.zeros(2)) is None
        monkeypatch.setattr(_cache, "_programs", {})
        res = jacopt.least_squares(lambda p: prim.bind(p) - 3.0, jnp.zeros(2))
        np.testing.assert_allclose(res.params, [3.0 - amount] * 2, rtol=1e-12)


def test_clear_compiled_drops_the_programs_held_in_memory(monkeypatch):
    # with the disk cache off, a call after clear_compiled compiles again, and agrees
    monkeypatch.setenv("JACOPT_CACHE", "0")
    from jacopt._compile import clear_compiled

    def residual(b, t):
        return b[0] * jnp.exp(-b[1] * t) - jnp.exp(-t)

    t = jnp.linspace(0.0, 3.0, 9)
    first = jacopt.least_squares(residual, jnp.array([2.0, 0.5]), args=(t,))
    before = _cache.stats["compiles"]
    jacopt.least_squares(residual, jnp.array([2.0, 0.5]), args=(t,))
    assert _cache.stats["compiles"] == before  # held in memory
    clear_compiled()
    again = jacopt.least_squares(residual, jnp.array([2.0, 0.5]), args=(t,))
    assert _cache.stats["compiles"] == before + 1
    np.testing.assert_array_equal(first.params, again.params)


def test_lapack_is_readied_once_and_a_second_thread_waits_for_it(monkeypatch):
    # a thread that finds LAPACK being readied by another must not go on to use it before
    # it is ready (jaxlib imports SciPy's modules to ready it)
    import threading
    import time

    monkeypatch.setattr(_cache, "_lapack_done", [])
    events = []

    def slow_initialize():
        events.append("start")
        time.sleep(0.2)
        events.append("ready")

    monkeypatch.setattr(_cache, "_initialize_lapack", slow_initialize)

    def use():
        _cache.lapack_ready()
        events.append("used")

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert events == ["start", "ready", "used", "used", "used"]
