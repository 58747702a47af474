"""NIST StRD nonlinear regression: 27 problems x 2 starts, jacopt's least-squares solvers against
SciPy, Optimistix and JAXopt in the same process.

Run: ``python -m jacopt.benchmarks.nist [--quick] [--out DIR]`` (float64). Prints one row per
(run, method) and a summary per method, and writes ``DIR/results.json`` (default
``bench-results/nist``). ``--quick`` runs the 8 "lower difficulty" problems with fewer repeats.

Scoring: a run's LRE is the minimum over its parameters of McCullough's log relative error
against NIST's certified values (:func:`jacopt.problems.nist.lre`, clipped to [0, 11]). A run
counts as solved at LRE >= 4 (Ceres' criterion) and as accurate at LRE >= 6.

Methods, all with exact Jacobians and default or tight settings:

- ``jacopt-lm``, ``jacopt-gn``, ``jacopt-dogleg``: :func:`jacopt.least_squares` with its
  DEFAULT settings for each solver (nothing is tuned per problem).
- ``scipy-lm`` (MINPACK) and ``scipy-trf``: ``scipy.optimize.least_squares`` with
  ``ftol = xtol = gtol = 1e-15``, the Jacobian from ``jax.jacfwd`` (jitted, like the residuals).
- ``optimistix-lm``: ``optimistix.LevenbergMarquardt(rtol=1e-12, atol=1e-12)``,
  ``max_steps=10000``, ``throw=False``.
- ``jaxopt-lm``: ``jaxopt.LevenbergMarquardt(tol=xtol=gtol=1e-12, maxiter=10000)`` (its
  default linear solver).

Optimistix and JAXopt are optional (the ``bench`` extra); when one is not installed its rows
say so and the rest runs.

Timing (the same for every JAX method):

- the solve ``(x0, x, y) -> outputs`` is wrapped in ``jax.jit``; ``compile_s`` is the wall time
  of ``jit(solve).lower(x0, x, y).compile()`` (tracing included). It is measured once per
  problem (both starts share the compiled function), so both rows of a problem show it, and
  so does ``kernels``: the compiled solve's kernel count (:func:`jacopt.benchmarks._records.
  kernel_count`, also ``fusions`` and ``copies``), which the compile time follows.
- ``run_s``: the harness's timing rule (:func:`jacopt.benchmarks._records.time_calls`): one
  warm-up call, then the median of ``repeats`` or more warm calls, each ended by
  ``block_until_ready``.
- SciPy: ``run_s`` by the same rule over whole ``least_squares`` calls, with the residual and
  its ``jax.jacfwd`` Jacobian compiled beforehand; SciPy has no compile step.
- ``time_to_target_s`` / ``iters_to_target``: ``run_s`` / ``steps`` of a run that reached
  LRE >= 4, else ``None``. ``final_loss`` is the cost ``0.5 * RSS`` and ``target_loss`` the
  certified ``0.5 * RSS`` (Lanczos1's certified RSS is below what its certified parameters
  reproduce in float64, see :mod:`jacopt.problems.nist`, so judge runs by LRE).

OpenBLAS (used by jaxlib's CPU LAPACK calls and by SciPy) is pinned to one thread for every
method (:func:`jacopt.benchmarks.runner.apply_run_settings`). The machine is shared (2
cores): compare the ratios printed in the summary, which come from
one process, rather than absolute times.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks import _records, peers

SUITE = "nist"
JACOPT_SOLVERS = ("lm", "gn", "dogleg")
SOLVED_LRE = 4.0


# ------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------


def _record(problem, start: int, method: str, *, params, cost, steps, nfev, compile_s, run_s,
            kernels: Optional[dict] = None, note: Optional[str] = None) -> dict:
    from jacopt.problems import nist

    lre = nist.lre(np.asarray(params), problem.certified_params)
    steps = None if steps is None else int(steps)
    extra = dict(kernels or {}, **({"note": note} if note else {}))
    return _records.make_record(
        suite=SUITE, problem=f"{problem.name}/start{start + 1}", method=method, order="second",
        target_loss=0.5 * float(problem.certified_rss), final_loss=cost,
        solved=lre >= SOLVED_LRE, iters=steps, run_s=run_s, compile_s=compile_s,
        difficulty=problem.difficulty, lre=float(lre), steps=steps,
        nfev=None if nfev is None else int(nfev), **extra)


def _skipped(problem, start: int, method: str, note: str) -> dict:
    rec = _records.skipped_record(suite=SUITE, problem=f"{problem.name}/start{start + 1}",
                                  method=method, order="second",
                                  target_loss=0.5 * float(problem.certified_rss), note=note)
    rec.update(difficulty=problem.difficulty, lre=None, steps=None, nfev=None)
    return rec


def _run_jax_method(problem, method: str, make_solve: Callable, repeats: int) -> list[dict]:
    """``make_solve(residual)``, a least-squares builder of :mod:`jacopt.benchmarks.peers`,
    compiled once and run from both starts. A method that counts no evaluations reports its
    steps as ``nfev``."""
    args = tuple(jnp.asarray(a) for a in problem.args)
    starts = [jnp.asarray(s) for s in problem.starts]
    try:
        compile_s, compiled = _records.compile_timed(make_solve(problem.residual), starts[0],
                                                     *args)
    except NotImplementedError as exc:
        return [_skipped(problem, i, method, str(exc)) for i in range(len(starts))]
    kernels = _records.kernel_count(compiled)
    records = []
    for i, x0 in enumerate(starts):
        out, run_s = _records.time_calls(compiled, x0, *args, repeats=repeats)
        records.append(_record(problem, i, method, params=out["x"], cost=out["cost"],
                               steps=out["steps"], nfev=out.get("nfev", out["steps"]),
                               compile_s=compile_s, run_s=run_s, kernels=kernels))
    return records


def _run_scipy(problem, method: str, repeats: int) -> list[dict]:
    from scipy.optimize import least_squares as scipy_least_squares

    args = tuple(jnp.asarray(a) for a in problem.args)
    x0 = jnp.asarray(problem.starts[0])
    _, residual = _records.compile_timed(problem.residual, x0, *args)
    _, jacobian = _records.compile_timed(jax.jacfwd(problem.residual), x0, *args)

    def fun(b):
        return np.asarray(residual(jnp.asarray(b), *args))

    def jac(b):
        return np.asarray(jacobian(jnp.asarray(b), *args))

    records = []
    for i, x0 in enumerate(problem.starts):
        def call():
            return scipy_least_squares(fun, np.asarray(x0), jac=jac, method=method,
                                       ftol=1e-15, xtol=1e-15, gtol=1e-15)

        out, run_s = _records.time_calls(call, repeats=repeats)
        records.append(_record(problem, i, f"scipy-{method}", params=out.x, cost=out.cost,
                               steps=out.nfev, nfev=out.nfev, compile_s=None, run_s=run_s))
    return records


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Every method on every NIST problem and start; returns the records (no header)."""
    _records.require_float64(SUITE)
    from jacopt.problems import nist

    names = [n for n in nist.NAMES if nist.DIFFICULTY[n] == "lower"] if quick else nist.NAMES
    repeats = 3 if quick else 7
    peer_solves = {"optimistix-lm": ("optimistix", peers.optimistix_least_squares),
                   "jaxopt-lm": ("jaxopt", peers.jaxopt_least_squares)}
    missing = {method: peers.missing(module) for method, (module, _) in peer_solves.items()}
    _records.expect(progress, len(names) * (len(JACOPT_SOLVERS) + 2 + len(peer_solves)))  # 2: SciPy
    records = []
    for name in names:
        problem = nist.load(name)
        for solver in JACOPT_SOLVERS:
            if progress:
                progress(f"{name} / jacopt-{solver}")
            records += _run_jax_method(problem, f"jacopt-{solver}", functools.partial(
                peers.jacopt_least_squares, solver=solver), repeats)
        for method in ("lm", "trf"):
            if progress:
                progress(f"{name} / scipy-{method}")
            records += _run_scipy(problem, method, repeats)
        for method, (_, make) in peer_solves.items():
            if progress:
                progress(f"{name} / {method}")
            if missing[method]:
                records += [_skipped(problem, i, method, missing[method]) for i in range(2)]
            else:
                records += _run_jax_method(problem, method, make, repeats)
    return records


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def summary(records: list[dict]) -> list[dict]:
    """Per method: runs, runs with LRE >= 4 and >= 6, mean LRE, median warm solve, median
    compile, median kernel count of the compiled solve (:func:`_records.kernel_count`); and the
    ratios of jacopt-lm's medians to Optimistix's (same process)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in records):
        recs = [r for r in records if r["method"] == method and r.get("lre") is not None]
        if not recs:
            notes = {r.get("note") for r in records if r["method"] == method}
            out.append({"method": method, "runs": 0, "note": "; ".join(n for n in notes if n)})
            continue
        lres = np.array([r["lre"] for r in recs])
        compiles = [r["compile_s"] for r in recs if r.get("compile_s") is not None]
        kernels = [r["kernels"] for r in recs if r.get("kernels") is not None]
        out.append({
            "method": method,
            "runs": len(recs),
            "lre_ge_4": int(np.sum(lres >= 4)),
            "lre_ge_6": int(np.sum(lres >= 6)),
            "mean_lre": float(np.mean(lres)),
            "median_run_s": float(np.median([r["run_s"] for r in recs])),
            "median_compile_s": float(np.median(compiles)) if compiles else None,
            "median_kernels": float(np.median(kernels)) if kernels else None,
        })
    return out


def format_tables(records: list[dict]) -> str:
    lines = [f"{'run':<20} {'method':<15} {'LRE':>5} {'steps':>6} {'nfev':>6} "
             f"{'warm [ms]':>10} {'compile [s]':>11}  note"]
    for r in records:
        def f(v, spec):
            return format(v, spec) if v is not None else "—"

        lines.append(
            f"{r['problem']:<20} {r['method']:<15} {f(r.get('lre'), '5.2f'):>5} "
            f"{f(r.get('steps'), 'd'):>6} {f(r.get('nfev'), 'd'):>6} "
            f"{f(None if r.get('run_s') is None else 1e3 * r['run_s'], '10.3f'):>10} "
            f"{f(r.get('compile_s'), '11.3f'):>11}  {r.get('note', '')}")
    lines.append("")
    lines.append(f"{'method':<15} {'runs':>4} {'LRE>=4':>7} {'LRE>=6':>7} {'mean LRE':>9} "
                 f"{'median warm [ms]':>17} {'median compile [s]':>19} {'kernels':>8}")
    rows = summary(records)
    for s in rows:
        if not s["runs"]:
            lines.append(f"{s['method']:<15} skipped: {s.get('note', '')}")
            continue
        comp = "—" if s["median_compile_s"] is None else f"{s['median_compile_s']:.3f}"
        kern = "—" if s["median_kernels"] is None else f"{s['median_kernels']:.0f}"
        lines.append(f"{s['method']:<15} {s['runs']:>4} {s['lre_ge_4']:>7} {s['lre_ge_6']:>7} "
                     f"{s['mean_lre']:>9.2f} {1e3 * s['median_run_s']:>17.3f} {comp:>19} "
                     f"{kern:>8}")
    by = {s["method"]: s for s in rows if s["runs"]}
    ref = by.get("optimistix-lm")
    if ref:
        for method in (m for m in by if m.startswith("jacopt")):
            s = by[method]
            warm = s["median_run_s"] / ref["median_run_s"]
            comp = s["median_compile_s"] / ref["median_compile_s"]
            lines.append(f"{method} / optimistix-lm: median warm solve {warm:.2f}x, "
                         f"median compile {comp:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_records.main(SUITE, run, format_tables=format_tables,
                           quick_help="the 8 lower-difficulty problems, fewer repeats"))
