"""Linear softmax policies: log-probabilities and their Jacobians, exact policy evaluation and
gradients, samplers, and tasks (bandits, tabular MDPs) whose optimum is known exactly.

The policy. ``X`` has shape (A, F) (num_actions, num_features); a state ``s`` has features
``phi(s)`` of shape (F,), and ``pi(.|s) = softmax(X phi(s))``. Then::

    d log pi(a|s) / dX = (e_a - pi(.|s)) phi(s)^T            # (A, F) for each action a

so the Jacobian of the A log-probabilities with respect to X has shape (A, A, F)
(:func:`log_prob_jacobian`, built by :func:`jacopt.jacobian`; :func:`analytic_log_prob_jacobian`
is the formula above, for checking).

Tasks (:class:`PolicyTask`). A contextual bandit is a one-step task: a context ``s ~ initial``,
an action, a reward. A tabular MDP adds transitions and a discount. Both are one
``PolicyTask`` (a bandit has ``discount = 0``, and its "transitions" draw the next context
i.i.d. from ``initial``), so one objective serves both::

    J(X) = initial . V,   V = r_pi + tau H_pi + discount P_pi V          (exact policy evaluation)

with ``r_pi(s) = sum_a pi(a|s) r(s,a)``, the entropy ``H_pi(s)``, ``P_pi(s,s') = sum_a pi(a|s)
P(s,a,s')`` and the temperature ``tau >= 0`` (``tau = 0``: the plain expected return).
:func:`policy_evaluation` solves that linear system; nothing is sampled. The gradient follows
the policy-gradient theorem, ``grad J = sum_s d(s) sum_a pi(a|s) (Q(s,a) - tau log pi(a|s))
grad log pi(a|s)``, with the unnormalised discounted visitation ``d = initial^T (I - discount
P_pi)^-1`` (:func:`state_weights`; ``d = initial`` for a bandit) and the soft Q-values
``Q = r + discount P V`` (:func:`soft_q_values`); :func:`policy_gradient` differentiates the
exact evaluation, and the tests check it against this formula.

Exact optima. With ``tau > 0`` the optimal policy is ``pi*(a|s) ∝ exp(Q*(s,a) / tau)``, where
``V* = tau logsumexp(Q* / tau)`` and ``Q* = r + discount P V*`` (soft Bellman optimality; for a
bandit, ``pi* ∝ exp(r / tau)`` and ``J* = initial . tau logsumexp(r / tau)`` in closed form).
:func:`soft_optimum` computes it (soft value iteration, a contraction, run to machine precision
in float64); when the features of the states are linearly independent the optimum is reached by
a finite ``X*`` (:func:`params_for_policy`). With ``tau = 0`` the supremum ``E_s max_a r(s,a)``
is approached only as ``|X| -> infinity``.

The Fisher matrix and the natural gradient are in :mod:`jacopt.problems.natural_gradient`,
the benchmark problems in :mod:`jacopt.problems.policy_problems`. Every function of
``(X, *args)`` here is module-level and takes the task as an argument, so ``jit`` caches across
calls.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

import jacopt

__all__ = [
    "PolicyTask",
    "log_probs",
    "probs",
    "log_prob_jacobian",
    "analytic_log_prob_jacobian",
    "log_prob_jacobian_matrix",
    "policy_evaluation",
    "soft_q_values",
    "state_weights",
    "expected_return",
    "policy_loss",
    "policy_gradient",
    "soft_optimum",
    "params_for_policy",
    "sampled_policy_gradient",
    "distillation_residual",
    "contextual_bandit",
    "tabular_mdp",
]


class PolicyTask(NamedTuple):
    """A finite task for a linear softmax policy (a pytree of arrays, passed through ``args``).

    - ``features``: (S, F), ``phi(s)`` for each state.
    - ``initial``: (S,), the start (bandit: context) distribution.
    - ``transitions``: (S, A, S), ``P(s' | s, a)``.
    - ``rewards``: (S, A).
    - ``discount``: scalar in [0, 1); 0 makes the task a contextual bandit.
    - ``temperature``: scalar ``tau >= 0``, the weight of the entropy bonus.
    """

    features: Any
    initial: Any
    transitions: Any
    rewards: Any
    discount: Any
    temperature: Any


# --------------------------------------------------------------------------------------------
# The policy and its Jacobian
# --------------------------------------------------------------------------------------------


def _logits(X, features):
    if X.ndim != 2 or features.shape[-1] != X.shape[1]:
        raise ValueError(f"X must have shape (num_actions, num_features) matching features "
                         f"(..., num_features); got X {X.shape}, features {features.shape}.")
    return features @ X.T


def log_probs(X, features):
    """``log pi(.|s)`` for features of shape (F,) -> (A,), or a batch (S, F) -> (S, A)."""
    return jax.nn.log_softmax(_logits(X, features), axis=-1)


def probs(X, features):
    """``pi(.|s)``, shapes as in :func:`log_probs`."""
    return jax.nn.softmax(_logits(X, features), axis=-1)


def log_prob_jacobian(X, features):
    """``d log pi(a|s) / dX`` for every action: (A, A, F) for one state's features (F,),
    (S, A, A, F) for a batch. One :func:`jacopt.jacobian` call (mode chosen by the core)."""
    return jacopt.jacobian(log_probs)(X, features)


def analytic_log_prob_jacobian(X, features):
    """The closed form ``(e_a - pi) phi^T`` of :func:`log_prob_jacobian`, for one state (F,)
    -> (A, A, F). ``[a, b, f] = (delta_ab - pi_b) phi_f``."""
    pi = probs(X, features)
    eye = jnp.eye(X.shape[0], dtype=X.dtype)
    return (eye - pi[None, :])[:, :, None] * features[None, None, :]


def log_prob_jacobian_matrix(X, features):
    """The Jacobian of all log-probabilities ``log_probs(X, features).ravel()`` (rows ``s * A +
    a``) with respect to ``X.ravel()``: shape (S*A, A*F), one ``jacopt.jacobian(...,
    as_matrix=True)`` call."""
    return jacopt.jacobian(log_probs, as_matrix=True)(X, features)


# --------------------------------------------------------------------------------------------
# Exact policy evaluation
# --------------------------------------------------------------------------------------------


def _entropy(log_pi):
    return -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)


def _policy_matrices(X, task):
    """(log pi (S, A), P_pi (S, S), soft reward r_pi + tau H_pi (S,))."""
    log_pi = log_probs(X, task.features)
    pi = jnp.exp(log_pi)
    p_pi = jnp.einsum("sa,sat->st", pi, task.transitions)
    reward = jnp.sum(pi * task.rewards, axis=-1) + task.temperature * _entropy(log_pi)
    return log_pi, p_pi, reward


def _bellman_matrix(task, p_pi):
    return jnp.eye(p_pi.shape[0], dtype=p_pi.dtype) - task.discount * p_pi


def policy_evaluation(X, task):
    """The soft state values ``V`` (S,), solving ``(I - discount P_pi) V = r_pi + tau H_pi``
    (one S x S LU solve)."""
    _, p_pi, reward = _policy_matrices(X, task)
    return jnp.linalg.solve(_bellman_matrix(task, p_pi), reward)


def soft_q_values(X, task):
    """``Q(s, a) = r(s, a) + discount sum_s' P(s'|s,a) V(s')`` (S, A), ``V`` from
    :func:`policy_evaluation` (the entropy of the current state is not included)."""
    v = policy_evaluation(X, task)
    return task.rewards + task.discount * jnp.einsum("sat,t->sa", task.transitions, v)


def state_weights(X, task):
    """The unnormalised discounted state visitation ``d = initial^T (I - discount P_pi)^-1``
    (S,), summing to ``1 / (1 - discount)``; ``d = initial`` for a bandit."""
    _, p_pi, _ = _policy_matrices(X, task)
    return jnp.linalg.solve(_bellman_matrix(task, p_pi).T, task.initial)


def expected_return(X, task):
    """``J(X) = initial . V`` (scalar), the exact (soft) discounted return."""
    return jnp.dot(task.initial, policy_evaluation(X, task))


def policy_loss(X, task):
    """``-J(X)``, the objective for :func:`jacopt.minimize` (scalar)."""
    return -expected_return(X, task)


def policy_gradient(X, task):
    """``grad J`` (A, F), by reverse mode through the exact evaluation (one linear solve and its
    adjoint)."""
    return jax.grad(expected_return)(X, task)


# --------------------------------------------------------------------------------------------
# Exact optima
# --------------------------------------------------------------------------------------------


def soft_optimum(task, *, tol=1e-15, max_iter=100_000):
    """The optimal soft values and policy of a task with ``temperature > 0``, in float64 NumPy.

    Returns ``(v_star (S,), log_pi_star (S, A), j_star)``. Soft value iteration
    ``V <- tau logsumexp((r + discount P V) / tau)`` contracts at rate ``discount``; it runs
    until the update is below ``tol`` (relative), then three steps of soft policy iteration
    (exact evaluation of ``softmax(Q / tau)`` by a linear solve) polish ``V*`` to rounding. For
    a bandit (``discount == 0``) this is the closed form ``V* = tau logsumexp(r / tau)``.
    ``j_star = initial . V*``."""
    tau = float(task.temperature)
    if not tau > 0:
        raise ValueError(f"soft_optimum needs task.temperature > 0, got {tau}.")
    r = np.asarray(task.rewards, np.float64)
    p = np.asarray(task.transitions, np.float64)
    gamma = float(task.discount)
    v = np.zeros(r.shape[0])
    for _ in range(max_iter):
        q = r + gamma * p @ v
        qmax = q.max(axis=1)
        v_new = qmax + tau * np.log(np.exp((q - qmax[:, None]) / tau).sum(axis=1))
        done = np.max(np.abs(v_new - v)) <= tol * max(1.0, np.max(np.abs(v_new)))
        v = v_new
        if done:
            break
    # Polish with soft policy iteration (exact evaluation of the greedy soft policy, a Newton
    # step on the Bellman equation), so that V* agrees with policy_evaluation to rounding.
    for _ in range(3):
        q = r + gamma * p @ v
        log_pi = scipy.special.log_softmax(q / tau, axis=1)
        pi = np.exp(log_pi)
        reward = np.sum(pi * (r - tau * log_pi), axis=1)
        v = np.linalg.solve(np.eye(r.shape[0]) - gamma * np.einsum("sa,sat->st", pi, p), reward)
    q = r + gamma * p @ v
    log_pi = scipy.special.log_softmax(q / tau, axis=1)
    return v, log_pi, float(np.asarray(task.initial, np.float64) @ v)


def params_for_policy(log_pi, features, *, atol=1e-10):
    """The minimum-norm ``X`` (A, F) with ``log_softmax(features @ X.T) == log_pi``, or ``None``
    when no ``X`` reproduces the policy (residual above ``atol`` relative).

    Solves ``features @ X.T = log_pi`` by least squares in float64 (logits are determined up to
    a constant per state; ``log_pi`` itself is one valid choice of logits)."""
    phi = np.asarray(features, np.float64)
    target = np.asarray(log_pi, np.float64)
    xt, *_ = np.linalg.lstsq(phi, target, rcond=None)
    got = scipy.special.log_softmax(phi @ xt, axis=1)
    if np.max(np.abs(got - target)) > atol * max(1.0, np.max(np.abs(target))):
        return None
    return xt.T


# --------------------------------------------------------------------------------------------
# Monte Carlo policy gradient
# --------------------------------------------------------------------------------------------


def _draw(u, p):
    """Inverse-CDF sample of a categorical ``p`` (n,) from a uniform ``u``: an index in
    [0, n-1] (the count of cumulative probabilities below ``u``, last one excluded)."""
    return jnp.sum(u > jnp.cumsum(p)[:-1])


def _episode_gradient(X, task, uniforms):
    """REINFORCE estimate of ``grad J`` (A, F) from one episode driven by ``uniforms``
    (2 * horizon + 1,): the start state, then an action and a next state per step."""
    horizon = (uniforms.shape[0] - 1) // 2
    s0 = _draw(uniforms[0], task.initial)

    def step(s, u):
        phi = task.features[s]
        log_pi = log_probs(X, phi)
        pi = jnp.exp(log_pi)
        a = _draw(u[0], pi)
        soft_reward = task.rewards[s, a] - task.temperature * log_pi[a]
        # grad log pi(a|s) = (e_a - pi) phi^T (analytic_log_prob_jacobian's row a)
        score = (jax.nn.one_hot(a, X.shape[0], dtype=X.dtype) - pi)[:, None] * phi
        return _draw(u[1], task.transitions[s, a]), (soft_reward, score)

    _, (rewards, scores) = jax.lax.scan(step, s0, uniforms[1:].reshape(horizon, 2))
    powers = task.discount ** jnp.arange(horizon, dtype=rewards.dtype)
    # reward-to-go G_t = sum_{t' >= t} discount^(t'-t) r_t', so discount^t G_t is a tail sum.
    discounted_to_go = jnp.cumsum((powers * rewards)[::-1])[::-1]
    return jnp.tensordot(discounted_to_go, scores, axes=1)


def sampled_policy_gradient(X, task, key, num_episodes, horizon=1, *, per_episode=False):
    """Monte Carlo (REINFORCE, Williams 1992) estimate of ``grad J`` (A, F) from
    ``num_episodes`` independent episodes of ``horizon`` steps, reproducible from ``key``.

    Each episode contributes ``sum_t discount^t G_t grad log pi(a_t|s_t)`` with the soft
    reward-to-go ``G_t = sum_{t'>=t} discount^(t'-t) (r_t' - tau log pi(a_t'|s_t'))``; this is
    unbiased for a bandit (``horizon=1``) and biased by O(discount^horizon) for an MDP.
    ``per_episode=True`` returns the (num_episodes, A, F) estimates instead of their mean (for
    standard errors). ``num_episodes`` and ``horizon`` are static."""
    # All random numbers are drawn up front (uniforms, sampled by inverse CDF): random-key
    # splitting inside a vmapped scan compiles slowly.
    uniforms = jax.random.uniform(key, (int(num_episodes), 2 * int(horizon) + 1), X.dtype)
    grads = jax.vmap(lambda u: _episode_gradient(X, task, u))(uniforms)
    return grads if per_episode else jnp.mean(grads, axis=0)


# --------------------------------------------------------------------------------------------
# Policy distillation as least squares
# --------------------------------------------------------------------------------------------


def distillation_residual(X, features, weights, target_log_pi):
    """Residuals ``sqrt(weights[s] pi_t(a|s)) (log pi_X(a|s) - log pi_t(a|s))``, flattened to
    (S*A,), for :func:`jacopt.least_squares`.

    Zero exactly when ``pi_X == pi_t``. The cost ``0.5 sum r^2`` is the second-order expansion
    of ``sum_s weights[s] KL(pi_t(.|s) || pi_X(.|s))`` and the Gauss-Newton matrix ``J^T J`` is
    the Fisher matrix with weights ``weights[s] pi_t(a|s)``: Gauss-Newton on this residual is a
    natural-gradient method whose metric is frozen at the target."""
    scale = jnp.sqrt(weights[:, None] * jnp.exp(target_log_pi))
    return (scale * (log_probs(X, features) - target_log_pi)).reshape(-1)


# --------------------------------------------------------------------------------------------
# Task builders
# --------------------------------------------------------------------------------------------


def float_dtype(dtype):
    return jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)


def contextual_bandit(seed=0, num_states=8, num_actions=4, num_features=8, temperature=0.0,
                      dtype=None):
    """A contextual bandit from ``seed``: features N(0, 1/F), a random context distribution
    (Dirichlet(1)), rewards U(0, 1); discount 0 and i.i.d. contexts as transitions."""
    rng = np.random.default_rng(seed)
    dtype = float_dtype(dtype)
    initial = rng.dirichlet(np.ones(num_states))
    return PolicyTask(
        features=jnp.asarray(rng.normal(size=(num_states, num_features)) / math.sqrt(num_features),
                             dtype),
        initial=jnp.asarray(initial, dtype),
        transitions=jnp.asarray(np.broadcast_to(initial, (num_states, num_actions, num_states)),
                                dtype),
        rewards=jnp.asarray(rng.uniform(size=(num_states, num_actions)), dtype),
        discount=jnp.asarray(0.0, dtype),
        temperature=jnp.asarray(temperature, dtype),
    )


def tabular_mdp(seed=0, num_states=10, num_actions=4, num_features=10, discount=0.9,
                temperature=0.0, dtype=None):
    """A random MDP from ``seed``: transitions Dirichlet(1) per (s, a), rewards U(0, 1), a
    Dirichlet(1) start distribution, features N(0, 1/F)."""
    rng = np.random.default_rng(seed)
    dtype = float_dtype(dtype)
    return PolicyTask(
        features=jnp.asarray(rng.normal(size=(num_states, num_features)) / math.sqrt(num_features),
                             dtype),
        initial=jnp.asarray(rng.dirichlet(np.ones(num_states)), dtype),
        transitions=jnp.asarray(rng.dirichlet(np.ones(num_states), size=(num_states, num_actions)),
                                dtype),
        rewards=jnp.asarray(rng.uniform(size=(num_states, num_actions)), dtype),
        discount=jnp.asarray(discount, dtype),
        temperature=jnp.asarray(temperature, dtype),
    )
