"""``least_squares(..., jac_sparsity=...)``: the sparse Levenberg-Marquardt path
(:mod:`jacopt.solvers.sparse_lm`) against the dense LM on problems small enough for both, and
its input checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

import jacopt
from jacopt import Status
from jacopt.problems.brusselator import (
    broyden_tridiagonal_residual,
    broyden_tridiagonal_start,
    brusselator_residual,
    brusselator_start,
)
from jacopt.solvers.sparse_lm import SparseLevenbergMarquardt, plan_for

jax.config.update("jax_enable_x64", True)

# a multi-curve fit: G decays y = a_g exp(-b_g t) + c with per-curve (a_g, b_g) and a shared c
G, K = 6, 12
T = np.linspace(0.0, 3.0, K)
_rng = np.random.default_rng(0)
A_TRUE, B_TRUE, C_TRUE = 1.0 + _rng.random(G), 0.5 + _rng.random(G), 0.3
Y = (A_TRUE[:, None] * np.exp(-B_TRUE[:, None] * T) + C_TRUE
     + 0.01 * _rng.standard_normal((G, K)))
Y_OUT = Y.copy()
Y_OUT[::2, 3] += 1.0  # outliers, one in every other curve
START = {"a": np.ones(G), "b": np.ones(G), "c": np.zeros(())}


def curves(p, t, y):
    return p["a"][:, None] * jnp.exp(-p["b"][:, None] * t) + p["c"] - y


def broyden(x):
    return broyden_tridiagonal_residual(x)


def bruss(x):
    return brusselator_residual(x)


def _close(sparse, dense, rtol=1e-9, atol=1e-12):
    np.testing.assert_allclose(sparse.cost, dense.cost, rtol=1e-8, atol=1e-20)
    for a, b in zip(jax.tree_util.tree_leaves(sparse.params),
                    jax.tree_util.tree_leaves(dense.params)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_broyden_tridiagonal_matches_dense():
    x0 = broyden_tridiagonal_start(50)
    res = jacopt.least_squares(broyden, x0, jac_sparsity="auto")
    assert res.success and res.jac is None and res.cost < 1e-20
    _close(res, jacopt.least_squares(broyden, x0), atol=1e-10)
    np.testing.assert_allclose(broyden(res.params), 0.0, atol=1e-12)


def test_brusselator_matches_dense():
    x0 = brusselator_start(4)
    res = jacopt.least_squares(bruss, x0, jac_sparsity="auto")
    assert res.success and res.cost < 1e-20
    _close(res, jacopt.least_squares(bruss, x0), atol=1e-9)


def test_grouped_curve_fit_matches_dense_and_scipy():
    res = jacopt.least_squares(curves, START, args=(T, Y), jac_sparsity="auto")
    dense = jacopt.least_squares(curves, START, args=(T, Y))
    assert res.success
    _close(res, dense)
    # the detected pattern: each curve's residuals see its own (a_g, b_g) and the shared c
    plan = plan_for(curves, START, (T, Y), "auto")
    expected = np.zeros((G * K, 2 * G + 1), bool)
    for g in range(G):
        expected[g * K:(g + 1) * K, [g, G + g, 2 * G]] = True
    np.testing.assert_array_equal(plan.plan.pattern.toarray(), expected)


@pytest.mark.parametrize("form", ["numpy", "scipy", "bcoo"])
def test_user_pattern_forms(form):
    n = 30
    tri = sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1], format="csr")
    pattern = {"numpy": tri.toarray().astype(bool), "scipy": tri,
               "bcoo": jsparse.BCOO.fromdense(jnp.asarray(tri.toarray()))}[form]
    x0 = broyden_tridiagonal_start(n)
    res = jacopt.least_squares(broyden, x0, jac_sparsity=pattern)
    _close(res, jacopt.least_squares(broyden, x0), atol=1e-10)


def test_bounds_match_dense():
    lower = {"a": 0.0, "b": 1.2, "c": -1.0}  # b's bound is active at the solution
    upper = {"a": 10.0, "b": 10.0, "c": 0.25}
    kw = dict(args=(T, Y), bounds=(lower, upper))
    start = {"a": np.ones(G), "b": np.full(G, 1.5), "c": np.zeros(())}
    res = jacopt.least_squares(curves, start, jac_sparsity="auto", **kw)
    dense = jacopt.least_squares(curves, start, **kw)
    assert res.success
    assert np.any(np.asarray(res.params["b"]) == 1.2) and float(res.params["c"]) == 0.25
    _close(res, dense, rtol=1e-8, atol=1e-10)


def test_robust_loss_matches_dense():
    kw = dict(args=(T, Y_OUT), loss="soft_l1", f_scale=0.05)
    res = jacopt.least_squares(curves, START, jac_sparsity="auto", **kw)
    dense = jacopt.least_squares(curves, START, **kw)
    assert res.success
    _close(res, dense, rtol=1e-8, atol=1e-10)


def test_jit_and_vmap():
    x0 = broyden_tridiagonal_start(20)
    direct = jacopt.least_squares(broyden, x0, jac_sparsity="auto")
    jitted = jax.jit(lambda x: jacopt.least_squares(broyden, x, jac_sparsity="auto").params)(x0)
    np.testing.assert_allclose(jitted, direct.params, rtol=1e-12, atol=1e-14)

    ys = jnp.stack([jnp.asarray(Y), jnp.asarray(Y) + 0.1])
    batch = jax.vmap(lambda y: jacopt.least_squares(curves, START, args=(T, y),
                                                    jac_sparsity="auto"))(ys)
    for i in range(2):
        one = jacopt.least_squares(curves, START, args=(T, ys[i]))
        assert bool(batch.success[i])
        np.testing.assert_allclose(batch.params["a"][i], one.params["a"], rtol=1e-8)
        np.testing.assert_allclose(batch.cost[i], one.cost, rtol=1e-8)


def test_solver_name_and_instance():
    x0 = broyden_tridiagonal_start(20)
    by_name = jacopt.least_squares(broyden, x0, solver="lm-sparse")  # pattern detected
    by_instance = jacopt.least_squares(broyden, x0, jac_sparsity="auto",
                                       solver=SparseLevenbergMarquardt(forcing=1e-12))
    dense = jacopt.least_squares(broyden, x0)
    _close(by_name, dense, atol=1e-10)
    _close(by_instance, dense, atol=1e-10)


def test_bad_patterns():
    x0 = broyden_tridiagonal_start(10)
    with pytest.raises(ValueError, match="jac_sparsity has shape"):
        jacopt.least_squares(broyden, x0, jac_sparsity=np.ones((10, 9), bool))
    with pytest.raises(ValueError, match="jac_sparsity"):
        jacopt.least_squares(broyden, x0, jac_sparsity="yes")
    # the super-diagonal is missing: the check at x0 finds it
    missing = sp.diags([np.ones(9), np.ones(10)], [-1, 0], format="csr")
    with pytest.raises(ValueError, match="jac_sparsity: the sparsity pattern misses"):
        jacopt.least_squares(broyden, x0, jac_sparsity=missing)


def test_dense_solver_with_pattern_is_an_error():
    x0 = broyden_tridiagonal_start(10)
    for solver in ("gn", "dogleg", "lm-matrix-free"):
        with pytest.raises(ValueError, match="jac_sparsity") as info:
            jacopt.least_squares(broyden, x0, solver=solver, jac_sparsity="auto")
        assert "'lm-sparse'" in str(info.value) and "'lm-schur'" in str(info.value)
    with pytest.raises(ValueError, match="jac"):
        jacopt.least_squares(broyden, x0, jac_sparsity="auto",
                             jac=lambda x: jax.jacfwd(broyden)(x))


def test_statuses():
    x0 = broyden_tridiagonal_start(10)
    res = jacopt.least_squares(broyden, x0, jac_sparsity="auto", max_steps=0)
    assert res.status == Status.MAX_STEPS
    np.testing.assert_array_equal(res.params, x0)

    def line(p, t, y):  # a linear fit started at its exact minimiser
        return p[0] + p[1] * t - y

    t = jnp.linspace(0.0, 1.0, 8)
    y = 1.0 + 2.0 * t
    res = jacopt.least_squares(line, jnp.array([1.0, 2.0]), args=(t, y), jac_sparsity="auto")
    assert res.status == Status.GTOL and res.num_steps == 0 and res.cost == 0.0

    def nan_start(x):
        return jnp.where(x[0] < -0.5, jnp.nan, 1.0) * broyden(x)

    res = jacopt.least_squares(nan_start, x0, jac_sparsity="auto")
    assert res.status == Status.NONFINITE and not res.success


def test_fit_benchmark_records():
    from jacopt.benchmarks import sparse as bench
    from jacopt.benchmarks.runner import REQUIRED_FIELDS

    ours, exact, tight, two_point = bench.sparse_fit_case(300)
    for rec in (ours, exact, tight, two_point):
        assert set(REQUIRED_FIELDS) <= set(rec) and rec["final_loss"] < 1e-12
        assert rec["run_s"] > 0
    assert ours["final_loss"] < 1e-24 and tight["final_loss"] < 1e-24
    assert ours["colors"] == 3 and ours["nnz"] == 3 * 300 - 2 and ours["status"] == "XTOL"
    assert exact["speedup"] > 0 and "n=300" in bench.format_fit_table([ours, exact])
