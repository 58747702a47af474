"""Softmax policies (:mod:`jacopt.problems.softmax_policy`): the log-probability Jacobian
against analytic forms, exact evaluation against the Bellman equation and a power series,
closed-form optima, and the Monte Carlo gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from _policy_helpers import explicit_scores, random_X

from jacopt.problems import policy_problems as pp
from jacopt.problems import softmax_policy as sp


def test_log_prob_jacobian_is_e_a_minus_pi_times_phi(bandit):
    X = random_X(bandit.task)
    phi = bandit.task.features[2]
    jac = jax.jit(sp.log_prob_jacobian)(X, phi)
    assert jac.shape == (4, 4, 8)
    np.testing.assert_allclose(jac, sp.analytic_log_prob_jacobian(X, phi), atol=1e-14)
    np.testing.assert_allclose(np.asarray(jac).reshape(4, -1),
                               explicit_scores(X, bandit.task.features)[2], atol=1e-14)


def test_log_prob_jacobian_float32_stays_float32(bandit):
    X = random_X(bandit.task).astype(jnp.float32)
    phi = bandit.task.features[0].astype(jnp.float32)
    jac = jax.jit(sp.log_prob_jacobian)(X, phi)
    assert jac.dtype == jnp.float32
    np.testing.assert_allclose(jac, sp.analytic_log_prob_jacobian(X, phi), atol=1e-6)


def test_jacobian_matrix_rows_are_state_action_columns_are_ravelled_X(bandit):
    X = random_X(bandit.task)
    jac = jax.jit(sp.log_prob_jacobian_matrix)(X, bandit.task.features)
    assert jac.shape == (8 * 4, 4 * 8)
    np.testing.assert_allclose(jac, explicit_scores(X, bandit.task.features).reshape(32, 32),
                               atol=1e-14)


def test_bandit_return_is_expected_reward_plus_entropy(bandit):
    X = random_X(bandit.task)
    t = bandit.task
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    tau = float(t.temperature)
    expected = np.sum(np.asarray(t.initial)[:, None] * pi * (np.asarray(t.rewards)
                                                             - tau * np.log(pi)))
    np.testing.assert_allclose(jax.jit(sp.expected_return)(X, t), expected, rtol=1e-14)


def test_mdp_values_solve_bellman_and_match_power_series(mdp):
    X = random_X(mdp.task)
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
    X = random_X(mdp.task)
    t = mdp.task
    d = np.asarray(jax.jit(sp.state_weights)(X, t))
    q = np.asarray(jax.jit(sp.soft_q_values)(X, t))
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    scores = explicit_scores(X, t.features)
    advantage_weights = d[:, None] * pi * (q - float(t.temperature) * np.log(pi))
    expected = np.einsum("sa,sak->k", advantage_weights, scores).reshape(X.shape)
    np.testing.assert_allclose(jax.jit(sp.policy_gradient)(X, t), expected, atol=1e-12)


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


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="num_features"):
        sp.log_probs(jnp.zeros((4, 3)), jnp.zeros((8, 5)))
