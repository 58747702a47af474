"""Suite ``policy``: natural policy gradient, Newton and BFGS against vanilla policy gradient.

Problems (from :mod:`jacopt.problems.policy_problems`), each with an exact optimum:

- ``entropy-bandit`` (optimum ``pi* ∝ exp(r / tau)`` in closed form) and ``entropy-mdp``
  (optimum by soft value iteration), tau = 0.3: the loss is the suboptimality ``J* - J(X)``,
  target 1e-10.
- ``policy-distill``: the least-squares form (distil ``pi*`` of entropy-bandit), loss
  ``0.5 sum r^2``, target 1e-10.
- full run only: ``entropy-mdp-cold`` (tau = 0.1, where softmax saturation stops Newton and
  BFGS on a plateau above the optimum) and ``bandit`` (no entropy; supremum approached as
  ``|X| -> inf``), target 1e-3.

Methods, one record each (record format and timing rules: :mod:`jacopt.benchmarks._records`):

- first order, each over a learning-rate grid, best run reported: ``pg-sgd`` (``optax.sgd``)
  and ``pg-adam`` (``optax.adam``) on ``-J`` (vanilla policy gradient with exact gradients);
  full run also ``optax-lbfgs`` (zoom line search, no grid). On ``policy-distill``: ``sgd`` and
  ``adam`` on the cost.
- second order: ``npg``, the natural policy gradient ``X += eta F^+ grad J`` with the Fisher
  matrix from :func:`jacopt.jacobian` (step grid ``eta in {1/4, 1/2, 1} / tau``; ``1/tau`` is
  soft policy iteration), as a scan like the first-order methods; ``newton`` and ``bfgs``
  (:func:`jacopt.minimize`, quasi-Newton BFGS counted with the second-order side as in the
  issue); on ``policy-distill``: ``gn`` and ``lm`` (:func:`jacopt.least_squares`).

Target (reported, not asserted): NPG or Newton reaches the entropy-regularised optimum in at
least 10x fewer iterations than the best-tuned vanilla policy gradient.

Run: ``python -m jacopt.benchmarks.policy [--quick] [--out DIR]``, or ``jacopt bench policy``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax.numpy as jnp
import optax

import jacopt
from jacopt.benchmarks import _records
from jacopt.problems import natural_gradient as ng
from jacopt.problems import policy_problems as pp
from jacopt.problems import softmax_policy as sp

SUITE = "policy"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of one run of the suite. ``only`` maps a problem to the methods to run on it (all
    when absent)."""

    problems: tuple
    first_order_steps: int
    sgd_lrs: tuple
    adam_lrs: tuple
    npg_steps: int
    second_order_max_steps: int
    lbfgs: bool
    repeats: int
    only: dict = dataclasses.field(default_factory=dict)


QUICK = Config(problems=("entropy-bandit", "entropy-mdp", "policy-distill"),
               first_order_steps=2_000, sgd_lrs=(1.0, 10.0, 100.0), adam_lrs=(3e-3, 3e-2, 0.3),
               npg_steps=20, second_order_max_steps=300, lbfgs=False, repeats=3,
               only={"entropy-mdp": ("pg-adam", "npg", "newton"),
                     "policy-distill": ("adam", "gn", "lm")})
FULL = Config(problems=("entropy-bandit", "entropy-mdp", "policy-distill", "entropy-mdp-cold",
                        "bandit"),
              first_order_steps=20_000, sgd_lrs=(0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
              adam_lrs=(1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), npg_steps=50,
              second_order_max_steps=500, lbfgs=True, repeats=5)

# On the unregularised bandit 1/tau is undefined: NPG gets this grid instead.
_NPG_STEPS_NO_ENTROPY = (1.0, 10.0, 100.0)


def natural_gradient_optimizer(task, damping: float = 0.0) -> Callable:
    """``step_size -> optax.GradientTransformation`` preconditioning the gradient of ``-J``
    by the Fisher matrix of ``task`` at the current ``X``: updates ``-step_size (F +
    damping I)^+ grad`` (:func:`jacopt.problems.natural_gradient.fisher_solve`), i.e. natural
    policy gradient ascent on ``J``."""

    def make(step_size):
        def init(params):
            del params
            return optax.EmptyState()

        def update(grads, state, params):
            return -step_size * ng.fisher_solve(params, task, grads, damping=damping), state

        return optax.GradientTransformation(init, update)

    return make


def _distill_cost(X, *args):
    r = sp.distillation_residual(X, *args)
    return 0.5 * jnp.sum(r * r)


def _methods(problem, config):
    """``(problem, method, order, target_loss, thunk)`` for every method run on ``problem``."""
    if problem.objective is not None:  # loss = suboptimality of -J
        loss_fn, prefix = problem.objective, "pg-"

        def to_loss(v):
            return v - problem.optimal_value
    else:  # policy-distill: loss = least-squares cost
        loss_fn, prefix = _distill_cost, ""

        def to_loss(v):
            return v

    ident = {"suite": SUITE, "problem": problem.name, "target_loss": problem.target_loss}
    data = {"params0": problem.params0, "args": problem.args, "repeats": config.repeats}

    def grid(method, order, make_optimizer, lrs, steps, line_search=False, **extra):
        return lambda: _records.grid_record(
            method=method, order=order, loss_fn=loss_fn, make_optimizer=make_optimizer,
            learning_rates=lrs, steps=steps, to_loss=to_loss, line_search=line_search,
            extra=extra, **ident, **data)

    def second(method, entry, solver, **options):
        fun = problem.objective if problem.objective is not None else problem.residual
        return lambda: _records.jacopt_record(
            method=method, entry=entry, fun=fun, solver=solver, to_loss=to_loss,
            max_steps=config.second_order_max_steps, **options, **ident, **data)

    steps = config.first_order_steps
    methods = [
        (prefix + "sgd", "first", grid(prefix + "sgd", "first", optax.sgd, config.sgd_lrs, steps)),
        (prefix + "adam", "first",
         grid(prefix + "adam", "first", optax.adam, config.adam_lrs, steps)),
    ]
    if config.lbfgs:
        methods.append(("optax-lbfgs", "first", grid(
            "optax-lbfgs", "first", lambda lr: optax.lbfgs(), (1.0,), min(steps, 2_000),
            line_search=True, note="quasi-Newton; line search, no lr grid")))
    if problem.objective is not None:
        tau = float(problem.task.temperature)
        npg_steps = (tuple(c / tau for c in (0.25, 0.5, 1.0)) if tau > 0
                     else _NPG_STEPS_NO_ENTROPY)
        methods += [
            ("npg", "second", grid("npg", "second", natural_gradient_optimizer(problem.task),
                                   npg_steps, config.npg_steps,
                                   note="Fisher pseudo-inverse; step-size grid (as lr)")),
            ("newton", "second", second("newton", jacopt.minimize, "newton", gtol=1e-12)),
            ("bfgs", "second", second("bfgs", jacopt.minimize, "bfgs", gtol=1e-12)),
        ]
    else:
        methods += [(name, "second", second(name, jacopt.least_squares, name, gtol=1e-15))
                    for name in ("gn", "lm")]
    only = config.only.get(problem.name)
    return [(problem.name, method, order, problem.target_loss, thunk)
            for method, order, thunk in methods if only is None or method in only]


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Run the suite; one record per (problem, method). ``quick`` uses :data:`QUICK` (about
    20-30 s on 2 cores), else :data:`FULL`. ``progress("problem / method")`` is called before
    each method. Needs float64 (``jax_enable_x64``) for the 1e-10 targets; in float32 the
    problems use a 1e-4 target."""
    config = QUICK if quick else FULL
    methods = [m for name in config.problems for m in _methods(pp.get(name), config)]
    return _records.run_methods(SUITE, methods, progress)


if __name__ == "__main__":
    raise SystemExit(_records.main(SUITE, run))
