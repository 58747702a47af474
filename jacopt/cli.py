"""The ``jacopt`` command line (also ``python -m jacopt``).

- ``jacopt bench [SUITE ...] [--quick] [--out DIR] [--format table|json|markdown]
  [--out-md PATH] [--no-plots] [--from RESULTS_JSON ...]`` (the flags of ``python -m
  jacopt.benchmarks.SUITE``; ``--from`` formats saved runs instead of running)
- ``jacopt solve nist NAME [--start 1|2] [--solver lm|gn|dogleg]``
- ``jacopt list``
- ``jacopt --version``

``list`` reads the solver registries (``SOLVERS`` of :mod:`jacopt.least_squares` and
:mod:`jacopt.minimize`), so a solver added there is listed and accepted without a change here;
it lists the problem families that ``solve`` accepts (:data:`SOLVE_FAMILIES`).

The commands run in float64 (NIST's certificates carry 11 digits). The benchmark logic lives in
``jacopt.benchmarks``; this module only parses arguments and prints. Bad input (an unknown
suite, problem or solver) prints the valid names and exits with code 2, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from jacopt import __version__

# problem families ``jacopt solve`` accepts: (what they are, which entry point solves them)
SOLVE_FAMILIES = {"nist": ("NIST StRD nonlinear regression", "least_squares")}


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    from jacopt.benchmarks.runner import DEFAULT_SUITES, SUITES, add_arguments

    parser = argparse.ArgumentParser(
        prog="jacopt",
        description="jacopt: second-order optimisers built on Jacobians, in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"jacopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    bench = sub.add_parser(
        "bench",
        help="compare second-order methods with first-order ones and with peers",
        description="Run benchmark suites, print a comparison table, write DIR/results.json "
        "and PNG plots in DIR/plots/. With no suite named, runs: " + ", ".join(DEFAULT_SUITES)
        + ".",
    )
    bench.add_argument("suites", nargs="*", metavar="SUITE",
                       help="suites to run: " + ", ".join(SUITES))
    add_arguments(bench, out_default="bench-results",
                  quick_help="small configurations (the default set finishes within 3 minutes "
                  "on a 2-core CPU)")

    solve = sub.add_parser(
        "solve", help="solve one problem and print a Ceres-like summary",
        description="Solve one NIST StRD problem in float64 and print a Ceres-like summary "
                    "against the certified values. Exit status: 0 when the solve succeeds, 1 "
                    "when it stops on a failure status (the summary is printed either way), 2 "
                    "for bad arguments.")
    solve.add_argument("family", metavar="FAMILY",
                       help="problem family: " + ", ".join(SOLVE_FAMILIES))
    solve.add_argument("name", metavar="NAME", help="problem name (see `jacopt list`)")
    solve.add_argument("--start", type=int, default=1, metavar="1|2",
                       help="NIST starting point: 1 (far) or 2 (near); default 1")
    solve.add_argument("--solver", default="lm", metavar="SOLVER",
                       help="least-squares solver (default lm; see `jacopt list`)")

    sub.add_parser("list", help="show the problems, suites and solvers available")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on malformed input
    args.argv = argv
    try:
        if args.command == "bench":
            return _bench(args)
        if args.command == "solve":
            return _solve(args)
        return _list()
    except _UsageError as exc:
        print(f"jacopt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed stdout (`jacopt list | head -1`): stop without a traceback, and
        # point stdout at devnull so that Python's exit-time flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def solver_registry(entry: str) -> dict:
    """``{name: solver class}`` of an entry point (``"least_squares"`` or ``"minimize"``), read
    from its module (the package attribute of the same name is the function)."""
    return importlib.import_module(f"jacopt.{entry}").SOLVERS


def _enable_x64():
    import jax

    jax.config.update("jax_enable_x64", True)


def _bench(args) -> int:
    from jacopt.benchmarks import runner

    suites = list(dict.fromkeys(s.lower() for s in args.suites)) or list(runner.DEFAULT_SUITES)
    unknown = [s for s in suites if s not in runner.SUITES]
    if unknown:
        raise _UsageError(
            f"unknown suite {', '.join(map(repr, unknown))}; valid suites are "
            + ", ".join(runner.SUITES)
        )
    if args.from_results:  # saved runs: every suite they hold unless some are named
        try:
            return runner.bench(suites if args.suites else None, args)
        except runner.SavedRunError as exc:
            raise _UsageError(f"--from: {exc}") from None
    return runner.bench(suites, args, command=" ".join(["jacopt"] + args.argv))


def _solve(args) -> int:
    if args.family.lower() not in SOLVE_FAMILIES:
        raise _UsageError(f"unknown problem family {args.family!r}; valid families are: "
                          + ", ".join(SOLVE_FAMILIES))
    from jacopt.problems import nist

    lookup = {n.lower(): n for n in nist.NAMES}
    if args.name.lower() not in lookup:
        raise _UsageError(f"unknown NIST problem {args.name!r}; valid names are "
                          + ", ".join(nist.NAMES))
    if args.start not in (1, 2):
        raise _UsageError(f"--start must be 1 or 2, got {args.start}")
    solver = args.solver.lower()
    solvers = solver_registry(SOLVE_FAMILIES["nist"][1])
    if solver not in solvers:
        raise _UsageError(f"unknown solver {args.solver!r}; valid solvers are "
                          + ", ".join(solvers))
    _enable_x64()
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jacopt

    problem = nist.load(lookup[args.name.lower()])
    x0 = jnp.asarray(problem.starts[args.start - 1])
    data = tuple(jnp.asarray(a) for a in problem.args)

    def solve(x0, data):
        return jacopt.least_squares(problem.residual, x0, args=data, solver=solver)

    t0 = time.perf_counter()
    compiled = jax.jit(solve).lower(x0, data).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(x0, data))  # first call pays dispatch set-up
    t0 = time.perf_counter()
    result = jax.block_until_ready(compiled(x0, data))
    run_s = time.perf_counter() - t0

    initial_cost = 0.5 * float(np.sum(np.asarray(problem.residual(x0, *data)) ** 2))
    params = np.asarray(result.params)
    lre = nist.lre(params, problem.certified_params)
    certified_cost = 0.5 * problem.certified_rss
    width = 34
    print(f"jacopt solve: NIST {problem.name} ({problem.difficulty}), start {args.start}, "
          f"solver {solver}, float64")
    print(f"  {problem.num_params} parameters, {problem.num_obs} residuals")
    rows = [
        ("Initial cost", f"{initial_cost:.10e}"),
        ("Final cost", f"{float(result.cost):.10e}"),
        ("Certified cost (RSS / 2)", f"{certified_cost:.10e}"),
        ("Steps (accepted / rejected)", f"{int(result.num_steps)} "
         f"({int(result.num_accepted)} / {int(result.num_rejected)})"),
        ("Residual / Jacobian evaluations", f"{int(result.nfev)} / {int(result.njev)}"),
        ("Optimality (|grad|_inf)", f"{float(result.optimality):.3e}"),
        ("Termination",
         f"{result.status_name} ({'success' if bool(result.success) else 'failure'})"),
        ("LRE, worst parameter", f"{lre:.2f}"),
        ("Compile time", f"{compile_s:.3f} s"),
        ("Run time (warm)", f"{run_s * 1e3:.3f} ms"),
    ]
    for label, value in rows:
        print(f"  {label:<{width}} {value}")
    print(f"  {result.message}")
    print(f"\n  {'parameter':<10} {'estimate':>22} {'certified':>22} {'LRE':>6}")
    per = nist.lre_per_param(params, problem.certified_params)
    for i, (est, cert) in enumerate(zip(params, problem.certified_params)):
        print(f"  b{i + 1:<9} {est:>22.12e} {cert:>22.12e} {per[i]:>6.2f}")
    return 0 if bool(result.success) else 1


def _list() -> int:
    from jacopt.benchmarks.runner import DEFAULT_SUITES, SUITES
    from jacopt.problems import nist

    print("Suites (jacopt bench SUITE ...; default: " + ", ".join(DEFAULT_SUITES) + "):")
    for name, suite in SUITES.items():
        print(f"  {name:<10} {suite.description}")
    print("\nSolvers (solver=NAME; names on one line are aliases):")
    solvers = {entry: _solver_lines(solver_registry(entry))
               for entry in ("least_squares", "minimize")}
    width = max(len(names) for lines in solvers.values() for names, _ in lines)
    for entry, lines in solvers.items():
        print(f"  {entry}:")
        for names, summary in lines:
            print(f"    {names:<{width}}  {summary}")
    print("\nProblems (jacopt solve FAMILY NAME):")
    for family, (text, entry) in SOLVE_FAMILIES.items():
        print(f"  {family}: {text}, solved by {entry}")
        for level in ("lower", "average", "higher"):
            names = [n for n in nist.NAMES if nist.DIFFICULTY[n] == level]
            print(f"    {level}: " + ", ".join(names))
    return 0


def _solver_lines(registry: dict) -> list[tuple[str, str]]:
    """One ``(names, summary)`` per solver class: its registry names joined (aliases share a
    class) and the first line of its docstring without the trailing cross-reference."""
    by_class: dict[type, list[str]] = {}
    for name, cls in registry.items():
        by_class.setdefault(cls, []).append(name)
    lines = []
    for cls, names in by_class.items():
        summary = ((cls.__doc__ or cls.__name__).strip().splitlines() or [cls.__name__])[0]
        summary = summary.split(" (")[0].rstrip(".:")
        lines.append((", ".join(names), summary))
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
