"""Benchmark of sparse Jacobians: auto-detected pattern + colouring against dense ``jax.jacfwd``.

Run: ``python -m jacopt.benchmarks.sparse [--quick] [--out DIR]`` (quick: N = 32, 64; full:
N = 32, 64, 128, 256). Problem: the steady-state residual of the 2-D Brusselator on an N x N
periodic grid (``jacopt.problems.brusselator``, 2 N^2 unknowns, 6 nonzeros per row), float64,
at Hairer & Wanner's start.

Per N, two or three records:

- ``jacopt sparse_jacobian``: ``detect_s`` (``jacobian_sparsity`` on the host), ``color_s``
  (colouring and mode choice), ``colors`` against ``lower_bound`` (the most nonzeros in a row),
  then the jitted Jacobian (a BCOO from ``colors`` JVPs);
- for N <= :data:`TABU_MAX_N`, the same with ``color_effort=TABU_EFFORT`` (tabu search after
  the greedy colouring: fewer colours for more host time in ``color_s``);
- ``jax.jacfwd``: the dense Jacobian (``n`` JVPs), skipped with a note when its compiled
  memory (or, before compiling, its output alone) would exceed :data:`DENSE_LIMIT_BYTES`.

Measured (through the harness's timers in :mod:`jacopt.benchmarks._records`): ``compile_s``
(:func:`compile_timed`), ``run_s`` (median of warm calls, :func:`time_compiled`),
``temp_bytes`` and ``output_bytes`` (XLA's compiled ``memory_analysis()``: scratch buffers and
the result), and where dense runs:
``missed_nonzeros`` (dense nonzeros outside the detected pattern: must be 0),
``max_abs_diff`` (sparse values against dense), ``time_ratio`` and ``memory_ratio`` (dense
over sparse, temp + output bytes). The machine is shared: compare ratios, not absolute times.

The fit family (:func:`sparse_fit_case`, ``--fit``; or :func:`run_fits`): Broyden tridiagonal
(Moré, Garbow & Hillstrom problem 30, start ``-1``) at n = 10^4 and 10^5 unknowns, solved by
``jacopt.least_squares(jac_sparsity=pattern)`` (the sparse Levenberg-Marquardt of
:mod:`jacopt.solvers.sparse_lm`) and by SciPy's ``least_squares(method="trf",
tr_solver="lsmr")`` with the exact sparse Jacobian (a CSR matrix from NumPy; at SciPy's default
tolerances, and at ``ftol = xtol = gtol = 1e-15``, which reach jacopt's final cost) and with
``jac="2-point", jac_sparsity=pattern`` (the cookbook's way). Per method: ``detect_s``
(jacopt: pattern detection and colouring on the host, once per function and shapes),
``first_s`` (jacopt: the first call, compile included; ``compile_s`` is it less
``run_s``), ``run_s`` (jacopt: median of warm calls;
SciPy: one call), ``final_loss`` (the cost ``0.5 ||r||^2``), ``nfev``, and ``speedup`` (SciPy's
``run_s`` over jacopt's).

Bundle adjustment (``--ba``; :mod:`jacopt.benchmarks.bundle_adjustment`): a scene at the size
of BAL's 49-camera problem solved by ``solver="lm-schur"``, SciPy's cookbook method and Ceres
through pycolmap (when installed), with final costs, times and steps.
"""
from __future__ import annotations

import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks._records import (
    compile_timed,
    limit_blas_threads,
    time_calls,
    time_compiled,
    time_once,
)
from jacopt.benchmarks._records import main as records_main
from jacopt.problems.brusselator import brusselator_residual, brusselator_start
from jacopt.sparse import sparse_jacobian
from jacopt.sparsity import jacobian_sparsity

SUITE = "sparse"
DENSE_LIMIT_BYTES = 2 * 2**30
TABU_EFFORT = 20_000  # tabu moves for the second colouring (jacopt.coloring.color_columns)
TABU_MAX_N = 64  # the tabu colouring is measured up to this grid size
_NOT_APPLICABLE = ("order", "target_loss", "time_to_target_s", "iters_to_target", "final_loss")


def _memory(compiled) -> tuple[int | None, int | None]:
    memory = compiled.memory_analysis()
    return (getattr(memory, "temp_size_in_bytes", None),
            getattr(memory, "output_size_in_bytes", None))


def _record(problem: str, method: str, **fields) -> dict:
    rec = {"suite": SUITE, "problem": problem, "method": method}
    rec.update({field: None for field in _NOT_APPLICABLE})
    rec.update(fields)
    return rec


def _sparse_record(problem, f, x, pattern, detect_s, effort, repeats) -> dict:
    """Colour (timed), compile and time the sparse Jacobian; memory from XLA."""
    jac = sparse_jacobian(f, sparsity=pattern, color_effort=effort)
    coloring, color_s = time_once(jac.plan, x)  # colouring, cached for the compile below
    compile_s, compiled = compile_timed(jac, x)
    out = jax.block_until_ready(compiled(x))
    run_s = time_compiled(compiled, x, repeats=repeats)
    temp, output = _memory(compiled)
    method = "jacopt sparse_jacobian" + (f" (color_effort={effort})" if effort else "")
    return _record(problem, method, n=int(x.size), nnz=int(coloring.pattern.nnz),
                   mode=coloring.mode,
                   colors=coloring.num_colors, lower_bound=coloring.lower_bound,
                   colors_over_bound=coloring.num_colors / coloring.lower_bound,
                   detect_s=detect_s, color_s=color_s, compile_s=compile_s, run_s=run_s,
                   temp_bytes=temp, output_bytes=output, out=out)


def brusselator_case(N: int, repeats: int = 5, progress: Callable | None = None) -> list[dict]:
    """The records (sparse, sparse with tabu colouring up to TABU_MAX_N, dense) for the
    Brusselator on an N x N grid."""
    problem = f"brusselator N={N}"
    f = brusselator_residual
    x = brusselator_start(N, dtype=jnp.float64)
    n = int(x.size)
    if progress:
        progress(f"{problem} / sparse")
    pattern, detect_s = time_once(jacobian_sparsity, f, x)
    sparse = _sparse_record(problem, f, x, pattern, detect_s, 0, repeats)
    records = [sparse]
    if N <= TABU_MAX_N:
        if progress:
            progress(f"{problem} / sparse, tabu colouring")
        records.append(_sparse_record(problem, f, x, pattern, detect_s, TABU_EFFORT, repeats))
    dense = _record(problem, "jax.jacfwd", n=n, nnz=n * n, colors=n, compile_s=None,
                    run_s=None)
    output_bytes = n * n * x.dtype.itemsize
    if progress:
        progress(f"{problem} / jax.jacfwd")
    if output_bytes > DENSE_LIMIT_BYTES:
        dense["note"] = (f"skipped: the dense Jacobian alone is {output_bytes / 2**30:.1f} GiB "
                         f"(> {DENSE_LIMIT_BYTES / 2**30:.0f} GiB)")
        return _finish(records, dense)
    compile_s, compiled = compile_timed(jax.jacfwd(f), x)
    d_temp, d_output = _memory(compiled)
    if d_temp is not None and d_temp + d_output > DENSE_LIMIT_BYTES:
        dense["note"] = (f"skipped: compiled memory {(d_temp + d_output) / 2**30:.1f} GiB "
                         f"(> {DENSE_LIMIT_BYTES / 2**30:.0f} GiB)")
        return _finish(records, dense)
    dense_out = np.asarray(jax.block_until_ready(compiled(x)))
    d_run_s = time_compiled(compiled, x, repeats=max(1, repeats // 2))
    dense.update(compile_s=compile_s, run_s=d_run_s, temp_bytes=d_temp, output_bytes=d_output)
    for rec in records:
        values = np.asarray(rec["out"].todense())
        rec.update(missed_nonzeros=int(np.count_nonzero((dense_out != 0) & ~pattern.toarray())),
                   max_abs_diff=float(np.max(np.abs(values - dense_out))),
                   time_ratio=d_run_s / rec["run_s"],
                   memory_ratio=(d_temp + d_output) / (rec["temp_bytes"] + rec["output_bytes"]))
    return _finish(records, dense)


def _finish(records, dense):
    for rec in records:
        rec.pop("out", None)
    return records + [dense]


def _broyden_numpy(x):
    padded = np.pad(x, 1)
    return (3.0 - 2.0 * x) * x - padded[:-2] - 2.0 * padded[2:] + 1.0


def _broyden_numpy_jacobian(x):
    import scipy.sparse as sps

    n = x.size
    return sps.diags([-np.ones(n - 1), 3.0 - 4.0 * x, -2.0 * np.ones(n - 1)], [-1, 0, 1],
                     format="csr")


def _broyden(x):
    from jacopt.problems.brusselator import broyden_tridiagonal_residual

    return broyden_tridiagonal_residual(x)


def sparse_fit_case(n: int, progress: Callable | None = None) -> list[dict]:
    """Broyden tridiagonal with ``n`` unknowns: jacopt's sparse LM (pattern detected from the
    jaxpr) against SciPy trf + LSMR (exact sparse Jacobian; 2-point with ``jac_sparsity``)."""
    import scipy.optimize as so

    import jacopt
    from jacopt.solvers.sparse_lm import plan_for

    problem = f"broyden_tridiagonal n={n}"
    x0 = -np.ones(n)
    if progress:
        progress(f"{problem} / jacopt lm-sparse")
    plan, detect_s = time_once(plan_for, _broyden, jnp.asarray(x0), (), "auto")
    pattern = plan.plan.pattern

    def ours():
        return jacopt.least_squares(_broyden, x0, jac_sparsity="auto")

    res, first_s = time_once(ours)
    res, run_s = time_calls(ours, repeats=3, warm_up=False)
    records = [_record(problem, "jacopt least_squares(jac_sparsity='auto')", n=n,
                       nnz=int(pattern.nnz), colors=plan.num_colors, detect_s=detect_s,
                       first_s=first_s, compile_s=max(first_s - run_s, 0.0), run_s=run_s,
                       final_loss=float(res.cost),
                       nfev=int(res.nfev), status=res.status_name)]
    tight = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)
    for label, kw in (("exact sparse jac", dict(jac=_broyden_numpy_jacobian)),
                      ("exact sparse jac, tolerances 1e-15",
                       dict(jac=_broyden_numpy_jacobian, **tight)),
                      ("2-point, jac_sparsity", dict(jac="2-point", jac_sparsity=pattern))):
        if progress:
            progress(f"{problem} / scipy trf lsmr, {label}")
        out, seconds = time_once(lambda: so.least_squares(
            _broyden_numpy, x0, method="trf", tr_solver="lsmr", **kw))
        records.append(_record(problem, f"scipy trf+lsmr ({label})", n=n, compile_s=None,
                               run_s=seconds,
                               final_loss=float(out.cost), nfev=int(out.nfev),
                               status=str(out.status), speedup=seconds / run_s))
    return records


def run_fits(sizes=(10_000, 100_000), progress: Callable | None = None) -> list[dict]:
    """The fit family at each size in ``sizes``."""
    limit_blas_threads(1)
    jax.config.update("jax_enable_x64", True)
    records = []
    for n in sizes:
        records += sparse_fit_case(n, progress=progress)
    return records


def format_fit_table(records: list[dict]) -> str:
    """An aligned text table of :func:`run_fits`' records."""
    columns = [("problem", "{}"), ("method", "{}"), ("colors", "{}"), ("detect_s", "{:.2f}"),
               ("first_s", "{:.2f}"), ("run_s", "{:.3f}"), ("final_loss", "{:.2e}"),
               ("nfev", "{}"), ("status", "{}"), ("speedup", "{:.1f}")]
    body = [["-" if r.get(k) is None else f.format(r[k]) for k, f in columns] for r in records]
    widths = [max(len(k), *(len(row[i]) for row in body)) for i, (k, _) in enumerate(columns)]
    lines = ["  ".join(k.ljust(w) for (k, _), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    lines.append("speedup: SciPy's run_s over jacopt's warm run_s (jacopt's detect_s and first_s "
                 "are paid once per function and shapes)")
    return "\n".join(lines)


def run(quick: bool = False, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Brusselator N = 32, 64 (quick) or 32, 64, 128, 256; one sparse and one dense record
    per N (no header)."""
    limit_blas_threads(1)
    jax.config.update("jax_enable_x64", True)
    sizes = (32, 64) if quick else (32, 64, 128, 256)
    records = []
    for N in sizes:
        records += brusselator_case(N, repeats=5 if quick else 9, progress=progress)
    return records


def format_tables(records: list[dict]) -> str:
    """An aligned text table of the records."""
    columns = [
        ("problem", "problem", "{}"), ("method", "method", "{}"), ("n", "n", "{}"),
        ("colors", "colours", "{}"), ("lower_bound", "bound", "{}"),
        ("detect_s", "detect [s]", "{:.2f}"), ("color_s", "colour [s]", "{:.2f}"),
        ("compile_s", "compile [s]", "{:.2f}"), ("run_s", "run [ms]", "{:.3f}"),
        ("temp_bytes", "temp [MiB]", "{:.2f}"), ("output_bytes", "output [MiB]", "{:.2f}"),
        ("time_ratio", "time x", "{:.0f}"), ("memory_ratio", "memory x", "{:.0f}"),
        ("missed_nonzeros", "missed", "{}"), ("max_abs_diff", "max |diff|", "{:.1e}"),
    ]

    def cell(rec, key, fmt):
        value = rec.get(key)
        if value is None:
            return "-"
        if key == "run_s":
            value = 1e3 * value
        elif key.endswith("_bytes"):
            value = value / 2**20
        return fmt.format(value)

    body = [[cell(r, k, f) for k, _, f in columns] for r in records]
    heads = [h for _, h, _ in columns]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)),
             "  ".join("-" * w for w in widths)]
    for rec, row in zip(records, body):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if rec.get("note"):
            lines.append(f"    note: {rec['note']}")
    lines.append("")
    lines.append("time x / memory x: dense jax.jacfwd over sparse (memory: XLA temp + output "
                 "bytes); bound: most nonzeros in a row")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ba" in argv:  # bundle adjustment (jacopt.benchmarks.bundle_adjustment)
        from jacopt.benchmarks import bundle_adjustment

        return bundle_adjustment.main([a for a in argv if a != "--ba"])
    if "--fit" in argv:  # the sparse least-squares family only, printed as a table
        sizes = (10_000,) if "--quick" in argv else (10_000, 100_000)
        print(format_fit_table(run_fits(sizes, progress=lambda m: print(m, file=sys.stderr))))
        return 0
    return records_main(SUITE, run, argv, format_tables=format_tables,
                        quick_help="N = 32, 64 only")


if __name__ == "__main__":
    sys.exit(main())
