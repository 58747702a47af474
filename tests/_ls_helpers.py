"""What the least-squares tests share: compiled solves (one per function, solver and shapes),
the counter and history checks every solver's result must pass, a bounded exponential-decay fit
with SciPy's ``trf`` as the reference, and block-stacked classic problems (Moré, Garbow &
Hillstrom 1981).

Only the public API (``jacopt.least_squares``, its ``SOLVERS`` and the result's fields) is used,
so the solvers' internals can move without touching the tests.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import jacopt
from jacopt.least_squares import SOLVERS
from jacopt.problems import test_functions as tf

# XLA's classic CPU emitters compile these small loops about twice as fast (same operations),
# as jacopt.least_squares does for its own direct calls.
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False} if jax.default_backend() == "cpu" else {}


@functools.partial(jax.jit, static_argnames=("fun", "solver"), compiler_options=FAST_COMPILE)
def solve_batch(fun, starts, args, solver):
    """One compiled solve, vmapped over the rows of ``starts`` and the leading axis of every
    ``args`` leaf (same function and shapes: no recompile)."""
    return jax.vmap(lambda s, a: jacopt.least_squares(
        fun, s, args=a, solver=solver, implicit_diff=False))(starts, args)


@functools.partial(jax.jit, static_argnames=("fun", "solver", "loss", "f_scale", "history"),
                   compiler_options=FAST_COMPILE)
def solve(fun, x0, args=(), bounds=None, x_scale="jac", *, solver, loss="linear", f_scale=1.0,
          history=False):
    """One compiled unbatched solve."""
    return jacopt.least_squares(fun, x0, args=args, solver=solver, bounds=bounds, loss=loss,
                                f_scale=f_scale, x_scale=x_scale, history=history,
                                implicit_diff=False)


def nist_batch(p):
    """Both NIST starts of problem ``p`` as a batch: ``(starts, args)`` for :func:`solve_batch`."""
    starts = jnp.asarray(p.starts)
    return starts, tuple(jnp.broadcast_to(jnp.asarray(a), (2,) + a.shape) for a in p.args)


# --- counters -------------------------------------------------------------------------------

# Evaluations as each solver's docstring states them, from (num_steps, num_accepted); the start
# is one evaluation of the residuals and the Jacobian.
# - LM, Gauss-Newton, dogleg: every iteration evaluates one trial's residuals and Jacobian.
# - matrix-free LM: every iteration linearises at the point (nfev and njev) and evaluates the
#   trial's residuals (nfev); an accepted trial is linearised again (nfev and njev).
EVALUATIONS = {
    SOLVERS["lm"]: lambda steps, accepted: (steps + 1, steps + 1),
    SOLVERS["gn"]: lambda steps, accepted: (steps + 1, steps + 1),
    SOLVERS["dogleg"]: lambda steps, accepted: (steps + 1, steps + 1),
    SOLVERS["lm-matrix-free"]: lambda steps, accepted: (1 + 2 * steps + accepted,
                                                        1 + steps + accepted),
}


def solver_class(solver):
    """The class behind a ``solver=`` name, class or instance."""
    if isinstance(solver, str):
        return SOLVERS[solver.lower()]
    return solver if isinstance(solver, type) else type(solver)


def check_counts(res, solver):
    """The counters every least-squares result must satisfy (elementwise for a batch):
    ``num_accepted + num_rejected == num_steps`` (the result's docstring); the start is
    evaluated (``njev >= 1``); every accepted point has its Jacobian (``njev >= num_accepted +
    1``); every iteration evaluates one trial's residuals (``nfev >= num_steps + 1``) and no
    Jacobian comes without residuals (``nfev >= njev``). Where the solver's docstring gives
    the exact count (:data:`EVALUATIONS`), that too."""
    steps, accepted = np.asarray(res.num_steps), np.asarray(res.num_accepted)
    nfev, njev = np.asarray(res.nfev), np.asarray(res.njev)
    np.testing.assert_array_equal(accepted + np.asarray(res.num_rejected), steps)
    assert np.all(steps >= 0) and np.all(accepted >= 0)
    assert np.all(njev >= accepted + 1), (njev, accepted)
    assert np.all(nfev >= steps + 1), (nfev, steps)
    assert np.all(nfev >= njev), (nfev, njev)
    exact = EVALUATIONS.get(solver_class(solver))
    if exact is not None:
        want_nfev, want_njev = exact(steps, accepted)
        np.testing.assert_array_equal(nfev, want_nfev, err_msg="nfev")
        np.testing.assert_array_equal(njev, want_njev, err_msg="njev")


def check_history(res, rise_allowed=0.0):
    """A history that agrees with the result, and whose cost never rises on an accepted step
    by more than ``rise_allowed`` (a scalar, or one number per row) nor moves on a rejected one.

    Row 0 is the start (never "accepted"), row k the state after iteration k, rows past
    ``num_steps`` are NaN (:class:`jacopt.History`)."""
    h = res.history
    k = int(res.num_steps)
    value = np.asarray(h.value)
    accepted = np.asarray(h.accepted)
    assert not accepted[0]
    assert int(np.sum(accepted[1:k + 1])) == int(res.num_accepted)
    np.testing.assert_allclose(value[k], res.cost, rtol=1e-12)
    assert np.all(np.isnan(value[k + 1:])) and not np.any(accepted[k + 1:])
    assert np.all(np.isfinite(value[:k + 1]))
    change = np.diff(value[:k + 1])
    rejected = ~accepted[1:k + 1]
    np.testing.assert_array_equal(change[rejected], 0.0, err_msg="a rejected step moved")
    allowed = np.broadcast_to(np.asarray(rise_allowed, np.float64), value.shape)[:k]
    rises = np.nonzero(accepted[1:k + 1] & (change > allowed))[0]
    assert rises.size == 0, (
        f"the cost rose on accepted step(s) {list(rises + 1)}: "
        f"{[(float(value[i]), float(value[i + 1])) for i in rises]}, allowed {allowed[rises]}")


# --- a bounded exponential decay, against SciPy ---------------------------------------------

T = np.linspace(0.0, 4.0, 25)
Y = 2.5 * np.exp(-1.3 * T) + 0.4 + 0.01 * np.cos(7.0 * T)
Y_OUTLIERS = Y.copy()
Y_OUTLIERS[[3, 11, 19]] += [1.5, -2.0, 3.0]
DECAY_START = np.array([1.0, 2.0, 0.1])
LOWER = np.array([0.0, 1.5, 0.0])  # the unconstrained optimum has b1 ~ 1.3: bound active
UPPER = np.array([10.0, 5.0, 0.3])  # and b2 ~ 0.4 > 0.3: upper bound active too


def decay(b, t, y):
    return b[0] * jnp.exp(-b[1] * t) + b[2] - y


def decay_np(b, t, y):
    return b[0] * np.exp(-b[1] * t) + b[2] - y


def _decay_jac_np(b, t, y):
    e = np.exp(-b[1] * t)
    return np.stack([e, -b[0] * t * e, np.ones_like(t)], axis=1)


@functools.lru_cache(maxsize=None)
def _scipy_decay(outliers, bounded, loss, f_scale):
    return scipy.optimize.least_squares(
        decay_np, DECAY_START, jac=_decay_jac_np, args=(T, Y_OUTLIERS if outliers else Y),
        method="trf", bounds=(LOWER, UPPER) if bounded else (-np.inf, np.inf), loss=loss,
        f_scale=f_scale, ftol=1e-15, xtol=1e-15, gtol=1e-15)


def scipy_decay_bounded():
    """SciPy's ``trf`` (exact Jacobian, tolerances 1e-15) on the decay fit in ``[LOWER,
    UPPER]``: its solution has ``b1`` on its lower and ``b2`` on its upper bound."""
    return _scipy_decay(False, True, "linear", 1.0)


def scipy_decay_soft_l1():
    """SciPy's ``trf`` on the decay fit to the data with three outliers, ``soft_l1`` loss,
    ``f_scale`` 0.1."""
    return _scipy_decay(True, False, "soft_l1", 0.1)


# --- classic problems stacked into one ------------------------------------------------------


@functools.lru_cache(maxsize=None)
def stacked(names):
    """The classic problems ``names`` (a tuple) as one block-separable problem: ``(residual,
    x0, problems, offsets)``. Its minimisers are the blocks' minimisers side by side and its
    minimum the sum of theirs, so one compiled solve checks them all."""
    problems = [tf.get(name) for name in names]
    offsets = np.cumsum([0] + [p.dim for p in problems])

    def residual(x):
        return jnp.concatenate([p.residual(x[a:b]) for p, a, b in
                                zip(problems, offsets[:-1], offsets[1:])])

    x0 = jnp.asarray(np.concatenate([p.x0 for p in problems]))
    return residual, x0, problems, offsets
