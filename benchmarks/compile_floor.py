"""How fast can a least-squares solve compile inside ``jax.jit`` on this backend? Floors for the
compile target of the NIST benchmark (jacopt LM <= 0.4x Optimistix LM's compile).

For each NIST problem (start 1; the compile does not depend on the start), in one process,
``jax.jit(solve).lower(x0, x, y).compile()`` is timed for five functions of the same
signature, from less work to more (a new function object each time, so nothing is reused):

- ``residual``: one evaluation of the residual and its cost: the user's model alone.
- ``r-and-J-loop``: a ``lax.while_loop`` of 50 gradient steps, each evaluating the residual and
  its Jacobian (``jax.jacfwd``): the smallest loop a Jacobian-based solver runs. It is not a
  solver (no damping, no linear solve, no stopping test).
- ``minimal-LM``: the textbook Levenberg-Marquardt (Levenberg 1944, Marquardt 1963): the normal
  equations ``(J^T J + lam I) p = -J^T r`` solved by a Cholesky factorisation (LAPACK; it
  compiled faster than an LU solve or an explicit inverse), ``lam`` divided by 3 after an
  accepted step and doubled after a rejected one, stopping on a relative cost decrease below
  1e-15 or after 200 steps. No scaling, bounds, trust region, status or counts; the benchmark
  prints on how many problems it reaches NIST's certified residual sum of squares.
- ``optimistix-LM`` (the ``bench`` extra; skipped when absent) and ``jacopt-LM``, as in
  :mod:`jacopt.benchmarks.nist`.

The order of the five is rotated from one problem to the next. The summary gives each
function's median compile time and its median ratio to Optimistix LM's (per problem, then the
median over problems): a function whose ratio is above 0.4 compiles too slowly for the target
however lean the solver built on it.

Run: ``python -m jacopt.benchmarks.compile_floor [--quick] [--problems NAME ...]`` (``--quick``:
four problems).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from typing import Callable

FLOOR_STEPS = 50
"""Iterations of the ``r-and-J-loop`` (the compile does not depend on it)."""

MINIMAL_MAX_STEPS = 200
"""The ``minimal-LM``'s step budget."""

QUICK_PROBLEMS = ("Misra1a", "Thurber", "MGH09", "Eckerle4")

TARGET_RATIO = 0.4
"""The NIST benchmark's compile target, as a ratio to Optimistix LM."""


def residual_only(residual: Callable) -> Callable:
    """``solve(x0, x, y) -> (x0, cost)``: one residual evaluation."""
    import jax.numpy as jnp

    def solve(x0, x, y):
        r = residual(x0, x, y)
        return x0, 0.5 * jnp.sum(r * r)

    return solve


def r_and_j_loop(residual: Callable) -> Callable:
    """``solve(x0, x, y) -> (params, cost)``: :data:`FLOOR_STEPS` gradient steps in a
    ``lax.while_loop``, each evaluating ``r`` and ``J``."""
    import jax
    import jax.numpy as jnp

    def solve(x0, x, y):
        def f(b):
            return residual(b, x, y)

        def body(carry):
            b, k = carry
            r, J = f(b), jax.jacfwd(f)(b)
            return b - 1e-6 * (J.T @ r), k + 1

        b, _ = jax.lax.while_loop(lambda c: c[1] < FLOOR_STEPS, body, (x0, 0))
        r = f(b)
        return b, 0.5 * jnp.sum(r * r)

    return solve


def minimal_lm(residual: Callable) -> Callable:
    """``solve(x0, x, y) -> (params, cost)``: the textbook Levenberg-Marquardt of the module
    docstring."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg

    def solve(x0, x, y):
        def f(b):
            return residual(b, x, y)

        def cost_of(r):
            return 0.5 * jnp.sum(r * r)

        def cond(carry):
            _, _, k, _, done = carry
            return (k < MINIMAL_MAX_STEPS) & ~done

        def body(carry):
            b, lam, k, cost, _ = carry
            r, J = f(b), jax.jacfwd(f)(b)
            A = J.T @ J + lam * jnp.eye(b.shape[0], dtype=b.dtype)
            p = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), J.T @ r)
            new_cost = cost_of(f(b + p))
            better = new_cost < cost
            done = better & (cost - new_cost <= 1e-15 * cost)
            return (jnp.where(better, b + p, b), jnp.where(better, lam / 3.0, 2.0 * lam), k + 1,
                    jnp.where(better, new_cost, cost), done)

        start = (x0, jnp.asarray(1e-3, x0.dtype), 0, cost_of(f(x0)), jnp.asarray(False))
        b, _, _, cost, _ = jax.lax.while_loop(cond, body, start)
        return b, cost

    return solve


def _params_and_cost(make: Callable) -> Callable:
    """``build(residual) -> solve(x0, x, y) -> (params, cost)`` from a least-squares builder of
    :mod:`jacopt.benchmarks.peers` (as :mod:`jacopt.benchmarks.nist` runs them)."""

    def build(residual):
        solve = make(residual)

        def params_and_cost(x0, x, y):
            out = solve(x0, x, y)
            return out["x"], out["cost"]

        return params_and_cost

    return build


def builders() -> dict[str, Callable]:
    """``{label: build(residual) -> solve}`` in the order of the module docstring; Optimistix
    only when installed."""
    from jacopt.benchmarks import peers

    out = {"residual": residual_only, "r-and-J-loop": r_and_j_loop, "minimal-LM": minimal_lm}
    if importlib.util.find_spec("optimistix") is not None:
        out["optimistix-LM"] = _params_and_cost(peers.optimistix_least_squares)
    out["jacopt-LM"] = _params_and_cost(peers.jacopt_least_squares)
    return out


def run(names) -> list[dict]:
    """One record per (problem, function): ``problem``, ``function``, ``compile_s``; the
    ``minimal-LM`` records also carry ``reaches_certified``: its RSS is within 1e-6 (relative)
    of NIST's certified one."""
    import jax
    import jax.numpy as jnp

    from jacopt.benchmarks._records import compile_timed
    from jacopt.problems import nist

    jax.config.update("jax_enable_x64", True)
    build = builders()
    labels = list(build)
    first = nist.load(names[0])
    # one compile before timing anything: the process's first compile also initialises MLIR
    compile_timed(residual_only(first.residual), jnp.asarray(first.starts[0]),
                    *map(jnp.asarray, first.args))
    records = []
    for i, name in enumerate(names):
        problem = nist.load(name)
        args = (jnp.asarray(problem.starts[0]), *map(jnp.asarray, problem.args))
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            seconds, compiled = compile_timed(build[label](problem.residual), *args)
            record = {"problem": name, "function": label, "compile_s": seconds}
            if label == "minimal-LM":
                rss = 2.0 * float(compiled(*args)[1])
                record["reaches_certified"] = bool(
                    abs(rss - problem.certified_rss) <= 1e-6 * problem.certified_rss)
            records.append(record)
    return records


def summary(records: list[dict]) -> list[dict]:
    """Per function: ``median_compile_s`` and, when Optimistix ran, ``median_ratio`` (the
    median over problems of the compile time divided by Optimistix LM's)."""
    by = {}
    for r in records:
        by.setdefault(r["function"], {})[r["problem"]] = r["compile_s"]
    reference = by.get("optimistix-LM")
    rows = []
    for label, times in by.items():
        row = {"function": label, "median_compile_s": statistics.median(times.values())}
        if reference:
            row["median_ratio"] = statistics.median(
                times[p] / reference[p] for p in times if p in reference)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jacopt.benchmarks.compile_floor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_PROBLEMS)}")
    parser.add_argument("--problems", nargs="+", metavar="NAME", help="NIST problem names")
    opts = parser.parse_args(argv)
    from jacopt.benchmarks.runner import apply_run_settings
    from jacopt.problems import nist

    apply_run_settings()  # float64 and one BLAS thread, as for the suites

    names = opts.problems or (QUICK_PROBLEMS if opts.quick
                              else [p.name for p in nist.load_all()])
    records = run(list(names))
    labels = list(dict.fromkeys(r["function"] for r in records))
    width = max(len(n) for n in names)
    print("compile time [s], jax.jit(solve).lower(...).compile(), one process")
    print(f"{'problem':<{width}}  " + "  ".join(f"{label:>13}" for label in labels))
    for name in names:
        row = {r["function"]: r["compile_s"] for r in records if r["problem"] == name}
        print(f"{name:<{width}}  " + "  ".join(f"{row[label]:13.3f}" for label in labels))
    print()
    for row in summary(records):
        ratio = row.get("median_ratio")
        against = "" if ratio is None else (
            f"  {ratio:5.2f}x Optimistix LM ("
            f"{'within' if ratio <= TARGET_RATIO else 'above'} the {TARGET_RATIO}x target)")
        print(f"{row['function']:<14} median {row['median_compile_s']:6.3f} s{against}")
    if "optimistix-LM" not in labels:
        print("optimistix not installed (the bench extra): no ratios")
    reached = [r["reaches_certified"] for r in records if r["function"] == "minimal-LM"]
    print(f"minimal-LM reaches the certified RSS on {sum(reached)}/{len(reached)} problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
