"""The policy-optimisation benchmark problems (:data:`PROBLEMS`, :func:`get`, :func:`names`):
``bandit``, ``entropy-bandit`` and ``entropy-mdp`` (tau = 0.3), ``entropy-mdp-cold`` (tau = 0.1,
where softmax saturation traps Newton and BFGS; see its builder) (objectives ``-J`` for
:func:`jacopt.minimize`) and ``policy-distill`` (a residual for :func:`jacopt.least_squares`),
built on the tasks of :mod:`jacopt.problems.softmax_policy`, each with its exact optimum.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np

import jacopt
from jacopt.problems.softmax_policy import (
    PolicyTask,
    contextual_bandit,
    distillation_residual,
    float_dtype,
    params_for_policy,
    policy_loss,
    soft_optimum,
    tabular_mdp,
)

__all__ = ["PolicyProblem", "PROBLEMS", "get", "names"]


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
    dtype = float_dtype(dtype)
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
    dtype = float_dtype(dtype)
    task = contextual_bandit(seed, temperature=temperature, dtype=dtype)
    return _soft_problem(
        "entropy-bandit",
        f"entropy-regularised contextual bandit (tau={temperature}), 8 contexts x 4 actions, "
        "8 features; optimum pi* ∝ exp(r/tau) in closed form",
        task, seed, dtype)


def _entropy_mdp(seed=0, dtype=None, temperature=0.3, name="entropy-mdp"):
    dtype = float_dtype(dtype)
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
    dtype = float_dtype(dtype)
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
