"""The benchmark harness: what every suite shares. One record per method run, compile/run
timing, first-order optax baselines over a learning-rate grid, and the ``python -m`` entry
point.

- Records: :func:`make_record` (the one builder: from per-iteration losses, or from a solve's
  final loss and whether it solved the problem), :func:`skipped_record`,
  :func:`add_budget_losses` (loss within the best Adam run's wall time),
  :func:`require_float64`.
- Timing, the one rule of every suite: :func:`compile_timed` (the one place a benchmark
  compiles), :func:`time_calls` (warm-up, repeats, median) with its shorthands
  :func:`time_compiled`, :func:`time_once` and :func:`compile_and_time`;
  :func:`kernel_count` (what a compile time follows).
- Methods: :func:`first_order_grid` / :func:`grid_record` (optax over an lr grid),
  :func:`jacopt_run` / :func:`jacopt_record` (a jacopt solve with history),
  :func:`run_methods` (progress callback, and :func:`guarded` turns a failing or unwritten
  method into a record with a ``note`` instead of stopping the suite); :func:`expect` tells
  the progress line how many items a suite will show.
- :func:`main` (from :mod:`jacopt.benchmarks.runner`, which never imports this module): the
  entry point of ``python -m jacopt.benchmarks.SUITE``, with the flags of ``jacopt bench``;
  :func:`limit_blas_threads` (also the runner's: run settings live there).

A record (:func:`make_record`) is a dict with the fields of
:data:`jacopt.benchmarks.runner.REQUIRED_FIELDS`, for a run with per-iteration losses also
``curve = {"iters", "time_s", "loss"}`` (at most :data:`MAX_CURVE_POINTS` points), and whatever
the suite adds (``lr``, ``note``...).

Timing rules (the same for every method):

- ``compile_s``: ``jax.jit(fn).lower(*args).compile()``, measured apart from running
  (:func:`compile_timed`).
- ``run_s``: the median over warm runs of the compiled function (``repeats`` of them, more
  for runs of a few milliseconds, fewer for runs of seconds, see :func:`time_calls`), each
  ended by ``block_until_ready``, after one warm-up run (which is the one measurement when it
  takes :data:`LONG_RUN_S` or more).
- Time per iteration is ``run_s / num_steps``: a whole run is one compiled call (a ``lax.scan``
  for optax, a ``lax.while_loop`` for jacopt), so the time after ``k`` iterations is taken as
  ``k * run_s / num_steps``. This assumes iterations cost the same; it slightly favours methods
  whose first iterations are cheaper than their later ones and vice versa.
- ``iters_to_target`` is the first ``k`` with ``loss[k] <= target_loss`` (``loss[0]`` is the
  start), ``time_to_target_s`` its time by the rule above; both are ``None`` if never reached.

First-order baselines (:func:`first_order_grid`): the optimiser runs as one jitted ``lax.scan``
of ``steps`` iterations with the learning rate as a traced argument, so the grid compiles once;
every learning rate is run and timed, and the best run is reported: the one that reaches the
target in the fewest iterations, else the one with the lowest final loss (a non-finite loss
counts as infinite).
"""
from __future__ import annotations

import math
import re
import statistics
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jacopt.benchmarks.runner import limit_blas_threads, main  # noqa: F401  (the harness's names)

MAX_CURVE_POINTS = 200
LONG_RUN_S = 1.0  # a warm-up run this long is timed once, not repeated


def require_float64(suite: str) -> None:
    """Raise before any work when float64 is off: the suite's certificates and targets need it
    (every entry point turns it on: :func:`jacopt.benchmarks.runner.apply_run_settings`)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(f"the {suite} benchmark needs float64: call "
                           "jax.config.update('jax_enable_x64', True) first")


def curve_indices(num_points: int, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """At most ``max_points`` sorted indices into ``range(num_points)``, always with the first
    and last: half evenly spaced, half log-spaced (so both fast early progress and the
    plateau show on log axes)."""
    if num_points <= max_points:
        return np.arange(num_points)
    half = max_points // 2
    linear = np.linspace(0, num_points - 1, half)
    logarithmic = np.geomspace(1, num_points, max_points - half) - 1
    return np.unique(np.concatenate([linear, logarithmic]).round().astype(int))


def first_reached(losses, target: float) -> Optional[int]:
    """The first index ``k`` with ``losses[k] <= target``, or ``None``."""
    hits = np.flatnonzero(np.asarray(losses, float) <= target)
    return int(hits[0]) if hits.size else None


def _seconds(value) -> Optional[float]:
    return None if value is None else float(value)


def make_record(*, suite: str, problem: str, method: str, order: str, target_loss, run_s,
                compile_s, losses=None, num_steps: Optional[int] = None,
                final_loss=None, solved: Optional[bool] = None, iters=None, **extra) -> dict:
    """One record, with the fields of :data:`jacopt.benchmarks.runner.REQUIRED_FIELDS`; extra
    keyword arguments are stored as they are. The one record builder of the suites, for two
    kinds of run:

    - a run with per-iteration ``losses``: ``losses[k]`` is the loss after ``k`` iterations
      (``losses[0]`` at the start); entries past ``num_steps`` (jacopt's NaN padding) are
      dropped; ``num_steps`` defaults to ``len(losses) - 1``. ``run_s`` covers all
      ``num_steps`` iterations; the time to the target follows the module docstring's rule and
      the record has a ``curve``.
    - a solve that stops on its own test (``losses`` not given): its ``final_loss`` and whether
      it ``solved`` the problem (stored as the field ``solved``; ``None`` for a record with no
      target, then not stored); a solved run reached the target in its whole ``run_s`` and its
      ``iters`` (steps, evaluations: what the suite counts), else both are ``None``.
      ``num_steps``, when given, is stored too.
    """
    rec = {"suite": suite, "problem": problem, "method": method, "order": order,
           "target_loss": None if target_loss is None else float(target_loss)}
    if losses is None:
        rec.update(time_to_target_s=_seconds(run_s) if solved else None,
                   iters_to_target=iters if solved else None,
                   final_loss=None if final_loss is None else float(final_loss),
                   compile_s=_seconds(compile_s), run_s=_seconds(run_s))
        if solved is not None:
            rec["solved"] = bool(solved)
        if num_steps is not None:
            rec["num_steps"] = int(num_steps)
        rec.update(extra)
        return rec
    losses = np.asarray(losses, dtype=float).reshape(-1)
    num_steps = len(losses) - 1 if num_steps is None else int(num_steps)
    losses = losses[: num_steps + 1]
    per_iter = run_s / max(num_steps, 1)
    k = first_reached(losses, target_loss)
    idx = curve_indices(len(losses))
    rec.update({
        "time_to_target_s": None if k is None else k * per_iter,
        "iters_to_target": k,
        "final_loss": float(losses[-1]),
        "compile_s": float(compile_s),
        "run_s": float(run_s),
        "num_steps": num_steps,
        "curve": {
            "iters": idx.tolist(),
            "time_s": (idx * per_iter).tolist(),
            "loss": [float(v) for v in losses[idx]],
        },
    })
    rec.update(extra)
    return rec


def skipped_record(*, suite: str, problem: str, method: str, order: str, target_loss: float,
                   note: str) -> dict:
    """A record for a method that could not run (not installed, not implemented yet): every
    measurement ``None`` and a ``note`` saying why."""
    return {"suite": suite, "problem": problem, "method": method, "order": order,
            "target_loss": float(target_loss), "time_to_target_s": None,
            "iters_to_target": None, "final_loss": None, "compile_s": None, "run_s": None,
            "note": note}


def compile_timed(fn: Callable, *args, **jit_kwargs) -> tuple[float, Callable]:
    """``(compile_s, compiled)``: ``jax.jit(fn, **jit_kwargs).lower(*args).compile()`` and its
    wall time (tracing and lowering included). Every benchmark compiles through this function,
    so every ``compile_s`` means the same (``jit_kwargs``: e.g. ``compiler_options``)."""
    compiled, compile_s = _timed(lambda: jax.jit(fn, **jit_kwargs).lower(*args).compile())
    return compile_s, compiled


def _timed(call: Callable, *args):
    """``(output, seconds)`` of one call, ended by ``block_until_ready``: the one clock read of
    the harness."""
    started = time.perf_counter()
    out = jax.block_until_ready(call(*args))
    return out, time.perf_counter() - started


def time_calls(call: Callable, *args, repeats: int = 3, warm_up: bool = True,
               min_total_s: float = 0.05, max_total_s: float = 2.0, max_repeats: int = 50):
    """The timing rule of every benchmark: ``(output, run_s)`` for calls of ``call(*args)``
    (a compiled function, or any callable such as a SciPy solve), each ended by
    ``block_until_ready``.

    With ``warm_up``, one call first, timed: a warm-up of :data:`LONG_RUN_S` or more is the
    measurement itself (first-call overheads are negligible there, and repeating it would cost
    seconds). Then ``repeats`` calls, fewer (at least one) once ``max_total_s`` has been spent
    on slow runs, more (up to ``max_repeats``) until ``min_total_s`` has been spent, so that
    millisecond runs get a stable median; ``run_s`` is their median."""
    if warm_up:
        out, first_s = _timed(call, *args)
        if first_s >= LONG_RUN_S:
            return out, first_s
    times = []
    while not times or (len(times) < repeats and sum(times) < max_total_s) or (
            sum(times) < min_total_s and len(times) < max_repeats):
        out, seconds = _timed(call, *args)
        times.append(seconds)
    return out, statistics.median(times)


def time_once(call: Callable, *args):
    """``(output, seconds)`` of exactly one call (:func:`time_calls` without warm-up or
    repeats): for a run that is itself the measurement (a loop over many fits, a first
    call)."""
    return time_calls(call, *args, repeats=1, warm_up=False, min_total_s=0.0)


def time_compiled(compiled: Callable, *args, repeats: int = 3, min_total_s: float = 0.05,
                  max_total_s: float = 2.0, max_repeats: int = 50) -> float:
    """``run_s`` of :func:`time_calls` without the warm-up, for a function already compiled
    and warmed up."""
    return time_calls(compiled, *args, repeats=repeats, warm_up=False, min_total_s=min_total_s,
                      max_total_s=max_total_s, max_repeats=max_repeats)[1]


def compile_and_time(fn: Callable, *args, repeats: int = 3):
    """Compile ``fn`` for ``args`` (:func:`compile_timed`) and time it (:func:`time_calls`):
    returns ``(output, compile_s, run_s)``."""
    compile_s, compiled = compile_timed(fn, *args)
    out, run_s = time_calls(compiled, *args, repeats=repeats)
    return out, compile_s, run_s


_FREE_OPS = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast",
                       "while", "conditional", "call"})


def _opcode(rest: str) -> str:
    """The opcode of one HLO instruction, from the text after ``name = ``: a shape (an array
    shape, or a tuple of them in nested parentheses) then ``opcode(``."""
    end = 0
    if rest.startswith("("):
        depth = 0
        for end, ch in enumerate(rest):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                break
        end += 1
    else:
        end = rest.find(" ")
    match = re.match(r"\s*([\w\-]+)\(", rest[end:])
    return match.group(1) if match else ""


def kernel_count(compiled) -> dict:
    """The kernels of a compiled function (``jax.jit(f).lower(...).compile()``), from its
    optimised HLO: every instruction outside fused and per-element computations (the bodies of
    fusions, reductions' and sorts' element functions) that runs as code of its own
    (fusions, copies, custom calls such as LAPACK's, dots, unfused elementwise ops), without
    parameters, constants, tuples, bitcasts and the control flow (``while``, ``conditional``)
    whose bodies are counted instead. XLA's CPU backend compiles each kernel separately, so
    compile time grows with this count. Returns ``{"kernels": total, "fusions": ...,
    "copies": ...}``."""
    text = compiled.as_text()
    # fused computations and the small computations that reductions, scatters and sorts apply
    # per element are code inside the kernel that calls them
    fused = set(re.findall(r"(?:calls|to_apply|comparator)=%?([\w.\-]+)", text))
    ops: dict = {}
    computation = None
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            head = re.match(r"^(?:ENTRY )?%?([\w.\-]+)", line)
            computation = head.group(1) if head else None
            continue
        inst = re.match(r"^\s+(?:ROOT )?%?[\w.\-]+ = (.*)$", line)
        if inst and computation not in fused:
            op = _opcode(inst.group(1))
            if op and op not in _FREE_OPS:
                ops[op] = ops.get(op, 0) + 1
    return {"kernels": sum(ops.values()), "fusions": ops.get("fusion", 0),
            "copies": ops.get("copy", 0)}


def optax_scan(loss_fn: Callable, make_optimizer: Callable, steps: int, *,
               line_search: bool = False) -> Callable:
    """A function ``(params0, learning_rate, *args) -> losses (steps + 1,)`` running
    ``make_optimizer(learning_rate)`` on ``loss_fn(params, *args)`` for ``steps`` iterations in
    one ``lax.scan`` (``losses[k]`` after ``k`` updates). ``line_search=True`` drives an
    optimiser whose ``update`` takes ``value``, ``grad`` and ``value_fn`` (``optax.lbfgs``) the
    way optax documents, with ``optax.value_and_grad_from_state`` reusing the line search's
    evaluations."""

    def run(params0, learning_rate, *args):
        optimizer = make_optimizer(learning_rate)

        def value_fn(p):
            return loss_fn(p, *args)

        value_and_grad = (optax.value_and_grad_from_state(value_fn) if line_search
                          else jax.value_and_grad(value_fn))

        def body(carry, _):
            params, state = carry
            if line_search:
                value, grad = value_and_grad(params, state=state)
                updates, state = optimizer.update(grad, state, params, value=value, grad=grad,
                                                  value_fn=value_fn)
            else:
                value, grad = value_and_grad(params)
                updates, state = optimizer.update(grad, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, _), losses = jax.lax.scan(body, (params0, optimizer.init(params0)), None,
                                           length=steps)
        return jnp.concatenate([losses, value_fn(params)[None]])

    return run


def first_order_grid(*, loss_fn: Callable, make_optimizer: Callable, params0, args: tuple,
                     learning_rates: Sequence[float], steps: int, target_loss: float,
                     to_loss: Callable = lambda v: v, line_search: bool = False,
                     repeats: int = 3) -> dict:
    """Run ``make_optimizer(lr)`` for every ``lr`` in ``learning_rates`` and return the best.

    ``to_loss`` maps the optimiser's objective values to the reported loss (e.g. subtract a
    known optimum). Returns ``{"losses", "run_s", "compile_s", "lr", "grid"}`` for the best run
    (criterion in the module docstring), ``compile_s`` being the grid's one compilation and
    ``grid`` a list of ``{"lr", "final_loss", "iters_to_target"}`` for every learning rate."""
    scan = optax_scan(loss_fn, make_optimizer, steps, line_search=line_search)
    lr0 = jnp.asarray(learning_rates[0], jax.tree.leaves(params0)[0].dtype)
    compile_s, compiled = compile_timed(scan, params0, lr0, *args)
    runs = []
    for lr in learning_rates:
        lr_arg = jnp.asarray(lr, lr0.dtype)
        losses, run_s = time_calls(compiled, params0, lr_arg, *args, repeats=repeats)
        losses = np.asarray(to_loss(np.asarray(losses, float)))
        runs.append({"lr": float(lr), "losses": losses, "run_s": run_s,
                     "iters_to_target": first_reached(losses, target_loss)})

    def rank(run):
        final = run["losses"][-1]
        reached = run["iters_to_target"]
        return (0, reached, 0.0) if reached is not None else (
            1, 0, final if math.isfinite(final) else math.inf)

    best = min(runs, key=rank)
    grid = [{"lr": r["lr"], "final_loss": float(r["losses"][-1]),
             "iters_to_target": r["iters_to_target"]} for r in runs]
    return {"losses": best["losses"], "run_s": best["run_s"], "compile_s": compile_s,
            "lr": best["lr"], "grid": grid}


def jacopt_run(entry: Callable, fun: Callable, x0, args: tuple, *, solver, max_steps: int,
               to_loss: Callable = lambda v: v, repeats: int = 3, **options) -> dict:
    """Run ``entry(fun, x0, args=args, solver=solver, max_steps=max_steps, history=True,
    **options)`` (``entry`` is :func:`jacopt.least_squares` or :func:`jacopt.minimize`) under
    ``jit``, timed like everything else (:func:`compile_and_time`).

    Returns ``{"losses", "num_steps", "compile_s", "run_s", "status"}`` with ``losses =
    to_loss(history.value)`` (``history.value`` is the least-squares cost ``0.5 sum r^2`` or the
    minimised value, row 0 at ``x0``) and ``status`` the result's status name."""

    def solve(start, *solve_args):
        return entry(fun, start, args=solve_args, solver=solver, max_steps=max_steps,
                     history=True, **options)

    result, compile_s, run_s = compile_and_time(solve, x0, *args, repeats=repeats)
    return {"losses": np.asarray(to_loss(np.asarray(result.history.value, float))),
            "num_steps": int(result.num_steps), "compile_s": compile_s, "run_s": run_s,
            "status": str(result.status_name)}


def grid_record(*, suite: str, problem: str, method: str, order: str, target_loss: float,
                to_loss: Callable = lambda v: v, **grid) -> dict:
    """:func:`first_order_grid` (keyword arguments ``grid``: ``loss_fn, make_optimizer,
    params0, args, learning_rates, steps``, optionally ``line_search, repeats``) turned into a
    record with the best ``lr`` and the whole ``grid``."""
    extra = grid.pop("extra", {})
    run = first_order_grid(target_loss=target_loss, to_loss=to_loss, **grid)
    return make_record(suite=suite, problem=problem, method=method, order=order,
                       target_loss=target_loss, losses=run["losses"], run_s=run["run_s"],
                       compile_s=run["compile_s"], lr=run["lr"], grid=run["grid"], **extra)


def jacopt_record(*, suite: str, problem: str, method: str, target_loss: float,
                  entry: Callable, fun: Callable, params0, args: tuple, note: str = None,
                  **solve) -> dict:
    """:func:`jacopt_run` (keyword arguments ``solve``: ``solver, max_steps``, optionally
    ``to_loss, repeats`` and solver options) turned into a record of order ``"second"`` with
    the solver's ``status``."""
    run = jacopt_run(entry, fun, params0, args, **solve)
    extra = {"status": run["status"]} if note is None else {"status": run["status"], "note": note}
    return make_record(suite=suite, problem=problem, method=method, order="second",
                       target_loss=target_loss, losses=run["losses"], run_s=run["run_s"],
                       compile_s=run["compile_s"], num_steps=run["num_steps"], **extra)


def expect(progress: Optional[Callable[[str], None]], count: int) -> None:
    """Announce ``count`` more ``progress(...)`` calls in this suite, so that the progress line
    counts them ("nist 12/54"); a no-op for ``None`` or a plain callable."""
    announce = getattr(progress, "expect", None)
    if announce is not None:
        announce(count)


def run_methods(suite: str, methods, progress: Optional[Callable[[str], None]] = None
                ) -> list[dict]:
    """Run ``methods``, an iterable of ``(problem, method, order, target_loss, thunk)``, each
    ``thunk()`` returning one record, under :func:`guarded`; a ``thunk`` that is a string is a
    method that cannot run here, recorded by :func:`skipped_record` with that note.
    ``progress("problem / method")`` is called before each (and their count announced with
    :func:`expect`)."""
    methods = list(methods)
    expect(progress, len(methods))
    records = []
    for problem, method, order, target_loss, thunk in methods:
        if progress is not None:
            progress(f"{problem} / {method}")
        identity = dict(suite=suite, problem=problem, method=method, order=order,
                        target_loss=target_loss)
        records.append(skipped_record(note=thunk, **identity) if isinstance(thunk, str)
                       else guarded(thunk, **identity))
    return records


def add_budget_losses(records: list[dict], reference: str = "adam") -> list[dict]:
    """Give every record of a problem ``budget_s`` and ``loss_at_budget`` (in place).

    The budget is the ``run_s`` of the problem's ``reference`` record (the whole run of the
    best-tuned Adam by default; problems without one get no budget); ``loss_at_budget`` is the
    lowest curve loss at a time within it (``None`` for a record without a curve). The curve is
    subsampled, so for the other methods this is the loss at the last curve point before the
    budget: it can only understate how far they got."""
    by_problem: dict[str, list[dict]] = {}
    for rec in records:
        by_problem.setdefault(rec["problem"], []).append(rec)
    for recs in by_problem.values():
        ref = [r for r in recs if r["method"] == reference and r.get("run_s") is not None]
        if not ref:
            continue
        budget = ref[0]["run_s"]
        for rec in recs:
            rec["budget_s"] = budget
            curve = rec.get("curve")
            within = [loss for t, loss in zip(curve["time_s"], curve["loss"]) if t <= budget
                      and math.isfinite(loss)] if curve else []
            rec["loss_at_budget"] = min(within) if within else None
    return records


def guarded(make: Callable[[], dict], **identity) -> dict:
    """``make()``, or a :func:`skipped_record` when it fails: a method that is not written yet
    (``NotImplementedError``), a peer that is missing (``ImportError``), or any other error
    (kept in the record's ``error`` field so the suite goes on). ``identity`` holds the
    record's ``suite, problem, method, order, target_loss``."""
    try:
        return make()
    except (NotImplementedError, ImportError) as exc:
        return skipped_record(note=f"skipped: {type(exc).__name__}: {exc}", **identity)
    except Exception as exc:  # one broken method must not hide the others' results
        rec = skipped_record(note="failed", **identity)
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
