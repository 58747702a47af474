"""A call seen before skips tracing the solve (jacopt._shortcut): what it serves is the program
the ordinary path would compile, and whatever could make that untrue (other data, other code,
other options, an unreadable record) takes the ordinary path. Evidence is counted
(``jacopt._cache.stats``), never timed."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt
from jacopt import _cache, _shortcut

pytestmark = pytest.mark.filterwarnings("ignore::jacopt.RecompileWarning")
T = np.linspace(0.0, 4.0, 12)


def _delta(before):
    return {k: v for k, v in (_cache.stats - before).items() if not k.endswith("_s")}


def _closure_fit(a, b, **kwargs):
    y = a * np.exp(-b * T)  # data closed over: constants of the traced function

    def fun(p):
        return p[0] * jnp.exp(-p[1] * T) - y

    return np.asarray(jacopt.least_squares(fun, jnp.array([1.0, 0.1]), **kwargs).params)


def test_a_closure_over_other_data_is_another_program(cache_dir, new_process):
    before = _cache.stats.copy()
    np.testing.assert_allclose(_closure_fit(2.0, 0.7), [2.0, 0.7], rtol=1e-10)
    np.testing.assert_allclose(_closure_fit(2.0, 0.7), [2.0, 0.7], rtol=1e-10)
    assert _delta(before) == {"compiles": 1, "disk_writes": 1, "memory_hits": 1,
                              "shortcut_hits": 1}
    new_process()
    np.testing.assert_allclose(_closure_fit(3.0, 0.2), [3.0, 0.2], rtol=1e-10)
    assert _delta(before)["compiles"] == 2 and _delta(before)["shortcut_hits"] == 1
    new_process()
    np.testing.assert_allclose(_closure_fit(2.0, 0.7), [2.0, 0.7], rtol=1e-10)
    assert _delta(before) == {"compiles": 2, "disk_writes": 2, "memory_hits": 1,
                              "shortcut_hits": 2, "disk_hits": 1}


def test_other_options_and_other_jacopt_code_are_other_configurations(cache_dir, monkeypatch):
    _closure_fit(2.0, 0.7)
    before = _cache.stats.copy()
    for kwargs in ({"solver": jacopt.solvers.LevenbergMarquardt(xtol=1e-10)},
                   {"loss": "cauchy"}, {"max_steps": 7}, {"history": True}):
        _closure_fit(2.0, 0.7, **kwargs)
    assert _delta(before)["compiles"] == 4 and "shortcut_hits" not in _delta(before)
    # the same call with jacopt's source changed: its programs are traced again
    monkeypatch.setattr(_shortcut, "_source_digest", lambda: b"other code")
    before = _cache.stats.copy()
    _closure_fit(2.0, 0.7)
    delta = _delta(before)
    assert "shortcut_hits" not in delta and delta == {"memory_hits": 1}


def test_pytrees_minimize_and_curve_fit_are_served_with_the_ordinary_results(cache_dir):
    def fit_tree(a):
        def fun(p):
            return {"r": p["a"] * jnp.exp(-p["b"] * T) - a * np.exp(-0.5 * T),
                    "prior": jnp.stack([p["b"] - 0.5])}
        return jacopt.least_squares(fun, {"a": jnp.array(1.0), "b": jnp.array(0.1)})

    def minimise(c):
        return jacopt.minimize(lambda x: jnp.sum((x - c) ** 2) + jnp.sum(x**4), jnp.ones(3))

    def curve(shift):
        return jacopt.curve_fit(lambda x, q: q[0] * jnp.exp(-q[1] * x) + shift, T,
                                2.0 * np.exp(-0.7 * T) + shift, jnp.array([1.0, 0.1]))

    before = _cache.stats.copy()
    first = [fit_tree(2.0), minimise(1.0), curve(0.5)]
    assert "shortcut_hits" not in _delta(before)
    compiles = _cache.stats["compiles"]
    again = [fit_tree(2.0), minimise(1.0), curve(0.5)]
    assert _delta(before)["shortcut_hits"] >= 3 and _cache.stats["compiles"] == compiles
    np.testing.assert_array_equal(again[0].params["a"], first[0].params["a"])
    np.testing.assert_array_equal(again[1].params, first[1].params)
    np.testing.assert_array_equal(again[2].pcov, first[2].pcov)
    np.testing.assert_allclose(again[0].params["a"], 2.0, rtol=1e-10)
    # minimise sum (x - 1)^2 + x^4 per component: 2 (x - 1) + 4 x^3 = 0
    root = scipy.optimize.brentq(lambda x: 2 * (x - 1) + 4 * x**3, 0.0, 1.0)
    np.testing.assert_allclose(again[1].params, [root] * 3, rtol=1e-6)
    # new data: another program, fitted to its own data
    compiles = _cache.stats["compiles"]
    np.testing.assert_allclose(curve(1.5).params, [2.0, 0.7], rtol=1e-8)
    assert _cache.stats["compiles"] > compiles


@jax.custom_vjp
def _square(x):
    return x * x


_square.defvjp(lambda x: (x * x, x), lambda x, g: (2.0 * x * g,))


class _Opaque:
    """An object jacopt does not know how to write out."""


def test_what_cannot_be_written_out_takes_the_ordinary_path(cache_dir):
    # a custom derivative rule (its code is not in the jaxpr) and a loss of the user's own
    before = _cache.stats.copy()
    for _ in range(2):
        res = jacopt.least_squares(lambda p: _square(p) - 4.0, jnp.array([1.0]))
        np.testing.assert_allclose(res.params, [2.0], rtol=1e-10)
        rho = lambda z: (z, jnp.ones_like(z), jnp.zeros_like(z))  # noqa: E731
        res = jacopt.least_squares(lambda p: p - 3.0, jnp.array([1.0]), loss=rho)
        np.testing.assert_allclose(res.params, [3.0], rtol=1e-10)
    assert "shortcut_hits" not in _delta(before)
    key = (jax.tree_util.tree_structure(((), {})), (), (), ())
    assert _shortcut.plan("entry", key, {"solver": _Opaque()}, {}) is None
    assert _shortcut.plan("entry", key, {"loss": jacopt.losses.get_loss(rho)}, {}) is None
    with pytest.raises(_shortcut._Undescribable):
        _shortcut._describe(np.array([None]))
    described = _shortcut._describe(np.arange(3.0))
    assert described != _shortcut._describe(np.arange(3.0) + 2.0**-40)


def test_unreadable_records_are_ignored_and_rewritten(cache_dir, new_process):
    expected = _closure_fit(2.0, 0.7)
    records = [p for p in os.listdir(cache_dir) if p.endswith((".sig", ".call"))]
    assert sorted(os.path.splitext(p)[1] for p in records) == [".call", ".sig"]
    for name in records:
        path = cache_dir / name
        whole = path.read_bytes()
        for bad in (whole[: len(whole) // 2], whole[:-1] + bytes([whole[-1] ^ 0xFF]), b""):
            path.write_bytes(bad)
            new_process()
            before = _cache.stats.copy()
            np.testing.assert_array_equal(_closure_fit(2.0, 0.7), expected)
            delta = _delta(before)
            assert "shortcut_hits" not in delta and delta["disk_hits"] == 1
            assert path.read_bytes() == whole  # the record was written again
    new_process()
    before = _cache.stats.copy()
    np.testing.assert_array_equal(_closure_fit(2.0, 0.7), expected)
    assert _delta(before)["shortcut_hits"] == 1


def test_pytree_classes_take_the_ordinary_path(cache_dir):
    # a class redefined under the same name (a notebook cell run again), or one whose printed
    # form hides its data, must not be matched by its name: only plain containers are keyed
    import collections

    before = _cache.stats.copy()
    for fields, expected in (("a b", [2.0, 0.7]), ("b a", [0.7, 2.0])):
        P = collections.namedtuple("P", fields)

        def fun(p):
            return p.a * jnp.exp(-p.b * T) - 2.0 * np.exp(-0.7 * T)

        start = P(*(jnp.array(1.0), jnp.array(0.1))[:: 1 if fields == "a b" else -1])
        res = jacopt.least_squares(fun, start)
        assert type(res.params) is P
        np.testing.assert_allclose(list(res.params), expected, rtol=1e-10)
    assert "shortcut_hits" not in _delta(before)
    key = (jax.tree_util.tree_structure(((P(1, 2),), {})), (), (), ())
    assert _shortcut.plan("entry", key, {}, {}) is None


def test_a_jacopt_function_patched_at_run_time_is_another_configuration(cache_dir,
                                                                         monkeypatch):
    # a process that replaces one of jacopt's functions gets its own programs: each spy below
    # sees the solve traced through it
    import jacopt.solvers.levenberg_marquardt as lm

    seen, original = [], lm.is_dual
    for label in ("first", "second"):
        def spy(*args, label=label):
            seen.append(label)
            return original(*args)
        monkeypatch.setattr(lm, "is_dual", spy)
        np.testing.assert_allclose(_closure_fit(2.0, 0.7), [2.0, 0.7], rtol=1e-10)
    assert "first" in seen and "second" in seen


def test_a_patched_constant_of_jacopt_is_another_configuration(monkeypatch):
    # a module-level dataclass (LM's radius rule) is written out field by field, so a process
    # that patches one field does not get the programs compiled with the original
    from jacopt.solvers import trust_region as tr

    before = _shortcut._module_state()
    monkeypatch.setattr(tr, "MINPACK", dataclasses.replace(tr.MINPACK, grow_factor=3.0))
    assert _shortcut._module_state() != before
    monkeypatch.undo()
    assert _shortcut._module_state() == before
