"""Natural policy gradient for your own policy.

Your policy is any function ``logits_fn(params, obs (B, d)) -> (B, A)`` of any parameter pytree;
here a dict with a shared tanh layer and a per-action bias. The Fisher matrix of its
log-probabilities is never formed: :func:`jacopt.problems.rl.fisher_vector_product` linearises the
logits once and applies ``J^T (diag(pi) - pi pi^T) J / B`` with one JVP and one transposed JVP,
and conjugate gradients (:func:`jacopt.linalg.cg`) solve ``(F + damping I) d = g`` for the natural
direction (Kakade 2001). TRPO (Schulman et al. 2015) then scales ``d`` to a KL radius and
backtracks on the surrogate.

The script (1) takes one natural step by hand on a CartPole batch and checks it against the
dense Fisher, (2) trains the same policy with TRPO for 30 updates of 2048 environment steps.

Needs gymnax: ``pip install -e '.[rl]'``. Run: ``python examples/natural_policy_gradient.py``.
"""
import jax
import jax.numpy as jnp
import numpy as np

import jacopt
from jacopt.problems import rl


def logits_fn(params, obs):
    """Your policy: any pytree, any function of (params, observations) -> logits."""
    hidden = jnp.tanh(obs @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["action_bias"]


def init_params(key, obs_dim, num_actions, width=32):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (obs_dim, width)) / np.sqrt(obs_dim),
            "b1": jnp.zeros(width),
            "w2": 0.01 * jax.random.normal(k2, (width, num_actions)) / np.sqrt(width),
            "action_bias": jnp.zeros(num_actions)}


def main():
    env = rl.make_env("CartPole-v1")
    params = init_params(jax.random.PRNGKey(0), env.obs_dim, env.num_actions)

    # (1) One natural step by hand on a batch of 16 x 64 transitions.
    carry = rl.reset(env, jax.random.PRNGKey(1), num_envs=16)
    _, batch = jax.jit(lambda c: rl.rollout(env, logits_fn, params, c, 64))(carry)
    obs, action = batch.obs.reshape(-1, env.obs_dim), batch.action.reshape(-1)
    # reward-to-go within each environment's rollout as a crude advantage
    to_go = jnp.cumsum(batch.reward[::-1], axis=0)[::-1].reshape(-1)
    adv = (to_go - to_go.mean()) / to_go.std()
    index = jacopt.TreeIndex(params)  # the flat order of every vector below
    g = index.ravel(jax.grad(
        lambda p: jnp.mean(rl.action_log_probs(logits_fn, p, obs, action) * adv))(params))
    result, fvp = rl.natural_direction(logits_fn, params, obs, g, damping=0.1, maxiter=50,
                                       tol=1e-6)
    dense = rl.exact_fisher(logits_fn, params, obs, damping=0.1)  # (n, n): fine for n = 226
    residual = np.linalg.norm(dense @ result.x - g) / np.linalg.norm(g)
    print(f"{index.size} parameters; CG: {int(result.num_steps)} Fisher-vector products, "
          f"relative residual against the dense Fisher {residual:.1e}")
    assert residual < 1e-4
    np.testing.assert_allclose(fvp(g), dense @ g, rtol=2e-4, atol=1e-6)

    # (2) TRPO with that policy: 30 updates of 16 x 128 environment steps.
    config = rl.Config(num_envs=16, num_steps=128, num_updates=30)
    train = jax.jit(lambda key: rl.train(env, "trpo", logits_fn, params, key, 0.01, config))
    trained, history = train(jax.random.PRNGKey(2))
    returns = np.asarray(history.mean_return)
    for u in range(4, config.num_updates, 5):
        print(f"env steps {int(history.env_steps[u]):6d}: average return {returns[u]:6.1f}, "
              f"KL of the step {float(history.kl[u]):.4f}")
    assert np.nanmean(returns[-5:]) > 2 * np.nanmean(returns[:3])
    assert np.all(np.asarray(history.kl) <= 0.01 + 1e-6)  # TRPO's line search kept the radius


if __name__ == "__main__":
    main()
