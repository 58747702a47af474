"""Gauss-Newton (line search) and Powell's dogleg (trust region) against certified NIST values
and published optima (Moré, Garbow & Hillstrom 1981), and what only Gauss-Newton has (its line
searches, the minimum-norm step of a rank-deficient Jacobian, the bounded steepest-descent
step). The checks every solver passes (jit, vmap with a NaN member, pytrees, float32, bounds,
a robust loss, implicit derivatives, counters, history) are in
``test_least_squares_contract.py``.

Compile time dominates on a shared machine, so each test compiles one solve per solver and
batches what it can: the two NIST starts are one ``vmap``; the classic problems are stacked into
one block-separable problem (:func:`_ls_helpers.stacked`).
"""
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt import Status
from jacopt.problems import nist
from jacopt.solvers.gauss_newton import GaussNewton
from jacopt.solvers.line_search import StrongWolfe

from _ls_helpers import check_counts, check_history, nist_batch, solve, solve_batch, stacked

SOLVERS = ["gn", "dogleg"]


def _nist_lres(names, solver):
    out = {}
    for name in names:
        p = nist.load(name)
        res = solve_batch(p.residual, *nist_batch(p), solver)
        check_counts(res, solver)
        for k in range(2):
            params = np.asarray(res.params[k])
            out[(name, k + 1)] = (p.lre(params), Status(int(res.status[k])).name)
    return out


# --- NIST StRD ----------------------------------------------------------------------------
# The default run checks Misra1a (both starts, and batched with a NaN member, in the contract
# test); the full lower + average sets (19 problems x 2 starts, ~16 compiles per solver) are
# slow. Measured: every lower/average run except MGH17 start 1 reaches LRE >= 10.3 with both
# solvers (11 is the certificate's resolution; the fits' conditioning costs float64 the rest);
# 8 leaves margin for BLAS rounding differences between machines.

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


# --- classic problems (MGH) ---------------------------------------------------------------

CLASSIC = ("rosenbrock", "beale", "powell_singular", "helical_valley")


@pytest.mark.parametrize("solver", SOLVERS)
def test_classic_problems_reach_published_optima(solver):
    residual, x0, problems, offsets = stacked(CLASSIC)
    res = solve(residual, x0, solver=solver, history=True)
    check_counts(res, solver)
    assert bool(res.success), res.message
    # MGH's fun = sum r^2, the solver's cost = fun / 2; every minimum here is 0
    assert float(res.cost) == pytest.approx(sum(p.f_star for p in problems) / 2, abs=1e-20)
    x = np.asarray(res.params)
    for p, a, b in zip(problems, offsets[:-1], offsets[1:]):
        # Powell's singular function has a singular Jacobian at x* = 0: Gauss-Newton converges
        # only linearly there, and the cost (~|x|^4) is below rounding long before x is 0.
        tol = 1e-4 if p.name == "powell_singular" else 1e-9
        np.testing.assert_allclose(x[a:b], p.x_star, atol=tol, err_msg=p.name)
    check_history(res)  # zero residuals: accepted steps never raise the cost, not even by rounding


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
