"""Robustness from far starts: the MGH least-squares problems from x0, 10 x0 and 100 x0, jacopt's
least-squares solvers against SciPy, Optimistix and JAXopt in one process.

Run: ``python -m jacopt.benchmarks.robustness [--quick] [--out DIR]`` (float64). Prints one row
per (run, method), the solved count per method and start factor, the runs that a peer solves
and ``jacopt-lm`` does not, and the false successes; writes ``DIR/results.json`` (default
``bench-results/robustness``). ``--quick`` runs :data:`QUICK_PROBLEMS`.

Problems and judgement: :mod:`jacopt.problems.mgh`. A run is solved when ``F = sum(r**2)``,
recomputed here in float64 from the returned point for every method alike, is within
``1e-4`` relative (``1e-10`` absolute) of an accepted optimum (:func:`jacopt.problems.mgh.solved`).
A false success is a run whose method says it succeeded but that is not solved.

Methods, all with exact Jacobians:

- ``jacopt-<name>``: :func:`jacopt.least_squares` with ``solver=<name>`` for every solver in
  :data:`jacopt.least_squares.SOLVERS` (one name per solver), default settings. Compiled once
  per problem and solver, the three starts run through the compiled solve. ``jacopt-lm-jac``:
  ``solver="lm"`` with ``x_scale="jac"`` (Moré's scaling, MINPACK's) instead of the default 1;
  ``jacopt-lm-lazy``: ``LevenbergMarquardt(lazy_jacobian=True)``, J only at accepted points.
- ``scipy-lm`` (MINPACK's lmder) and ``scipy-trf``: ``scipy.optimize.least_squares`` with
  ``ftol = xtol = gtol = 1e-15``, residuals and ``jax.jacfwd`` Jacobian jitted.
- ``optimistix-lm``, ``optimistix-dogleg``: ``optimistix.LevenbergMarquardt`` / ``Dogleg`` with
  ``rtol = atol = 1e-12``, ``max_steps = 10000``, ``throw=False``; success is
  ``RESULTS.successful``. Optimistix reports steps, not evaluations.
- ``jaxopt-lm``: ``jaxopt.LevenbergMarquardt(tol = xtol = gtol = 1e-12, maxiter = 10000)``;
  success is stopping before ``maxiter``. JAXopt reports iterations, not evaluations.

Counts: ``nfev`` and ``njev`` as each method reports them (MINPACK-style for SciPy: ``lm``
evaluates J only at accepted points); ``steps`` is the iteration count where one is reported.
Times are for orientation only (the machine is shared): ``compile_s`` once per problem and
method, ``run_s`` by the harness's rule (:func:`jacopt.benchmarks._records.time_calls`, one
warm-up call, then at least one timed call) for each start.
"""
from __future__ import annotations

import functools
import math
import sys
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks import _records, peers

SUITE = "robustness"
DEFAULT_METHOD = "jacopt-lm"
QUICK_PROBLEMS = ("rosenbrock", "powell_badly_scaled", "bard", "box_3d", "kowalik_osborne",
                  "brown_almost_linear_10", "chebyquad_8")
SCIPY_TOLERANCE = 1e-15


def jacopt_solvers() -> dict[str, object]:
    """``{name: solver}`` for every solver in ``jacopt.least_squares.SOLVERS``, each under the
    first name it is registered with (the others are aliases)."""
    import importlib

    ls = importlib.import_module("jacopt.least_squares")  # the module, not the function
    first = {}
    for name, solver in ls.SOLVERS.items():
        if all(other is not solver for other in first.values()):
            first[name] = solver
    return first


# ------------------------------------------------------------------------------------------
# Methods. A JAX method is make(residual) -> solve(x0) -> dict of arrays, a least-squares builder
# of jacopt.benchmarks.peers; run once per start through one compilation.
# ------------------------------------------------------------------------------------------


def _status_name(method: str, status) -> str:
    if method.startswith("jacopt"):
        from jacopt.status import Status

        try:
            return Status(int(status)).name
        except ValueError:
            return str(int(status))
    return "successful" if int(status) == 0 else "failed"


# ------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _jitted(residual: Callable) -> Callable:
    return jax.jit(residual)


def _sum_of_squares(problem, x) -> float:
    """``F = sum(r**2)`` at ``x`` in float64 (inf where it overflows or is not finite)."""
    r = np.asarray(_jitted(problem.residual)(jnp.asarray(x, dtype=jnp.float64)), dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        f = float(np.sum(r * r))
    return f if math.isfinite(f) else math.inf


def _record(problem, factor: float, method: str, *, x, status: str, success: bool,
            nfev=None, njev=None, steps=None, compile_s=None, run_s=None) -> dict:
    from jacopt.problems import mgh

    f = _sum_of_squares(problem, x)
    solved = bool(mgh.solved(problem, f))
    steps = None if steps is None else int(steps)
    return _records.make_record(
        suite=SUITE, problem=f"{problem.name}/x{factor:g}", method=method, order="second",
        target_loss=0.5 * problem.f_star, final_loss=0.5 * f,  # jacopt's cost convention
        solved=solved, iters=steps, run_s=run_s, compile_s=compile_s,
        mgh_number=problem.number, factor=factor, F=f, f_star=problem.f_star, status=status,
        success=bool(success), false_success=bool(success) and not solved,
        nfev=None if nfev is None else int(nfev), njev=None if njev is None else int(njev),
        steps=steps)


def _skipped(problem, factor: float, method: str, note: str) -> dict:
    rec = _records.skipped_record(suite=SUITE, problem=f"{problem.name}/x{factor:g}",
                                  method=method, order="second",
                                  target_loss=0.5 * problem.f_star, note=note)
    rec.update(factor=factor, mgh_number=problem.number, F=None, f_star=problem.f_star,
               solved=False, status=None, success=None, false_success=False, nfev=None,
               njev=None, steps=None)
    return rec


def _run_jax_method(problem, method: str, make: Callable) -> list[dict]:
    from jacopt.problems import mgh

    starts = mgh.starts(problem)
    try:
        compile_s, compiled = _records.compile_timed(make(problem.residual),
                                                     jnp.asarray(starts[0]))
    except Exception as exc:  # a method that cannot take this problem must not stop the suite
        note = f"failed: {type(exc).__name__}: {exc}"
        return [_skipped(problem, f, method, note) for f in mgh.FACTORS]
    records = []
    for factor, x0 in zip(mgh.FACTORS, starts):
        out, run_s = _records.time_calls(compiled, jnp.asarray(x0), repeats=1)
        records.append(_record(
            problem, factor, method, x=out["x"], status=_status_name(method, out["status"]),
            success=bool(out["success"]), nfev=out.get("nfev"), njev=out.get("njev"),
            steps=out.get("steps"), compile_s=compile_s, run_s=run_s))
    return records


def _run_scipy(problem, method: str) -> list[dict]:
    from scipy.optimize import least_squares as scipy_least_squares

    from jacopt.problems import mgh

    residual = _jitted(problem.residual)
    jacobian = jax.jit(jax.jacfwd(problem.residual))
    records = []
    for factor, x0 in zip(mgh.FACTORS, mgh.starts(problem)):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                solve = functools.partial(
                    scipy_least_squares, lambda x: np.asarray(residual(x)), x0,
                    jac=lambda x: np.asarray(jacobian(x)), method=method, ftol=SCIPY_TOLERANCE,
                    xtol=SCIPY_TOLERANCE, gtol=SCIPY_TOLERANCE)
                out, run_s = _records.time_calls(solve, repeats=1)
        except Exception as exc:  # e.g. residuals that are not finite at the start
            records.append(_skipped(problem, factor, f"scipy-{method}",
                                    f"failed: {type(exc).__name__}: {exc}"))
            continue
        records.append(_record(problem, factor, f"scipy-{method}", x=out.x,
                               status=f"status {out.status}", success=out.success,
                               nfev=out.nfev, njev=out.njev, steps=None, run_s=run_s))
    return records


def _peer_methods() -> dict[str, tuple[str, Callable]]:
    return {"optimistix-lm": ("optimistix", peers.optimistix_least_squares),
            "optimistix-dogleg": ("optimistix", functools.partial(
                peers.optimistix_least_squares, kind="Dogleg")),
            "jaxopt-lm": ("jaxopt", peers.jaxopt_least_squares)}


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None, *,
        problems=None, methods=None) -> list[dict]:
    """Every method on every problem and start; returns the records (no header).

    ``problems`` (names) and ``methods`` (e.g. ``["jacopt-lm", "scipy-trf"]``) narrow the run;
    by default all of :data:`jacopt.problems.mgh.PROBLEMS` (``quick``: :data:`QUICK_PROBLEMS`)
    and all methods."""
    _records.require_float64(SUITE)
    from jacopt.problems import mgh
    from jacopt.solvers import LevenbergMarquardt

    if problems is None:
        problems = QUICK_PROBLEMS if quick else tuple(mgh.PROBLEMS)
    plan: dict[str, Callable] = {}
    jacopt_methods = {f"jacopt-{name}": {"solver": name} for name in jacopt_solvers()}
    # LM with Moré's scaling (MINPACK's), beside the default's x_scale = 1, and LM that
    # evaluates J only at accepted points (MINPACK's schedule)
    jacopt_methods["jacopt-lm-jac"] = {"solver": "lm", "x_scale": "jac"}
    jacopt_methods["jacopt-lm-lazy"] = {"solver": LevenbergMarquardt(lazy_jacobian=True)}
    for method, options in jacopt_methods.items():
        plan[method] = (lambda p, m, make=functools.partial(peers.jacopt_least_squares,
                                                            **options):
                        _run_jax_method(p, m, make))
    for kind in ("lm", "trf"):
        plan[f"scipy-{kind}"] = lambda p, m, kind=kind: _run_scipy(p, kind)
    for method, (module, make) in _peer_methods().items():
        missing = peers.missing(module)
        if missing:
            print(f"note: {method} skipped: {missing}", file=sys.stderr)
            plan[method] = (lambda p, m, note=missing:
                            [_skipped(p, f, m, note) for f in mgh.FACTORS])
        else:
            plan[method] = lambda p, m, make=make: _run_jax_method(p, m, make)
    if methods is not None:
        unknown = set(methods) - set(plan)
        if unknown:
            raise ValueError(f"methods: unknown {sorted(unknown)}; valid: {list(plan)}")
        plan = {m: plan[m] for m in methods}
    records = []
    for name in problems:
        problem = mgh.load(name)
        for method, runner in plan.items():
            if progress:
                progress(f"{name} / {method}")
            records += runner(problem, method)
    return records


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def summary(records: list[dict]) -> list[dict]:
    """Per method: runs, solved runs (in all and per start factor), false successes, and the
    total nfev / njev over the runs where it reports them."""
    out = []
    for method in dict.fromkeys(r["method"] for r in records):
        recs = [r for r in records if r["method"] == method and r.get("F") is not None]
        factors = sorted({r["factor"] for r in records})
        row = {"method": method, "runs": len(recs),
               "solved": sum(r["solved"] for r in recs),
               "false_successes": sum(r["false_success"] for r in recs)}
        for factor in factors:
            row[f"solved_x{factor:g}"] = sum(r["solved"] for r in recs if r["factor"] == factor)
        for count in ("nfev", "njev"):
            values = [r[count] for r in recs if r.get(count) is not None]
            row[count] = sum(values) if values else None
        out.append(row)
    return out


def missed_by_default(records: list[dict], default: str = DEFAULT_METHOD) -> list[dict]:
    """The runs that at least one other method (not another jacopt solver) solves and
    ``default`` does not: ``{"problem", "default": record, "solvers": [records]}``."""
    by_run: dict[str, list[dict]] = {}
    for r in records:
        by_run.setdefault(r["problem"], []).append(r)
    missed = []
    for run_name, recs in by_run.items():
        ours = [r for r in recs if r["method"] == default]
        peers = [r for r in recs if not r["method"].startswith("jacopt") and r["solved"]]
        if ours and not ours[0]["solved"] and peers:
            missed.append({"problem": run_name, "default": ours[0], "solvers": peers})
    return missed


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_tables(records: list[dict]) -> str:
    lines = [f"{'run':<38} {'method':<22} {'F':>11} {'solved':>6} {'status':<18} "
             f"{'success':>7} {'nfev':>6} {'njev':>6} {'steps':>6}"]
    for r in records:
        if r.get("F") is None:
            lines.append(f"{r['problem']:<38} {r['method']:<22} {r.get('note', '')}")
            continue
        lines.append(
            f"{r['problem']:<38} {r['method']:<22} {r['F']:>11.4e} "
            f"{'yes' if r['solved'] else 'NO':>6} {str(r['status']):<18} "
            f"{'True' if r['success'] else 'False':>7} {_fmt(r['nfev'], 'd'):>6} "
            f"{_fmt(r['njev'], 'd'):>6} {_fmt(r['steps'], 'd'):>6}"
            + ("  FALSE SUCCESS" if r["false_success"] else ""))
    return "\n".join(lines) + "\n\n" + format_summary(records)


def format_summary(records: list[dict]) -> str:
    """The solved counts per method, the runs a peer solves and the default does not, and the
    false successes (:func:`format_tables` without the line per run)."""
    rows = summary(records)
    factors = sorted({r["factor"] for r in records})
    lines = [f"{'method':<22} {'runs':>5} {'solved':>7} "
              + " ".join(f"{'x' + format(f, 'g'):>6}" for f in factors)
              + f" {'false succ.':>11} {'nfev':>8} {'njev':>8}"]
    for s in rows:
        lines.append(f"{s['method']:<22} {s['runs']:>5} {s['solved']:>7} "
                     + " ".join(f"{s[f'solved_x{f:g}']:>6}" for f in factors)
                     + f" {s['false_successes']:>11} {_fmt(s['nfev'], 'd'):>8} "
                       f"{_fmt(s['njev'], 'd'):>8}")
    missed = missed_by_default(records)
    lines += ["", f"Runs a peer solves and {DEFAULT_METHOD} does not ({len(missed)}):"]
    for m in missed:
        d = m["default"]
        peers = ", ".join(f"{r['method']} (F {r['F']:.3e}, nfev {_fmt(r['nfev'], 'd')})"
                          for r in m["solvers"])
        lines.append(f"  {m['problem']:<36} {DEFAULT_METHOD}: F {d['F']:.4e}, {d['status']}, "
                     f"nfev {_fmt(d['nfev'], 'd')}; solved by {peers}")
    false = [r for r in records if r.get("false_success")]
    lines += ["", f"False successes (success=True, not solved) ({len(false)}):"]
    for r in false:
        lines.append(f"  {r['problem']:<36} {r['method']:<22} F {r['F']:.4e} "
                     f"(F* {r['f_star']:.4e}), {r['status']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_records.main(SUITE, run, format_tables=format_tables,
                           format_summary=format_summary,
                           quick_help=f"{len(QUICK_PROBLEMS)} problems: "
                                      + ", ".join(QUICK_PROBLEMS)))
