"""Benchmark of the Jacobian core: mode choice, batched and elementwise derivatives, chunking.

Run: ``python -m jacopt.benchmarks.jacobians [--quick] [--out DIR]`` (default DIR
``bench-results/jacobians``), or ``jacopt bench jacobians``. Prints a table and writes
``DIR/results.json``: a machine header record, then one record per (section, case, method).

Sections:

1. ``mode``: the Jacobian d y / d x of tanh MLPs with a tall (n << m), wide (n >> m) and square
   (n = m) shape, by ``jacopt.jacobian`` with ``mode="auto"``, ``"fwd"`` and ``"rev"``, and by
   ``jax.jacfwd`` / ``jax.jacrev`` for reference. ``vs best`` is the time over the faster of
   jacopt's fwd and rev: auto should sit at 1.0.
2. ``batch``: per-row Jacobians of an MLP applied to B = 256 rows: ``batch_jacobian``
   (min(d_in, d_out) passes over the batch) against the full (B*d_out) x (B*d_in) Jacobian
   (``jacopt.jacobian``), whose diagonal blocks are the same numbers, and against
   ``jax.vmap(jax.jacrev(per-row f))``.
3. ``elementwise``: ``elementwise_grad`` of an elementwise f at n = 10^6 against f alone
   (``vs best`` is the ratio to f) and against ``jax.vmap(jax.grad(scalar f))``.
4. ``memory``: the least-squares Jacobian of an MLP (B outputs x all weights, B VJPs) built
   unchunked, in chunks, and with a ``max_memory_bytes`` budget.
   *Measured*: XLA's compiled memory analysis of the jitted Jacobian function,
   ``jax.jit(jac).lower(x).compile().memory_analysis()``: ``temp_size_in_bytes`` (scratch
   buffers XLA allocates for the computation, excluding arguments and the output) and
   ``output_size_in_bytes`` (the Jacobian itself). This is XLA's static buffer assignment for
   the CPU executable, not a sampled resident-set size.

Timing: every function is jitted; ``compile_s`` is ``lower().compile()``
(:func:`jacopt.benchmarks._records.compile_timed`); after one untimed call, the methods of a
section are timed in interleaved rounds so that load changes hit all of them alike, each round
by the harness's rule (:func:`jacopt.benchmarks._records.time_compiled`, calls until 50 ms are
spent), and ``run_s`` is the median over the rounds. Arrays are float32, whatever the x64
setting (the runner turns x64 on for every suite). The machine is shared, so times are
noisy: compare ratios, not absolute numbers.
"""
from __future__ import annotations

import statistics
import sys
from typing import Callable

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

import jacopt
from jacopt.benchmarks._records import compile_timed, main, time_compiled
from jacopt.benchmarks.runner import table_cells, text_table
from jacopt.jacobian import auto_mode
from jacopt.problems import mlp as mlp_problems

SUITE = "jacobians"
DTYPE = jnp.float32
_NOT_APPLICABLE = ("order", "target_loss", "time_to_target_s", "iters_to_target", "final_loss")


def _mlp_params(seed: int, sizes):
    """``[(W, b), ...]`` of :func:`jacopt.problems.mlp.init_mlp` in float32."""
    return mlp_problems.init_mlp(seed, sizes, DTYPE)


def _mlp(params, x):
    """:func:`jacopt.problems.mlp.mlp` (tanh) on a vector ``x`` or on a batch of rows."""
    out = mlp_problems.mlp(params, jnp.atleast_2d(x))
    return out[0] if x.ndim == 1 else out


def _compare(section: str, case: str, methods: dict, args: tuple, repeats: int,
             progress) -> list[dict]:
    """Compile every method, then time them in interleaved rounds (so load drifts on a shared
    machine hit all methods alike); one record per method.

    ``methods`` maps a name to ``(fn, extra fields)``. Each record has ``run_s`` (median over
    ``repeats`` rounds, after one untimed call), ``compile_s``, XLA's ``temp_bytes`` and
    ``output_bytes``, ``max_abs_diff`` against the first method's result, and ``out`` (the
    result, dropped by :func:`run`).
    """
    records, compiled = [], []
    for name, (fn, extra) in methods.items():
        if progress:
            progress(f"{section} {case} / {name}")
        compile_s, executable = compile_timed(fn, *args)
        out = jax.block_until_ready(executable(*args))
        memory = executable.memory_analysis()
        compiled.append(executable)
        rec = {"out": out, "suite": SUITE, "section": section, "problem": f"{section}: {case}",
               "case": case, "method": name, "compile_s": compile_s,
               "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
               "output_bytes": getattr(memory, "output_size_in_bytes", None),
               "dtype": str(jax.tree_util.tree_leaves(out)[0].dtype),
               "max_abs_diff": float(jnp.max(jnp.abs(out - records[0]["out"]))) if records else 0.0}
        rec.update({field: None for field in _NOT_APPLICABLE})
        rec.update(extra)
        records.append(rec)
    times = [[] for _ in compiled]
    for _ in range(repeats):
        for executable, samples in zip(compiled, times):
            samples.append(time_compiled(executable, *args, repeats=1))
    for rec, samples in zip(records, times):
        rec["run_s"] = statistics.median(samples)
    return records


def _set_ratio(records: list[dict], base_methods: tuple[str, ...]) -> list[dict]:
    """``vs_best``: each run time over the fastest of ``base_methods``."""
    base = min(r["run_s"] for r in records if r["method"] in base_methods)
    for r in records:
        r["vs_best"] = r["run_s"] / base
    return records


def _mode_section(quick, repeats, progress):
    shapes = ({"tall": (8, 64, 256), "wide": (256, 64, 8), "square": (64, 64, 64)} if quick else
              {"tall": (16, 256, 1024), "wide": (1024, 256, 16), "square": (256, 256, 256)})
    records = []
    for case, sizes in shapes.items():
        params = _mlp_params(0, sizes)
        x = jax.random.normal(jax.random.PRNGKey(1), (sizes[0],), DTYPE)
        n, m = sizes[0], sizes[-1]
        chosen = auto_mode(n, m)
        methods = {  # d _mlp(params, x) / d x; params are arguments, not baked-in constants
            "jacopt auto": (jacopt.jacobian(_mlp, argnums=1), chosen),
            "jacopt fwd": (jacopt.jacobian(_mlp, argnums=1, mode="fwd"), "fwd"),
            "jacopt rev": (jacopt.jacobian(_mlp, argnums=1, mode="rev"), "rev"),
            "jax.jacfwd": (jax.jacfwd(_mlp, argnums=1), "fwd"),
            "jax.jacrev": (jax.jacrev(_mlp, argnums=1), "rev"),
        }
        methods = {name: (fn, {"mode": mode, "passes": n if mode == "fwd" else m})
                   for name, (fn, mode) in methods.items()}
        rows = _compare("mode", f"{case} {m}x{n}", methods, (params, x), repeats, progress)
        records += _set_ratio(rows, ("jacopt fwd", "jacopt rev"))
    return records


def _batch_section(quick, repeats, progress):
    batch, sizes = (256, (8, 32, 4)) if quick else (256, (16, 64, 8))
    params = _mlp_params(2, sizes)
    X = jax.random.normal(jax.random.PRNGKey(3), (batch, sizes[0]), DTYPE)
    f = lambda X, params: _mlp(params, X)  # row i of the output depends on row i of X only
    d_in, d_out = sizes[0], sizes[-1]

    # the full (B*d_out, B*d_in) Jacobian, then its diagonal blocks
    def full_then_blocks(X, params):
        full = jacopt.jacobian(f)(X, params)  # (B, d_out, B, d_in)
        return full[jnp.arange(batch), :, jnp.arange(batch), :]

    methods = {
        "batch_jacobian": (jacopt.batch_jacobian(f), {"mode": auto_mode(d_in, d_out),
                                                      "passes": min(d_in, d_out)}),
        "batch_jacobian fwd": (jacopt.batch_jacobian(f, mode="fwd"),
                               {"mode": "fwd", "passes": d_in}),
        "full jacobian": (full_then_blocks, {"mode": auto_mode(batch * d_in, batch * d_out),
                                             "passes": min(batch * d_in, batch * d_out)}),
        "vmap(jax.jacrev)": (jax.vmap(jax.jacrev(f), in_axes=(0, None)),
                             {"mode": "rev", "passes": d_out}),
    }
    rows = _compare("batch", f"B={batch}, {d_out}x{d_in} per row", methods, (X, params), repeats,
                    progress)
    return _set_ratio(rows, ("batch_jacobian",))


def _elementwise_section(quick, repeats, progress):
    n = 10**6
    x = jnp.linspace(-3.0, 3.0, n, dtype=DTYPE)
    f = lambda x: jnp.sin(x) * jnp.exp(-0.5 * x * x) + jnp.log1p(x * x)
    methods = {
        "f alone": (f, {}),
        "elementwise_grad": (jacopt.elementwise_grad(f), {"mode": "fwd", "passes": 1}),
        "vmap(jax.grad)": (jax.vmap(jax.grad(f)), {"mode": "rev", "passes": 1}),
    }
    rows = _compare("elementwise", f"n={n}", methods, (x,), repeats, progress)
    x64 = np.asarray(x, np.float64)
    analytic = (np.cos(x64) - x64 * np.sin(x64)) * np.exp(-0.5 * x64**2) + 2 * x64 / (1 + x64**2)
    rows[0]["max_abs_diff"] = None  # f's values, not a derivative
    for r in rows[1:]:  # against the analytic derivative (float32 rounding)
        r["max_abs_diff"] = float(np.max(np.abs(np.asarray(r["out"], np.float64) - analytic)))
    return _set_ratio(rows, ("f alone",))


def _memory_section(quick, repeats, progress):
    """The least-squares Jacobian of an MLP: B outputs by all P weights (reverse mode, B VJPs),
    where each VJP's scratch (B x hidden activations) is large next to the weights."""
    batch, sizes = (128, (8, 32, 32, 1)) if quick else (256, (8, 64, 64, 1))
    params = _mlp_params(4, sizes)
    X = jax.random.normal(jax.random.PRNGKey(5), (batch, sizes[0]), DTYPE)
    model = lambda params, X: _mlp(params, X)[:, 0]
    n_params = sum(W.size + b.size for W, b in params)
    budget = 4 << 20
    from jacopt._basis import chunk_for_budget

    _, vjp_fn = jax.vjp(lambda p: jax.flatten_util.ravel_pytree(model(p, X))[0], params)
    budget_chunk = chunk_for_budget(lambda u: jax.flatten_util.ravel_pytree(vjp_fn(u)[0])[0],
                                    jnp.zeros(batch, DTYPE), batch, budget)
    common = {"mode": "rev", "passes": batch}
    methods = {("unchunked" if c is None else f"chunk_size={c}"):
               (jacopt.jacobian(model, as_matrix=True, chunk_size=c), dict(common, chunk=c))
               for c in (None, 64, 16, 4)}
    methods[f"max_memory_bytes={budget >> 20} MiB"] = (
        jacopt.jacobian(model, as_matrix=True, max_memory_bytes=budget),
        dict(common, chunk=budget_chunk, budget_bytes=budget))
    rows = _compare("memory", f"rev {batch}x{n_params}, MLP {list(sizes)}", methods, (params, X),
                    repeats, progress)
    return _set_ratio(rows, ("unchunked",))


def run(quick: bool = False, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run the four sections; returns one record per (section, case, method) (no header)."""
    repeats = 5 if quick else 15
    records = []
    for section in (_mode_section, _batch_section, _elementwise_section, _memory_section):
        records += section(quick, repeats, progress)
    for r in records:
        r.pop("out", None)
    return records


def format_table(records: list[dict]) -> str:
    """An aligned text table of the records."""
    columns = [
        ("section", "section", "{}"), ("case", "case", "{}"), ("method", "method", "{}"),
        ("mode", "mode", "{}"), ("passes", "passes", "{}"), ("chunk", "chunk", "{}"),
        ("run_s", "run [ms]", lambda v: f"{1e3 * v:.3f}"), ("vs_best", "ratio", "{:.2f}"),
        ("compile_s", "compile [s]", "{:.2f}"),
        ("temp_bytes", "XLA temp [MiB]", lambda v: f"{v / 2**20:.2f}"),
        ("output_bytes", "output [MiB]", lambda v: f"{v / 2**20:.2f}"),
        ("max_abs_diff", "max |diff|", "{:.1e}"),
    ]
    lines = text_table(*table_cells(records, columns), groups=[r["problem"] for r in records])
    lines.append("")
    lines.append("ratio: mode = time / faster of jacopt fwd and rev; "
                 "batch = time / batch_jacobian;")
    lines.append("elementwise = time / f alone; memory = time / unchunked. XLA temp = compiled")
    lines.append("memory_analysis().temp_size_in_bytes (scratch, excluding inputs and the output).")
    return "\n".join(lines)


format_tables = format_table  # the hook name of jacopt.benchmarks.runner


if __name__ == "__main__":
    sys.exit(main(SUITE, run, format_tables=format_table,
                           quick_help="small sizes (under ~20 s)"))
