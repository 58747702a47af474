"""MLP problems: parameter count, the seed network's 20 x 47 Jacobian against finite
differences, residual forms against objectives, the GGN against explicit sums and the exact
Hessian, training by GGN and by Levenberg-Marquardt, reproducible seeds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.flatten_util import ravel_pytree

import jacopt
from jacopt.problems import mlp as M


@pytest.fixture(scope="module")
def seed_mlp():
    return M.get("seed-mlp")


def _numpy_forward(params, x):
    h = np.asarray(x)
    for i, (w, b) in enumerate(params):
        h = h @ np.asarray(w).T + np.asarray(b)
        if i < len(params) - 1:
            h = np.tanh(h)
    return h


def _central_differences(f, x, step=1e-6):
    """(m, n) Jacobian of f: (n,) -> (m,) by central differences, one jitted f."""
    f = jax.jit(f)
    cols = []
    for i in range(x.size):
        e = jnp.zeros_like(x).at[i].set(step)
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * step))
    return np.stack(cols, axis=1)


def test_seed_network_has_47_parameters(seed_mlp):
    assert M.num_params([6, 4, 3, 1]) == 47
    flat, _ = ravel_pytree(seed_mlp.params0)
    assert flat.shape == (47,)
    assert [(w.shape, b.shape) for w, b in seed_mlp.params0] == [
        ((4, 6), (4,)), ((3, 4), (3,)), ((1, 3), (1,))]
    x, y = seed_mlp.args
    assert x.shape == (20, 6) and y.shape == (20, 1)


def test_forward_matches_numpy(seed_mlp):
    x, _ = seed_mlp.args
    np.testing.assert_allclose(M.mlp(seed_mlp.params0, x), _numpy_forward(seed_mlp.params0, x),
                               rtol=1e-13)


def test_seed_mlp_jacobian_is_20_by_47_and_matches_finite_differences(seed_mlp):
    x, _ = seed_mlp.args
    jac = jax.jit(M.weight_jacobian)(seed_mlp.params0, x)
    assert jac.shape == (20, 47)
    flat, unravel = ravel_pytree(seed_mlp.params0)
    fd = _central_differences(lambda v: M.mlp(unravel(v), x).reshape(-1), flat)
    np.testing.assert_allclose(jac, fd, atol=1e-8)
    # column order is ravel_pytree's: column 0 is W0[0, 0], column 24 is b0[0]
    index = jacopt.TreeIndex(seed_mlp.params0)
    assert index.index((0, 0, 0, 0)) == 0 and index.index((0, 1, 0)) == 24


def test_residual_cost_objective_and_loss_agree(seed_mlp):
    r = seed_mlp.residual(seed_mlp.params0, *seed_mlp.args)
    assert r.shape == (20,)
    cost = 0.5 * float(jnp.sum(r**2))
    mse = float(seed_mlp.objective(seed_mlp.params0, *seed_mlp.args))
    np.testing.assert_allclose(mse, np.mean(np.asarray(r) ** 2), rtol=1e-14)
    np.testing.assert_allclose(seed_mlp.loss_from_cost(cost), mse, rtol=1e-14)
    np.testing.assert_allclose(seed_mlp.loss(seed_mlp.params0), mse, rtol=1e-14)
    assert mse > 1e-3


def test_seed_mlp_is_realisable(seed_mlp):
    assert seed_mlp.optimal_value == 0.0
    np.testing.assert_array_equal(seed_mlp.residual(seed_mlp.teacher, *seed_mlp.args), 0.0)


def test_loss_functions_are_cached_per_activation():
    assert M.residual_fn("tanh") is M.residual_fn("tanh")
    assert M.mse_fn("relu") is not M.mse_fn("tanh")
    with pytest.raises(ValueError, match="tanh"):
        M.residual_fn("swish")
    with pytest.raises(ValueError, match="sizes"):
        M.init_mlp(0, [3])
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        M.mlp(M.init_mlp(0, [6, 1]), jnp.ones((2, 5)))


def test_other_activation_and_float32():
    params = M.init_mlp(5, [3, 5, 2], dtype=jnp.float32)
    x = jnp.ones((4, 3), jnp.float32)
    out = M.mlp(params, x, "softplus")
    assert out.dtype == jnp.float32 and out.shape == (4, 2)
    w0, b0 = params[0]
    hidden = jax.nn.softplus(x @ w0.T + b0)
    np.testing.assert_allclose(out, hidden @ params[1][0].T + params[1][1], rtol=1e-6)
    assert M.weight_jacobian(params, x, "softplus").dtype == jnp.float32


# --------------------------------------------------------------------------------------------
# Cross-entropy and generalised Gauss-Newton
# --------------------------------------------------------------------------------------------


def _small_classification(sizes=(2, 5, 3), n=7, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, sizes[0])))
    labels = jnp.asarray(np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)])
    return M.init_mlp(seed, sizes), x, labels


def test_cross_entropy_matches_numpy():
    params, x, labels = _small_classification()
    logits = _numpy_forward(params, x)
    expected = -np.mean(np.sum(np.asarray(labels) * scipy.special.log_softmax(logits, 1), 1))
    np.testing.assert_allclose(M.cross_entropy_fn()(params, x, labels), expected, rtol=1e-14)


def test_ggn_is_the_explicit_sum_over_samples():
    params, x, labels = _small_classification()
    ggn = jax.jit(M.ggn_matrix)(params, x, labels)
    jac = np.asarray(M.weight_jacobian(params, x)).reshape(7, 3, -1)
    p = scipy.special.softmax(_numpy_forward(params, x), axis=1)
    expected = sum(jac[i].T @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ jac[i]
                   for i in range(7)) / 7
    np.testing.assert_allclose(ggn, expected, atol=1e-14)
    assert np.linalg.eigvalsh(np.asarray(ggn)).min() > -1e-12


@pytest.mark.parametrize("rows", [5, 12])
def test_damped_ggn_solve_by_push_through_or_directly(rows):
    rng = np.random.default_rng(rows)
    factor, grad = jnp.asarray(rng.normal(size=(rows, 8))), jnp.asarray(rng.normal(size=8))
    gram = factor @ factor.T if rows < 8 else factor.T @ factor
    expected = np.linalg.solve(np.asarray(factor.T @ factor) + 0.3 * np.eye(8), grad)
    np.testing.assert_allclose(M._damped_ggn_solve(factor, gram, grad, 0.3), expected,
                               rtol=1e-10)


def test_ggn_equals_hessian_for_a_linear_model():
    # With no hidden layer the logits are linear in the parameters: GGN == Hessian exactly.
    params, x, labels = _small_classification(sizes=(4, 3))
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jacopt.hessian(lambda v: M.cross_entropy_fn()(unravel(v), x, labels)))
    np.testing.assert_allclose(jax.jit(M.ggn_matrix)(params, x, labels), hessian(flat),
                               atol=1e-13)


def _check_ggn_training(params0, x, labels, steps, target):
    params, losses = M.train_ggn(params0, x, labels, steps=steps)
    losses = np.asarray(losses)
    assert losses.shape == (steps + 1,)
    assert np.all(np.diff(losses) <= 1e-15)  # rejected steps keep the loss, accepted lower it
    assert losses[-1] < target
    np.testing.assert_allclose(M.cross_entropy_fn()(params, x, labels), losses[-1], rtol=1e-12)
    accuracy = np.mean(np.argmax(M.mlp(params, x), 1) == np.argmax(labels, 1))
    assert accuracy == 1.0


def test_ggn_training_separates_a_small_spiral():
    x, labels = M.two_spirals(num_per_class=20, turns=1.0)
    _check_ggn_training(M.init_mlp(0, [2, 8, 2]), jnp.asarray(3 * x), jnp.asarray(labels),
                        steps=40, target=1e-3)


@pytest.mark.slow
def test_ggn_training_reaches_two_spirals_target():
    problem = M.get("two-spirals")
    _check_ggn_training(problem.params0, *problem.args, steps=150, target=problem.target_loss)


# --------------------------------------------------------------------------------------------
# Solvers on the problems
# --------------------------------------------------------------------------------------------


def test_levenberg_marquardt_drives_seed_mlp_below_1e_10(seed_mlp):
    try:
        result = seed_mlp.solve()
    except NotImplementedError:
        pytest.skip("jacopt.least_squares is not written yet")
    assert seed_mlp.loss(result.params) < 1e-10
    np.testing.assert_allclose(seed_mlp.loss_from_cost(result.cost),
                               seed_mlp.loss(result.params), rtol=1e-6, atol=1e-20)


def test_matrix_free_lm_fits_sin_regression_below_the_noise_floor():
    problem = M.get("sin-regression")
    result = problem.solve(max_steps=20)
    assert result.jac is None  # the default solver never forms the 1000 x 1153 Jacobian
    loss = float(problem.loss(result.params))
    assert loss < problem.target_loss < float(problem.loss(problem.params0))
    np.testing.assert_allclose(problem.loss_from_cost(result.cost), loss, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_seeds_are_reproducible():
    assert M.names() == ("seed-mlp", "sin-regression", "two-spirals")
    for name in M.names():
        a, b, c = M.get(name), M.get(name), M.get(name, seed=1)
        for u, v in zip(jax.tree.leaves((a.params0, a.args)), jax.tree.leaves((b.params0, b.args))):
            np.testing.assert_array_equal(u, v)
        assert not np.array_equal(ravel_pytree(a.params0)[0], ravel_pytree(c.params0)[0])
        assert a.target_loss > 0


def test_sin_regression_data_and_target():
    problem = M.get("sin-regression")
    x, y = problem.args
    assert x.shape == (1000, 1) and y.shape == (1000, 1)
    assert M.num_params(problem.sizes) == 1153
    np.testing.assert_allclose(problem.target_loss, np.mean((np.asarray(y) - np.sin(x)) ** 2))
    assert 0.008 < problem.target_loss < 0.012  # noise sd 0.1


def test_unknown_problem_lists_valid_names():
    with pytest.raises(ValueError, match="seed-mlp"):
        M.get("mnist")


# --------------------------------------------------------------------------------------------
# Suite records (pure bookkeeping, no compilation)
# --------------------------------------------------------------------------------------------


def test_records_time_to_target_curve_and_budget():
    from jacopt.benchmarks import _records

    losses = np.concatenate([np.geomspace(1.0, 1e-12, 1001), np.full(9, np.nan)])
    rec = _records.make_record(suite="mlp", problem="p", method="lm", order="second",
                               target_loss=1e-6, losses=losses, run_s=2.0, compile_s=0.5,
                               num_steps=1000)
    assert rec["iters_to_target"] == 500 and rec["time_to_target_s"] == pytest.approx(1.0)
    assert rec["final_loss"] == pytest.approx(1e-12)
    curve = rec["curve"]
    assert len(curve["iters"]) <= _records.MAX_CURVE_POINTS
    assert curve["iters"][0] == 0 and curve["iters"][-1] == 1000
    assert curve["time_s"][-1] == pytest.approx(2.0)
    adam = _records.make_record(suite="mlp", problem="p", method="adam", order="first",
                                target_loss=1e-6, losses=[1.0, 0.5], run_s=1.0, compile_s=0.1)
    assert adam["iters_to_target"] is None and adam["time_to_target_s"] is None
    _records.add_budget_losses([rec, adam])
    assert rec["budget_s"] == adam["budget_s"] == 1.0
    assert 1e-6 <= rec["loss_at_budget"] < 2e-6  # the curve point just before t = 1 s
    assert adam["loss_at_budget"] == 0.5


def test_same_budget_table_and_budget_check_bookkeeping():
    from jacopt.benchmarks import _records
    from jacopt.benchmarks import mlp as B

    def rec(method, order, losses, run_s, **extra):
        return _records.make_record(suite="mlp", problem="p", method=method, order=order,
                                    target_loss=0.5, losses=losses, run_s=run_s,
                                    compile_s=0.0, **extra)

    adam = rec("adam", "first", [1.0, 0.6, 0.4], 1.0, lr=0.01)
    fast = rec("lm-matrix-free", "second", [1.0, 0.3, 0.1, 0.05], 3.0)
    _records.add_budget_losses([adam, fast])
    assert fast["loss_at_budget"] == 0.3  # steps 2 and 3 end after Adam's 1 s
    # a run within the budget needs no confirming rerun (nothing is solved here)
    assert "budget_check" not in B.confirm_budget(dict(adam), None, adam, 2)
    fast["budget_check"] = {"steps": 1, "run_s": 0.9, "adam_run_s": 1.1, "loss": 0.3}
    table = B.format_tables([adam, fast])
    lines = table.splitlines()
    head = lines.index("p: lowest loss within 1.00 s (the best-tuned Adam run's wall time)")
    assert lines[head + 1].split()[:3] == ["lm-matrix-free", "second", "3.00000e-01"]
    assert "1 steps in 0.90 s vs Adam's 1.10 s" in lines[head + 1]
    assert lines[head + 2].split()[:5] == ["adam", "first", "4.00000e-01", "lr", "0.01"]
