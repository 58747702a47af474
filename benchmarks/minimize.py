"""Unconstrained minimisation: jacopt's BFGS, L-BFGS, Newton and Newton-CG against SciPy,
Optimistix and optax on the classic test functions, in one process.

Run: ``python -m jacopt.benchmarks.minimize [--quick] [--out DIR]`` (float64). Prints one row
per (problem, method), then a summary per method (problems solved, median steps, median
function evaluations, median warm solve time, median compile time) and Newton's gradient norms
on Rosenbrock (quadratic convergence), and writes ``DIR/results.json`` (default
``bench-results/minimize``). ``--quick`` runs 6 problems.

Problems: :mod:`jacopt.problems.test_functions` (Moré, Garbow & Hillstrom 1981, standard
starts, plus convex quadratics with condition numbers 1e1..1e8). A run is **solved** when its
final value satisfies ``f - f_star <= 1e-8 * max(1, |f_star|)`` (``target_loss``); a run that
ends in a local minimum (Freudenstein-Roth's is well known) is not solved, whatever its status.

Methods and settings (every method gets exact derivatives from JAX, jitted):

- ``jacopt-bfgs``, ``jacopt-lbfgs``, ``jacopt-newton``, ``jacopt-newton-cg``:
  :func:`jacopt.minimize` with its defaults (``gtol = 1e-5`` on ``max|grad|``), ``max_steps =
  2000`` (an iteration is one trial step).
- ``scipy-bfgs`` (``gtol=1e-5``, ``norm=inf``, SciPy's defaults), ``scipy-lbfgsb``
  (``gtol=1e-5``, ``ftol=1e-15`` so that it does not stop on a slow decrease), ``scipy-trust-
  exact`` (``gtol=1e-5``, exact Hessian), ``scipy-newton-cg`` (``xtol=1e-10``, exact
  Hessian-vector products); ``maxiter = 2000``.
- ``optimistix-bfgs``, ``optimistix-lbfgs``: ``rtol = atol = 1e-9`` (Optimistix's Cauchy
  test on the change of ``y`` and ``f``), ``max_steps = 2000``, ``throw=False``. Optional (the
  ``bench`` extra): rows say "skipped" when Optimistix is not installed.
- ``optax-lbfgs``: ``optax.lbfgs()`` (zoom line search) driven to ``max|grad| <= 1e-5`` or
  2000 iterations in one jitted ``lax.while_loop``, reusing the line search's value and
  gradient with ``optax.value_and_grad_from_state`` as optax documents.

Counters: ``steps`` is what each method calls an iteration (jacopt: every trial step, accepted
or not; SciPy: ``nit``, accepted steps; Optimistix: its ``num_steps``, trials included; optax:
updates). ``nfev`` is the number of points at which the objective was evaluated, the start
included, and means the same for jacopt and SciPy: jacopt evaluates value and gradient together
(``nfev == ngev``); SciPy is given ``jac=True``, so one call returns both and its ``nfev``
counts those calls (``njev`` equals it: SciPy caches the gradient of the last point). optax:
1 + the line-search evaluations; Optimistix reports none.

Units check (``units-check`` record): jacopt's BFGS and SciPy's BFGS again on every problem
with the objective multiplied by ``c`` in (1e-2, 1, 1e2) and ``gtol`` by ``c`` too (the same
points pass the test; "solved" is judged on ``f / c``): median ``nfev`` and solved count per
scale. jacopt's BFGS is invariant to the scale of ``f`` (its first step has unit length and the
inverse Hessian is scaled by ``s^T y / y^T y``, N&W eq. 6.20) and repeats its counts; SciPy's
starts from ``H0 = I`` and its counts depend on the scale (see :mod:`jacopt.solvers.bfgs`).

Per-problem speed: the summary also says on how many problems ``jacopt-bfgs``'s warm solve is
faster than ``optimistix-bfgs``'s, both timed in this process.

Timing, the harness's rule for every method (:func:`jacopt.benchmarks._records.time_calls`:
a warm-up call, then the median of ``repeats`` or more calls, each ended by
``block_until_ready``). JAX methods (jacopt, Optimistix, optax): the whole solve ``x0 ->
outputs`` is one ``jax.jit``-ed function; ``compile_s`` is ``jit(solve).lower(x0).compile()``
(tracing included, :func:`jacopt.benchmarks._records.compile_and_time`). SciPy: ``run_s`` is
timed over whole ``scipy.optimize.minimize`` calls whose objective, gradient and Hessian are
jitted JAX functions compiled beforehand (their compile time is ``compile_s``).
``time_to_target_s`` is ``run_s`` and ``iters_to_target`` is ``steps`` for a solved run (the
run stops on its own test after reaching the target), ``None`` otherwise. BLAS threads are
pinned to 1 (:func:`jacopt.benchmarks.runner.apply_run_settings`).

The machine may be shared: compare ratios from one run of this script, not absolute times.
"""
from __future__ import annotations

import math
import statistics
import sys
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks import _records, peers

SUITE = "minimize"
_REQUIRED = ("suite", "problem", "method", "order", "target_loss", "time_to_target_s",
             "iters_to_target", "final_loss", "compile_s", "run_s")
MAX_STEPS = 2000
GTOL = 1e-5
SOLVED_REL = 1e-8
QUICK_PROBLEMS = ("rosenbrock", "beale", "helical_valley", "wood", "extended_rosenbrock_10",
                  "quadratic_n20_cond1e4")
JACOPT_SOLVERS = ("bfgs", "lbfgs", "newton", "newton-cg")
SCIPY_METHODS = {"scipy-bfgs": "BFGS", "scipy-lbfgsb": "L-BFGS-B",
                 "scipy-trust-exact": "trust-exact", "scipy-newton-cg": "Newton-CG"}


def target_of(problem) -> float:
    """The value a solved run must reach: ``f_star + 1e-8 * max(1, |f_star|)``."""
    return problem.f_star + SOLVED_REL * max(1.0, abs(problem.f_star))


def _record(problem, method: str, *, value, steps, nfev, compile_s, run_s, status="",
            note=None, **extra) -> dict:
    target = target_of(problem)
    value = float(value)
    if note:
        extra["note"] = note
    return _records.make_record(
        suite=SUITE, problem=problem.name, method=method,
        order="second" if ("newton" in method or "trust" in method) else "quasi-newton",
        target_loss=target, final_loss=value, solved=math.isfinite(value) and value <= target,
        iters=int(steps), run_s=run_s, compile_s=compile_s, num_steps=steps, steps=int(steps),
        nfev=None if nfev is None else int(nfev), f_star=float(problem.f_star),
        status=str(status), **extra)


# ------------------------------------------------------------------------------------------
# JAX methods: builders of jacopt.benchmarks.peers, ``solve(x0) -> (value, steps, nfev, status)``.
# ------------------------------------------------------------------------------------------


def _run_jax(problem, method: str, solve: Callable, repeats: int) -> dict:
    x0 = jnp.asarray(problem.x0)
    (value, steps, nfev, status), compile_s, run_s = _records.compile_and_time(
        solve, x0, repeats=repeats)
    nfev = int(nfev)
    return _record(problem, method, value=value, steps=steps, nfev=None if nfev < 0 else nfev,
                   compile_s=compile_s, run_s=run_s, status=_status_name(method, status))


def _status_name(method: str, status) -> str:
    code = int(status)
    if method.startswith("jacopt"):
        from jacopt.status import Status

        return Status(code).name
    if method.startswith("optax"):
        return "gtol" if code else "max_steps"
    return f"result {code}"


# ------------------------------------------------------------------------------------------
# SciPy
# ------------------------------------------------------------------------------------------


def _run_scipy(problem, method: str, repeats: int) -> dict:
    import scipy.optimize as so

    fun = problem.fun
    x_probe = jnp.asarray(problem.x0)
    timed = [_records.compile_timed(jax.value_and_grad(fun), x_probe),
             _records.compile_timed(jax.hessian(fun), x_probe),
             _records.compile_timed(lambda x, v: jax.jvp(jax.grad(fun), (x,), (v,))[1],
                                    x_probe, x_probe)]
    compile_s = sum(seconds for seconds, _ in timed)
    (_, value_and_grad), (_, hess), (_, hvp) = timed
    name = SCIPY_METHODS[method]

    def f_and_g(x):
        value, grad = value_and_grad(jnp.asarray(x))
        return float(value), np.asarray(grad)

    options = {"maxiter": MAX_STEPS}
    extra = {}
    if name == "BFGS":
        options.update(gtol=GTOL, norm=np.inf)
    elif name == "L-BFGS-B":
        options.update(gtol=GTOL, ftol=1e-15)
    elif name == "trust-exact":
        options.update(gtol=GTOL)
        extra["hess"] = lambda x: np.asarray(hess(jnp.asarray(x)))
    else:  # Newton-CG
        options.update(xtol=1e-10)
        extra["hessp"] = lambda x, v: np.asarray(hvp(jnp.asarray(x), jnp.asarray(v)))

    def call():
        return so.minimize(f_and_g, np.array(problem.x0), jac=True, method=name,
                           options=options, **extra)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, run_s = _records.time_calls(call, repeats=repeats)
    return _record(problem, method, value=result.fun, steps=result.nit, nfev=result.nfev,
                   compile_s=compile_s, run_s=run_s,
                   status=f"{result.status}: {result.message}")


# ------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------


def methods_for(problem, repeats: int):
    """``(method, thunk)`` pairs for one problem, jacopt first."""
    fun = problem.fun
    builds = {f"jacopt-{solver}": lambda s=solver: peers.jacopt_minimize(fun, s, MAX_STEPS)
              for solver in JACOPT_SOLVERS}
    builds.update({method: None for method in SCIPY_METHODS})
    builds.update({f"optimistix-{kind}": lambda k=kind: peers.optimistix_minimize(fun, k,
                                                                                  MAX_STEPS)
                   for kind in ("bfgs", "lbfgs")})
    builds["optax-lbfgs"] = lambda: peers.optax_lbfgs(fun, MAX_STEPS, GTOL)
    return [(method, (lambda m=method: _run_scipy(problem, m, repeats)) if build is None
             else (lambda m=method, b=build: _run_jax(problem, m, b(), repeats)))
            for method, build in builds.items()]


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """The suite's records (see the module docstring), plus one ``newton-history`` record
    holding Newton's gradient norms on Rosenbrock."""
    from jacopt.problems import test_functions as tf

    _records.require_float64(SUITE)
    names = QUICK_PROBLEMS if quick else tf.names()
    repeats = 3 if quick else 5
    optimistix_missing = peers.missing("optimistix")
    _records.expect(progress, 1)  # the units check
    problems = [tf.get(name) for name in names]
    records = _records.run_methods(SUITE, [
        (p.name, method, "second", target_of(p),
         optimistix_missing if method.startswith("optimistix") and optimistix_missing else thunk)
        for p in problems for method, thunk in methods_for(p, repeats)], progress)
    records.append(newton_history())
    if progress is not None:
        progress("units check")
    records.append(units_check(names))
    return records


def newton_history() -> dict:
    """Newton on Rosenbrock with ``gtol = 1e-12``: ``max|grad|`` after each accepted step and
    ``g_{k+1} / g_k^2`` (bounded when convergence is quadratic)."""
    import jacopt
    from jacopt.problems import test_functions as tf
    from jacopt.solvers import Newton

    p = tf.get("rosenbrock")
    result = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver=Newton(gtol=1e-12), history=True)
    k = int(result.num_steps)
    h = result.history
    accepted = np.array(h.accepted[: k + 1])
    accepted[0] = True
    grads = [float(g) for g in np.asarray(h.grad_norm[: k + 1])[accepted]]
    ratios = [b / a**2 if a > 0 else None for a, b in zip(grads[:-1], grads[1:])]
    record = {field: None for field in _REQUIRED}
    record.update(suite=SUITE, problem="rosenbrock", method="newton-history", order="note",
                  target_loss=target_of(p), final_loss=float(result.value),
                  grad_norms=grads, ratios=ratios, status=str(result.status_name))
    return record


UNIT_SCALES = (1e-2, 1.0, 1e2)


def units_check(names) -> dict:
    """The ``units-check`` record (see the module docstring): for each scale ``c`` the median
    ``nfev`` and the solved count of jacopt's and SciPy's BFGS on ``c * fun``, and the
    per-problem ``nfev``."""
    import warnings

    import scipy.optimize as so

    import jacopt
    from jacopt.problems import test_functions as tf

    per_problem = {}
    for name in names:
        p = tf.get(name)
        target = target_of(p)

        def scaled(x, c, fun=p.fun):
            return c * fun(x)

        value_and_grad = jax.jit(jax.value_and_grad(scaled))
        row = {}
        for c in UNIT_SCALES:
            def f_and_g(x, c=c):
                value, grad = value_and_grad(jnp.asarray(x), c)
                return float(value), np.asarray(grad)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = so.minimize(f_and_g, np.array(p.x0), jac=True, method="BFGS",
                                  options={"gtol": GTOL * c, "norm": np.inf,
                                           "maxiter": MAX_STEPS})
            ours = jacopt.minimize(scaled, jnp.asarray(p.x0), args=(c,), gtol=GTOL * c,
                                   max_steps=MAX_STEPS)
            row[repr(c)] = {
                "scipy-bfgs": [int(ref.nfev), bool(ref.fun / c <= target)],
                "jacopt-bfgs": [int(ours.nfev), bool(float(ours.value) / c <= target)],
            }
        per_problem[name] = row
    scales = {}
    for c in UNIT_SCALES:
        scales[repr(c)] = {
            method: {"median_nfev": statistics.median(r[repr(c)][method][0]
                                                      for r in per_problem.values()),
                     "solved": sum(r[repr(c)][method][1] for r in per_problem.values())}
            for method in ("jacopt-bfgs", "scipy-bfgs")}
    record = {field: None for field in _REQUIRED}
    record.update(suite=SUITE, problem="*", method="units-check", order="note",
                  scales=scales, per_problem=per_problem)
    return record


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def summary(records: list[dict]) -> list[dict]:
    """One row per method: problems solved, and medians over the problems it ran."""
    rows = []
    methods = dict.fromkeys(r["method"] for r in records if r.get("steps") is not None)
    for method in methods:
        recs = [r for r in records if r["method"] == method and r.get("steps") is not None]
        nfevs = [r["nfev"] for r in recs if r.get("nfev") is not None]
        solved = [r for r in recs if r["solved"]]
        rows.append({
            "method": method, "solved": len(solved), "problems": len(recs),
            "median_steps": statistics.median(r["steps"] for r in recs),
            "median_nfev": statistics.median(nfevs) if nfevs else None,
            "median_run_s": statistics.median(r["run_s"] for r in recs),
            "median_compile_s": statistics.median(r["compile_s"] for r in recs
                                                  if r.get("compile_s") is not None),
        })
    return rows


def paired_times(records: list[dict], method: str, peer: str) -> list[tuple[float, float]]:
    """``(method's run_s, peer's run_s)`` for every problem both ran."""
    times = {}
    for r in records:
        if r.get("method") in (method, peer) and r.get("run_s") is not None and r.get("steps") \
                is not None:
            times.setdefault(r["problem"], {})[r["method"]] = r["run_s"]
    return [(t[method], t[peer]) for t in times.values() if len(t) == 2]


def per_problem_wins(records: list[dict], method: str, peer: str):
    """``(k, n)``: ``method``'s warm solve is faster than ``peer``'s on ``k`` of the ``n``
    problems both ran (``None`` when they share none)."""
    pairs = paired_times(records, method, peer)
    return (sum(ours < theirs for ours, theirs in pairs), len(pairs)) if pairs else None


def solve_tables(body: list[dict], *, widths=(28, 18), final_spec="11.3e", nfev_spec=".0f",
                 solved_rule: str = "") -> list[str]:
    """The lines of a minimisation suite's tables (this one's and
    :mod:`jacopt.benchmarks.bounded`'s): one row per (problem, method), then the
    :func:`summary` per method. ``widths`` are the problem and method columns'."""
    pw, mw = widths
    fw = final_spec.split(".")[0]
    lines = [f"{'problem':{pw}s} {'method':{mw}s} {'solved':>6s} {'steps':>6s} {'nfev':>6s} "
             f"{'final f':>{fw}s} {'run [ms]':>9s} {'compile [s]':>11s}  status"]
    for r in body:
        if r.get("steps") is None:
            lines.append(f"{r['problem']:{pw}s} {r['method']:{mw}s} {r.get('note') or ''}"
                         f"{' ' + r['error'] if r.get('error') else ''}")
            continue
        lines.append(
            f"{r['problem']:{pw}s} {r['method']:{mw}s} {'yes' if r['solved'] else 'no':>6s} "
            f"{r['steps']:6d} {r['nfev'] if r['nfev'] is not None else '—':>6} "
            f"{r['final_loss']:{final_spec}} {1e3 * r['run_s']:9.3f} "
            f"{r['compile_s'] if r['compile_s'] is not None else float('nan'):11.2f}  "
            f"{r['status'][:40]}")
    lines += ["", f"Summary over {len({r['problem'] for r in body})} problems (medians over "
                  f"the problems a method ran{solved_rule}):",
              f"{'method':{mw}s} {'solved':>8s} {'steps':>7s} {'nfev':>7s} {'run [ms]':>9s} "
              f"{'compile [s]':>11s}"]
    for row in summary([r for r in body if r.get("steps") is not None]):
        nfev = "—" if row["median_nfev"] is None else format(row["median_nfev"], nfev_spec)
        lines.append(f"{row['method']:{mw}s} {row['solved']:>3d}/{row['problems']:<4d} "
                     f"{row['median_steps']:7.0f} {nfev:>7s} {1e3 * row['median_run_s']:9.3f} "
                     f"{row['median_compile_s']:11.2f}")
    return lines


def format_tables(records: list[dict]) -> str:
    body = [r for r in records if r.get("suite") == SUITE and r.get("order") != "note"]
    lines = solve_tables(body, solved_rule="; solved: f - f* <= 1e-8 max(1, |f*|)")
    wins = per_problem_wins(body, "jacopt-bfgs", "optimistix-bfgs")
    if wins is not None:
        faster, total = wins
        lines += ["", f"jacopt-bfgs warm solve faster than optimistix-bfgs on {faster} of {total} "
                      "problems (same process)"]
    for r in records:
        if r.get("method") == "units-check":
            lines += ["", "Units check: median nfev (solved) with the objective and gtol "
                          "multiplied by c:",
                      f"{'method':14s}" + "".join(f"{'c = ' + c:>14s}" for c in r["scales"])]
            for method in ("jacopt-bfgs", "scipy-bfgs"):
                lines.append(f"{method:14s}" + "".join(
                    f"{v[method]['median_nfev']:>9.0f} ({v[method]['solved']:>2d})"
                    for v in r["scales"].values()))
    for r in records:
        if r.get("method") == "newton-history":
            lines += ["", "jacopt-newton on Rosenbrock (gtol 1e-12): max|grad| after each "
                          "accepted step, and g_{k+1} / g_k^2 over the last steps:",
                      "  " + " ".join(f"{g:.1e}" for g in r["grad_norms"]),
                      "  " + " ".join("—" if q is None else f"{q:.2g}"
                                      for q in r["ratios"][-4:]) + f"  ({r['status']})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_records.main(SUITE, run, format_tables=format_tables,
                           quick_help="6 problems, fewer repeats"))
