"""Policy gradients on environments (jacopt.problems.rl): the sampled Fisher against the exact
tabular Fisher, Fisher-vector products against dense matrices, NPG's CG solve, TRPO's KL bound,
GAE against a plain loop; with gymnax: reproducible rollouts and a short training run."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacopt.benchmarks import rl as rl_bench
from jacopt.benchmarks import runner
from jacopt.problems import natural_gradient as ng
from jacopt.problems import rl
from jacopt.problems import softmax_policy as sp


def _linear_logits(X, phi):
    return phi @ X.T


def _small_mlp_batch(batch=64, obs_dim=3, hidden=(5,), num_actions=3, seed=0):
    key = jax.random.PRNGKey(seed)
    params = rl.init_mlp(key, (obs_dim, *hidden, num_actions), jnp.float64, final_scale=1.0)
    obs = jax.random.normal(jax.random.fold_in(key, 1), (batch, obs_dim), jnp.float64)
    action = jax.random.randint(jax.random.fold_in(key, 2), (batch,), 0, num_actions)
    adv = jax.random.normal(jax.random.fold_in(key, 3), (batch,), jnp.float64)
    return params, obs, action, adv


def _kl_numpy(logits_old, logits_new):
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lo, ln = log_softmax(np.asarray(logits_old)), log_softmax(np.asarray(logits_new))
    return float(np.mean(np.sum(np.exp(lo) * (lo - ln), axis=1)))


# ------------------------------------------------------------------------------------------
# Curvature
# ------------------------------------------------------------------------------------------


def test_sampled_fisher_converges_to_exact_tabular_fisher():
    task = sp.contextual_bandit(seed=0, dtype=jnp.float64)
    X = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (4, 8), jnp.float64)
    exact = np.asarray(ng.fisher_matrix(X, task, weights=task.initial))
    pi = np.asarray(sp.probs(X, task.features))
    rng = np.random.default_rng(0)
    errors = []
    for samples in (100, 1_000, 10_000, 100_000):
        states = rng.choice(len(task.initial), size=samples, p=np.asarray(task.initial))
        actions = (rng.random(samples)[:, None] > np.cumsum(pi[states], axis=1)[:, :-1]).sum(1)
        phi = task.features[states]
        empirical = rl.empirical_fisher(_linear_logits, X, phi, jnp.asarray(actions))
        errors.append(np.linalg.norm(empirical - exact) / np.linalg.norm(exact))
        # the closed-form expectation over actions is the tabular Fisher with the sampled
        # states' frequencies as weights, exactly
        weights = np.bincount(states, minlength=len(task.initial)) / samples
        np.testing.assert_allclose(
            rl.exact_fisher(_linear_logits, X, phi),
            ng.fisher_matrix(X, task, weights=jnp.asarray(weights)), rtol=1e-10, atol=1e-13)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.03 and errors[0] > 3 * errors[-1], errors


@pytest.mark.parametrize("empirical", [False, True])
def test_fisher_vector_products_equal_dense_products(empirical):
    params, obs, action, _ = _small_mlp_batch()
    index = rl.jacopt.TreeIndex(params)
    v = jax.random.normal(jax.random.PRNGKey(7), (index.size,), jnp.float64)
    act = action if empirical else None
    dense = (rl.empirical_fisher(rl.mlp, params, obs, action, damping=0.3) if empirical
             else rl.exact_fisher(rl.mlp, params, obs, damping=0.3))
    fvp = rl.fisher_vector_product(rl.mlp, params, obs, act, damping=0.3)
    np.testing.assert_allclose(fvp(v), dense @ v, rtol=1e-10, atol=1e-12)
    # the dense exact Fisher is E_a[g g^T]: the empirical one with every action, weighted
    if not empirical:
        jac = jax.jit(jax.vmap(jax.jacrev(lambda p, o: rl.log_probs(rl.mlp, p, o[None])[0]),
                               in_axes=(None, 0)))(params, obs)
        scores = jnp.concatenate([x.reshape(obs.shape[0], 3, -1)
                                  for x in jax.tree.leaves(jac)], axis=-1)
        pi = jax.nn.softmax(rl.mlp(params, obs))
        by_hand = jnp.einsum("ban,ba,bam->nm", scores, pi, scores) / obs.shape[0]
        np.testing.assert_allclose(dense - 0.3 * jnp.eye(index.size), by_hand, rtol=1e-10,
                                   atol=1e-13)


def test_natural_direction_solves_fisher_system_to_cg_tolerance():
    params, obs, action, adv = _small_mlp_batch()
    index = rl.jacopt.TreeIndex(params)
    g = index.ravel(jax.grad(lambda p: jnp.mean(rl.action_log_probs(rl.mlp, p, obs, action)
                                                * adv))(params))
    tol, damping = 1e-9, 1e-2
    result, _ = rl.natural_direction(rl.mlp, params, obs, g, damping=damping,
                                     maxiter=5 * index.size, tol=tol)
    dense = rl.exact_fisher(rl.mlp, params, obs, damping=damping)
    assert bool(result.converged)
    residual = np.linalg.norm(dense @ result.x - g)
    assert residual <= 10 * tol * np.linalg.norm(g)
    np.testing.assert_allclose(result.x, np.linalg.solve(dense, g), rtol=1e-5)


@pytest.mark.parametrize("max_kl", [1e-6, 1e-2])
def test_trpo_accepted_step_satisfies_kl_bound_and_improves_surrogate(max_kl):
    params, obs, action, adv = _small_mlp_batch(batch=128)
    old = rl.action_log_probs(rl.mlp, params, obs, action)
    config = rl.Config(damping=1e-3, cg_iters=30)
    update = jax.jit(lambda method: rl.policy_update(
        method, rl.mlp, params, None, obs, action, old, adv, max_kl, config,
        jax.random.PRNGKey(0)), static_argnums=0)
    new, _, info = update("trpo")
    kl = _kl_numpy(rl.mlp(params, obs), rl.mlp(new, obs))
    assert bool(info.accepted) and 0 < kl <= max_kl
    assert kl == pytest.approx(float(info.kl), rel=1e-8)
    gain = np.mean(np.exp(np.asarray(rl.action_log_probs(rl.mlp, new, obs, action)) - old) * adv)
    assert gain > 0
    # the same direction without the line search (NPG) overshoots the radius at 1e-2 (the
    # quadratic model is poor along directions of small curvature), so TRPO's backtracking is
    # what kept it
    npg, _, _ = update("npg")
    npg_kl = _kl_numpy(rl.mlp(params, obs), rl.mlp(npg, obs))
    if max_kl == 1e-6:  # small radius: the quadratic model holds, no backtracking
        assert npg_kl == pytest.approx(kl, rel=1e-12)
    else:
        assert npg_kl > max_kl > kl


def test_gae_against_a_plain_loop():
    rng = np.random.default_rng(0)
    T, N, gamma, lam = 7, 3, 0.9, 0.8
    reward, value, next_value = (rng.normal(size=(T, N)) for _ in range(3))
    terminated = rng.random((T, N)) < 0.2
    truncated = ~terminated & (rng.random((T, N)) < 0.2)
    adv, target = rl.gae(jnp.asarray(reward), jnp.asarray(value), jnp.asarray(next_value),
                         jnp.asarray(terminated), jnp.asarray(truncated), gamma, lam)
    expected = np.zeros((T, N))
    for n in range(N):
        following = 0.0
        for t in reversed(range(T)):
            boot = 0.0 if terminated[t, n] else gamma * next_value[t, n]
            delta = reward[t, n] + boot - value[t, n]
            if terminated[t, n] or truncated[t, n]:
                following = 0.0
            following = delta + gamma * lam * following
            expected[t, n] = following
    np.testing.assert_allclose(adv, expected, rtol=1e-12)
    np.testing.assert_allclose(target, expected + value, rtol=1e-12)


def test_bad_arguments_are_refused_before_work():
    with pytest.raises(ValueError, match="method='sgd'"):
        rl.train(None, "sgd", rl.mlp, None, jax.random.PRNGKey(0), 0.1)
    with pytest.raises(ValueError, match="config.fisher"):
        rl.train(None, "npg", rl.mlp, None, jax.random.PRNGKey(0), 0.1,
                 rl.Config(fisher="gauss"))
    with pytest.raises(ValueError, match="config.num_envs"):
        rl.train(None, "npg", rl.mlp, None, jax.random.PRNGKey(0), 0.1, rl.Config(num_envs=0))
    with pytest.raises(ValueError, match="step_size must be positive"):
        rl.train(None, "ppo", rl.mlp, None, jax.random.PRNGKey(0), -1e-3)


def test_benchmark_steps_to_target_and_skip_note_without_gymnax(monkeypatch):
    steps = np.array([100, 200, 300, 400])
    assert rl_bench.steps_to_target([np.nan, 470.0, 480.0, 400.0], steps, 475) == 300
    assert rl_bench.steps_to_target([1.0, 2.0, np.nan, 3.0], steps, 475) is None
    assert rl_bench._median_or_none([100, None, 300]) == 300
    assert rl_bench._median_or_none([None, None, 300]) is None
    monkeypatch.setitem(sys.modules, "gymnax", None)  # import gymnax now fails
    records = rl_bench.run(quick=True)
    assert {r["method"] for r in records} == set(rl.METHODS)
    note = f"gymnax not installed; {rl.INSTALL_HINT}"
    assert all(r["note"] == note and r["run_s"] is None for r in records)
    assert f"rl/trpo (1 of 1 runs): skipped: {note}" in runner.skipped_summary(records)


# ------------------------------------------------------------------------------------------
# Environments (gymnax, the rl extra)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole():
    pytest.importorskip("gymnax")
    return rl.make_env("CartPole-v1")


def test_unknown_environment_name_is_named(cartpole):
    with pytest.raises(ValueError, match="name='CartPole-v9'"):
        rl.make_env("CartPole-v9")


def test_rollouts_are_reproducible_from_a_seed(cartpole):
    params = rl.init_mlp(jax.random.PRNGKey(0), (4, 8, 2), final_scale=1.0)
    run = jax.jit(lambda key: rl.rollout(cartpole, rl.mlp, params, rl.reset(cartpole, key, 4),
                                         60))
    (carry_a, a), (_, b), (_, c) = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1)), \
        run(jax.random.PRNGKey(2))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.action, c.action)
    # CartPole pays 1 a step; without a reset the next step starts where this one ended
    np.testing.assert_array_equal(a.reward, 1.0)
    done = np.asarray(a.terminated | a.truncated)
    np.testing.assert_array_equal(np.asarray(a.obs[1:])[~done[:-1]],
                                  np.asarray(a.next_obs[:-1])[~done[:-1]])
    assert done.any()  # a random policy falls within 60 steps
    first_end = done.argmax(axis=0)
    ended = done.any(axis=0)
    np.testing.assert_array_equal(np.asarray(carry_a.last_return)[ended] > 0, True)
    assert np.all(first_end[ended] + 1 <= 60)


def test_short_trpo_run_improves_cartpole_return(cartpole):
    config = rl.Config(num_envs=8, num_steps=64, num_updates=25, critic_steps=10)
    params0 = rl.init_mlp(jax.random.PRNGKey(3), (4, 32, 2))
    _, history = jax.jit(lambda key: rl.train(cartpole, "trpo", rl.mlp, params0, key, 0.02,
                                              config))(jax.random.PRNGKey(0))
    returns = np.asarray(history.mean_return)
    assert np.all(np.asarray(history.kl) <= 0.02 + 1e-6)
    assert np.asarray(history.env_steps)[-1] == 25 * 8 * 64
    # a uniform policy averages about 22 on CartPole
    assert np.nanmean(returns[:3]) < 40 and np.nanmean(returns[-3:]) > 100, returns
