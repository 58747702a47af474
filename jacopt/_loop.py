"""The one loop every jacopt solver runs in.

A solver is a small immutable object (a frozen, hashable dataclass, so it can be a static
argument of ``jit``) with four methods, after Optimistix's ``init/step/terminate`` split:

- ``init(problem, x0) -> state``: evaluate what the first step needs at the flat start ``x0``.
  A solver whose class sets ``evaluates_start_in_loop = True`` instead returns placeholders
  and evaluates the start in its first ``step``: the user's function is then traced and
  compiled once (inside the loop body), not twice. That first iteration is not a step: the
  loop runs up to ``max_steps + 1`` iterations, ``num_steps`` and the history rows count from
  the evaluated start, and ``terminate`` is first called after it.
- ``step(problem, state) -> state``: one iteration = one trial step, accepted or rejected.
  Rejected trial steps are ordinary iterations (one flat loop, no nested ``while_loop``), which
  keeps compile time small and batches well under ``vmap``.
- ``terminate(problem, state) -> (done, status)``: a bool scalar and a :class:`Status` code.
  It is also called on the initial state, so a start that already satisfies ``gtol`` or whose
  objective is non-finite stops before any step.
- ``record(problem, state) -> History`` of scalars (value, grad_norm, step_norm, damping,
  accepted) describing the state, for ``history=True`` and ``verbose``.

:func:`run` drives them in a single ``lax.while_loop`` and never raises inside it. Under ``vmap``
JAX's batching rule keeps a finished member's carry frozen while the others go on, so each member
ends with its own status and step count.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jacopt.results import History
from jacopt.status import Status


class LoopOutput(NamedTuple):
    state: Any
    status: Any  # int32 Status code; MAX_STEPS when the loop ran out of steps
    num_steps: Any  # int32
    history: Any  # History of (max_steps + 1,) arrays, or None


def run(solver, problem, x0, *, max_steps: int, history: bool = False, verbose: int = 0,
        title: str = "") -> LoopOutput:
    """Run ``solver`` from the flat point ``x0`` for at most ``max_steps`` iterations.

    ``verbose=1`` prints one line at the end (status and steps); ``verbose>=2`` also prints one
    row per iteration (iteration, value, |grad|_inf, step norm, damping, accepted), like SciPy's
    ``verbose=2`` and Ceres' per-iteration log. Printing happens from inside the compiled loop
    through ``jax.debug.callback``. Under ``vmap`` each member prints its own rows (JAX runs the
    callback once per member, in an order it chooses, without the member's index), and a member
    that has stopped prints no more rows while the others go on; ``history=True`` is the way to
    look at a batch.
    """
    max_steps = int(max_steps)
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}.")
    state = solver.init(problem, x0)
    lazy = bool(getattr(solver, "evaluates_start_in_loop", False))
    if lazy:  # the first iteration evaluates the start (k = -1 -> 0)
        done, status = jnp.asarray(False), jnp.asarray(Status.RUNNING, jnp.int32)
    else:
        done, status = solver.terminate(problem, state)
    done = jnp.asarray(done, bool)
    status = jnp.asarray(status, jnp.int32)

    hist = None
    if history or verbose >= 2:
        row = solver.record(problem, state)
        if history:
            hist = jax.tree.map(
                lambda v: jnp.full((max_steps + 1,), jnp.nan, jnp.result_type(v)).at[0].set(v)
                if jnp.result_type(v) != jnp.bool_
                else jnp.zeros((max_steps + 1,), bool).at[0].set(v),
                row,
            )
        if verbose >= 2 and not lazy:
            _print_row(0, row, title, jnp.asarray(True))

    def cond(carry):
        _, k, done, _, _ = carry
        return jnp.logical_and(jnp.logical_not(done), k < max_steps)

    def body(carry):
        state, k, stopped, _, hist = carry  # stopped: only under vmap, for finished members
        state = solver.step(problem, state)
        k = k + 1
        done, status = solver.terminate(problem, state)
        if history or verbose >= 2:
            row = solver.record(problem, state)
            if history:
                hist = jax.tree.map(lambda buf, v: buf.at[k].set(v), hist, row)
            if verbose >= 2:
                _print_row(k, row, title, jnp.logical_not(stopped))
        return state, k, jnp.asarray(done, bool), jnp.asarray(status, jnp.int32), hist

    carry = (state, jnp.asarray(-1 if lazy else 0, jnp.int32), done, status, hist)
    state, k, done, status, hist = jax.lax.while_loop(cond, body, carry)
    status = jnp.where(done, status, jnp.int32(Status.MAX_STEPS))
    if verbose >= 1:
        jax.debug.callback(_print_final, status, k)
    return LoopOutput(state, status, k, hist)


def _print_row(k, row: History, title: str, running):
    """One verbose row, from inside the loop; skipped for a member that had already stopped
    (under ``vmap`` the loop body also runs for finished members, and its values are
    discarded)."""
    def emit(k, v, g, s, d, a, running):
        if bool(np.all(running)):
            _emit_row(k, v, g, s, d, a, title)

    jax.debug.callback(emit, k, row.value, row.grad_norm, row.step_norm, row.damping,
                       row.accepted, running)


def _fmt(x, spec):
    x = np.asarray(x)
    if x.ndim == 0:
        return format(x.item(), spec)
    return "[" + " ".join(format(v, spec) for v in x.ravel().tolist()) + "]"


def _emit_row(k, value, grad_norm, step_norm, damping, accepted, title):
    k = int(np.asarray(k).ravel()[0])
    if k == 0:
        if title:
            print(title)
        print(f"{'iter':>6} {'value':>14} {'|grad|_inf':>11} {'step':>11} {'damping':>11}"
              "  accepted")
    print(
        f"{k:>6d} {_fmt(value, '14.7e')} {_fmt(grad_norm, '11.3e')} {_fmt(step_norm, '11.3e')} "
        f"{_fmt(damping, '11.3e')}  {_fmt(accepted, '')}",
        flush=True,
    )


def _print_final(status, k):
    status, k = np.asarray(status), np.asarray(k)
    if status.ndim == 0:
        s = Status(int(status))
        print(f"Stopped after {int(k)} steps: {s.name}. {s.message}", flush=True)
    else:
        names = [Status(int(v)).name for v in status.ravel()]
        print(f"Stopped after {k.ravel().tolist()} steps: {names}", flush=True)
