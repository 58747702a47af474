"""Line searches written as flat-loop state machines: one trial step per solver iteration.

A line search looks for a step length ``alpha > 0`` along a descent direction ``d`` from ``x``,
judging the one-dimensional function ``phi(alpha) = f(x + alpha d)`` and its slope
``phi'(alpha) = grad f(x + alpha d) . d``. Instead of running its own inner loop, a line search
here is a pure *state machine*: the solver evaluates the objective at the trial step the state
proposes, feeds the value (and slope) back, and gets the next state. Each trial is one iteration
of the solver's single ``lax.while_loop`` (:mod:`jacopt._loop`), so there is no nested loop,
compile time stays small and ``vmap`` batches it well (as Optimistix does). Every value and
slope already computed is reused: nothing is evaluated twice.

API (the same for both searches; all arguments JAX scalars, usable under ``jit``/``vmap``)::

    search = StrongWolfe()                          # or BacktrackingArmijo(); frozen, hashable
    state = search.init(value0, slope0, alpha0, payload0, min_step=0.0)
    while not state.finished:                       # in practice: one solver iteration each
        value, grad = value_and_grad(x + state.alpha * d)
        state = search.update(state, value, grad @ d, payload=grad)
    alpha, value, payload = state.alpha_lo, state.value_lo, state.payload_lo

- ``value0 = phi(0)``, ``slope0 = phi'(0)`` (must be ``< 0``), ``alpha0`` the first trial step
  (1 for (quasi-)Newton directions), ``payload0`` any pytree describing the start (usually the
  gradient ``g(x)``); it is returned for whichever trial is accepted, so the solver never
  re-evaluates the accepted point. ``min_step``: the smallest step that still changes ``x`` (for
  example ``eps * |x|_inf / |d|_inf``); a bracket narrower than this ends the search with
  ``precision_limited`` set.
- ``update(state, value, slope, payload)`` takes ``phi`` and ``phi'`` at ``state.alpha`` (pass
  ``slope=None`` to :class:`BacktrackingArmijo`, which needs only values). A non-finite value or
  slope counts as failing the sufficient-decrease test, so the step shrinks.
- Once ``state.finished``: ``alpha_lo``, ``value_lo``, ``slope_lo``, ``payload_lo`` describe the
  step to take. ``converged`` says the search's conditions hold there. If the search gave up
  (``max_trials`` or a collapsed bracket) ``alpha_lo`` is the best step found that satisfies
  sufficient decrease, or ``0`` when none did (then nothing should be taken);
  ``precision_limited`` says it gave up because the trial steps fell below ``min_step`` or the
  bracket collapsed to rounding level.

Searches:

- :class:`StrongWolfe` finds ``alpha`` satisfying the strong Wolfe conditions
  ``phi(alpha) <= phi(0) + c1 alpha phi'(0)`` and ``|phi'(alpha)| <= c2 |phi'(0)|``
  (Nocedal & Wright, *Numerical Optimization*, 2nd ed., 2006, Algorithms 3.5 (bracketing) and
  3.6 (zoom), with cubic interpolation (eq. 3.59) falling back to quadratic interpolation and
  bisection, each trial kept 10% of the bracket away from its ends; the extrapolation
  bounds ``[alpha + 1.1 (alpha - alpha_prev), alpha + 4 (alpha - alpha_prev)]`` are
  Moré & Thuente's, ACM TOMS 20(3), 1994). Defaults ``c1 = 1e-4``, ``c2 = 0.9`` suit
  quasi-Newton methods.
- :class:`BacktrackingArmijo` shrinks ``alpha`` until ``phi(alpha) <= phi(0) + c1 alpha
  phi'(0)``, each new trial the minimiser of the quadratic through ``phi(0)``, ``phi'(0)``
  and the last trial, safeguarded to ``[0.1, 0.5]`` of it (Nocedal & Wright section 3.5;
  Dennis & Schnabel, 1983, Algorithm A6.3.1). It needs no slopes at the trial points, so a
  Gauss-Newton solver can call it with residual evaluations only.

Cost per trial: a few scalar operations plus one ``jnp.where`` over the payload. The scalar
logic is kept short on purpose (one cubic interpolation serves both phases, no guards that a
NaN result would make redundant): XLA's CPU client runs a whole computation estimated below
1000 floating-point operations inline on the calling thread instead of handing it to a worker
thread, which for a small problem saves more time than the solve takes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LineSearchState", "StrongWolfe", "BacktrackingArmijo", "cubic_minimizer",
           "quadratic_minimizer", "capped"]


# Phases of a search (the ``phase`` field).
BRACKETING, ZOOMING, CONVERGED, GAVE_UP, PRECISION_LIMITED = 0, 1, 2, 3, 4


class LineSearchState(NamedTuple):
    """The state of a line search.

    Stored fields (two on purpose: on CPU every loop-carried array a trial rewrites costs a
    kernel launch, and XLA counts every separately computed scalar as work of its own):

    - ``table``: 12 numbers in the objective's dtype, ``[alpha_lo, value_lo, slope_lo, alpha,
      alpha_hi, value_hi, slope_hi, phase, min_step, value0, slope0, num_trials]``, where
      ``lo`` is the best trial so far that satisfies sufficient decrease (``alpha_lo = 0``,
      the start, until one does; once finished, the step to take); ``hi`` the other end of
      the bracket while zooming (Wolfe; ``alpha_hi = +inf`` before a bracket is found), or
      the last rejected trial (Armijo); ``alpha`` the trial step to evaluate next
      (``alpha_lo`` once finished); ``phase`` ``BRACKETING``, ``ZOOMING``, then
      ``CONVERGED``, ``GAVE_UP`` or ``PRECISION_LIMITED`` (finished) and ``num_trials`` the
      trials evaluated so far (both whole numbers); ``value0``, ``slope0`` are ``phi(0)``,
      ``phi'(0)``, and steps below ``min_step`` no longer change ``x``.
    - ``payload_lo``: the payload of ``lo``.

    Read them through the properties ``alpha``, ``value0``, ``slope0``, ``min_step``, ``lo``,
    ``hi``, ``alpha_lo``, ``value_lo``, ``slope_lo``, ``alpha_hi``, ``value_hi``, ``slope_hi``,
    ``phase``, ``num_trials``; and ``zooming`` (the bracket ``[lo, hi]`` contains an
    acceptable step), ``finished``, ``converged``, ``precision_limited`` (see the module
    docstring).
    """

    table: Any
    payload_lo: Any

    alpha = property(lambda self: self.table[..., 3])
    value0 = property(lambda self: self.table[..., 9])
    slope0 = property(lambda self: self.table[..., 10])
    min_step = property(lambda self: self.table[..., 8])
    lo = property(lambda self: self.table[..., 0:3])
    hi = property(lambda self: self.table[..., 4:7])
    phase = property(lambda self: self.table[..., 7].astype(jnp.int32))
    num_trials = property(lambda self: self.table[..., 11].astype(jnp.int32))
    alpha_lo = property(lambda self: self.table[..., 0])
    value_lo = property(lambda self: self.table[..., 1])
    slope_lo = property(lambda self: self.table[..., 2])
    alpha_hi = property(lambda self: self.table[..., 4])
    value_hi = property(lambda self: self.table[..., 5])
    slope_hi = property(lambda self: self.table[..., 6])
    zooming = property(lambda self: self.table[..., 7] == ZOOMING)
    finished = property(lambda self: self.table[..., 7] >= CONVERGED)
    converged = property(lambda self: self.table[..., 7] == CONVERGED)
    precision_limited = property(lambda self: self.table[..., 7] == PRECISION_LIMITED)


def _select(pred, a, b):
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def _finite(*xs):
    ok = jnp.asarray(True)
    for x in xs:
        ok = ok & jnp.isfinite(x)
    return ok


def _cubic(a, fa, dfa, b, fb, dfb):
    """:func:`cubic_minimizer`'s minimiser, not finite where there is none: no guards, a zero
    division or the square root of a negative number propagates to ``inf`` or NaN, which costs
    fewer operations in the loop body than testing each case."""
    d1 = dfa + dfb - 3.0 * (fa - fb) / (a - b)
    d2 = jnp.sign(b - a) * jnp.sqrt(d1 * d1 - dfa * dfb)
    return b - (b - a) * (dfb + d2 - d1) / (dfb - dfa + 2.0 * d2)


def _quadratic(a, fa, dfa, b, fb):
    """:func:`quadratic_minimizer`'s minimiser, NaN where there is none."""
    h = b - a
    curvature = (fb - fa - dfa * h) / (h * h)
    return jnp.where(curvature > 0, a - dfa / (2.0 * curvature), jnp.nan)


def cubic_minimizer(a, fa, dfa, b, fb, dfb):
    """The minimiser of the cubic interpolating ``f`` and ``f'`` at ``a`` and ``b``
    (Nocedal & Wright eq. 3.59), and whether it exists (a finite real local minimiser)."""
    t = _cubic(*map(jnp.asarray, (a, fa, dfa, b, fb, dfb)))
    return t, jnp.isfinite(t)


def quadratic_minimizer(a, fa, dfa, b, fb):
    """The minimiser of the quadratic through ``f(a)``, ``f'(a)`` and ``f(b)``, and whether it
    exists (positive curvature)."""
    t = _quadratic(*map(jnp.asarray, (a, fa, dfa, b, fb)))
    return t, jnp.isfinite(t)


def _init_state(value0, slope0, alpha0, payload0, min_step):
    dtype = jnp.result_type(value0)
    value0 = jnp.asarray(value0, dtype)
    slope0 = jnp.asarray(slope0, dtype)
    zero = jnp.zeros((), dtype)
    return LineSearchState(
        table=jnp.stack([
            jnp.stack([zero, value0, slope0, jnp.asarray(alpha0, dtype)]),
            jnp.stack([jnp.asarray(jnp.inf, dtype), value0, slope0,
                       jnp.asarray(BRACKETING, dtype)]),
            jnp.stack([jnp.asarray(min_step, dtype), value0, slope0, zero])]).reshape(12),
        payload_lo=payload0,
    )


def _table(lo, hi, start, alpha, phase, num_trials):
    """``LineSearchState.table`` from its parts (``lo``, ``hi``, ``start``: 3-vectors), as one
    ``stack`` of the twelve scalars: XLA builds it in one kernel (stacking separately built
    rows costs a kernel per row, and a reshaped copy is computed twice)."""
    dtype = lo.dtype
    parts = [lo[0], lo[1], lo[2], alpha, hi[0], hi[1], hi[2], phase, start[0], start[1],
             start[2], num_trials]
    return jnp.stack([jnp.asarray(v).astype(dtype) for v in parts])


def _phase(finished_code, give_up, converged, zooming):
    return jnp.where(converged, CONVERGED, jnp.where(
        give_up, finished_code, jnp.where(zooming, ZOOMING, BRACKETING))).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class StrongWolfe:
    """Strong Wolfe line search (Nocedal & Wright Algorithms 3.5/3.6, cubic interpolation).

    Fields (Python numbers, so the object is hashable and a static field of a solver):

    - ``c1``: sufficient-decrease constant (1e-4); ``c2``: curvature constant (0.9; use 0.1
      for nonlinear conjugate gradients). ``0 < c1 < c2 < 1``.
    - ``max_trials``: give up after this many trials (then take the best sufficient-decrease
      step, if any).
    - ``max_step``: the largest step tried while extrapolating.
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_trials: int = 40
    max_step: float = 1e10

    def __post_init__(self):
        if not 0.0 < self.c1 < self.c2 < 1.0:
            raise ValueError(f"need 0 < c1 < c2 < 1, got c1={self.c1}, c2={self.c2}.")
        if self.max_trials < 1:
            raise ValueError(f"max_trials must be >= 1, got {self.max_trials}.")

    needs_slope = True

    def init(self, value0, slope0, alpha0, payload0, min_step=0.0) -> LineSearchState:
        """Start a search from ``phi(0) = value0``, ``phi'(0) = slope0 < 0``; the first trial is
        ``alpha0``. ``payload0`` is returned if no step is taken (see the module docstring)."""
        return _init_state(value0, slope0, alpha0, payload0, min_step)

    def update(self, state: LineSearchState, value, slope, payload=None) -> LineSearchState:
        """Take ``phi(state.alpha) = value`` and ``phi'(state.alpha) = slope`` (``payload`` the
        pytree to remember for this trial) and return the next state."""
        s = state
        dtype = s.value0.dtype
        value = jnp.asarray(value, dtype)
        slope = jnp.asarray(slope, dtype)
        a = s.alpha
        c1, c2 = self.c1, self.c2
        finite = _finite(value, slope)
        # A non-finite trial fails sufficient decrease: it becomes the upper end of a bracket.
        armijo = finite & (value <= s.value0 + c1 * a * s.slope0)
        better = armijo & (value < s.value_lo)
        curvature = jnp.abs(slope) <= -c2 * s.slope0
        converged = better & curvature

        # --- bracketing phase (Algorithm 3.5); lo is the previous trial alpha_{i-1}:
        # (i) too long (or no better than the previous trial): zoom(lo, a). (ii) strong
        # Wolfe: done. (iii) slope >= 0: zoom(a, lo). (iv) else extrapolate.
        # --- zoom phase (Algorithm 3.6), bracket [lo, hi]: not better: hi <- trial; better
        # with slope (alpha_hi - alpha_lo) >= 0: hi <- lo, lo <- trial; better: lo <- trial.
        # While bracketing, alpha_hi is +inf (no upper end yet), so one test serves both phases:
        # slope (alpha_hi - alpha_lo) >= 0 is slope >= 0 there (slope = 0 satisfies curvature).
        turn = better & ~curvature & (slope * (s.alpha_hi - s.alpha_lo) >= 0)
        zooming = s.zooming | ~better | turn
        # New ends: lo <- trial when better; hi <- the trial when not, else the old lo on a
        # turn, else stays.
        trial = jnp.stack([a, value, slope])
        lo = jnp.where(better, trial, s.lo)
        hi = jnp.where(better, jnp.where(turn, s.lo, s.hi), trial)
        alpha_lo, value_lo, slope_lo = lo[0], lo[1], lo[2]
        alpha_hi, value_hi, slope_hi = hi[0], hi[1], hi[2]
        payload_lo = s.payload_lo if payload is None else _select(better, payload, s.payload_lo)

        # One cubic serves both phases: through the bracket [lo, hi] while zooming, through the
        # previous lo and the trial while extrapolating.
        prev_alpha, prev_value, prev_slope = s.alpha_lo, s.value_lo, s.slope_lo
        pick = lambda u, v: jnp.where(zooming, u, v)
        t_cubic = _cubic(pick(alpha_lo, prev_alpha), pick(value_lo, prev_value),
                         pick(slope_lo, prev_slope), pick(alpha_hi, a), pick(value_hi, value),
                         pick(slope_hi, slope))
        ok_cubic = jnp.isfinite(t_cubic)

        # Next trial inside the bracket: the cubic's minimiser, else the quadratic's, else the
        # midpoint; then kept at least 10% of the bracket away from either end (Nocedal &
        # Wright's safeguard), so every trial shrinks the bracket to at most 90% of its width.
        width = alpha_hi - alpha_lo
        lower = jnp.minimum(alpha_lo, alpha_hi)
        upper = jnp.maximum(alpha_lo, alpha_hi)
        span = upper - lower
        t_quad = _quadratic(alpha_lo, value_lo, slope_lo, alpha_hi, value_hi)
        in_cubic = ok_cubic & _finite(value_hi, slope_hi) & (t_cubic > lower) & (t_cubic < upper)
        in_quad = jnp.isfinite(t_quad) & jnp.isfinite(value_hi) & (t_quad > lower) & (
            t_quad < upper)
        t_zoom = jnp.where(in_cubic, t_cubic, jnp.where(in_quad, t_quad, alpha_lo + 0.5 * width))
        t_zoom = jnp.clip(t_zoom, lower + 0.1 * span, upper - 0.1 * span)

        # Extrapolation beyond the trial within Moré-Thuente's bounds.
        grow_lo = a + 1.1 * (a - prev_alpha)
        grow_hi = a + 4.0 * (a - prev_alpha)
        t_ext = jnp.where(ok_cubic & (t_cubic > a), jnp.clip(t_cubic, grow_lo, grow_hi), grow_hi)
        t_ext = jnp.minimum(t_ext, self.max_step)

        next_alpha = jnp.where(zooming, t_zoom, t_ext)
        num_trials = s.table[11] + 1

        # Give up: the bracket collapsed (rounding level, or below the step resolution of x),
        # the extrapolation hit max_step, or the trial budget is spent.
        eps = jnp.finfo(dtype).eps
        collapsed = zooming & (jnp.abs(width) <= jnp.maximum(
            4 * eps * jnp.maximum(alpha_lo, alpha_hi), s.min_step))
        stuck = ~zooming & (a >= self.max_step)
        give_up = ~converged & (collapsed | stuck | (num_trials >= self.max_trials))
        finished = converged | give_up
        code = jnp.where(collapsed, PRECISION_LIMITED, GAVE_UP)
        return LineSearchState(
            table=_table(lo, hi, s.table[8:11], jnp.where(finished, alpha_lo, next_alpha),
                         _phase(code, give_up, converged, zooming), num_trials),
            payload_lo=payload_lo,
        )


def capped(state: LineSearchState, max_step) -> LineSearchState:
    """``state`` (just updated) with its next trial kept at or below ``max_step`` (traced; the
    farthest feasible step of a bound-constrained search, as ``stpmax`` in Moré & Thuente's
    search that L-BFGS-B uses): a search that would extrapolate past it tries ``max_step``, and
    one whose best step already is ``max_step`` (sufficient decrease, still descending) stops
    there and takes it."""
    t = state.table
    beyond = ~state.finished & (state.alpha > max_step)
    stop = beyond & (state.alpha_lo >= max_step)
    alpha = jnp.where(stop, state.alpha_lo, jnp.where(beyond, max_step, state.alpha))
    phase = jnp.where(stop, CONVERGED, t[7])
    return state._replace(table=t.at[3].set(alpha.astype(t.dtype)).at[7].set(
        phase.astype(t.dtype)))


@dataclasses.dataclass(frozen=True)
class BacktrackingArmijo:
    """Backtracking to the Armijo (sufficient-decrease) condition with safeguarded quadratic
    interpolation (Nocedal & Wright section 3.5; Dennis & Schnabel Algorithm A6.3.1).

    Fields: ``c1`` (1e-4); ``min_shrink``, ``max_shrink``: each new trial lies in
    ``[min_shrink, max_shrink] * alpha`` (0.1, 0.5); ``max_trials`` (40).
    """

    c1: float = 1e-4
    min_shrink: float = 0.1
    max_shrink: float = 0.5
    max_trials: int = 40

    def __post_init__(self):
        if not 0.0 < self.c1 < 1.0:
            raise ValueError(f"need 0 < c1 < 1, got c1={self.c1}.")
        if not 0.0 < self.min_shrink <= self.max_shrink < 1.0:
            raise ValueError("need 0 < min_shrink <= max_shrink < 1.")
        if self.max_trials < 1:
            raise ValueError(f"max_trials must be >= 1, got {self.max_trials}.")

    needs_slope = False

    def init(self, value0, slope0, alpha0, payload0, min_step=0.0) -> LineSearchState:
        """As :meth:`StrongWolfe.init`."""
        return _init_state(value0, slope0, alpha0, payload0, min_step)

    def update(self, state: LineSearchState, value, slope=None, payload=None) -> LineSearchState:
        """Take ``phi(state.alpha) = value`` (``slope`` is ignored; it may be ``None``)."""
        s = state
        dtype = s.value0.dtype
        value = jnp.asarray(value, dtype)
        a = s.alpha
        armijo = jnp.isfinite(value) & (value <= s.value0 + self.c1 * a * s.slope0)
        t = _quadratic(jnp.zeros((), dtype), s.value0, s.slope0, a, value)
        t = jnp.where(jnp.isfinite(t) & jnp.isfinite(value), t, self.max_shrink * a)
        t = jnp.clip(t, self.min_shrink * a, self.max_shrink * a)
        num_trials = s.table[11] + 1
        below = t <= s.min_step
        give_up = ~armijo & (below | (num_trials >= self.max_trials))
        finished = armijo | give_up
        trial = jnp.stack([a, value, jnp.nan if slope is None else jnp.asarray(slope, dtype)])
        lo = jnp.where(armijo, trial, s.lo)
        payload_lo = s.payload_lo if payload is None else _select(armijo, payload, s.payload_lo)
        code = jnp.where(below, PRECISION_LIMITED, GAVE_UP)
        return LineSearchState(
            table=_table(lo, jnp.where(armijo, s.hi, trial), s.table[8:11],
                         jnp.where(finished, lo[0], t), _phase(code, give_up, armijo, False),
                         num_trials),
            payload_lo=payload_lo,
        )
