"""Linear softmax policies: log-probability Jacobians, the Fisher matrix, the natural policy
gradient, and policy-optimisation tasks whose optimum is known exactly.

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

The Fisher matrix. ``F = sum_s d(s) sum_a pi(a|s) g_sa g_sa^T`` with ``g_sa = vec(d log pi(a|s)
/ dX)``, an (A*F, A*F) matrix in ``X.ravel()`` order, built from the (S*A, A*F) Jacobian of all
log-probabilities (one :func:`jacopt.jacobian` call) as ``J^T diag(w) J``, ``w[s,a] = d(s)
pi(a|s)`` (:func:`fisher_matrix`), or applied matrix-free as ``v -> J^T (w * (J v))``
(:func:`fisher_operator`, one linearisation reused for every product). ``F`` is always singular:
adding a constant to every logit of a state changes no probability, so ``F (1 c^T) = 0`` along
those directions; the natural gradient therefore uses a pseudo-inverse or damping.

The natural policy gradient (Kakade 2001) is ``w = (F + damping I)^+ grad J``
(:func:`natural_gradient`). With ``F`` and ``grad J`` weighted by the same ``d``, the update
``X + eta w`` changes the logits of each state by ``eta (Q(s,.) - tau log pi(.|s))`` plus a
constant (when ``phi`` spans the states), so ``eta = 1 / tau`` is soft policy iteration: exact in
one step on an entropy-regularised bandit, linear at rate ``discount`` on an MDP (Cen, Cheng,
Chen, Wei and Chi 2021, "Fast global convergence of natural policy gradient methods with entropy
regularization", Oper. Res. 70(4), with their normalisation of ``d``).

Exact optima. With ``tau > 0`` the optimal policy is ``pi*(a|s) ∝ exp(Q*(s,a) / tau)``, where
``V* = tau logsumexp(Q* / tau)`` and ``Q* = r + discount P V*`` (soft Bellman optimality; for a
bandit, ``pi* ∝ exp(r / tau)`` and ``J* = initial . tau logsumexp(r / tau)`` in closed form).
:func:`soft_optimum` computes it (soft value iteration, a contraction, run to machine precision
in float64); when the features of the states are linearly independent the optimum is reached by
a finite ``X*`` (:func:`params_for_policy`). With ``tau = 0`` the supremum ``E_s max_a r(s,a)``
is approached only as ``|X| -> infinity``.

Problems (:data:`PROBLEMS`, :func:`get`, :func:`names`): ``bandit``, ``entropy-bandit`` and
``entropy-mdp`` (tau = 0.3), ``entropy-mdp-cold`` (tau = 0.1, where softmax saturation traps
Newton and BFGS; see its builder) (objectives ``-J`` for :func:`jacopt.minimize`) and
``policy-distill`` (a residual for :func:`jacopt.least_squares`). Every function of
``(X, *args)`` here is module-level and takes the task as an argument, so ``jit`` caches across
calls.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

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
    "fisher_matrix",
    "fisher_operator",
    "fisher_solve",
    "natural_gradient",
    "npg_step",
    "soft_optimum",
    "params_for_policy",
    "sampled_policy_gradient",
    "distillation_residual",
    "contextual_bandit",
    "tabular_mdp",
    "PolicyProblem",
    "PROBLEMS",
    "get",
    "names",
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
# Fisher matrix and natural gradient
# --------------------------------------------------------------------------------------------


def _fisher_weights(X, task, weights):
    """``w[s, a] = d(s) pi(a|s)`` (S, A); ``weights`` overrides ``d``."""
    d = state_weights(X, task) if weights is None else weights
    return d[:, None] * probs(X, task.features)


def fisher_matrix(X, task, weights=None):
    """The Fisher information ``sum_s d(s) sum_a pi(a|s) g_sa g_sa^T``, (A*F, A*F) in
    ``X.ravel()`` order. ``d`` is :func:`state_weights` unless ``weights`` (S,) is given.

    Built from the (S*A, A*F) log-probability Jacobian (:func:`log_prob_jacobian_matrix`) as
    ``J^T diag(w) J``: cost one Jacobian plus O(S A (A F)^2)."""
    jac = log_prob_jacobian_matrix(X, task.features)
    w = _fisher_weights(X, task, weights).reshape(-1)
    return jac.T @ (w[:, None] * jac)


def fisher_operator(X, task, weights=None):
    """The Fisher matrix as a function ``v (A, F) -> F v (A, F)``, never formed.

    ``F v = J^T (w * (J v))`` with ``J`` from :func:`jacopt.jacobian_operator`: the
    log-probabilities are linearised once here (one forward pass), then each product costs one
    JVP and one transposed JVP, O(S A F) work."""
    w = _fisher_weights(X, task, weights).reshape(-1)
    jac = jacopt.jacobian_operator(log_probs, X, task.features)

    def apply(v):
        return jac.rmv(w * jac.mv(v.reshape(-1))).reshape(v.shape)

    return apply


def fisher_solve(X, task, v, *, damping=0.0, matrix_free=False, rcond=None, maxiter=None,
                 tol=None):
    """``(F + damping I)^+ v`` for ``v`` (A, F) and the Fisher matrix ``F`` at ``X``.

    - ``matrix_free=False``: ``F`` from :func:`fisher_matrix`; with ``damping > 0`` a Cholesky
      solve, with ``damping == 0`` the pseudo-inverse from an eigendecomposition, eigenvalues
      below ``rcond * max eigenvalue`` (default ``A*F`` machine epsilons) dropped. ``F`` is
      singular (module docstring) but a policy gradient lies in its range, so the
      pseudo-inverse gives the exact minimum-norm natural gradient. Cost O((A F)^3).
    - ``matrix_free=True``: conjugate gradients on :func:`fisher_operator` (``damping > 0``
      recommended), to a relative residual ``tol`` (default ``sqrt(eps)``), at most ``maxiter``
      (default ``2*A*F``) products.
    ``damping`` and ``rcond`` are absolute and relative, Python floats (static under jit).
    """
    n = v.size
    if matrix_free:
        op = fisher_operator(X, task)
        w, _ = jax.scipy.sparse.linalg.cg(
            lambda u: op(u) + damping * u, v,
            tol=math.sqrt(jnp.finfo(v.dtype).eps) if tol is None else tol,
            maxiter=2 * n if maxiter is None else maxiter)
        return w
    fisher = fisher_matrix(X, task)
    g = v.reshape(-1)
    if damping > 0:
        factor = jax.scipy.linalg.cho_factor(fisher + damping * jnp.eye(n, dtype=fisher.dtype))
        return jax.scipy.linalg.cho_solve(factor, g).reshape(v.shape)
    evals, evecs = jnp.linalg.eigh(fisher)
    cutoff = (n * jnp.finfo(fisher.dtype).eps if rcond is None else rcond) * evals[-1]
    inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0), 0.0)
    return (evecs @ (inv * (evecs.T @ g))).reshape(v.shape)


def natural_gradient(X, task, **solve_options):
    """The natural policy gradient ``(F + damping I)^+ grad J`` (A, F) (Kakade 2001);
    ``solve_options`` as in :func:`fisher_solve`."""
    return fisher_solve(X, task, policy_gradient(X, task), **solve_options)


def npg_step(X, task, step_size, damping=0.0):
    """One natural-policy-gradient ascent step ``X + step_size * natural_gradient(X)``.
    ``step_size = 1 / tau`` is soft policy iteration (module docstring)."""
    return X + step_size * natural_gradient(X, task, damping=damping)


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


def _dtype(dtype):
    return jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)


def contextual_bandit(seed=0, num_states=8, num_actions=4, num_features=8, temperature=0.0,
                      dtype=None):
    """A contextual bandit from ``seed``: features N(0, 1/F), a random context distribution
    (Dirichlet(1)), rewards U(0, 1); discount 0 and i.i.d. contexts as transitions."""
    rng = np.random.default_rng(seed)
    dtype = _dtype(dtype)
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
    dtype = _dtype(dtype)
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


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class PolicyProblem:
    """One policy-optimisation problem, ready for a solver.

    - ``params0``: the start ``X0`` (A, F), small N(0, 0.1^2) entries from the seed.
    - ``objective`` (or ``residual``): a module-level function of ``(X, *args)``; the other is
      ``None``. ``objective`` is ``-J`` (for :func:`jacopt.minimize`); ``residual`` returns
      (m,) (for :func:`jacopt.least_squares`).
    - ``optimal_value``: the minimum of the objective, or of the cost ``0.5 sum r^2`` (0).
      For ``bandit`` it is the unattained infimum ``-E_s max_a r``.
    - ``optimal_params``: a minimiser ``X*`` when one exists (else ``None``).
    - ``target_loss``: "time to target" threshold on :meth:`loss` (the suboptimality).
    - ``solver``: the default configuration, ``{"entry": "minimize" | "least_squares",
      "solver": name, **options}``; :meth:`solve` runs it.
    """

    name: str
    description: str
    task: PolicyTask
    params0: Any
    args: tuple
    optimal_value: float
    target_loss: float
    solver: dict
    objective: Optional[Callable] = None
    residual: Optional[Callable] = None
    optimal_params: Any = None

    def loss(self, X):
        """The suboptimality ``objective(X) - optimal_value``, or the cost ``0.5 sum r^2``."""
        if self.objective is not None:
            return self.objective(X, *self.args) - self.optimal_value
        r = self.residual(X, *self.args)
        return 0.5 * jnp.sum(r * r)

    def solve(self, **overrides):
        """Run the default solver configuration (``overrides`` replace its options)."""
        config = {**self.solver, **overrides}
        entry, solver = config.pop("entry"), config.pop("solver")
        if entry == "minimize":
            return jacopt.minimize(self.objective, self.params0, args=self.args, solver=solver,
                                   **config)
        return jacopt.least_squares(self.residual, self.params0, args=self.args, solver=solver,
                                    **config)


def _target_loss(dtype, float64_target):
    """``float64_target`` in float64; a looser 1e-4 in lower precision."""
    return float64_target if jnp.dtype(dtype) == jnp.float64 else 1e-4


def _params0(rng, num_actions, num_features, dtype):
    return jnp.asarray(0.1 * rng.normal(size=(num_actions, num_features)), dtype)


def _soft_problem(name, description, task, seed, dtype):
    _, log_pi_star, j_star = soft_optimum(task)
    x_star = params_for_policy(log_pi_star, task.features)
    num_actions, num_features = task.rewards.shape[1], task.features.shape[1]
    return PolicyProblem(
        name=name, description=description, task=task,
        params0=_params0(np.random.default_rng([seed, 1]), num_actions, num_features, dtype),
        args=(task,), objective=policy_loss, optimal_value=-j_star,
        optimal_params=None if x_star is None else jnp.asarray(x_star, dtype),
        target_loss=_target_loss(dtype, 1e-10),
        solver={"entry": "minimize", "solver": "newton", "max_steps": 100},
    )


def _bandit(seed=0, dtype=None):
    dtype = _dtype(dtype)
    task = contextual_bandit(seed, dtype=dtype)
    sup = float(np.asarray(task.initial, np.float64) @ np.asarray(task.rewards).max(axis=1))
    return PolicyProblem(
        name="bandit",
        description="contextual bandit, 8 contexts x 4 actions, 8 features, expected reward "
                    "(supremum E max r, approached as |X| -> inf)",
        task=task, params0=_params0(np.random.default_rng([seed, 1]), 4, 8, dtype),
        args=(task,), objective=policy_loss, optimal_value=-sup,
        target_loss=1e-3 if dtype == jnp.float64 else 1e-2,
        solver={"entry": "minimize", "solver": "bfgs", "max_steps": 500},
    )


def _entropy_bandit(seed=0, dtype=None, temperature=0.3):
    dtype = _dtype(dtype)
    task = contextual_bandit(seed, temperature=temperature, dtype=dtype)
    return _soft_problem(
        "entropy-bandit",
        f"entropy-regularised contextual bandit (tau={temperature}), 8 contexts x 4 actions, "
        "8 features; optimum pi* ∝ exp(r/tau) in closed form",
        task, seed, dtype)


def _entropy_mdp(seed=0, dtype=None, temperature=0.3, name="entropy-mdp"):
    dtype = _dtype(dtype)
    task = tabular_mdp(seed, temperature=temperature, dtype=dtype)
    return _soft_problem(
        name,
        f"entropy-regularised random MDP (tau={temperature}, discount 0.9), 10 states x 4 "
        "actions, 10 features; optimum by soft value iteration",
        task, seed, dtype)


def _entropy_mdp_cold(seed=0, dtype=None, temperature=0.1):
    """entropy-mdp at a lower temperature: the optimal policy gives some actions ~1e-3, and
    Newton/BFGS steps in X can drive such a probability to ~1e-12, where the gradient vanishes
    (a plateau, Mei et al. 2020): gradient-norm tests stop there, above the optimum (SciPy's
    BFGS and trust-exact too). The natural gradient rescales by 1/pi and is unaffected."""
    return _entropy_mdp(seed, dtype, temperature, name="entropy-mdp-cold")


def _policy_distill(seed=0, dtype=None, temperature=0.3):
    """Distil the entropy-bandit's optimal policy into a fresh X by least squares."""
    dtype = _dtype(dtype)
    task = contextual_bandit(seed, temperature=temperature, dtype=dtype)
    _, log_pi_star, _ = soft_optimum(task)
    num_actions, num_features = task.rewards.shape[1], task.features.shape[1]
    return PolicyProblem(
        name="policy-distill",
        description="fit X so that pi_X = pi* of entropy-bandit: weighted log-probability "
                    "residuals (S*A = 32) for least squares; optimum cost 0",
        task=task, params0=_params0(np.random.default_rng([seed, 1]), num_actions, num_features,
                                    dtype),
        args=(task.features, task.initial, jnp.asarray(log_pi_star, dtype)),
        residual=distillation_residual, optimal_value=0.0,
        optimal_params=jnp.asarray(params_for_policy(log_pi_star, task.features), dtype),
        target_loss=_target_loss(dtype, 1e-10),
        solver={"entry": "least_squares", "solver": "gn", "max_steps": 50},
    )


PROBLEMS: dict[str, Callable[..., PolicyProblem]] = {
    "bandit": _bandit,
    "entropy-bandit": _entropy_bandit,
    "entropy-mdp": _entropy_mdp,
    "entropy-mdp-cold": _entropy_mdp_cold,
    "policy-distill": _policy_distill,
}


def names() -> tuple[str, ...]:
    """The problem names, in registry order."""
    return tuple(PROBLEMS)


def get(name: str, seed: int = 0, dtype=None, **options) -> PolicyProblem:
    """Build problem ``name`` from ``seed`` in ``dtype`` (default: JAX's default float).
    ``options`` go to the builder (``temperature=`` for the entropy problems)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown policy problem {name!r}; valid names: {', '.join(PROBLEMS)}.")
    return PROBLEMS[name](seed=seed, dtype=dtype, **options)
