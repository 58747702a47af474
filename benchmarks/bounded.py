"""Bound-constrained minimisation: jacopt's L-BFGS-B and Newton against SciPy's L-BFGS-B and
trust-constr on :mod:`jacopt.problems.bounded`, in one process.

Run: ``python -m jacopt.benchmarks.bounded [--quick] [--out DIR]`` (float64). Prints one row per
(problem, method), a summary per method (problems solved, median steps, median function
evaluations, median warm solve time, median compile time) and the warm-time ratio to SciPy's
L-BFGS-B per problem, and writes ``DIR/results.json`` (default ``bench-results/bounded``).
``--quick`` runs 5 problems.

Problems: Gay's bounded MGH problems (the bounds and minima Ceres Solver uses), bounded
(extended) Rosenbrock and box-constrained quadratics with exact active sets; a run is solved as
:func:`jacopt.problems.bounded.solved` says (the published minimum to four digits for Gay's
problems, ``f - f* <= 1e-8 max(1, |f*|)`` for the exact ones).

Methods (exact gradients from JAX, jitted; ``maxiter``/``max_steps`` 2000):

- ``jacopt-lbfgsb``: ``jacopt.minimize(fun, x0, bounds=(lower, upper))``, defaults (``gtol =
  1e-5`` on the projected gradient, memory 10); the bounds are arguments of the compiled solve.
- ``jacopt-newton``: the same with ``solver="newton"`` (exact Hessians, projected trust region).
- ``scipy-lbfgsb``: ``method="L-BFGS-B"``, ``gtol=1e-5``, ``ftol=1e-15`` (so that it does not
  stop on a slow decrease; as in :mod:`jacopt.benchmarks.minimize`), memory 10.
- ``scipy-trust-constr``: exact Hessian, ``gtol=1e-5``; only for ``n <= 20`` (its dense
  interior-point iterations make larger ones slow to time).
- ``optax-lbfgs``: skipped with a note: optax's L-BFGS has no bounds.

Counters and timing as in :mod:`jacopt.benchmarks.minimize` (``nfev``: points where the
objective was evaluated, the start included; jacopt's solve timed as one ``jax.jit``-ed function
after compiling, SciPy as whole ``minimize`` calls over compiled JAX derivatives). The machine
may be shared: compare ratios from one run, not absolute times.
"""
from __future__ import annotations

import statistics
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks import _records
from jacopt.benchmarks.minimize import paired_times, per_problem_wins, solve_tables

SUITE = "bounded"
MAX_STEPS = 2000
GTOL = 1e-5
TRUST_CONSTR_MAX_N = 20
QUICK_PROBLEMS = ("mgh_wood", "mgh_biggs_exp6", "rosenbrock_bounded",
                  "extended_rosenbrock_bounded_100", "box_quadratic_n20_cond1e4")
METHODS = ("jacopt-lbfgsb", "jacopt-newton", "scipy-lbfgsb", "scipy-trust-constr",
           "optax-lbfgs")


def _record(problem, method: str, *, value, steps, nfev, compile_s, run_s, status) -> dict:
    from jacopt.problems import bounded

    return _records.make_record(
        suite=SUITE, problem=problem.name, method=method, order="quasi-newton",
        target_loss=problem.f_star, final_loss=value, solved=bounded.solved(problem, float(value)),
        iters=int(steps), run_s=run_s, compile_s=compile_s, num_steps=steps, steps=int(steps),
        nfev=int(nfev), f_star=float(problem.f_star), status=str(status))


def _run_jacopt(problem, solver: str, repeats: int) -> dict:
    import jacopt

    fun = problem.fun

    def solve(x0, lower, upper):
        r = jacopt.minimize(fun, x0, bounds=(lower, upper), solver=solver, max_steps=MAX_STEPS)
        return r.value, r.num_steps, r.nfev, r.status

    args = (jnp.asarray(problem.x0), jnp.asarray(problem.lower), jnp.asarray(problem.upper))
    (value, steps, nfev, status), compile_s, run_s = _records.compile_and_time(
        solve, *args, repeats=repeats)
    return _record(problem, f"jacopt-{solver}", value=value, steps=steps, nfev=nfev,
                   compile_s=compile_s, run_s=run_s, status=jacopt.Status(int(status)).name)


def _run_scipy(problem, method: str, repeats: int) -> dict:
    import scipy.optimize as so

    x_probe = jnp.asarray(problem.x0)
    grad_s, value_and_grad = _records.compile_timed(jax.value_and_grad(problem.fun), x_probe)
    hess_s, hess = _records.compile_timed(jax.hessian(problem.fun), x_probe)
    compile_s = grad_s + hess_s

    def f_and_g(x):
        value, grad = value_and_grad(jnp.asarray(x))
        return float(value), np.asarray(grad)

    bounds = so.Bounds(problem.lower, problem.upper)
    if method == "scipy-lbfgsb":
        kwargs = dict(method="L-BFGS-B", options=dict(gtol=GTOL, ftol=1e-15, maxiter=MAX_STEPS))
    else:
        kwargs = dict(method="trust-constr", hess=lambda x: np.asarray(hess(jnp.asarray(x))),
                      options=dict(gtol=GTOL, maxiter=MAX_STEPS))

    def call():
        return so.minimize(f_and_g, np.array(problem.x0), jac=True, bounds=bounds, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, run_s = _records.time_calls(call, repeats=repeats)
    return _record(problem, method, value=result.fun, steps=result.nit, nfev=result.nfev,
                   compile_s=compile_s, run_s=run_s, status=f"{result.status}: {result.message}")


def methods_for(problem, repeats: int):
    """``(method, thunk or skip note)`` pairs for one problem, jacopt first."""
    out = [("jacopt-lbfgsb", lambda: _run_jacopt(problem, "lbfgsb", repeats)),
           ("jacopt-newton", lambda: _run_jacopt(problem, "newton", repeats)),
           ("scipy-lbfgsb", lambda: _run_scipy(problem, "scipy-lbfgsb", repeats))]
    n = problem.x0.shape[0]
    if n <= TRUST_CONSTR_MAX_N:
        out.append(("scipy-trust-constr",
                    lambda: _run_scipy(problem, "scipy-trust-constr", repeats)))
    else:
        out.append(("scipy-trust-constr", f"skipped: n = {n} > {TRUST_CONSTR_MAX_N}, too slow "
                                          "to time (dense interior-point iterations)"))
    out.append(("optax-lbfgs", "skipped: optax's L-BFGS takes no bounds"))
    return out


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    from jacopt.problems import bounded

    _records.require_float64(SUITE)
    names = QUICK_PROBLEMS if quick else bounded.names()
    repeats = 3 if quick else 5
    problems = [bounded.get(name) for name in names]
    return _records.run_methods(SUITE, [(p.name, method, "quasi-newton", p.f_star, thunk)
                                        for p in problems
                                        for method, thunk in methods_for(p, repeats)], progress)


def speedups(records: list[dict], method: str = "jacopt-lbfgsb",
             peer: str = "scipy-lbfgsb") -> list[float]:
    """``peer``'s warm time over ``method``'s, per problem both ran."""
    return [theirs / ours for ours, theirs in paired_times(records, method, peer)]


def format_tables(records: list[dict]) -> str:
    body = [r for r in records if r.get("suite") == SUITE]
    lines = solve_tables(body, widths=(34, 19), final_spec="12.5e", nfev_spec="7.1f")
    ratios = speedups(body)
    if ratios:
        wins = per_problem_wins(body, "jacopt-lbfgsb", "scipy-lbfgsb")
        lines += ["", f"warm solve, scipy-lbfgsb time / jacopt-lbfgsb time per problem: median "
                      f"{statistics.median(ratios):.1f}x, min {min(ratios):.1f}x, max "
                      f"{max(ratios):.1f}x (jacopt faster on {wins[0]} of {wins[1]})"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(_records.main(SUITE, run, format_tables=format_tables,
                                   quick_help="5 problems, fewer repeats"))
