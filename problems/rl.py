"""Policy gradients on gymnax environments: softmax policies of any parameter pytree, the
sampled Fisher matrix (dense and matrix-free), and four policy-gradient methods.

Environments (:func:`make_env`): gymnax's JAX-native CartPole-v1 and Acrobot-v1 (any gymnax
name with discrete actions works), ``num_envs`` copies stepped under ``vmap`` and a
``lax.scan`` over time (:func:`reset`, :func:`rollout`), reproducible from a key. gymnax is
optional: ``pip install -e '.[rl]'``; without it :func:`make_env` raises ``ImportError`` with
that hint, and nothing else in this module needs it.

Policies. ``pi(.|s) = softmax(logits_fn(params, obs))`` for any ``logits_fn(params, obs (B, d))
-> (B, A)`` and any parameter pytree; :func:`mlp` is the one used here (a linear policy is an
MLP with no hidden layer, :func:`init_mlp`). :func:`log_prob_jacobian` is the per-sample
Jacobian of the log-probabilities, (B, A, n), from :func:`jacopt.jacobian` with
``as_matrix=True``; columns follow :class:`jacopt.TreeIndex` order.

The Fisher matrix, ``F = E_s E_{a~pi} [g g^T]`` with the score ``g = grad log pi(a|s)``, from a
batch of B states, in two forms (Amari 1998; Kakade 2001):

- empirical, ``(1/B) sum_b g_b g_b^T`` at the sampled actions (:func:`empirical_fisher`);
- exact categorical, ``(1/B) sum_b J_b^T (diag(pi_b) - pi_b pi_b^T) J_b`` with ``J_b`` the
  logits' Jacobian, the expectation over actions taken in closed form: a generalised
  Gauss-Newton matrix (Schraudolph 2002; Martens 2020, "New insights and perspectives on the
  natural gradient method", JMLR 21) (:func:`exact_fisher`).

Both are dense (n x n, for small n) or matrix-free (:func:`fisher_vector_product`: one
linearisation, then one JVP and one transposed JVP per product, never forming F), with
``damping * I`` added.

Methods (:func:`train`; every method sees ``num_envs * num_steps`` environment steps per
update, and all share the advantage estimator and the critic): ``reinforce`` (Williams 1992,
one Adam step on ``-E[log pi A]``), ``ppo`` (clipped surrogate with Adam, Schulman et al. 2017,
"Proximal policy optimization algorithms"), ``npg`` (natural gradient by conjugate gradients
on Fisher-vector products, :func:`jacopt.linalg.cg`, step scaled to a KL radius: Kakade 2001;
Rajeswaran et al. 2017, "Towards generalization and simplicity in continuous control") and
``trpo`` (the same direction, then backtracking on the surrogate until the mean KL is within
the radius and the surrogate improves: Schulman et al. 2015, "Trust region policy
optimization", ICML). Advantages are GAE (Schulman et al. 2016, "High-dimensional continuous
control using generalized advantage estimation") with a value-network baseline; at a time
limit the value of the true final observation is bootstrapped.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import jacopt
from jacopt import linalg
from jacopt._validate import is_traced

__all__ = [
    "ENV_NAMES", "INSTALL_HINT", "METHODS", "Environment", "make_env", "init_mlp", "mlp",
    "EnvCarry", "Batch", "reset", "rollout", "gae", "log_probs", "action_log_probs",
    "log_prob_jacobian", "empirical_fisher", "exact_fisher", "fisher_vector_product",
    "natural_direction", "mean_kl", "Config", "Update", "policy_update", "init_optimizer",
    "History", "train",
]

ENV_NAMES = ("CartPole-v1", "Acrobot-v1")
INSTALL_HINT = "pip install -e '.[rl]'"
METHODS = ("reinforce", "ppo", "npg", "trpo")


# --------------------------------------------------------------------------------------------
# Environments and rollouts
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Environment:
    """A gymnax environment and its parameters (closed over under ``jit``, never traced).
    ``dtype`` is that of observations and rewards handed to the policy."""

    name: str
    env: Any
    params: Any
    obs_dim: int
    num_actions: int
    dtype: Any = jnp.float32


def make_env(name: str, dtype=jnp.float32) -> Environment:
    """The gymnax environment ``name`` (e.g. ``"CartPole-v1"``), with discrete actions.
    Raises ``ImportError`` (with the install command) when gymnax is not installed and
    ``ValueError`` for an unknown name."""
    try:
        import gymnax
    except ImportError as exc:
        raise ImportError(f"gymnax is not installed: {INSTALL_HINT}") from exc
    if name not in gymnax.registered_envs:
        raise ValueError(f"unknown gymnax environment name={name!r}; e.g. {', '.join(ENV_NAMES)}.")
    env, params = gymnax.make(name)
    num_actions = getattr(env.action_space(params), "n", None)
    if num_actions is None:
        raise ValueError(f"environment name={name!r} has no discrete action space.")
    obs_dim = int(math.prod(env.observation_space(params).shape))
    return Environment(name, env, params, obs_dim, int(num_actions), jnp.dtype(dtype))


class EnvCarry(NamedTuple):
    """The state of ``num_envs`` running environments between rollouts.

    ``episode_return`` (N,): the return so far of each running episode; ``last_return`` (N,):
    the return of each environment's last finished episode (NaN before the first)."""

    obs: Any
    state: Any
    key: Any
    episode_return: Any
    last_return: Any


class Batch(NamedTuple):
    """``num_steps`` x ``num_envs`` transitions (leading axes (T, N)). ``next_obs`` is the
    observation after the step before any automatic reset (the final observation of an
    episode); ``log_prob`` is the behaviour policy's ``log pi(a|s)``."""

    obs: Any
    action: Any
    log_prob: Any
    reward: Any
    terminated: Any
    truncated: Any
    next_obs: Any


def _obs(env, obs):
    return jnp.asarray(obs, env.dtype).reshape(obs.shape[0], -1)


def reset(env: Environment, key, num_envs: int) -> EnvCarry:
    """``num_envs`` fresh environments from ``key``."""
    key, *keys = jax.random.split(key, num_envs + 1)
    obs, state = jax.vmap(env.env.reset, in_axes=(0, None))(jnp.stack(keys), env.params)
    nan = jnp.full((num_envs,), jnp.nan, env.dtype)
    return EnvCarry(_obs(env, obs), state, key, jnp.zeros((num_envs,), env.dtype), nan)


def rollout(env: Environment, logits_fn: Callable, params, carry: EnvCarry, num_steps: int):
    """Run the policy for ``num_steps`` steps in every environment (auto-reset at the end of an
    episode). Returns ``(carry, Batch)``; ``num_steps`` is static."""
    num_envs = carry.obs.shape[0]

    def step(carry, _):
        key, act_key, step_key = jax.random.split(carry.key, 3)
        logits = logits_fn(params, carry.obs)
        action = jax.random.categorical(act_key, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
        obs, state, reward, terminated, truncated, info = jax.vmap(
            env.env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(step_key, num_envs), carry.state, action, env.params)
        reward = jnp.asarray(reward, env.dtype)
        done = terminated | truncated
        episode_return = carry.episode_return + reward
        batch = Batch(carry.obs, action, log_prob, reward, terminated, truncated,
                      _obs(env, info["final_observation"]))
        return EnvCarry(_obs(env, obs), state, key, jnp.where(done, 0, episode_return),
                        jnp.where(done, episode_return, carry.last_return)), batch

    return jax.lax.scan(step, carry, None, length=num_steps)


def gae(reward, value, next_value, terminated, truncated, gamma, lam):
    """Generalised advantage estimates (Schulman et al. 2016) for (T, N) arrays: ``delta_t =
    r_t + gamma V(s'_t) [not terminated] - V(s_t)``, ``A_t = delta_t + gamma lam [not done_t]
    A_{t+1}``, ``A_T = 0``. Returns ``(advantages, value targets A + V)``."""
    delta = reward + gamma * next_value * (1 - terminated.astype(reward.dtype)) - value
    keep = gamma * lam * (1 - (terminated | truncated).astype(reward.dtype))

    def back(following, x):
        d, k = x
        adv = d + k * following
        return adv, adv

    _, adv = jax.lax.scan(back, jnp.zeros_like(delta[0]), (delta, keep), reverse=True)
    return adv, adv + value


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------


def init_mlp(key, sizes, dtype=jnp.float32, final_scale=0.01):
    """Parameters ``[{"w": (m, k), "b": (k,)}, ...]`` of an MLP with layer sizes ``sizes`` (input
    first), orthogonal-like scaled Gaussian weights ``N(0, 1/m)``, the last layer scaled by
    ``final_scale`` (a near-uniform initial policy). ``sizes = (d, A)`` is a linear policy."""
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, m, n) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        scale = (final_scale if i == len(sizes) - 2 else 1.0) / math.sqrt(m)
        params.append({"w": scale * jax.random.normal(k, (m, n), dtype),
                       "b": jnp.zeros((n,), dtype)})
    return params


def mlp(params, x):
    """The MLP of :func:`init_mlp` on ``x`` (B, d) -> (B, k): tanh hidden layers, linear output."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def log_probs(logits_fn, params, obs):
    """``log pi(.|s)`` (B, A)."""
    return jax.nn.log_softmax(logits_fn(params, obs), axis=-1)


def action_log_probs(logits_fn, params, obs, action):
    """``log pi(a_b|s_b)`` (B,)."""
    return jnp.take_along_axis(log_probs(logits_fn, params, obs), action[:, None], 1)[:, 0]


def log_prob_jacobian(logits_fn, params, obs):
    """``d log pi(a|s_b) / d params`` for every state and action, (B, A, n), columns in
    :class:`jacopt.TreeIndex` order of ``params`` (one :func:`jacopt.jacobian` call,
    ``as_matrix=True``; it picks forward mode when n <= B A)."""
    jac = jacopt.jacobian(lambda p: log_probs(logits_fn, p, obs), as_matrix=True)(params)
    return jac.reshape(obs.shape[0], -1, jac.shape[-1])


def empirical_fisher(logits_fn, params, obs, action, damping=0.0):
    """``(1/B) sum_b g_b g_b^T + damping I`` (n, n), ``g_b`` the score at the sampled action."""
    jac = log_prob_jacobian(logits_fn, params, obs)
    scores = jnp.take_along_axis(jac, action[:, None, None], 1)[:, 0]
    n = scores.shape[1]
    return scores.T @ scores / obs.shape[0] + damping * jnp.eye(n, dtype=scores.dtype)


def exact_fisher(logits_fn, params, obs, damping=0.0):
    """``(1/B) sum_b sum_a pi(a|s_b) g_ba g_ba^T + damping I`` (n, n): the expectation over
    actions in closed form, equal to ``J^T (diag(pi) - pi pi^T) J`` for the logits' Jacobian
    ``J`` (rows of the log-probability Jacobian are ``(I - 1 pi^T) J``)."""
    jac = log_prob_jacobian(logits_fn, params, obs)
    pi = jax.nn.softmax(logits_fn(params, obs), axis=-1)
    n = jac.shape[-1]
    fisher = jnp.einsum("ban,ba,bam->nm", jac, pi, jac) / obs.shape[0]
    return fisher + damping * jnp.eye(n, dtype=jac.dtype)


def fisher_vector_product(logits_fn, params, obs, action=None, damping=0.0):
    """The Fisher matrix as ``v (n,) -> (F + damping I) v``, never formed; flat vectors in
    :class:`jacopt.TreeIndex` order of ``params``.

    ``action=None``: the exact categorical Fisher, ``J^T H J v / B`` with the logits' Jacobian
    ``J`` and ``H = diag(pi) - pi pi^T`` per state; otherwise the empirical Fisher of the
    sampled actions, ``S^T S v / B`` with ``S`` the (B, n) scores. The function is linearised
    once here (one forward pass); each product is one JVP and one transposed JVP, the cost of
    about one gradient."""
    index = jacopt.TreeIndex(params)
    x = index.ravel(params)
    batch = obs.shape[0]
    if action is None:
        out, jvp = jax.linearize(lambda f: logits_fn(index.unravel(f), obs), x)
        pi = jax.nn.softmax(out, axis=-1)

        def weight(u):
            return pi * u - pi * jnp.sum(pi * u, axis=-1, keepdims=True)
    else:
        out, jvp = jax.linearize(
            lambda f: action_log_probs(logits_fn, index.unravel(f), obs, action), x)

        def weight(u):
            return u
    vjp = jax.linear_transpose(jvp, x)

    def apply(v):
        return vjp(weight(jvp(v)))[0] / batch + damping * v

    return apply


def natural_direction(logits_fn, params, obs, grad_flat, *, action=None, damping=0.1,
                      maxiter=10, tol=1e-10):
    """``(F + damping I)^{-1} g`` by conjugate gradients on :func:`fisher_vector_product`
    (:func:`jacopt.linalg.cg`, at most ``maxiter`` products, relative residual ``tol``).
    Returns ``(CGResult, fvp)``."""
    fvp = fisher_vector_product(logits_fn, params, obs, action, damping)
    return linalg.cg(fvp, grad_flat, tol=tol, maxiter=maxiter), fvp


def mean_kl(logits_fn, old_log_probs, params, obs):
    """``(1/B) sum_b KL(pi_old(.|s_b) || pi_params(.|s_b))`` from the old (B, A) log-probs."""
    new = log_probs(logits_fn, params, obs)
    return jnp.mean(jnp.sum(jnp.exp(old_log_probs) * (old_log_probs - new), axis=-1))


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """One experiment's sizes and fixed hyperparameters (the step size is passed to
    :func:`train` apart, so that a grid of them compiles once).

    - ``num_envs`` x ``num_steps``: environment steps per update, the same for every method
      (long rollouts from few environments: an episode of 500 steps ends within about one).
    - ``gamma``, ``gae_lambda``: discount and GAE parameter.
    - ``critic_hidden``, ``critic_lr``, ``critic_steps``: the value network, fitted by
      ``critic_steps`` full-batch Adam steps per update to the GAE value targets.
    - ``ppo_epochs``, ``ppo_minibatches``, ``ppo_clip``: PPO's passes over each batch.
    - ``cg_iters``, ``cg_tol``, ``damping``, ``fisher``: NPG/TRPO's CG solve on the
      ``"exact"`` or ``"empirical"`` Fisher.
    - ``backtracks``, ``backtrack_ratio``: TRPO's line search.
    """

    num_envs: int = 4
    num_steps: int = 512
    num_updates: int = 100
    gamma: float = 0.99
    gae_lambda: float = 0.95
    critic_hidden: tuple = (64, 64)
    critic_lr: float = 1e-2
    critic_steps: int = 100
    ppo_epochs: int = 10
    ppo_minibatches: int = 4
    ppo_clip: float = 0.2
    cg_iters: int = 10
    cg_tol: float = 1e-10
    damping: float = 0.1
    fisher: str = "exact"
    backtracks: int = 10
    backtrack_ratio: float = 0.5


class Update(NamedTuple):
    """What one policy update did: the mean KL from the old policy on the batch's states,
    whether a step was taken (TRPO may reject all trials), the surrogate's change."""

    kl: Any
    accepted: Any
    improvement: Any


def init_optimizer(method, params, step_size):
    """Adam's state for ``reinforce``/``ppo`` (an empty state for ``npg``/``trpo``)."""
    if method in ("reinforce", "ppo"):
        return optax.adam(step_size).init(params)
    return optax.EmptyState()


def _surrogate(logits_fn, params, obs, action, old_log_prob, adv):
    """``(1/B) sum_b exp(log pi - log pi_old) A_b``: its gradient at the behaviour policy is the
    policy gradient."""
    ratio = jnp.exp(action_log_probs(logits_fn, params, obs, action) - old_log_prob)
    return jnp.mean(ratio * adv)


def policy_update(method, logits_fn, params, opt_state, obs, action, old_log_prob, adv,
                  step_size, config: Config, key):
    """One update of ``method`` from a flattened batch (``obs`` (B, d), ``action``,
    ``old_log_prob``, ``adv`` (B,)). ``step_size`` is Adam's learning rate for ``reinforce``
    and ``ppo`` and the KL radius ``delta`` for ``npg`` and ``trpo``. Returns ``(params,
    opt_state, Update)``."""
    old_all = jax.lax.stop_gradient(log_probs(logits_fn, params, obs))
    surrogate = lambda p, *b: _surrogate(logits_fn, p, *b)  # noqa: E731
    batch = (obs, action, old_log_prob, adv)
    before = surrogate(params, *batch)
    accepted = jnp.asarray(True)
    if method == "reinforce":
        grad = jax.grad(surrogate)(params, *batch)
        updates, opt_state = optax.adam(step_size).update(
            jax.tree.map(jnp.negative, grad), opt_state, params)
        params = optax.apply_updates(params, updates)
    elif method == "ppo":
        params, opt_state = _ppo_epochs(logits_fn, params, opt_state, batch, step_size, config,
                                        key)
    elif method in ("npg", "trpo"):
        index = jacopt.TreeIndex(params)
        g = index.ravel(jax.grad(surrogate)(params, *batch))
        result, fvp = natural_direction(
            logits_fn, params, obs, g, action=None if config.fisher == "exact" else action,
            damping=config.damping, maxiter=config.cg_iters, tol=config.cg_tol)
        d = result.x
        # the largest step along d with quadratic KL model 0.5 s^2 d^T F d equal to delta
        quad = jnp.maximum(jnp.vdot(d, fvp(d)), jnp.finfo(d.dtype).tiny)
        full = jnp.sqrt(2 * step_size / quad) * d
        x = index.ravel(params)
        if method == "npg":
            params = index.unravel(x + full)
        else:
            params, accepted = _backtrack(logits_fn, index, x, full, old_all, before, batch,
                                          step_size, config)
    else:
        raise ValueError(f"unknown method={method!r}; valid: {', '.join(METHODS)}.")
    kl = mean_kl(logits_fn, old_all, params, obs)
    return params, opt_state, Update(kl, accepted, surrogate(params, *batch) - before)


def _backtrack(logits_fn, index, x, full, old_all, before, batch, max_kl, config):
    """TRPO's line search: trials ``x + ratio^k full``, k = 0, 1, ...; accept the first with
    mean KL <= ``max_kl`` and a surrogate above ``before``; keep ``x`` if none passes."""
    obs = batch[0]

    def trial(k):
        p = index.unravel(x + config.backtrack_ratio ** k * full)
        kl = mean_kl(logits_fn, old_all, p, obs)
        gain = _surrogate(logits_fn, p, *batch) - before
        return (kl <= max_kl) & (gain > 0) & jnp.isfinite(gain)

    def cond(state):
        k, ok = state
        return ~ok & (k < config.backtracks)

    def body(state):
        k, _ = state
        ok = trial(k.astype(x.dtype))
        return jnp.where(ok, k, k + 1), ok

    k, ok = jax.lax.while_loop(cond, body, (jnp.asarray(0), jnp.asarray(False)))
    step = jnp.where(ok, config.backtrack_ratio ** k.astype(x.dtype), 0.0)
    return index.unravel(x + step * full), ok


def _ppo_epochs(logits_fn, params, opt_state, batch, lr, config, key):
    """PPO-clip: ``ppo_epochs`` passes over the batch in ``ppo_minibatches`` shuffled
    minibatches, one Adam step on ``-E[min(r A, clip(r, 1 +- eps) A)]`` each."""
    size = batch[0].shape[0]
    mb = size // config.ppo_minibatches
    optimizer = optax.adam(lr)

    def loss(p, obs, action, old, adv):
        ratio = jnp.exp(action_log_probs(logits_fn, p, obs, action) - old)
        clipped = jnp.clip(ratio, 1 - config.ppo_clip, 1 + config.ppo_clip)
        return -jnp.mean(jnp.minimum(ratio * adv, clipped * adv))

    def minibatch(carry, idx):
        p, s = carry
        grad = jax.grad(loss)(p, *(b[idx] for b in batch))
        updates, s = optimizer.update(grad, s, p)
        return (optax.apply_updates(p, updates), s), None

    def epoch(carry, k):
        perm = jax.random.permutation(k, size)[: mb * config.ppo_minibatches]
        return jax.lax.scan(minibatch, carry, perm.reshape(config.ppo_minibatches, mb))[0], None

    (params, opt_state), _ = jax.lax.scan(epoch, (params, opt_state),
                                          jax.random.split(key, config.ppo_epochs))
    return params, opt_state


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class History(NamedTuple):
    """Per update (leading axis ``num_updates``): ``mean_return``, the mean over environments
    of each one's last finished episode's return (NaN until one finishes) after the update's
    rollout; ``env_steps``, environment steps taken so far; and the :class:`Update` fields."""

    mean_return: Any
    env_steps: Any
    kl: Any
    accepted: Any
    improvement: Any


def _critic_fit(critic, opt_state, obs, target, config):
    optimizer = optax.adam(config.critic_lr)

    def loss(c):
        return jnp.mean((mlp(c, obs)[:, 0] - target) ** 2)

    def step(carry, _):
        c, s = carry
        updates, s = optimizer.update(jax.grad(loss)(c), s, c)
        return (optax.apply_updates(c, updates), s), None

    return jax.lax.scan(step, (critic, opt_state), None, length=config.critic_steps)[0]


def train(env: Environment, method: str, logits_fn: Callable, params0, key, step_size,
          config: Config = Config()):
    """Train the policy ``(logits_fn, params0)`` with ``method`` on ``env`` for
    ``config.num_updates`` updates; returns ``(params, History)``.

    Everything random comes from ``key``; ``key`` and ``step_size`` may be traced, so
    ``jax.jit(jax.vmap(...))`` runs several seeds and step sizes in one computation. Each
    update: a rollout of ``num_envs x num_steps`` steps, GAE advantages (normalised per batch)
    from the critic, one :func:`policy_update`, then the critic fit to the value targets."""
    if method not in METHODS:
        raise ValueError(f"unknown method={method!r}; valid: {', '.join(METHODS)}.")
    if config.fisher not in ("exact", "empirical"):
        raise ValueError(f"config.fisher must be 'exact' or 'empirical', got {config.fisher!r}.")
    for field in ("num_envs", "num_steps", "num_updates", "critic_steps", "ppo_epochs",
                  "ppo_minibatches", "cg_iters"):
        value = getattr(config, field)
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"config.{field} must be a positive int, got {value!r}.")
    if not is_traced(step_size) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size!r}.")
    env_key, critic_key, key = jax.random.split(key, 3)
    critic = init_mlp(critic_key, (env.obs_dim, *config.critic_hidden, 1), env.dtype, 1.0)
    critic_opt = optax.adam(config.critic_lr).init(critic)
    carry = reset(env, env_key, config.num_envs)
    opt_state = init_optimizer(method, params0, step_size)
    per_update = config.num_envs * config.num_steps

    def update(state, key):
        params, opt_state, critic, critic_opt, carry = state
        carry, batch = rollout(env, logits_fn, params, carry, config.num_steps)
        value = mlp(critic, batch.obs)[..., 0]
        next_value = mlp(critic, batch.next_obs)[..., 0]
        adv, target = gae(batch.reward, value, next_value, batch.terminated, batch.truncated,
                          config.gamma, config.gae_lambda)
        flat = lambda a: a.reshape((per_update,) + a.shape[2:])  # noqa: E731
        adv = flat(adv)
        adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
        params, opt_state, info = policy_update(
            method, logits_fn, params, opt_state, flat(batch.obs), flat(batch.action),
            flat(batch.log_prob), adv, step_size, config, key)
        critic, critic_opt = _critic_fit(critic, critic_opt, flat(batch.obs), flat(target),
                                         config)
        last = carry.last_return
        seen = jnp.isfinite(last)
        mean_return = jnp.where(jnp.any(seen), jnp.sum(jnp.where(seen, last, 0))
                                / jnp.maximum(jnp.sum(seen), 1), jnp.nan)
        return (params, opt_state, critic, critic_opt, carry), (mean_return, *info)

    state = (params0, opt_state, critic, critic_opt, carry)
    state, (mean_return, kl, accepted, improvement) = jax.lax.scan(
        update, state, jax.random.split(key, config.num_updates))
    steps = per_update * jnp.arange(1, config.num_updates + 1)
    return state[0], History(mean_return, steps, kl, accepted, improvement)
