"""What a call costs beyond the solve: warm direct calls against the same solve inside
``jax.jit`` and against SciPy, and first-call (compile) times, each in a fresh process.

Part 1, warm calls (median of ``repeats`` calls, each ended by ``block_until_ready``, after one
first call that compiles: :func:`jacopt.benchmarks._records.time_compiled`), on a fit of
Misra1a's size (``b1 (1 - exp(-b2 x))`` on 14 points, 2 parameters) and on Rosenbrock:

- ``jacopt.curve_fit`` called directly, and SciPy's ``curve_fit`` on the same data;
- ``jacopt.least_squares`` called directly, and the same call inside one ``jax.jit``;
- ``jacopt.least_squares`` on a closure defined anew at each call (the notebook pattern: the
  closure is traced each time, the solve is not, :mod:`jacopt._shortcut`);
- ``jacopt.minimize`` (BFGS) called directly, and inside one ``jax.jit``.

Part 2, first calls, each in a fresh Python process (so nothing is cached):

- ``jacopt.minimize`` on Rosenbrock (BFGS, Newton): called directly (compiled with XLA's classic
  CPU fusion emitters, :mod:`jacopt._compile`) and inside ``jax.jit`` (default emitters);
- one compile of NIST Misra1a and Thurber for jacopt LM and Optimistix LM (when installed),
  ``jit(solve).lower(...).compile()`` of the solves of :mod:`jacopt.benchmarks.peers` as
  :mod:`jacopt.benchmarks.nist` compiles them, with the default
  and with the classic emitters.

Run: ``jacopt bench overhead`` or ``python -m jacopt.benchmarks.overhead`` (the flags of every
suite; ``--quick``: 50 warm calls instead of 300, part 2 once instead of three times). Part 1's
records hold the median warm call as ``run_s``, part 2's the first call as ``compile_s``.
"""
from __future__ import annotations

import os
import statistics
from typing import Callable, Optional

from jacopt.benchmarks import _records

SUITE = "overhead"

CLASSIC = {"xla_cpu_use_fusion_emitters": False}


def _median_ms(call, repeats: int) -> float:
    """The median of ``repeats`` warm calls in ms, after a first call that compiles (the
    harness's :func:`jacopt.benchmarks._records.time_compiled`)."""
    import jax

    from jacopt.benchmarks import _records

    jax.block_until_ready(call())
    return 1e3 * _records.time_compiled(call, repeats=repeats)


def warm_calls(repeats: int = 300) -> list[tuple[str, float]]:
    """``(label, median ms)`` for part 1 (module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.optimize

    import jacopt
    from jacopt.problems import test_functions

    jax.config.update("jax_enable_x64", True)
    x = np.linspace(1.0, 10.0, 14)
    y = 3.0 * (1.0 - np.exp(-0.2 * x)) + 0.01 * np.random.default_rng(0).standard_normal(14)
    p0 = np.array([1.0, 0.1])

    def model(x, p):
        return p[0] * (1.0 - jnp.exp(-p[1] * x))

    def residual(p, x, y):
        return model(x, p) - y

    xj, yj, pj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(p0)
    fitted = jax.jit(lambda p, x, y: jacopt.least_squares(residual, p, args=(x, y)).params)
    rosen = test_functions.get("rosenbrock")
    r0 = jnp.asarray(rosen.x0)
    minimised = jax.jit(lambda r: jacopt.minimize(rosen.fun, r).params)

    def anew():
        def closure(p):  # a new function object at every call
            return residual(p, xj, yj)
        return jacopt.least_squares(closure, pj).params

    return [
        ("curve_fit, direct", _median_ms(lambda: jacopt.curve_fit(model, x, y, p0).params,
                                         repeats)),
        ("SciPy curve_fit", _median_ms(lambda: scipy.optimize.curve_fit(
            lambda x, a, b: a * (1.0 - np.exp(-b * x)), x, y, p0=p0)[0], repeats)),
        ("least_squares, direct", _median_ms(
            lambda: jacopt.least_squares(residual, pj, args=(xj, yj)).params, repeats)),
        ("least_squares, inside jax.jit", _median_ms(lambda: fitted(pj, xj, yj), repeats)),
        ("least_squares, a closure defined anew at each call",
         _median_ms(anew, min(repeats, 50))),
        ("minimize BFGS on Rosenbrock, direct", _median_ms(
            lambda: jacopt.minimize(rosen.fun, r0).params, repeats)),
        ("minimize BFGS on Rosenbrock, inside jax.jit", _median_ms(lambda: minimised(r0),
                                                                   repeats)),
    ]


_FIRST_CALL = """
import sys, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jacopt
from jacopt.problems import test_functions
p = test_functions.get("rosenbrock"); x0 = jnp.asarray(p.x0)
solver, mode = sys.argv[1], sys.argv[2]
call = ((lambda: jacopt.minimize(p.fun, x0, solver=solver).params) if mode == "direct" else
        (lambda: jax.jit(lambda x: jacopt.minimize(p.fun, x, solver=solver).params)(x0)))
from jacopt.benchmarks._records import time_once
print(time_once(call)[1])
"""

_COMPILE = """
import sys, json, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from jacopt.benchmarks import peers
from jacopt.problems import nist
name, method, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
p = nist.load(name)
make = (peers.jacopt_least_squares(p.residual, "lm") if method == "jacopt"
        else peers.optimistix_least_squares(p.residual))
x0, args = jnp.asarray(p.starts[0]), (jnp.asarray(p.x), jnp.asarray(p.y))
from jacopt.benchmarks._records import compile_timed
print(compile_timed(make, x0, *args, compiler_options=options or None)[0])
"""


def _fresh(script: str, *argv: str) -> float:
    from jacopt.benchmarks.first_call import fresh_process

    return float(fresh_process(script, *argv, env={"JACOPT_CACHE": "0"}))  # compiles, no cache


def first_calls(times: int = 3) -> list[tuple[str, float]]:
    """``(label, median s)`` for part 2 (module docstring), each measured ``times`` times."""
    import importlib.util
    import json

    def median(script, *argv):
        return statistics.median(_fresh(script, *argv) for _ in range(times))

    rows = []
    for solver in ("bfgs", "newton"):
        for mode, label in (("direct", "direct (classic emitters)"),
                            ("jit", "inside jax.jit (default emitters)")):
            rows.append((f"minimize {solver} on Rosenbrock, first call, {label}",
                         median(_FIRST_CALL, solver, mode)))
    methods = ["jacopt"] + (["optimistix"] if importlib.util.find_spec("optimistix") else [])
    for name in ("Misra1a", "Thurber"):
        for method in methods:
            for options, label in (({}, "default emitters"), (CLASSIC, "classic emitters")):
                rows.append((f"{name}, {method} LM, one compile, {label}",
                             median(_COMPILE, name, method, json.dumps(options))))
    return rows


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Part 1's rows as records with ``run_s`` (the median warm call), then part 2's with
    ``compile_s`` (the median first call); the load average at the start of each part is
    stored in every record."""
    _records.expect(progress, 2)
    records = []
    for part, measure in (("warm call", lambda: warm_calls(50 if quick else 300)),
                          ("first call", lambda: first_calls(1 if quick else 3))):
        if progress is not None:
            progress(f"{part}s")
        load = os.getloadavg()[0]
        for label, value in measure():
            warm = part == "warm call"
            seconds = value / 1e3 if warm else value
            records.append(_records.make_record(
                suite=SUITE, problem=part, method=label, order="second", target_loss=None,
                run_s=seconds if warm else None, compile_s=None if warm else seconds,
                load_average=load))
    return records


def format_tables(records: list[dict]) -> str:
    """Warm calls in ms, first calls in s (medians), with the load average of each part."""
    lines = []
    for part, field, unit, scale, width in (("warm call", "run_s", "ms", 1e3, 44),
                                            ("first call", "compile_s", "s", 1.0, 78)):
        rows = [r for r in records if r.get("problem") == part and r.get(field) is not None]
        if rows:
            lines.append(f"{part}s (median; load average {rows[0]['load_average']:.1f})")
            lines += [f"  {r['method']:<{width}} {scale * r[field]:8.3f} {unit}" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(_records.main(SUITE, run, format_tables=format_tables,
                                   quick_help="50 warm calls, first calls measured once"))
