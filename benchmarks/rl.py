"""Suite ``rl``: natural policy gradient and TRPO against REINFORCE + Adam and PPO on gymnax
environments, in environment steps and wall time to a target return.

Problems (:data:`ENVS`): ``CartPole-v1`` (target average return 475, the maximum is 500) and,
in the full run, ``Acrobot-v1`` (target -100). The policy is an MLP (64, 64, tanh) softmax
policy and the critic an MLP of the same size, from :mod:`jacopt.problems.rl`; every method
sees ``num_envs x num_steps`` environment steps per update (4 x 512 = 2,048: an episode of up
to 500 steps finishes within about one rollout, so the average return lags the policy by about
one update, not four) and the same GAE advantages.

Methods, one record each (``order``: ``first`` for ``reinforce`` and ``ppo`` (Adam),
``second`` for ``npg`` and ``trpo`` (conjugate gradients on Fisher-vector products)). Each runs
every seed and every value of its step-size grid (Adam's learning rate; NPG/TRPO's KL radius)
in one ``jit(vmap(...))`` compiled once, timed per step size by the harness's rule
(:func:`jacopt.benchmarks._records.time_calls`); the best step size is reported: the fewest median
environment steps to the target, else the highest median final return.

Record fields (beside :data:`jacopt.benchmarks.runner.REQUIRED_FIELDS`):

- ``loss`` is the shortfall of the average return from a ceiling (500 on CartPole, 0 on
  Acrobot), so ``target_loss`` is 25 and 100; ``iters_to_target`` is the median over seeds of
  the environment steps at which the average return first reaches the target (a seed that never
  does counts as infinite; ``None`` when the median is); ``time_to_target_s`` the median wall
  time to it, a seed's wall time being the vmapped call's ``run_s`` divided by the seeds.
- ``curve``: the median shortfall against environment steps (``iters``) and wall time;
  ``returns``: the mean return per update over seeds with a 95% t-interval (``low``,
  ``high``), the ``median``, and ``env_steps``; ``steps_to_target`` per seed; ``grid``.
- ``problem == "fvp-cost"``: one Fisher-vector product (after the one linearisation shared by
  a CG solve) and linearisation plus product, against one policy gradient on the same batch;
  ``fvp_over_gradient`` is the ratio (target <= 3).

Targets (reported, not asserted): on CartPole NPG or TRPO reaches 475 in >= 2x fewer
environment steps than the best-tuned REINFORCE + Adam; Acrobot reported; a Fisher-vector
product <= 3x a policy gradient.

Without gymnax (``pip install -e '.[rl]'``) every record is skipped with that note.
Run: ``python -m jacopt.benchmarks.rl [--quick] [--out DIR]``, or ``jacopt bench rl`` (both
also write PNG plots with the confidence bands, :func:`write_plots`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks import _records
from jacopt.problems import rl

SUITE = "rl"

#: environment -> (target return, return ceiling for the shortfall "loss")
ENVS = {"CartPole-v1": (475.0, 500.0), "Acrobot-v1": (-100.0, 0.0)}
ORDER = {"reinforce": "first", "ppo": "first", "npg": "second", "trpo": "second"}


@dataclasses.dataclass(frozen=True)
class Config:
    """One run of the suite: environments with their number of updates, seeds, the step-size
    grid per method, the shared :class:`jacopt.problems.rl.Config` and the policy's hidden
    layers."""

    envs: dict
    seeds: int
    grids: dict
    train: rl.Config
    hidden: tuple = (64, 64)
    fvp_cost: bool = True


QUICK = Config(envs={"CartPole-v1": 30}, seeds=2,
               grids={"reinforce": (1e-2,), "ppo": (3e-3,), "npg": (0.1,), "trpo": (0.1,)},
               train=rl.Config(num_envs=4, num_steps=512))
FULL = Config(envs={"CartPole-v1": 40, "Acrobot-v1": 60}, seeds=5,
              grids={"reinforce": (3e-3, 5e-3, 1e-2, 2e-2, 3e-2, 5e-2),
                     "ppo": (3e-4, 1e-3, 3e-3, 1e-2),
                     "npg": (0.02, 0.05, 0.1, 0.2), "trpo": (0.02, 0.05, 0.1, 0.2)},
              train=rl.Config(num_envs=4, num_steps=512))


def steps_to_target(mean_return, env_steps, target) -> Optional[int]:
    """The environment steps at the first update whose average return is >= ``target``."""
    hits = np.flatnonzero(np.nan_to_num(np.asarray(mean_return, float), nan=-np.inf) >= target)
    return int(env_steps[hits[0]]) if hits.size else None


def _median_or_none(values):
    """The median with ``None`` as infinity; ``None`` when the median is infinite."""
    med = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(med) else med


def _band(returns):
    """Mean, 95% t-interval and median over seeds (axis 0) of (seeds, updates) returns."""
    import scipy.stats

    seeds = returns.shape[0]
    mean = np.nanmean(returns, axis=0)
    half = (scipy.stats.t.ppf(0.975, seeds - 1) * np.nanstd(returns, axis=0, ddof=1)
            / math.sqrt(seeds)) if seeds > 1 else np.zeros_like(mean)
    return {"mean": mean.tolist(), "low": (mean - half).tolist(), "high": (mean + half).tolist(),
            "median": np.nanmedian(returns, axis=0).tolist()}


def _run_method(env, method, config: Config, num_updates: int):
    """Every step size of ``method``'s grid, every seed vmapped: the best run as a record."""
    target, ceiling = ENVS[env.name]
    train_config = dataclasses.replace(config.train, num_updates=num_updates)
    sizes = (env.obs_dim, *config.hidden, env.num_actions)

    def run(seed_key, step_size):
        params0 = rl.init_mlp(jax.random.fold_in(seed_key, 1), sizes, env.dtype)
        _, history = rl.train(env, method, rl.mlp, params0, seed_key, step_size, train_config)
        return history

    keys = jax.random.split(jax.random.PRNGKey(0), config.seeds)
    batched = jax.vmap(run, in_axes=(0, None))
    grid = config.grids[method]
    step0 = jnp.asarray(grid[0], env.dtype)
    compile_s, compiled = _records.compile_timed(batched, keys, step0)
    runs = []
    for step_size in grid:
        history, run_s = _records.time_calls(compiled, keys, jnp.asarray(step_size, env.dtype),
                                             repeats=1)
        run_s /= config.seeds
        returns = np.asarray(history.mean_return, float)
        env_steps = np.asarray(history.env_steps[0])
        reached = [steps_to_target(r, env_steps, target) for r in returns]
        runs.append({"step_size": float(step_size), "returns": returns, "env_steps": env_steps,
                     "run_s": run_s, "reached": reached, "kl": np.asarray(history.kl, float),
                     "accepted": np.asarray(history.accepted, float),
                     "median_steps": _median_or_none(reached),
                     "final": float(np.nanmedian(returns[:, -1]))})

    def rank(r):
        return ((0, r["median_steps"], 0.0) if r["median_steps"] is not None
                else (1, 0, -r["final"] if math.isfinite(r["final"]) else math.inf))

    best = min(runs, key=rank)
    per_step = best["run_s"] / num_updates
    steps_per_update = int(best["env_steps"][0])
    median = np.nanmedian(best["returns"], axis=0)
    loss = np.concatenate([[ceiling - _initial_return(env)], ceiling - median])
    iters = np.concatenate([[0], best["env_steps"]])
    k = best["median_steps"]
    step_name = "lr" if ORDER[method] == "first" else "max_kl"
    return {
        "suite": SUITE, "problem": env.name, "method": method, "order": ORDER[method],
        "target_loss": ceiling - target, "target_return": target,
        "iters_to_target": k,
        "time_to_target_s": None if k is None else k / steps_per_update * per_step,
        "final_loss": float(loss[-1]), "final_return": float(median[-1]),
        "compile_s": compile_s, "run_s": best["run_s"], "num_steps": num_updates,
        "env_steps_per_update": steps_per_update, "seeds": config.seeds,
        step_name: best["step_size"],
        "steps_to_target": best["reached"],
        "mean_kl": float(np.mean(best["kl"])), "max_kl_seen": float(np.max(best["kl"])),
        "accepted_fraction": float(np.mean(best["accepted"])),
        "curve": {"iters": iters.tolist(),
                  "time_s": (np.arange(num_updates + 1) * per_step).tolist(),
                  "loss": [float(v) for v in loss]},
        "returns": {"env_steps": best["env_steps"].tolist(),
                    "time_s": (np.arange(1, num_updates + 1) * per_step).tolist(),
                    **_band(best["returns"])},
        "grid": [{step_name: r["step_size"], "median_steps_to_target": r["median_steps"],
                  "final_median_return": r["final"]} for r in runs],
    }


def _initial_return(env):
    """The average return of a uniform policy (the start of every curve), from one rollout."""
    carry = rl.reset(env, jax.random.PRNGKey(123), 16)
    zero = lambda params, obs: jnp.zeros((obs.shape[0], env.num_actions), env.dtype)  # noqa
    carry, _ = jax.jit(lambda c: rl.rollout(env, zero, None, c, 500))(carry)
    return float(np.nanmean(np.asarray(carry.last_return)))


def fvp_cost(env, hidden=(64, 64), batch=2048, repeats=20) -> dict:
    """Time one Fisher-vector product on the MLP policy against one policy gradient (the
    gradient of the surrogate) on the same batch of ``batch`` states; a record."""
    key = jax.random.PRNGKey(0)
    params = rl.init_mlp(key, (env.obs_dim, *hidden, env.num_actions), env.dtype)
    obs = jax.random.normal(jax.random.fold_in(key, 1), (batch, env.obs_dim), env.dtype)
    action = jax.random.randint(jax.random.fold_in(key, 2), (batch,), 0, env.num_actions)
    adv = jax.random.normal(jax.random.fold_in(key, 3), (batch,), env.dtype)
    old = rl.action_log_probs(rl.mlp, params, obs, action)
    index = rl.jacopt.TreeIndex(params)
    v = jax.random.normal(jax.random.fold_in(key, 4), (index.size,), env.dtype)

    def gradient(p):
        return index.ravel(jax.grad(lambda q: jnp.mean(
            jnp.exp(rl.action_log_probs(rl.mlp, q, obs, action) - old) * adv))(p))

    def linearise_and_product(p, u):
        return rl.fisher_vector_product(rl.mlp, p, obs)(u)

    def products(p, u, count=10):  # ten products after one linearisation, as in CG
        fvp = rl.fisher_vector_product(rl.mlp, p, obs)
        return jax.lax.fori_loop(0, count, lambda i, w: fvp(w) / jnp.linalg.norm(w), u)

    _, grad_compile, grad_s = _records.compile_and_time(gradient, params, repeats=repeats)
    _, _, once_s = _records.compile_and_time(linearise_and_product, params, v, repeats=repeats)
    _, _, ten_s = _records.compile_and_time(products, params, v, repeats=repeats)
    _, _, one_s = _records.compile_and_time(lambda p, u: products(p, u, 1), params, v,
                                            repeats=repeats)
    product_s = (ten_s - one_s) / 9  # the marginal cost of a product
    return {"suite": SUITE, "problem": "fvp-cost", "method": "fisher-vector-product",
            "order": "second", "target_loss": None, "time_to_target_s": None,
            "iters_to_target": None, "final_loss": None, "compile_s": grad_compile,
            "run_s": product_s, "gradient_s": grad_s, "fvp_s": product_s,
            "linearise_and_fvp_s": once_s, "fvp_over_gradient": product_s / grad_s,
            "linearise_and_fvp_over_gradient": once_s / grad_s,
            "params": index.size, "batch": batch,
            "note": "one product after the shared linearisation (CG's cost per iteration); "
                    "target <= 3x one policy gradient"}


def _gymnax_missing() -> Optional[str]:
    try:
        import gymnax  # noqa: F401
    except ImportError:
        return f"gymnax not installed; {rl.INSTALL_HINT}"
    return None


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Run the suite; one record per (environment, method) plus the ``fvp-cost`` record.
    ``quick`` uses :data:`QUICK` (CartPole, 2 seeds, one step size each), else :data:`FULL`."""
    config = QUICK if quick else FULL
    missing = _gymnax_missing()
    if missing is not None:
        return [_records.skipped_record(suite=SUITE, problem=name, method=method,
                                        order=ORDER[method],
                                        target_loss=ENVS[name][1] - ENVS[name][0], note=missing)
                for name in config.envs for method in rl.METHODS]
    methods = []
    for name, updates in config.envs.items():
        env = rl.make_env(name)
        target_loss = ENVS[name][1] - ENVS[name][0]
        for method in rl.METHODS:
            methods.append((name, method, ORDER[method], target_loss,
                            lambda env=env, m=method, u=updates: _run_method(env, m, config, u)))
    if config.fvp_cost:
        env = rl.make_env("CartPole-v1")
        methods.append(("fvp-cost", "fisher-vector-product", "second", None,
                        lambda: fvp_cost(env)))
    return _records.run_methods(SUITE, methods, progress)


def summary(records: list[dict]) -> list[str]:
    """One line per environment: the best of NPG/TRPO against the best REINFORCE + Adam and PPO
    in median environment steps to the target; the Fisher-vector product's cost."""
    lines = []
    for name in ENVS:
        recs = {r["method"]: r for r in records if r.get("problem") == name}
        if not recs:
            continue
        steps = {m: r.get("iters_to_target") for m, r in recs.items()}
        shown = ", ".join(f"{m} {'not reached' if s is None else f'{s:,.0f}'}"
                          for m, s in steps.items())
        line = f"{name}: median env steps to return {ENVS[name][0]:g}: {shown}"
        second = [s for m, s in steps.items() if ORDER.get(m) == "second" and s is not None]
        if second and steps.get("reinforce") is not None:
            line += (f"; best of NPG/TRPO {steps['reinforce'] / min(second):.2f}x fewer than "
                     "REINFORCE")
        elif second:
            line += "; REINFORCE did not reach it"
        lines.append(line)
    for r in records:
        if r.get("problem") == "fvp-cost" and r.get("fvp_over_gradient") is not None:
            lines.append(f"fvp-cost: one Fisher-vector product {r['fvp_over_gradient']:.2f}x one "
                         f"policy gradient ({r['params']} parameters, batch {r['batch']}); with "
                         f"its linearisation {r['linearise_and_fvp_over_gradient']:.2f}x")
    return lines


def write_plots(records: list[dict], out_dir: str) -> list[str]:
    """PNG per environment: average return against environment steps and against wall time,
    mean over seeds with the 95% band, the target dotted. ``[]`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plots written", file=sys.stderr)
        return []
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    paths = []
    for name in ENVS:
        recs = [r for r in records if r.get("problem") == name and r.get("returns")]
        if not recs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for rec in recs:
            band = rec["returns"]
            style = "-" if rec["order"] == "second" else "--"
            for ax, x in zip(axes, (band["env_steps"], band["time_s"])):
                line, = ax.plot(x, band["mean"], style, label=rec["method"])
                ax.fill_between(x, band["low"], band["high"], color=line.get_color(), alpha=0.2)
        for ax, xlabel in zip(axes, ("environment steps", "wall time after compile [s]")):
            ax.axhline(ENVS[name][0], color="grey", lw=0.8, ls=":", label="target")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("average return")
            ax.grid(True, alpha=0.3)
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{SUITE}: {name} (mean over {recs[0]['seeds']} seeds, 95% band)")
        fig.tight_layout()
        path = os.path.join(out_dir, "plots", f"{SUITE}-{name}-returns.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def format_tables(records: list[dict]) -> str:
    """The common table (:func:`jacopt.benchmarks.runner.format_table`), then :func:`summary`."""
    from jacopt.benchmarks import runner

    return "\n".join([runner.format_table(records), ""] + summary(records))


if __name__ == "__main__":
    raise SystemExit(_records.main(SUITE, run, format_tables=format_tables,
                                   write_plots=write_plots,
                                   quick_help="CartPole, 2 seeds, one step size per method"))
