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
from jacopt.solvers import generalised_gauss_newton as G
from jacopt.status import Status


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
    gram = G.gram(factor)
    assert gram.shape == ((rows, rows) if rows < 8 else (8, 8))
    expected = np.linalg.solve(np.asarray(factor.T @ factor) + 0.3 * np.eye(8), grad)
    np.testing.assert_allclose(G.damped_solve(factor, gram, grad, 0.3), expected, rtol=1e-10)


def test_ggn_equals_hessian_for_a_linear_model():
    # With no hidden layer the logits are linear in the parameters: GGN == Hessian exactly.
    params, x, labels = _small_classification(sizes=(4, 3))
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jacopt.hessian(lambda v: M.cross_entropy_fn()(unravel(v), x, labels)))
    np.testing.assert_allclose(jax.jit(M.ggn_matrix)(params, x, labels), hessian(flat),
                               atol=1e-13)


def _flat(params):
    return np.asarray(ravel_pytree(params)[0])


def _numpy_cross_entropy(params, x, labels):
    logits = _numpy_forward(params, x)
    return -np.mean(np.sum(np.asarray(labels) * scipy.special.log_softmax(logits, 1), 1))


def _ggn_and_gradient(params, x, labels):
    """The GGN as the explicit sum over samples (NumPy) and the gradient by central
    differences."""
    num, classes = labels.shape
    jac = np.asarray(M.weight_jacobian(params, x)).reshape(num, classes, -1)
    p = scipy.special.softmax(_numpy_forward(params, x), axis=1)
    ggn = sum(jac[i].T @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ jac[i]
              for i in range(num)) / num
    flat, unravel = ravel_pytree(params)
    grad = _central_differences(
        lambda v: M.cross_entropy_fn()(unravel(v), x, labels)[None], flat)[0]
    return ggn, grad


@pytest.mark.parametrize("sizes", [(2, 5, 3), (2, 3)])  # R = 14 rows, P = 33 or 9 params
def test_ggn_step_is_the_dense_damped_solve_and_lam_follows_nielsen(sizes):
    # (2, 5, 3) takes the push-through path (R < P), (2, 3) the direct one
    params, x, labels = _small_classification(sizes=sizes)
    ggn, grad = _ggn_and_gradient(params, x, labels)
    lam = 0.5
    result = M.train_ggn(params, x, labels, max_steps=1, gtol=0.0, initial_damping=lam,
                         history=True)
    step = -np.linalg.solve(ggn + lam * np.eye(grad.size), grad)
    assert bool(result.history.accepted[1])
    np.testing.assert_allclose(_flat(result.params) - _flat(params), step, rtol=1e-7,
                               atol=1e-12)
    rho = ((_numpy_cross_entropy(params, x, labels)
            - _numpy_cross_entropy(result.params, x, labels))
           / -(grad @ step + 0.5 * step @ ggn @ step))
    np.testing.assert_allclose(result.history.damping[1],
                               lam * max(1 / 3, 1 - (2 * rho - 1) ** 3), rtol=1e-7)
    assert result.status_name == "MAX_STEPS" and int(result.num_steps) == 1
    assert (int(result.nfev), int(result.njev), int(result.nhev)) == (2, 2, 2)


def _check_ggn_training(result, x, labels, max_steps, target):
    n = int(result.num_steps)
    losses = np.asarray(result.history.value)
    assert losses.shape == (max_steps + 1,) and np.all(np.isnan(losses[n + 1:]))
    losses, accepted = losses[:n + 1], np.asarray(result.history.accepted[1:n + 1])
    # rejected trials keep the loss, accepted ones lower it
    assert np.all(np.diff(losses)[~accepted] == 0) and np.all(np.diff(losses)[accepted] < 0)
    assert losses[-1] < target and result.status_name in ("GTOL", "MAX_STEPS")
    assert int(result.nfev) == n + 1 and int(result.njev) == int(accepted.sum()) + 1
    np.testing.assert_allclose(_numpy_cross_entropy(result.params, x, labels), losses[-1],
                               rtol=1e-9, atol=1e-15)
    accuracy = np.mean(np.argmax(M.mlp(result.params, x), 1) == np.argmax(labels, 1))
    assert accuracy == 1.0


def test_ggn_training_separates_a_small_spiral():
    x, labels = M.two_spirals(num_per_class=20, turns=1.0)
    x, labels = jnp.asarray(3 * x), jnp.asarray(labels)
    result = M.train_ggn(M.init_mlp(0, [2, 8, 2]), x, labels, max_steps=40, history=True)
    _check_ggn_training(result, x, labels, 40, target=1e-3)


def test_ggn_in_float32_ends_at_the_precision_limit_not_a_false_success():
    # the default gtol (1e-10) lies below float32's resolution of this gradient: the damped
    # steps shrink to rounding level and the run says so, with the best point it found
    x, labels = M.two_spirals(num_per_class=20, turns=1.0)
    x, labels = jnp.asarray(3 * x, jnp.float32), jnp.asarray(labels, jnp.float32)
    result = M.train_ggn(M.init_mlp(0, [2, 8, 2], jnp.float32), x, labels, max_steps=200,
                         history=True)
    assert result.status_name == "PRECISION_LIMIT" and not result.success
    assert result.value.dtype == jnp.float32 and int(result.num_steps) < 200
    losses = np.asarray(result.history.value)[:int(result.num_steps) + 1]
    assert float(result.value) == losses.min() < 1e-6
    assert float(jnp.max(jnp.abs(ravel_pytree(result.grad)[0]))) > 1e-10


@pytest.mark.slow
def test_ggn_training_reaches_two_spirals_target():
    problem = M.get("two-spirals")
    _check_ggn_training(problem.solve(max_steps=150, history=True), *problem.args, 150,
                        target=problem.target_loss)


def test_ggn_stops_on_gtol_max_steps_and_a_nonfinite_start():
    params, x, labels = _small_classification()
    start = M.train_ggn(params, x, labels, max_steps=5, gtol=10.0)
    assert start.status_name == "GTOL" and start.success and int(start.num_steps) == 0
    assert int(start.nfev) == 1 and np.array_equal(_flat(start.params), _flat(params))
    capped = M.train_ggn(params, x, labels, max_steps=3, gtol=0.0)
    assert capped.status_name == "MAX_STEPS" and not capped.success
    assert int(capped.num_steps) == 3 and capped.value < start.value
    result = M.train_ggn(params, x, labels, max_steps=100, gtol=1e-6, history=True)
    n = int(result.num_steps)
    assert result.status_name == "GTOL" and result.success and 0 < n < 100
    grad_norm = np.asarray(result.history.grad_norm)
    assert np.all(grad_norm[:n] > 1e-6) and grad_norm[n] <= 1e-6  # the first such point
    _, grad = _ggn_and_gradient(result.params, x, labels)
    assert np.max(np.abs(grad)) <= 1.01e-6
    broken = jax.tree.map(lambda a: a.at[0].set(jnp.nan), params)
    nan = M.train_ggn(broken, x, labels, max_steps=5, gtol=10.0)
    assert nan.status_name == "NONFINITE" and not nan.success and int(nan.num_steps) == 0


def _quadratic_problem(wall):
    """``f(x) = ||x - (2, 1)||^2 / 2`` (G = I: GGN is Newton's method), NaN where
    ``x[0] > wall``."""
    def loss(v, centre):
        value = 0.5 * jnp.sum((v - centre) ** 2)
        return jnp.where(v[0] > wall, jnp.nan, value)

    return G.GGNProblem(loss, lambda v, centre: jnp.eye(2, dtype=v.dtype), jnp.array([2.0, 1.0]))


def test_ggn_on_a_quadratic_reaches_the_minimiser_with_gtol():
    from jacopt._loop import run

    out = jax.jit(lambda x0: run(G.GeneralisedGaussNewton(gtol=1e-12),
                                 _quadratic_problem(np.inf), x0, max_steps=100))(jnp.zeros(2))
    assert Status(int(out.status)) == Status.GTOL
    np.testing.assert_allclose(out.state.x, [2.0, 1.0], atol=1e-12)
    # the model is exact (gain ratio 1): every step is accepted and lam falls by 3 each time
    assert int(out.state.ngev) == int(out.num_steps) + 1
    np.testing.assert_allclose(out.state.lam, 3.0 ** -int(out.num_steps), rtol=1e-12)


def test_a_cholesky_breakdown_at_tiny_damping_is_a_rejected_trial_not_a_stop():
    from jacopt._loop import run

    # f = (x0 + x1 - 2)^2 / 2, G = [[1, 1], [1, 1]] singular: G + 1e-300 I is not positive
    # definite in floating point, so the first steps are NaN until the damping has grown
    problem = G.GGNProblem(lambda v, target: 0.5 * (v[0] + v[1] - target) ** 2,
                           lambda v, target: jnp.array([[1.0, 1.0], [0.0, 0.0]]), 2.0)
    solver = G.GeneralisedGaussNewton(gtol=1e-12, initial_damping=1e-300)
    out = jax.jit(lambda x0: run(solver, problem, x0, max_steps=200))(jnp.zeros(2))
    assert Status(int(out.status)) == Status.GTOL
    assert int(out.state.ngev) > 1 and int(out.num_steps) > int(out.state.ngev)  # rejections
    np.testing.assert_allclose(out.state.x[0] + out.state.x[1], 2.0, rtol=1e-12)


def test_a_nan_wall_stops_with_nonfinite_at_the_best_point_found():
    from jacopt._loop import run

    # the first step (lam = 1) lands on the wall x[0] = 1; every later one crosses it
    out = jax.jit(lambda x0: run(G.GeneralisedGaussNewton(), _quadratic_problem(1.0), x0,
                                 max_steps=500))(jnp.zeros(2))
    assert Status(int(out.status)) == Status.NONFINITE and int(out.num_steps) < 500
    np.testing.assert_allclose(out.state.x, [1.0, 0.5], rtol=1e-15)
    np.testing.assert_allclose(out.state.value, 0.625, rtol=1e-15)
    assert np.isfinite(float(out.state.value)) and np.all(np.isfinite(out.state.grad))


def test_train_ggn_under_vmap_gives_each_member_its_own_status():
    _, x, labels = _small_classification()
    starts = [M.init_mlp(seed, (2, 5, 3)) for seed in (0, 1)]
    starts.append(jax.tree.map(lambda a: a * jnp.nan, starts[0]))

    def train(params0):
        return M.train_ggn(params0, x, labels, max_steps=40, gtol=1e-6)

    batch = jax.vmap(train)(jax.tree.map(lambda *a: jnp.stack(a), *starts))
    singles = [train(p) for p in starts]
    assert batch.status.shape == (3,)
    assert list(batch.status_name) == [s.status_name for s in singles]
    assert singles[2].status_name == "NONFINITE" and singles[0].status_name != "NONFINITE"
    assert int(batch.num_steps[0]) != int(batch.num_steps[1])  # each member stops on its own
    for i, single in enumerate(singles[:2]):
        assert int(batch.num_steps[i]) == int(single.num_steps)
        np.testing.assert_allclose(_flat(jax.tree.map(lambda a: a[i], batch.params)),
                                   _flat(single.params), rtol=1e-8, atol=1e-12)


def test_train_ggn_checks_its_input_before_any_work():
    params, x, labels = _small_classification()
    with pytest.raises(ValueError, match="gtol"):
        M.train_ggn(params, x, labels, max_steps=5, gtol=-1.0)
    with pytest.raises(ValueError, match="initial_damping"):
        M.train_ggn(params, x, labels, max_steps=5, initial_damping=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        M.train_ggn(params, x, labels, max_steps=-1)
    with pytest.raises(ValueError, match="labels"):
        M.train_ggn(params, x, labels[:, :2], max_steps=5)
    with pytest.raises(TypeError, match="damping"):
        M.train_ggn(params, x, labels, max_steps=5, damping=1.0)


# --------------------------------------------------------------------------------------------
# Solvers on the problems
# --------------------------------------------------------------------------------------------


def test_levenberg_marquardt_drives_seed_mlp_below_1e_10(seed_mlp):
    result = seed_mlp.solve()
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
