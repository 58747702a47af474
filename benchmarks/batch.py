"""Many small fits in one vmapped call: jacopt against SciPy looping over the same fits.

The batch: NIST's Misra1a model ``b1 * (1 - exp(-b2 x))`` on its 14 ``x`` values, with
``num_fits`` data sets ``y = model(b_certified, x) + noise`` (Gaussian noise with NIST's certified
residual standard deviation, 0.10) and ``num_fits`` starts (one of NIST's two starts, chosen at
random, times a log-normal factor ``exp(0.25 z)`` per parameter), all from one seeded generator.

- jacopt: ``jax.jit(jax.vmap(fit))`` over (starts, data) with ``fit = lambda b0, y:
  jacopt.least_squares(residual, b0, args=(x, y), solver="lm", max_steps=MAX_STEPS)``: the whole
  batch is ONE compiled ``lax.while_loop``. Compile time is measured apart, the run time by the
  harness's rule (:func:`jacopt.benchmarks._records.compile_and_time`: a warm-up, then the
  median of ``repeats`` or more warm calls, each ended by ``block_until_ready``).
  A vmapped loop runs until its slowest member stops, so ``max_steps`` bounds the batch; members
  that hit it are counted as ``MAX_STEPS``.
- SciPy: ``scipy.optimize.least_squares(method="lm")`` (MINPACK) with the exact Jacobian in
  NumPy, called in a Python loop over the first ``scipy_fits`` members only (looping over all of
  them would take minutes); its time per fit is that loop's time divided by ``scipy_fits``. Run
  twice: SciPy's default tolerances (1e-8) and tight ones (1e-15, the same answers to ~1e-10).

Checks: the maximum relative parameter difference between jacopt and each SciPy run over the
members both solved (``|b_jacopt - b_scipy| / |b_scipy|``, worst parameter, worst member), and
every method's status counts.

Run: ``python -m jacopt.benchmarks.batch [--quick] [--out DIR]`` or ``jacopt bench batch``. Full:
10,000 fits against 200 SciPy fits; quick: 1,000 against 50. Target (issue 3): at least 100x
less time per fit than SciPy.
"""
from __future__ import annotations

import collections
import sys
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.benchmarks import _records

SUITE = "batch"
PROBLEM = "Misra1a"
MAX_STEPS = 200
START_SPREAD = 0.25  # log-normal factor exp(START_SPREAD * z) on each start parameter
TIGHT_TOL = 1e-15
SPEEDUP_TARGET = 100.0


class Batch(NamedTuple):
    """One batch of fits: ``x`` (m,), ``ydata`` (N, m), ``starts`` (N, n); all float64 NumPy."""

    x: np.ndarray
    ydata: np.ndarray
    starts: np.ndarray


def make_batch(num_fits: int, seed: int = 0) -> Batch:
    """``num_fits`` Misra1a data sets and starts from one seeded generator (module docstring)."""
    from jacopt.problems import nist

    problem = nist.load(PROBLEM)
    x = np.asarray(problem.x, np.float64)
    rng = np.random.default_rng(seed)
    clean = np.asarray(problem.model(jnp.asarray(problem.certified_params), jnp.asarray(x)))
    noise = float(problem.certified_residual_std)
    ydata = clean + noise * rng.standard_normal((num_fits, x.size))
    which = rng.integers(0, len(problem.starts), num_fits)
    spread = np.exp(START_SPREAD * rng.standard_normal((num_fits, len(problem.certified_params))))
    starts = np.asarray(problem.starts, np.float64)[which] * spread
    return Batch(x=x, ydata=ydata, starts=starts)


def batched_solver(solver="lm", max_steps: int = MAX_STEPS) -> Callable:
    """``(x, ydata (N, m), starts (N, n)) -> LeastSquaresResult`` with a leading batch axis:
    one vmapped :func:`jacopt.least_squares` (wrap it in ``jax.jit`` to compile it once)."""
    import jacopt
    from jacopt.problems import nist

    residual = nist.load(PROBLEM).residual  # one function object: the solve compiles once

    def fit(b0, y, x):
        return jacopt.least_squares(residual, b0, args=(x, y), solver=solver,
                                    max_steps=max_steps)

    def solve(x, ydata, starts):
        return jax.vmap(fit, in_axes=(0, 0, None))(starts, ydata, x)

    return solve


def _scipy_residual(b, x, y):
    return y - b[0] * (1.0 - np.exp(-b[1] * x))


def _scipy_jacobian(b, x, y):
    e = np.exp(-b[1] * x)
    return np.stack([-(1.0 - e), -b[0] * x * e], axis=1)


SCIPY_REFUSED = -9
"""Status recorded when SciPy raises instead of returning (e.g. non-finite residuals at x0)."""


def scipy_fit(x, y, start, tight: bool = False):
    """One SciPy MINPACK fit (exact NumPy Jacobian): returns ``(params, success, status)``;
    ``(start, False, SCIPY_REFUSED)`` when SciPy raises (it refuses non-finite residuals)."""
    import scipy.optimize

    tol = dict(ftol=TIGHT_TOL, xtol=TIGHT_TOL, gtol=TIGHT_TOL) if tight else {}
    try:
        res = scipy.optimize.least_squares(_scipy_residual, start, jac=_scipy_jacobian,
                                           method="lm", args=(x, y), **tol)
    except ValueError:
        return np.asarray(start, float), False, SCIPY_REFUSED
    return res.x, bool(res.success), int(res.status)


def max_relative_difference(params, reference, mask=None) -> float:
    """``max |params - reference| / |reference|`` over members (rows) in ``mask`` and params."""
    params, reference = np.asarray(params, float), np.asarray(reference, float)
    rel = np.abs(params - reference) / np.abs(reference)
    if mask is not None:
        rel = rel[np.asarray(mask, bool)]
    return float(np.max(rel)) if rel.size else float("nan")


def _time_jacopt(solve, batch: Batch, repeats: int):
    """(result, compile_s, run_s): compile apart, then the harness's timing rule
    (:func:`jacopt.benchmarks._records.compile_and_time`)."""
    args = (jnp.asarray(batch.x), jnp.asarray(batch.ydata), jnp.asarray(batch.starts))
    return _records.compile_and_time(solve, *args, repeats=repeats)


def _time_scipy(batch: Batch, count: int, tight: bool):
    """SciPy's loop over the first ``count`` fits, timed once as a whole (after one warm-up
    fit)."""
    scipy_fit(batch.x, batch.ydata[0], batch.starts[0], tight=tight)  # warm-up (imports, caches)

    def loop():
        return [scipy_fit(batch.x, batch.ydata[i], batch.starts[i], tight=tight)
                for i in range(count)]

    fits, run_s = _records.time_once(loop)
    params, success, status = (np.array(column) for column in zip(*fits))
    return params, success, status, run_s


def _counts(names) -> dict:
    return dict(sorted(collections.Counter(str(n) for n in np.asarray(names).ravel()).items()))


def _scipy_status_name(code: int) -> str:
    names = {0: "MAX_NFEV", 1: "GTOL", 2: "FTOL", 3: "XTOL", 4: "FTOL+XTOL",
             SCIPY_REFUSED: "RAISED"}
    return names.get(code, f"status {code}")


def run(quick: bool = False, progress: Optional[Callable[[str], None]] = None,
        num_fits: Optional[int] = None, scipy_fits: Optional[int] = None,
        repeats: int = 3, seed: int = 0, data: Optional[Batch] = None) -> list[dict]:
    """Run the benchmark; return one record per method (fields of the runner's records plus
    ``num_fits``, ``timed_fits``, ``per_fit_s``, ``status_counts``, ``max_rel_param_diff``,
    ``speedup`` and notes). Full: 10,000 fits vs 200 SciPy fits; quick: 1,000 vs 50.
    ``num_fits``, ``scipy_fits``, ``repeats``, ``seed`` override the sizes; ``data`` replaces
    the generated batch (tests use it to plant a NaN)."""
    _records.require_float64(SUITE)
    say = progress or (lambda message: None)
    batch = data if data is not None else make_batch(
        num_fits or (1_000 if quick else 10_000), seed)
    num_fits = batch.ydata.shape[0]
    scipy_fits = min(scipy_fits or (50 if quick else 200), num_fits)
    problem_name = f"{PROBLEM} x {num_fits} fits"

    say(f"{problem_name} / jacopt lm (vmap, compile + {repeats} runs)")
    result, compile_s, run_s = _time_jacopt(batched_solver("lm"), batch, repeats)
    params = np.asarray(result.params)
    success = np.asarray(result.success)
    per_fit_jacopt = run_s / num_fits
    steps = np.asarray(result.num_steps)
    common = {"suite": SUITE, "problem": problem_name, "order": "second", "target_loss": None,
              "num_fits": num_fits}
    records = [_records.make_record(
        method="jacopt lm (one vmapped call)", final_loss=np.median(np.asarray(result.cost)),
        compile_s=compile_s, run_s=run_s, timed_fits=num_fits, per_fit_s=per_fit_jacopt,
        status_counts=_counts(result.status_name), num_success=int(success.sum()),
        median_steps=float(np.median(steps)), max_steps_taken=int(steps.max()),
        max_steps=MAX_STEPS, max_rel_param_diff=None, speedup=None,
        note="final_loss = median cost over the batch", **common)]
    for tight in (False, True):
        label = f"scipy lm (loop, tol {TIGHT_TOL:g})" if tight else "scipy lm (loop, default tol)"
        say(f"{problem_name} / {label} on {scipy_fits} fits")
        sp_params, sp_success, sp_status, sp_run_s = _time_scipy(batch, scipy_fits, tight)
        both = sp_success & success[:scipy_fits]
        per_fit = sp_run_s / scipy_fits
        costs = [0.5 * np.sum(_scipy_residual(sp_params[i], batch.x, batch.ydata[i]) ** 2)
                 for i in range(scipy_fits)]
        records.append(_records.make_record(
            method=label, final_loss=np.median(costs), compile_s=None, run_s=sp_run_s,
            timed_fits=scipy_fits, per_fit_s=per_fit,
            status_counts=_counts([_scipy_status_name(c) for c in sp_status]),
            num_success=int(sp_success.sum()),
            max_rel_param_diff=max_relative_difference(params[:scipy_fits], sp_params, both),
            compared_fits=int(both.sum()), speedup=per_fit / per_fit_jacopt,
            note=f"timed on the first {scipy_fits} of the {num_fits} fits; per_fit_s = loop "
                 f"time / {scipy_fits}; max_rel_param_diff against jacopt over the "
                 f"{int(both.sum())} members both solved; speedup = this per-fit time / "
                 f"jacopt's", **common))
    return records


def format_tables(records: list[dict]) -> str:
    """A readable table and the speed-up against the target."""
    from jacopt.benchmarks import runner

    columns = [("method", "method", "{}"), ("timed_fits", "fits timed", "{}"),
               ("per_fit_s", "per fit [ms]", lambda v: f"{1e3 * v:.4f}"),
               ("run_s", "run [s]", "{:.3f}"), ("compile_s", "compile [s]", "{:.2f}"),
               ("speedup", "jacopt speed-up", "{:.1f}x"),
               ("max_rel_param_diff", "max rel diff vs jacopt", "{:.1e}"),
               ("status_counts", "statuses",
                lambda counts: " ".join(f"{k}:{v}" for k, v in counts.items()))]
    body = [r for r in records if r.get("suite") == SUITE]
    lines = [body[0]["problem"] if body else ""] + runner.text_table(
        *runner.table_cells(body, columns))
    for rec in body:
        if rec.get("speedup") is not None:
            verdict = "meets" if rec["speedup"] >= SPEEDUP_TARGET else "misses"
            lines.append(f"vs {rec['method']}: jacopt takes {rec['speedup']:.1f}x less time per "
                         f"fit ({verdict} the {SPEEDUP_TARGET:.0f}x target); SciPy timed on "
                         f"{rec['timed_fits']} fits")
    jac = body[0] if body else {}
    if jac.get("note"):
        lines.append(f"note: {jac['note']}")
    return "\n".join(lines)


format_table = format_tables  # its former name


if __name__ == "__main__":
    sys.exit(_records.main(SUITE, run, format_tables=format_tables,
                           quick_help="1,000 fits against 50 SciPy fits"))
