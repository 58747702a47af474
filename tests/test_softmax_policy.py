"""Softmax policies: Jacobians and Fisher against analytic forms, exact evaluation against the
Bellman equation and a power series, closed-form optima, NPG, the Monte Carlo estimate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import jacopt
from jacopt.problems import natural_gradient as ng
from jacopt.problems import policy_problems as pp
from jacopt.problems import softmax_policy as sp


@pytest.fixture(scope="module")
def bandit():
    return pp.get("entropy-bandit")


@pytest.fixture(scope="module")
def mdp():
    return pp.get("entropy-mdp")


def _random_X(task, seed=3, scale=0.7):
    rng = np.random.default_rng(seed)
    return jnp.asarray(scale * rng.normal(size=(task.rewards.shape[1], task.features.shape[1])))


def _explicit_scores(X, features):
    """g[s, a] = vec((e_a - pi_s) phi_s^T) in NumPy: (S, A, A*F)."""
    X, phi = np.asarray(X), np.asarray(features)
    pi = scipy.special.softmax(phi @ X.T, axis=1)
    num_actions = X.shape[0]
    return np.stack([
        np.stack([np.outer(np.eye(num_actions)[a] - pi[s], phi[s]).ravel()
                  for a in range(num_actions)])
        for s in range(phi.shape[0])
    ])


# --------------------------------------------------------------------------------------------
# The policy's Jacobian
# --------------------------------------------------------------------------------------------


def test_log_prob_jacobian_is_e_a_minus_pi_times_phi(bandit):
    X = _random_X(bandit.task)
    phi = bandit.task.features[2]
    jac = jax.jit(sp.log_prob_jacobian)(X, phi)
    assert jac.shape == (4, 4, 8)
    np.testing.assert_allclose(jac, sp.analytic_log_prob_jacobian(X, phi), atol=1e-14)
    np.testing.assert_allclose(np.asarray(jac).reshape(4, -1),
                               _explicit_scores(X, bandit.task.features)[2], atol=1e-14)


def test_log_prob_jacobian_float32_stays_float32(bandit):
    X = _random_X(bandit.task).astype(jnp.float32)
    phi = bandit.task.features[0].astype(jnp.float32)
    jac = jax.jit(sp.log_prob_jacobian)(X, phi)
    assert jac.dtype == jnp.float32
    np.testing.assert_allclose(jac, sp.analytic_log_prob_jacobian(X, phi), atol=1e-6)


def test_jacobian_matrix_rows_are_state_action_columns_are_ravelled_X(bandit):
    X = _random_X(bandit.task)
    jac = jax.jit(sp.log_prob_jacobian_matrix)(X, bandit.task.features)
    assert jac.shape == (8 * 4, 4 * 8)
    np.testing.assert_allclose(jac, _explicit_scores(X, bandit.task.features).reshape(32, 32),
                               atol=1e-14)


# --------------------------------------------------------------------------------------------
# Exact evaluation
# --------------------------------------------------------------------------------------------


def test_bandit_return_is_expected_reward_plus_entropy(bandit):
    X = _random_X(bandit.task)
    t = bandit.task
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    tau = float(t.temperature)
    expected = np.sum(np.asarray(t.initial)[:, None] * pi * (np.asarray(t.rewards)
                                                             - tau * np.log(pi)))
    np.testing.assert_allclose(jax.jit(sp.expected_return)(X, t), expected, rtol=1e-14)


def test_mdp_values_solve_bellman_and_match_power_series(mdp):
    X = _random_X(mdp.task)
    t = mdp.task
    v = np.asarray(jax.jit(sp.policy_evaluation)(X, t))
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    p_pi = np.einsum("sa,sat->st", pi, np.asarray(t.transitions))
    reward = np.sum(pi * (np.asarray(t.rewards) - float(t.temperature) * np.log(pi)), axis=1)
    np.testing.assert_allclose(v, reward + 0.9 * p_pi @ v, atol=1e-12)
    series, term = np.zeros_like(reward), reward.copy()
    for _ in range(400):  # sum_t 0.9^t P^t r, truncation error 0.9^400 ~ 5e-19
        series += term
        term = 0.9 * p_pi @ term
    np.testing.assert_allclose(v, series, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(sp.state_weights)(X, t).sum(), 1 / (1 - 0.9), rtol=1e-12)


def test_gradient_follows_policy_gradient_theorem(mdp):
    X = _random_X(mdp.task)
    t = mdp.task
    d = np.asarray(jax.jit(sp.state_weights)(X, t))
    q = np.asarray(jax.jit(sp.soft_q_values)(X, t))
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    scores = _explicit_scores(X, t.features)
    advantage_weights = d[:, None] * pi * (q - float(t.temperature) * np.log(pi))
    expected = np.einsum("sa,sak->k", advantage_weights, scores).reshape(X.shape)
    np.testing.assert_allclose(jax.jit(sp.policy_gradient)(X, t), expected, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Fisher matrix and natural gradient
# --------------------------------------------------------------------------------------------


def test_fisher_matrix_is_the_expected_outer_product_of_scores(mdp):
    X = _random_X(mdp.task)
    t = mdp.task
    d = np.asarray(jax.jit(sp.state_weights)(X, t))
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    scores = _explicit_scores(X, t.features)
    expected = np.einsum("sa,sai,saj->ij", d[:, None] * pi, scores, scores)
    fisher = jax.jit(ng.fisher_matrix)(X, t)
    np.testing.assert_allclose(fisher, expected, atol=1e-13)
    # singular along "add u^T phi(s) to every logit of state s": X -> X + 1 u^T
    shift = np.outer(np.ones(4), np.random.default_rng(0).normal(size=10)).ravel()
    np.testing.assert_allclose(fisher @ shift, 0.0, atol=1e-13)
    assert np.linalg.eigvalsh(np.asarray(fisher)).min() > -1e-13


def test_fisher_operator_matches_matrix(bandit):
    X = _random_X(bandit.task)
    v = jnp.asarray(np.random.default_rng(1).normal(size=X.shape))
    product = jax.jit(lambda x, u: ng.fisher_operator(x, bandit.task)(u))(X, v)
    np.testing.assert_allclose(product.ravel(),
                               jax.jit(ng.fisher_matrix)(X, bandit.task) @ v.ravel(), atol=1e-14)


def test_natural_gradient_solves_fisher_system(bandit):
    X = _random_X(bandit.task)
    t = bandit.task
    fisher, grad, w, damped, cg = jax.jit(lambda x: (
        ng.fisher_matrix(x, t), sp.policy_gradient(x, t), ng.natural_gradient(x, t),
        ng.natural_gradient(x, t, damping=1e-3),
        ng.natural_gradient(x, t, damping=1e-3, matrix_free=True, tol=1e-12)))(X)
    np.testing.assert_allclose(fisher @ w.ravel(), grad.ravel(), atol=1e-12)
    np.testing.assert_allclose(cg, damped, rtol=1e-8, atol=1e-10)


def test_npg_at_step_one_over_tau_is_exact_on_the_bandit(bandit):
    tau = float(bandit.task.temperature)
    X = jax.jit(ng.npg_step)(bandit.params0, bandit.task, 1 / tau)
    assert bandit.loss(X) < 1e-13
    np.testing.assert_allclose(sp.probs(X, bandit.task.features),
                               scipy.special.softmax(np.asarray(bandit.task.rewards) / tau, 1),
                               atol=1e-12)


def test_npg_is_soft_policy_iteration_on_the_mdp(mdp):
    step = jax.jit(lambda x: ng.npg_step(x, mdp.task, 1 / float(mdp.task.temperature)))
    X, gaps = mdp.params0, []
    for _ in range(4):
        X = step(X)
        gaps.append(float(mdp.loss(X)))
    assert gaps[0] < 1e-2 and gaps[1] < 1e-6 and abs(gaps[3]) < 1e-12, gaps


# --------------------------------------------------------------------------------------------
# Exact optima
# --------------------------------------------------------------------------------------------


def test_entropy_bandit_optimum_is_softmax_of_r_over_tau(bandit):
    t = bandit.task
    X = bandit.optimal_params
    r, tau = np.asarray(t.rewards), float(t.temperature)
    np.testing.assert_allclose(sp.probs(X, t.features), scipy.special.softmax(r / tau, axis=1),
                               atol=1e-13)
    j_star = np.asarray(t.initial) @ (tau * scipy.special.logsumexp(r / tau, axis=1))
    np.testing.assert_allclose(-bandit.optimal_value, j_star, rtol=1e-15)
    value = jax.jit(sp.expected_return)
    np.testing.assert_allclose(value(X, t), j_star, rtol=1e-14)
    assert float(jnp.abs(jax.jit(sp.policy_gradient)(X, t)).max()) < 1e-13
    rng = np.random.default_rng(2)
    for _ in range(5):
        nudged = X + 1e-3 * rng.normal(size=X.shape)
        assert value(nudged, t) < j_star


def test_entropy_mdp_optimum_satisfies_soft_bellman_optimality(mdp):
    t = mdp.task
    v_star, log_pi_star, j_star = sp.soft_optimum(t)
    tau = float(t.temperature)
    q = np.asarray(t.rewards) + 0.9 * np.asarray(t.transitions) @ v_star
    np.testing.assert_allclose(v_star, tau * scipy.special.logsumexp(q / tau, axis=1),
                               rtol=1e-14)
    X = mdp.optimal_params
    np.testing.assert_allclose(sp.log_probs(X, t.features), log_pi_star, atol=1e-10)
    value = jax.jit(sp.expected_return)
    np.testing.assert_allclose(value(X, t), j_star, rtol=1e-14)
    assert float(jnp.abs(jax.jit(sp.policy_gradient)(X, t)).max()) < 1e-12
    rng = np.random.default_rng(3)
    for _ in range(5):
        assert value(X + 1e-3 * rng.normal(size=X.shape), t) < j_star


def test_params_for_policy_rejects_unrepresentable_policies():
    features = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)))  # rank 2 < 4 states
    log_pi = np.log(np.random.default_rng(1).dirichlet(np.ones(3), size=4))
    assert sp.params_for_policy(log_pi, features) is None


def test_soft_optimum_needs_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        sp.soft_optimum(pp.get("bandit").task)


@pytest.mark.parametrize("solver", ["newton", "bfgs"])
def test_minimize_reaches_closed_form_optimum(bandit, solver):
    # At tau = 0.3 no optimal probability is tiny; at tau = 0.1 (entropy-mdp-cold) Newton and
    # BFGS can stall on a softmax-saturation plateau instead (as SciPy's do), see the registry.
    assert bandit.solver["solver"] == "newton"
    result = bandit.solve(solver=solver, gtol=1e-10, max_steps=500)
    assert bandit.loss(result.params) < 1e-10
    np.testing.assert_allclose(sp.probs(result.params, bandit.task.features),
                               sp.probs(bandit.optimal_params, bandit.task.features), atol=1e-6)


# --------------------------------------------------------------------------------------------
# Policy distillation
# --------------------------------------------------------------------------------------------


def test_distillation_residual_vanishes_at_target_and_its_gauss_newton_is_fisher():
    problem = pp.get("policy-distill")
    X = problem.optimal_params
    np.testing.assert_allclose(problem.residual(X, *problem.args), 0.0, atol=1e-13)
    jac = jax.jit(jacopt.jacobian(problem.residual, as_matrix=True))(X, *problem.args)
    fisher = jax.jit(ng.fisher_matrix)(X, problem.task, problem.task.initial)
    np.testing.assert_allclose(jac.T @ jac, fisher, atol=1e-13)
    assert problem.loss(problem.params0) > 1e-2


# --------------------------------------------------------------------------------------------
# Monte Carlo policy gradient
# --------------------------------------------------------------------------------------------


def test_sampled_gradient_is_reproducible_and_unbiased(bandit):
    X = bandit.params0
    estimate = jax.jit(lambda key: sp.sampled_policy_gradient(
        X, bandit.task, key, 4000, per_episode=True))
    samples = np.asarray(estimate(jax.random.key(7)))
    np.testing.assert_array_equal(samples, estimate(jax.random.key(7)))
    assert not np.array_equal(samples, estimate(jax.random.key(8)))
    stderr = samples.std(axis=0) / np.sqrt(len(samples))
    z = (samples.mean(axis=0) - np.asarray(jax.jit(sp.policy_gradient)(X, bandit.task))) / stderr
    assert np.abs(z).max() < 4.5, np.abs(z).max()


@pytest.mark.slow
def test_sampled_gradient_on_mdp_matches_exact_within_noise(mdp):
    X = mdp.params0
    samples = np.asarray(jax.jit(lambda key: sp.sampled_policy_gradient(
        X, mdp.task, key, 1000, horizon=120, per_episode=True))(jax.random.key(0)))
    stderr = samples.std(axis=0) / np.sqrt(len(samples))
    z = (samples.mean(axis=0) - np.asarray(jax.jit(sp.policy_gradient)(X, mdp.task))) / stderr
    assert np.abs(z).max() < 4.5, np.abs(z).max()


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_seeds_are_reproducible():
    assert pp.names() == ("bandit", "entropy-bandit", "entropy-mdp", "entropy-mdp-cold",
                          "policy-distill")
    for name in pp.names():
        a, b, c = pp.get(name, seed=0), pp.get(name, seed=0), pp.get(name, seed=1)
        np.testing.assert_array_equal(a.params0, b.params0)
        np.testing.assert_array_equal(a.task.rewards, b.task.rewards)
        assert a.optimal_value == b.optimal_value
        assert not np.array_equal(a.task.rewards, c.task.rewards)
        assert a.target_loss > 0 and a.solver["entry"] in ("minimize", "least_squares")


def test_float32_problem_keeps_dtype():
    problem = pp.get("entropy-mdp", dtype=jnp.float32)
    assert problem.params0.dtype == jnp.float32
    assert problem.task.transitions.dtype == jnp.float32
    assert jax.jit(sp.expected_return)(problem.params0, problem.task).dtype == jnp.float32
    assert problem.target_loss == 1e-4


def test_unknown_problem_lists_valid_names():
    with pytest.raises(ValueError, match="entropy-bandit"):
        pp.get("cartpole")


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="num_features"):
        sp.log_probs(jnp.zeros((4, 3)), jnp.zeros((8, 5)))


# --------------------------------------------------------------------------------------------
# The policy suite, smallest configuration (first-order grid and NPG only: no jacopt solver)
# --------------------------------------------------------------------------------------------


def test_policy_suite_records_are_complete():
    from jacopt.benchmarks import _records, policy, runner

    config = policy.Config(problems=("entropy-bandit",), first_order_steps=300, sgd_lrs=(1.0,),
                           adam_lrs=(0.03, 0.3), npg_steps=5, second_order_max_steps=10,
                           lbfgs=False, repeats=1,
                           only={"entropy-bandit": ("pg-adam", "npg")})
    seen = []
    records = _records.run_methods(policy.SUITE, policy._methods(pp.get("entropy-bandit"),
                                                                 config), seen.append)
    assert seen == ["entropy-bandit / pg-adam", "entropy-bandit / npg"]
    adam, npg = records
    for rec in records:
        assert runner.missing_fields(rec) == [] and "error" not in rec
        assert len(rec["curve"]["loss"]) == len(rec["curve"]["iters"]) <= 201
    assert adam["order"] == "first" and len(adam["grid"]) == 2 and adam["lr"] in (0.03, 0.3)
    assert adam["iters_to_target"] is None and adam["final_loss"] > 1e-10
    assert npg["order"] == "second" and npg["iters_to_target"] == 1
    np.testing.assert_allclose(npg["lr"], 1 / 0.3)
    np.testing.assert_allclose(npg["time_to_target_s"], npg["run_s"] / 5)
