"""Gauss-Newton (line search) and Powell's dogleg (trust region) against certified NIST values,
published optima (Moré, Garbow & Hillstrom 1981) and SciPy's ``least_squares`` (trf) with
bounds and a robust loss.

Compile time dominates on a shared machine, so each test compiles one solve per solver and
batches what it can: the two NIST starts (and a NaN member) are one ``vmap``; the classic
problems are stacked into one block-separable problem (its minimisers are the blocks' minimisers
side by side and its minimum the sum of theirs).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt
from jacopt import Status
from jacopt.problems import nist
from jacopt.problems import test_functions as tf
from jacopt.solvers.gauss_newton import GaussNewton
from jacopt.solvers.line_search import StrongWolfe

SOLVERS = ["gn", "dogleg"]
# XLA's classic CPU emitters compile these small loops about twice as fast (same operations)
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False} if jax.default_backend() == "cpu" else {}


@functools.partial(jax.jit, static_argnames=("fun", "solver"), compiler_options=FAST_COMPILE)
def _solve_batch(fun, starts, args, solver):
    """One compiled solve, vmapped over the rows of ``starts`` and the leading axis of every
    ``args`` leaf (same function + shapes = no recompile)."""
    return jax.vmap(lambda s, a: jacopt.least_squares(
        fun, s, args=a, solver=solver, implicit_diff=False))(starts, args)


@functools.partial(jax.jit, static_argnames=("fun", "solver", "loss", "f_scale", "history"),
                   compiler_options=FAST_COMPILE)
def _solve(fun, x0, args=(), bounds=None, *, solver, loss="linear", f_scale=1.0,
           history=False):
    """One compiled unbatched solve."""
    return jacopt.least_squares(fun, x0, args=args, solver=solver, bounds=bounds, loss=loss,
                                f_scale=f_scale, history=history, implicit_diff=False)


def _check_counts(res):
    steps = np.asarray(res.num_steps)
    np.testing.assert_array_equal(np.asarray(res.num_accepted) + np.asarray(res.num_rejected),
                                  steps)
    # one residual + Jacobian evaluation per iteration, plus the start
    np.testing.assert_array_equal(np.asarray(res.nfev), steps + 1)
    np.testing.assert_array_equal(np.asarray(res.njev), steps + 1)


def _nist_batch(p):
    starts = jnp.asarray(p.starts)
    args = tuple(jnp.broadcast_to(jnp.asarray(a), (2,) + a.shape) for a in p.args)
    return starts, args


def _nist_lres(names, solver):
    out = {}
    for name in names:
        p = nist.load(name)
        res = _solve_batch(p.residual, *_nist_batch(p), solver)
        _check_counts(res)
        for k in range(2):
            params = np.asarray(res.params[k])
            out[(name, k + 1)] = (p.lre(params), Status(int(res.status[k])).name)
    return out


# --- NIST StRD ----------------------------------------------------------------------------
# The default run checks Misra1a (both starts, batched with a NaN member, below); the full
# lower + average sets (19 problems x 2 starts, ~16 compiles per solver) are slow. Measured:
# every lower/average run except MGH17 start 1 reaches LRE >= 10.3 with both solvers (11 is
# the certificate's resolution; the fits' conditioning costs float64 the rest); 8 leaves
# margin for BLAS rounding differences between machines.

LOWER_AVERAGE = [n for n in nist.NAMES if nist.DIFFICULTY[n] in ("lower", "average")]
# MGH17 from NIST's far start 1: dogleg stops at a local minimum (cost 1.2e-2 vs the certified
# 2.7e-5), Gauss-Newton at a flat stationary point with one exponential rate driven to 2e7
# (cost 0.55, gradient 5e-10). Both are genuine stationary points; this run may miss.
KNOWN_HARD = {("MGH17", 1)}


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS)
def test_nist_lower_and_average(solver):
    lres = _nist_lres(LOWER_AVERAGE, solver)
    for key, (lre, status) in lres.items():
        if key not in KNOWN_HARD:
            assert lre >= 8.0, (key, lre, status)


@pytest.mark.slow
@pytest.mark.parametrize("solver,min_solved", [("gn", 11), ("dogleg", 14)])
def test_nist_higher(solver, min_solved):
    # Measured (float64, this machine): GN 12/16 runs with LRE >= 6 (pure Gauss-Newton diverges
    # from the far starts of MGH09, MGH10, Eckerle4 and Rat43), dogleg 15/16 (MGH09 start 1).
    names = [n for n in nist.NAMES if nist.DIFFICULTY[n] == "higher"]
    lres = _nist_lres(names, solver)
    solved = sum(lre >= 6.0 for lre, _ in lres.values())
    assert solved >= min_solved, lres
    for (name, start), (lre, _) in lres.items():
        if start == 2:  # NIST's near starts: every run must succeed
            assert lre >= 8.0, (name, lre)


# --- jit + vmap, a NaN member -------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_vmap_misra1a_both_starts_and_a_nan_member(solver):
    p = nist.load("Misra1a")
    y_nan = p.y.copy()
    y_nan[3] = np.nan
    starts = jnp.asarray(np.stack([p.starts[0], p.starts[1], p.starts[0]]))
    args = (jnp.asarray(np.stack([p.x] * 3)), jnp.asarray(np.stack([p.y, p.y, y_nan])))
    res = _solve_batch(p.residual, starts, args, solver)
    _check_counts(res)
    status = [Status(int(s)) for s in res.status]
    assert status[2] == Status.NONFINITE and not bool(res.success[2])
    for k in range(2):
        assert status[k].success, status
        assert p.lre(np.asarray(res.params[k])) >= 10.0
        np.testing.assert_allclose(2 * float(res.cost[k]), p.certified_rss, rtol=1e-9)


# --- classic problems (MGH) ---------------------------------------------------------------

CLASSIC = [tf.get(name) for name in ("rosenbrock", "beale", "powell_singular", "helical_valley")]
_SIZES = np.cumsum([0] + [p.dim for p in CLASSIC])


def _stacked_residual(x):
    return jnp.concatenate([p.residual(x[a:b]) for p, a, b in
                            zip(CLASSIC, _SIZES[:-1], _SIZES[1:])])


@pytest.mark.parametrize("solver", SOLVERS)
def test_classic_problems_reach_published_optima(solver):
    x0 = jnp.asarray(np.concatenate([p.x0 for p in CLASSIC]))
    res = _solve(_stacked_residual, x0, solver=solver, history=True)
    _check_counts(res)
    assert bool(res.success), res.message
    # MGH's fun = sum r^2, the solver's cost = fun / 2; every minimum here is 0
    assert float(res.cost) == pytest.approx(sum(p.f_star for p in CLASSIC) / 2, abs=1e-20)
    x = np.asarray(res.params)
    for p, a, b in zip(CLASSIC, _SIZES[:-1], _SIZES[1:]):
        # Powell's singular function has a singular Jacobian at x* = 0: Gauss-Newton converges
        # only linearly there, and the cost (~|x|^4) is below rounding long before x is 0.
        tol = 1e-4 if p.name == "powell_singular" else 1e-9
        np.testing.assert_allclose(x[a:b], p.x_star, atol=tol, err_msg=p.name)
    h = res.history
    k = int(res.num_steps)
    assert np.sum(np.asarray(h.accepted[1:k + 1])) == int(res.num_accepted)
    np.testing.assert_allclose(h.value[k], res.cost, rtol=1e-12)
    assert np.all(np.diff(np.asarray(h.value[: k + 1])) <= 0)  # accepted steps never go up
    assert np.all(np.isnan(np.asarray(h.value[k + 1:])))


# --- pytree parameters in float32 ---------------------------------------------------------


def _rosenbrock_tree(params):
    return {"a": 10.0 * (params["y"] - params["x"] ** 2), "b": 1.0 - params["x"]}


@pytest.mark.parametrize("solver", SOLVERS)
def test_pytree_params_float32(solver):
    x0 = {"x": jnp.array([-1.2], jnp.float32), "y": jnp.array([1.0], jnp.float32)}
    res = _solve(_rosenbrock_tree, x0, solver=solver)
    assert res.params["x"].dtype == jnp.float32 and res.cost.dtype == jnp.float32
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params["x"], [1.0], atol=1e-3)
    np.testing.assert_allclose(res.params["y"], [1.0], atol=2e-3)
    _check_counts(res)


# --- bounds and robust losses against SciPy -----------------------------------------------

_T = np.linspace(0.0, 4.0, 25)
_Y = 2.5 * np.exp(-1.3 * _T) + 0.4 + 0.01 * np.cos(7.0 * _T)
_Y_OUTLIERS = _Y.copy()
_Y_OUTLIERS[[3, 11, 19]] += [1.5, -2.0, 3.0]


def _decay(b, t, y):
    return b[0] * jnp.exp(-b[1] * t) + b[2] - y


def _decay_np(b, t, y):
    return b[0] * np.exp(-b[1] * t) + b[2] - y


_LOWER = np.array([0.0, 1.5, 0.0])  # the unconstrained optimum has b1 ~ 1.3: bound active
_UPPER = np.array([10.0, 5.0, 0.3])  # and b2 ~ 0.4 > 0.3: upper bound active too


def _scipy(y, **kw):
    return scipy.optimize.least_squares(_decay_np, np.array([1.0, 2.0, 0.1]), args=(_T, y),
                                        method="trf", ftol=1e-15, xtol=1e-15, gtol=1e-15, **kw)


def test_gauss_newton_bounds_match_scipy_trf():
    ref = _scipy(_Y, bounds=(_LOWER, _UPPER))
    res = _solve(_decay, jnp.array([1.0, 2.0, 0.1]), (_T, _Y), (_LOWER, _UPPER), solver="gn")
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)
    assert res.params[1] == _LOWER[1] and res.params[2] == _UPPER[2]
    _check_counts(res)


def test_dogleg_bounds_match_scipy_trf():
    # through jacopt.least_squares, which passes bounds to every built-in solver
    ref = _scipy(_Y, bounds=(_LOWER, _UPPER))
    res = jacopt.least_squares(_decay, jnp.array([1.0, 2.0, 0.1]), args=(_T, _Y),
                               solver="dogleg", bounds=(jnp.asarray(_LOWER), jnp.asarray(_UPPER)))
    assert bool(res.success), res.status_name
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)
    assert np.all(np.asarray(res.params) >= _LOWER) and np.all(np.asarray(res.params) <= _UPPER)
    assert int(res.num_accepted + res.num_rejected) == int(res.num_steps)


@pytest.mark.parametrize("solver", SOLVERS)
def test_soft_l1_loss_matches_scipy(solver):
    ref = _scipy(_Y_OUTLIERS, loss="soft_l1", f_scale=0.1)
    res = _solve(_decay, jnp.array([1.0, 2.0, 0.1]), (_T, _Y_OUTLIERS), solver=solver,
                 loss="soft_l1", f_scale=0.1)
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-7)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)
    # the robust fit ignores the outliers: close to the clean curve's parameters
    np.testing.assert_allclose(res.params, [2.5, 1.3, 0.4], atol=0.05)
    _check_counts(res)


# --- the line search and the singular fallback --------------------------------------------


def test_gauss_newton_with_strong_wolfe_search():
    p = nist.load("Misra1a")
    res = jacopt.least_squares(p.residual, jnp.asarray(p.starts[0]), args=p.args,
                               solver=GaussNewton(line_search=StrongWolfe()),
                               implicit_diff=False)
    assert bool(res.success), res.message
    assert p.lre(res.params) >= 10.0


def test_rank_deficient_jacobian_takes_the_minimum_norm_step():
    # r = (s - 3, 2 s - 6.5) with s = x0 + x1: J has rank 1 everywhere. The least-squares
    # solutions form the line s = 3.2 (residuals 0.2, -0.1); the minimum-norm steps from
    # (0, 0) stay on x0 = x1 and end at the point of that line nearest the start.
    def fun(x):
        s = x[0] + x[1]
        return jnp.stack([s - 3.0, 2.0 * s - 6.5])

    # (Dogleg's Gauss-Newton point comes from the same gauss_newton_step.)
    res = jacopt.least_squares(fun, jnp.zeros(2), solver="gn", implicit_diff=False)
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, [1.6, 1.6], rtol=1e-12)
    np.testing.assert_allclose(res.cost, 0.5 * (0.2**2 + 0.1**2), rtol=1e-12)


def test_gauss_newton_steepest_descent_step_is_bounded_when_a_robust_loss_saturates():
    """With Cauchy's loss and residuals far above f_scale, the corrected Jacobian has almost no
    curvature and the Cauchy step was ~1e14 long: backtracking spent its trials and the solve
    stopped at the start (LINE_SEARCH_FAILED, nothing accepted). Bounded by 2 C / ||g||^2 it
    moves; the gradient of the robust cost at the start (jax.grad) says a short step descends."""
    t = jnp.linspace(0.0, 2.0, 12)
    y = 2.0 * jnp.exp(-1.3 * t) + 0.5 + 0.01 * jnp.sin(7.0 * t)

    def res(p, y):
        return p[0] * jnp.exp(-p[1] * t) + p[2] - y

    x0 = jnp.array([1.0, 1.0, 0.0])
    start_cost = 0.5 * jnp.sum(0.01 * jnp.log1p((res(x0, y) / 0.1) ** 2))
    r = jacopt.least_squares(res, x0, args=(y,), solver="gn", loss="cauchy", f_scale=0.1,
                             max_steps=200)
    assert int(r.num_accepted) > 0
    assert float(r.cost) < 0.9 * float(start_cost)
    # a plain sum of squares: the bound never binds, the Cauchy step is unchanged
    fit = jacopt.least_squares(res, x0, args=(y,), solver="gn")
    assert fit.status_name in ("XTOL", "PRECISION_LIMIT", "GTOL") and float(fit.cost) < 1e-3
