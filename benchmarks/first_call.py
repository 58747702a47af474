"""The first call of a fit in a fresh Python process (imports and data excluded), against SciPy
and Optimistix, split into trace, lower, compile and load; and the same fit in a second process
that finds its compiled solve in jacopt's on-disk cache (:mod:`jacopt._cache`).

Cases (float64):

- ``curve_fit``: ``a exp(-b x) + c`` on 50 points with ``sigma`` and bounds (SciPy's TRF);
- ``least_squares`` with ``loss="soft_l1"`` on 15 points (SciPy's robust-fit example);
- ``least_squares`` LM on NIST Misra1a, start 1 (SciPy's MINPACK LM, Optimistix's LM);
- ``minimize`` BFGS on the 50-D Rosenbrock function (SciPy's and Optimistix's BFGS).

Every figure is the median over ``repeats`` fresh processes. The phases come from JAX's
monitoring events (``jaxpr_trace_duration``, ``jaxpr_to_mlir_module_duration``,
``backend_compile_duration``) and, for jacopt's cache, from ``jacopt._cache.stats``
(``shortcut``: keying the call by its configuration and the user's functions, whose trace
counts under ``trace``, :mod:`jacopt._shortcut`; ``key``: writing out and hashing the traced
program; ``lapack``: making jaxlib's LAPACK
kernels ready; ``load``: reading and loading a compiled executable); ``other`` is the rest
(Python, the solve itself). The jacopt "first" process starts from an empty cache directory;
"second" runs the same script again on that directory.

Run: ``jacopt bench first_call`` or ``python -m jacopt.benchmarks.first_call`` (the flags
of every suite; ``--quick``: Misra1a only, one process each; else 3 processes per figure).
Each record's ``run_s`` is the first call (``total``), ``compile_s`` its XLA compile, and
``phases``, ``warm_s`` and ``load_average`` (at its start) are stored beside them.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Callable, Optional

from jacopt.benchmarks import _records

SUITE = "first_call"

_SCRIPT = r'''
import collections, json, sys, time
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jax import monitoring
case, impl = sys.argv[1], sys.argv[2]
if impl == "jacopt":
    import jacopt
    try:
        from jacopt import _cache
    except ImportError:  # a jacopt without the cache (for a before/after comparison)
        _cache = None
elif impl == "optimistix":
    import optimistix as optx
else:
    import scipy.optimize as so

if case == "curve_fit":
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, 50)
    sigma = 0.1 + 0.05 * x
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + sigma * rng.standard_normal(50)
    p0, bounds = np.array([1.0, 1.0, 0.0]), ([0.0, 0.0, -1.0], [10.0, 5.0, 2.0])
    if impl == "jacopt":
        model = lambda x, p: p[0] * jnp.exp(-p[1] * x) + p[2]
        call = lambda: jacopt.curve_fit(model, x, y, p0, sigma=sigma, bounds=bounds).params
    else:
        model = lambda x, a, b, c: a * np.exp(-b * x) + c
        call = lambda: so.curve_fit(model, x, y, p0, sigma=sigma, bounds=bounds)[0]
elif case == "soft_l1":
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 10.0, 15)
    y = 0.5 + 2.0 * np.exp(-1.0 * t) + 0.1 * rng.standard_normal(15)
    y[[3, 7]] += 3.0
    x0 = np.ones(3)
    if impl == "jacopt":
        fun = lambda p, t, y: p[0] + p[1] * jnp.exp(p[2] * t) - y
        tj, yj, xj = jnp.asarray(t), jnp.asarray(y), jnp.asarray(x0)
        call = lambda: jacopt.least_squares(fun, xj, args=(tj, yj), loss="soft_l1",
                                            f_scale=0.1).params
    else:
        fun = lambda p, t, y: p[0] + p[1] * np.exp(p[2] * t) - y
        call = lambda: so.least_squares(fun, x0, args=(t, y), loss="soft_l1", f_scale=0.1).x
elif case == "misra1a":
    from jacopt.problems import nist
    p = nist.load("Misra1a")
    xs, ys, b0 = jnp.asarray(p.x), jnp.asarray(p.y), jnp.asarray(p.starts[0])
    if impl == "jacopt":
        call = lambda: jacopt.least_squares(p.residual, b0, args=(xs, ys), solver="lm").params
    elif impl == "optimistix":
        solver = optx.LevenbergMarquardt(rtol=1e-12, atol=1e-12)
        fn = lambda b, a: p.residual(b, *a)
        call = lambda: optx.least_squares(fn, solver, b0, args=(xs, ys), max_steps=10_000,
                                          throw=False).value
    else:
        px, py = np.asarray(p.x), np.asarray(p.y)
        call = lambda: so.least_squares(lambda b: b[0] * (1.0 - np.exp(-b[1] * px)) - py,
                                        np.asarray(p.starts[0]), method="lm").x
elif case == "rosenbrock":
    x0 = np.tile([-1.2, 1.0], 25)
    rosen = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    if impl == "jacopt":
        xj = jnp.asarray(x0)
        call = lambda: jacopt.minimize(rosen, xj, solver="bfgs").params
    elif impl == "optimistix":
        solver, xj = optx.BFGS(rtol=1e-8, atol=1e-8), jnp.asarray(x0)
        fn = lambda x, a: rosen(x)
        call = lambda: optx.minimise(fn, solver, xj, max_steps=10_000, throw=False).value
    else:
        call = lambda: so.minimize(so.rosen, x0, jac=so.rosen_der, method="BFGS").x

phases = collections.Counter()
def listen(event, seconds, **kwargs):
    phases[event.rsplit("/", 1)[-1]] += seconds
monitoring.register_event_duration_secs_listener(listen)
started = time.perf_counter()
out = np.asarray(jax.block_until_ready(call()))
total = time.perf_counter() - started
first = dict(phases)
started = time.perf_counter()
jax.block_until_ready(call())
warm = time.perf_counter() - started
stats = _cache.stats if impl == "jacopt" and _cache else {}
print(json.dumps({"total": total, "warm": warm, "x0": float(out.ravel()[0]),
                  **{k: stats.get(k + "_s", 0.0) for k in ("key", "lapack", "load")},
                  "shortcut": stats.get("shortcut_s", 0.0) - stats.get("shortcut_trace_s", 0.0),
                  "trace": first.get("jaxpr_trace_duration", 0.0),
                  "lower": first.get("jaxpr_to_mlir_module_duration", 0.0),
                  "compile": first.get("backend_compile_duration", 0.0)}))
'''

CASES = {
    "curve_fit": ("curve_fit, exponential, 50 points, sigma + bounds", ("scipy",)),
    "soft_l1": ("least_squares, soft_l1, 15 points", ("scipy",)),
    "misra1a": ("least_squares LM, NIST Misra1a", ("scipy", "optimistix")),
    "rosenbrock": ("minimize BFGS, 50-D Rosenbrock", ("scipy", "optimistix")),
}
PHASES = ("trace", "shortcut", "key", "lapack", "lower", "compile", "load")


def fresh_process(script: str, *argv: str, env: dict | None = None) -> str:
    """The last line ``script`` prints when run with ``argv`` in a new Python process (with
    ``env`` added to this process's environment)."""
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                         text=True, check=True,
                         env=None if env is None else {**os.environ, **env})
    return out.stdout.strip().splitlines()[-1]


def _median(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def measure(case: str, repeats: int = 3) -> dict:
    """``{implementation: median figures}`` for one case: ``jacopt first``, ``jacopt second``
    (cache filled by the first), and each peer installed (module docstring)."""
    import importlib.util

    runs: dict = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            env = {"JACOPT_CACHE": "1", "JACOPT_CACHE_DIR": folder}
            for label in ("jacopt first", "jacopt second"):
                runs.setdefault(label, []).append(
                    json.loads(fresh_process(_SCRIPT, case, "jacopt", env=env)))
        for peer in CASES[case][1]:
            if importlib.util.find_spec(peer) is not None:
                runs.setdefault(peer, []).append(json.loads(fresh_process(_SCRIPT, case, peer)))
    return {label: _median(rows) for label, rows in runs.items()}


def _other(row: dict):
    """``total`` less the phases, or ``None`` when the phases add up to more than ``total``:
    JAX reports the trace (and lowering) of a ``jit`` nested in the traced function as an
    event of its own, inside the outer one's duration, so nested programs count twice."""
    other = row["total"] - sum(row.get(p, 0.0) for p in PHASES)
    return None if other < 0 else other


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:8.1f}"


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """One record per case and implementation (``jacopt first``, ``jacopt second`` and each
    peer installed): the median of 3 fresh processes (1 and Misra1a only when ``quick``)."""
    repeats, cases = (1, ("misra1a",)) if quick else (3, tuple(CASES))
    _records.expect(progress, len(cases))
    records = []
    for case in cases:
        if progress is not None:
            progress(f"{case} / fresh processes")
        load = os.getloadavg()[0]
        for label, r in measure(case, repeats).items():
            order = "quasi-newton" if case == "rosenbrock" else "second"
            records.append(_records.make_record(
                suite=SUITE, problem=case, method=label, order=order, target_loss=None,
                run_s=r["total"], compile_s=r["compile"], repeats=repeats, warm_s=r["warm"],
                phases={p: r[p] for p in PHASES}, x0=r["x0"], load_average=load))
    return records


def format_tables(records: list[dict]) -> str:
    """Per case: each implementation's first call split into phases (ms), and jacopt's first
    call against the peers'."""
    header = (f"  {'implementation':<16} {'total':>8} " +
              " ".join(f"{p:>8}" for p in PHASES) + f" {'other':>8} {'warm':>8}")
    lines = ["first call in a fresh process, import excluded (median ms over fresh processes; "
             "other: total less the phases, n/a where nested jits' traces count twice)"]
    for case, (title, _) in CASES.items():
        rows = {r["method"]: r for r in records if r.get("problem") == case
                and r.get("run_s") is not None}
        if not rows:
            continue
        lines += [f"{title} (load average {next(iter(rows.values()))['load_average']:.1f})",
                  header]
        for label, r in rows.items():
            row = dict(r["phases"], total=r["run_s"])
            other = _other(row)
            lines.append(f"  {label:<16} {_ms(r['run_s'])} " +
                         " ".join(_ms(r["phases"][p]) for p in PHASES) +
                         f" {'n/a' if other is None else _ms(other).strip():>8} "
                         f"{_ms(r['warm_s'])}")
        ratios = [f"{rows['jacopt first']['run_s'] / rows[peer]['run_s']:.2f}x {peer}'s first "
                  f"call" for peer in ("optimistix", "scipy") if peer in rows
                  and "jacopt first" in rows]
        if ratios and "jacopt second" in rows:
            lines.append(f"  jacopt first = {', '.join(ratios)}; second process "
                         f"{_ms(rows['jacopt second']['run_s']).strip()} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(_records.main(SUITE, run, format_tables=format_tables,
                                   quick_help="Misra1a only, one process each"))
