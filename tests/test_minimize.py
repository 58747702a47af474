"""jacopt.minimize on problems with published optima (Moré, Garbow & Hillstrom 1981): the
solution, the gradient there (recomputed independently with jax.grad), the status, and the
behaviour each solver promises (strong Wolfe steps, quadratic convergence of Newton)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt import Status
from jacopt.minimize import SOLVERS
from jacopt.problems import test_functions as tf
from jacopt.solvers import BFGS, LBFGS, Newton
from jacopt.solvers.minimize_problem import MinimizeProblem
from jacopt.solvers.quasi_newton import Pair, curvature_ok


def pair(s, y, first):
    """What the quasi-Newton loop hands an update: s^T y, y^T y, curvature test, first."""
    sy, ss, yy = float(s @ y), float(s @ s), float(y @ y)
    return Pair(jnp.asarray(sy), jnp.asarray(yy), curvature_ok(sy, ss, yy), jnp.asarray(first))


def check_solution(result, problem, xtol=1e-4):
    """The result is at the published minimiser, and its gradient, recomputed here, is below
    the solver's gtol (1e-5)."""
    assert bool(result.success), result.message
    assert int(result.status) == Status.GTOL
    np.testing.assert_allclose(result.params, problem.x_star, atol=xtol)
    grad = jax.grad(problem.fun)(result.params)
    assert float(jnp.max(jnp.abs(grad))) <= 1e-5
    # the same gradient (compiled vs eager evaluation: rounding of a cancelling sum only)
    np.testing.assert_allclose(result.grad, grad, rtol=1e-6, atol=1e-12)
    assert float(result.value) == pytest.approx(float(problem.fun(result.params)), rel=1e-12)
    assert float(result.value) - problem.f_star <= 1e-9


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_finds_the_rosenbrock_minimum(solver):
    p = tf.get("rosenbrock")
    result = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver=solver)
    check_solution(result, p)
    assert int(result.nfev) == int(result.ngev) == int(result.num_steps) + 1
    if solver.startswith("newton"):
        assert int(result.nhev) >= 1
    else:
        assert int(result.nhev) == 0


@pytest.mark.parametrize("name, solver", [
    ("wood", "bfgs"),
    pytest.param("helical_valley", "newton", marks=pytest.mark.slow),
    ("extended_rosenbrock_100", "newton-cg"),
    pytest.param("beale", "lbfgs", marks=pytest.mark.slow),
    pytest.param("quadratic_n20_cond1e6", "bfgs", marks=pytest.mark.slow),
])
def test_known_optima(name, solver):
    p = tf.get(name)
    result = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver=solver)
    check_solution(result, p)


def test_newton_solves_a_convex_quadratic_in_one_step():
    # the default radius is the Newton step's length, so the first trial is the exact minimiser
    p = tf.get("quadratic_n20_cond1e4")
    result = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver="newton")
    assert int(result.num_steps) == 1 and int(result.nhev) == 2
    np.testing.assert_allclose(result.params, p.x_star, atol=1e-10)


def test_newton_converges_quadratically_on_rosenbrock():
    p = tf.get("rosenbrock")
    result = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver=Newton(gtol=1e-12), history=True)
    assert int(result.status) == Status.GTOL
    k = int(result.num_steps)
    h = result.history
    accepted = np.asarray(h.accepted[1 : k + 1])
    grads = np.asarray(h.grad_norm[1 : k + 1])[accepted]
    # the last steps square the gradient norm, g_{j+1} <= C g_j^2 (here about 4e-3, 3e-8,
    # 4e-13: C ~ 400, as the Hessian's condition number ~2500 suggests)
    tail = grads[-3:]
    assert tail[-1] <= 1e-12 and tail[0] > 1e-4
    ratios = tail[1:] / tail[:-1] ** 2
    assert np.all(ratios < 1e3), (tail, ratios)
    # while linear convergence would keep g_{j+1}/g_j roughly constant, here it collapses
    assert tail[-1] / tail[-2] < 1e-3


def test_strong_wolfe_conditions_hold_on_every_accepted_step():
    """Drive BFGS and L-BFGS iteration by iteration and check both conditions on each accepted
    step against f and grad evaluated here (c1 = 1e-4, c2 = 0.9)."""
    p = tf.get("rosenbrock")
    problem = MinimizeProblem(lambda x, args: p.fun(x), ())
    f, g = jax.jit(p.fun), jax.jit(jax.grad(p.fun))
    for solver in (BFGS(), LBFGS(memory=3)):
        step = jax.jit(lambda s, solver=solver: solver.step(problem, s))
        state = solver.init(problem, jnp.asarray(p.x0))
        checked = 0
        for _ in range(200):
            new = step(state)
            if bool(new.accepted):
                d, x, x_new = state.direction, state.x, new.x
                alpha = float(new.alpha)
                np.testing.assert_allclose(x_new, x + alpha * d, rtol=1e-15, atol=0)
                slope0 = float(g(x) @ d)
                assert slope0 < 0
                assert float(f(x_new)) <= float(f(x)) + 1e-4 * alpha * slope0
                assert abs(float(g(x_new) @ d)) <= 0.9 * abs(slope0)
                checked += 1
            state = new
            if bool(solver.terminate(problem, state)[0]):
                break
        assert int(solver.terminate(problem, state)[1]) == Status.GTOL
        assert checked >= 20


def test_bfgs_skips_updates_without_curvature():
    solver = BFGS()
    h0 = solver.init_inverse_hessian(jnp.zeros(3))
    s = jnp.array([1.0, 0.0, 0.0])
    # s^T y < 0: the update must be skipped and H kept
    y_bad = jnp.array([-1.0, 0.0, 0.0])
    h = solver.update_inverse_hessian(h0, s, y_bad, pair(s, y_bad, True))
    np.testing.assert_array_equal(h, np.eye(3))
    # s^T y > 0 but below eps |s| |y|: nearly orthogonal, skipped too
    y_flat = jnp.array([1e-18, 1.0, 0.0])
    assert not bool(pair(s, y_flat, True).ok)
    # a valid pair: the secant equation H y = s holds after the update, H stays symmetric
    # positive definite, and the first update starts from (s^T y / y^T y) I (N&W eq. 6.20)
    y = jnp.array([2.0, 1.0, 0.0])
    h = solver.update_inverse_hessian(h0, s, y, pair(s, y, True))
    np.testing.assert_allclose(h @ y, s, atol=1e-15)
    np.testing.assert_array_equal(h, h.T)
    assert np.all(np.linalg.eigvalsh(np.asarray(h)) > 0)
    e3 = jnp.array([0.0, 0.0, 1.0])  # orthogonal to s and y: H keeps the scaled identity there
    assert float(e3 @ h @ e3) == pytest.approx(2.0 / 5.0, rel=1e-14)


def test_fused_bfgs_step_equals_the_update_then_the_product():
    """BFGS.next_direction (one pass over H) against update_inverse_hessian then -H+ g, on a
    convex quadratic: the first (scaled) update from the identity, a later update, a pair
    failing the curvature test, and no step at all (alpha = 0)."""
    rng = np.random.default_rng(3)
    n = 5
    a = rng.standard_normal((n, n))
    hess = jnp.asarray(a @ a.T + np.eye(n))
    grad_of = lambda x: hess @ x
    solver = BFGS()
    problem = MinimizeProblem(lambda x, args: 0.5 * x @ hess @ x, ())
    state = solver.step(problem, solver.init(problem, jnp.asarray(rng.standard_normal(n))))
    checked, identities = 0, []
    for k in range(4):
        d, g_old = state.direction, state.grad
        for alpha, g_new in ((0.7, grad_of(state.x + 0.7 * d)), (0.0, g_old),
                             (0.5, g_old - 1e-3 * d)):  # the last pair has s^T y < 0
            h, direction, identity = solver.next_direction(state, alpha, g_new)
            s, y = alpha * d, g_new - g_old
            p = pair(s, y, bool(state.identity))
            h_ref = solver.update_inverse_hessian(
                jnp.eye(n) if bool(state.identity) else state.inverse_hessian, s, y, p)
            np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(direction, -h_ref @ g_new, rtol=1e-9, atol=1e-12)
            assert bool(identity) == (bool(state.identity) and not bool(p.ok))
            checked += 1
        identities.append(bool(state.identity))
        for _ in range(20):  # on to the next accepted step
            state = solver.step(problem, state)
            if bool(state.accepted):
                break
    assert checked == 12 and identities[0] and not any(identities[1:])


def test_yuan_update_is_the_bfgs_update_with_t_y():
    """BFGS(update="yuan").next_direction against the plain update of H with y replaced by
    t y, t = 2 (f_k - f_{k+1} + s^T g_{k+1}) / s^T y computed here (Yuan 1991), kept in
    [0.01, 100]: from the identity (scaled by the modified pair) and from a later H, with f
    values that make t 1, about 0.3, and below the bound."""
    rng = np.random.default_rng(5)
    n = 4
    a = rng.standard_normal((n, n))
    hess = jnp.asarray(a @ a.T + np.eye(n))
    fun = lambda x: 0.5 * x @ hess @ x
    solver = BFGS(update="yuan")
    problem = MinimizeProblem(lambda x, args: fun(x), ())
    state = solver.step(problem, solver.init(problem, jnp.asarray(rng.standard_normal(n))))
    seen = set()
    for k in range(3):
        d, g_old, f_old = state.direction, state.grad, float(state.value)
        alpha = 0.6
        s = alpha * np.asarray(d)
        g_new = hess @ (state.x + alpha * d)
        y = np.asarray(g_new - g_old)
        f_true = float(fun(state.x + alpha * d))
        for f_new in (f_true, f_true + 0.35 * (s @ y), f_true + 10.0 * (s @ y)):
            t = 2.0 * (f_old - f_new + s @ np.asarray(g_new)) / (s @ y)
            t_kept = min(max(t, 0.01), 100.0)
            seen.add(round(t_kept, 2))
            h, direction, _ = solver.next_direction(state, alpha, g_new, jnp.asarray(f_new))
            ty = jnp.asarray(t_kept * y)
            h_ref = BFGS().update_inverse_hessian(
                jnp.eye(n) if bool(state.identity) else state.inverse_hessian, jnp.asarray(s),
                ty, pair(jnp.asarray(s), ty, bool(state.identity)))
            np.testing.assert_allclose(h, h_ref, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(direction, -h_ref @ g_new, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(h @ ty, s, rtol=1e-9, atol=1e-12)  # H+ (t y) = s
        for _ in range(20):
            state = solver.step(problem, state)
            if bool(state.accepted):
                break
    assert {1.0, 0.3, 0.01} <= seen


def test_yuan_update_takes_bfgs_steps_on_a_quadratic():
    """On a quadratic t = 1 (f is quadratic along every step): the same evaluations and
    solution as the plain update; on Rosenbrock it finds the published minimum."""
    q = tf.quadratic(8, 1e3, seed=4)
    plain = jacopt.minimize(q.fun, jnp.asarray(q.x0))
    yuan = jacopt.minimize(q.fun, jnp.asarray(q.x0), solver=BFGS(update="yuan"))
    assert int(yuan.nfev) == int(plain.nfev)
    np.testing.assert_allclose(yuan.params, plain.params, rtol=1e-8, atol=1e-10)
    p = tf.get("rosenbrock")
    check_solution(jacopt.minimize(p.fun, jnp.asarray(p.x0), solver=BFGS(update="yuan")), p)
    with pytest.raises(ValueError, match="update"):
        BFGS(update="dfp")


def test_start_is_evaluated_by_the_first_iteration():
    # max_steps = 0: only the start is evaluated
    p = tf.get("rosenbrock")
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0), max_steps=0)
    assert int(r.status) == Status.MAX_STEPS and int(r.num_steps) == 0 and int(r.nfev) == 1
    assert float(r.value) == pytest.approx(float(p.fun(jnp.asarray(p.x0))), rel=1e-15)
    np.testing.assert_allclose(r.grad, jax.grad(p.fun)(jnp.asarray(p.x0)), rtol=1e-14)
    # a start that already satisfies gtol stops there
    at = jacopt.minimize(p.fun, jnp.ones(2))
    assert int(at.status) == Status.GTOL and int(at.num_steps) == 0 and int(at.nfev) == 1
    # a non-finite value, or a finite value with an infinite gradient, stops at once and is
    # reported as it is
    nan = jacopt.minimize(lambda x: jnp.sum(jnp.log(x)), jnp.array([-1.0, 1.0]))
    assert int(nan.status) == Status.NONFINITE and int(nan.nfev) == 1
    assert np.isnan(float(nan.value))
    cusp = jacopt.minimize(lambda x: jnp.sum(x**2) + jnp.sqrt(jnp.abs(x[0])),
                           jnp.array([0.0, 1.0]))
    assert int(cusp.status) == Status.NONFINITE and float(cusp.value) == 1.0
    assert np.isinf(float(cusp.grad[0]))


@pytest.mark.parametrize("update", ["bfgs", "yuan"])
def test_bfgs_is_invariant_to_the_scale_of_the_objective(update):
    """With gtol scaled alike, c f takes the same steps for every c > 0: the first step has
    unit length and H is scaled by s^T y / y^T y (SciPy's H0 = I is not invariant); Yuan's
    factor t is a ratio of changes of f, so it keeps that."""
    p = tf.get("wood")

    def scaled(x, c):
        return c * p.fun(x)

    runs = [jacopt.minimize(scaled, jnp.asarray(p.x0), args=(c,), gtol=1e-5 * c,
                            solver=BFGS(update=update))
            for c in (1e-2, 1.0, 1e2)]
    assert len({int(r.nfev) for r in runs}) == 1
    for r in runs:
        assert int(r.status) == Status.GTOL
        np.testing.assert_allclose(r.params, runs[1].params, rtol=1e-6)


@pytest.mark.parametrize("solver", ["bfgs", "lbfgs"])
@pytest.mark.parametrize("x0", [0.0, 3.0])
def test_first_step_moves_x_when_the_gradient_is_tiny(solver, x0):
    """f = 1e-50 (x - 1)^2 with gtol 1e-58: a first trial of length |g| ~ 1e-50 is below the
    resolution of x (or of f), and the search stopped at x0 (PRECISION_LIMIT); SciPy's BFGS
    solves it in 3 iterations. The unit-length first step reaches the minimiser."""
    r = jacopt.minimize(lambda x: 1e-50 * jnp.sum((x - 1.0) ** 2), jnp.array([x0]),
                        solver=solver, gtol=1e-58)
    assert int(r.status) == Status.GTOL, r.message
    np.testing.assert_allclose(r.params, [1.0], atol=1e-12)
    assert int(r.nfev) <= 5


def test_lbfgs_two_loop_recursion_equals_dense_bfgs_with_full_memory():
    """With memory >= the number of pairs and the same H0 = gamma I, the two-loop recursion
    applies exactly the dense BFGS inverse (N&W section 7.2)."""
    rng = np.random.default_rng(0)
    n, pairs = 5, 4
    a = rng.standard_normal((n, n))
    hess = a @ a.T + n * np.eye(n)
    lbfgs = LBFGS(memory=6)
    h_l = lbfgs.init_inverse_hessian(jnp.zeros(n))
    steps = [jnp.asarray(rng.standard_normal(n)) for _ in range(pairs)]
    for k, s in enumerate(steps):
        y = jnp.asarray(hess) @ s
        h_l = lbfgs.update_inverse_hessian(h_l, s, y, pair(s, y, k == 0))
    # dense: start from gamma I with the newest pair's gamma, then the same updates in order
    y_last = hess @ np.asarray(steps[-1])
    gamma = float(np.asarray(steps[-1]) @ y_last / (y_last @ y_last))
    dense = gamma * np.eye(n)
    for s in steps:
        s = np.asarray(s)
        y = hess @ s
        rho = 1 / (s @ y)
        v = np.eye(n) - rho * np.outer(y, s)
        dense = v.T @ dense @ v + rho * np.outer(s, s)
    g = rng.standard_normal(n)
    np.testing.assert_allclose(lbfgs.apply_inverse_hessian(h_l, jnp.asarray(g)), dense @ g,
                               rtol=1e-10)


def test_lbfgs_circular_buffer_keeps_the_newest_pairs():
    lbfgs = LBFGS(memory=2)
    h = lbfgs.init_inverse_hessian(jnp.zeros(2))
    for k in range(1, 4):
        s = jnp.array([float(k), 1.0])
        h = lbfgs.update_inverse_hessian(h, s, 2.0 * s, pair(s, 2.0 * s, k == 1))
    S, _, rho, count = h
    assert int(count) == 3
    # pairs 2 and 3 kept; slot 0 was overwritten by pair 3
    np.testing.assert_array_equal(np.asarray(S), [[3.0, 1.0], [2.0, 1.0]])
    # on f = x^T x (H = 2 I, y = 2 s) the two-loop recursion returns g / 2 exactly
    np.testing.assert_allclose(lbfgs.apply_inverse_hessian(h, jnp.array([1.0, -3.0])),
                               [0.5, -1.5], rtol=1e-14)


def test_exact_trust_region_step_hard_case_and_interior():
    from jacopt.solvers.newton import exact_trust_region_step

    # indefinite H, g orthogonal to the lowest eigenvector: the hard case
    w = jnp.array([-2.0, 1.0, 3.0])
    v = jnp.eye(3)
    g = jnp.array([0.0, 1.0, 3.0])
    p, predicted = exact_trust_region_step(w, v, g, 2.0)
    # lambda = 2: p = -(g_i / (w_i + 2)) on 2 and 3, then along e0 to the boundary
    np.testing.assert_allclose(p[1:], [-1.0 / 3.0, -3.0 / 5.0], rtol=1e-6)
    assert float(jnp.linalg.norm(p)) == pytest.approx(2.0, rel=1e-10)
    model = float(g @ p + 0.5 * p @ (w * p))
    assert float(predicted) == pytest.approx(-model, rel=1e-12)
    # compare with a brute-force minimum of the model on the sphere and inside
    rng = np.random.default_rng(1)
    u = rng.standard_normal((20000, 3))
    radii = 2.0 * rng.uniform(0, 1, (20000, 1)) ** (1 / 3)  # uniform in the ball of radius 2
    u = radii * u / np.linalg.norm(u, axis=1, keepdims=True)
    brute = np.min(u @ np.asarray(g) + 0.5 * np.sum(u * u * np.asarray(w), axis=1))
    assert model <= brute + 1e-9
    # positive definite and a large radius: the Newton step
    w = jnp.array([1.0, 4.0])
    p, _ = exact_trust_region_step(w, jnp.eye(2), jnp.array([1.0, 2.0]), 10.0)
    np.testing.assert_allclose(p, [-1.0, -0.5], rtol=1e-14)
    # a small radius: on the boundary, (H + lambda I) p = -g with lambda >= 0
    q = np.linalg.qr(np.random.default_rng(2).standard_normal((2, 2)))[0]
    h = q @ np.diag([1.0, 4.0]) @ q.T
    g = np.array([1.0, 2.0])
    p, _ = exact_trust_region_step(jnp.array([1.0, 4.0]), jnp.asarray(q), jnp.asarray(g), 0.1)
    p = np.asarray(p)
    assert np.linalg.norm(p) == pytest.approx(0.1, rel=1e-10)
    lam = -(g + h @ p) / p
    assert lam[0] == pytest.approx(lam[1], rel=1e-8) and lam[0] > 0


def test_steihaug_cg_stops_at_the_boundary_and_on_negative_curvature():
    from jacopt.solvers.newton import steihaug_cg

    h = jnp.diag(jnp.array([1.0, 2.0, 5.0]))
    g = jnp.array([1.0, -1.0, 2.0])
    inside = steihaug_cg(lambda v: h @ v, g, 100.0, max_iterations=10, forcing=1e-14)
    np.testing.assert_allclose(inside.step, -g / jnp.diag(h), rtol=1e-10)
    assert not bool(inside.boundary) and int(inside.num_products) <= 3
    small = steihaug_cg(lambda v: h @ v, g, 0.1, max_iterations=10)
    assert bool(small.boundary)
    assert float(jnp.linalg.norm(small.step)) == pytest.approx(0.1, rel=1e-12)
    neg = jnp.diag(jnp.array([-1.0, 2.0, 5.0]))
    out = steihaug_cg(lambda v: neg @ v, jnp.array([1.0, 0.0, 0.0]), 3.0, max_iterations=10)
    np.testing.assert_allclose(out.step, [-3.0, 0.0, 0.0], atol=1e-12)
    assert float(out.predicted_reduction) == pytest.approx(3.0 + 0.5 * 9.0)


def test_history_records_the_run():
    p = tf.get("beale")
    result = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver="bfgs", history=True,
                             max_steps=200)
    h = result.history
    k = int(result.num_steps)
    assert h.value.shape == (201,)
    assert float(h.value[0]) == pytest.approx(float(p.fun(jnp.asarray(p.x0))))
    values = np.asarray(h.value[: k + 1])
    assert np.all(np.diff(values) <= 0)  # the current point never gets worse
    assert np.all(np.isnan(np.asarray(h.value[k + 1 :])))
    assert float(h.value[k]) == float(result.value)
    # rejected trials leave the value unchanged
    rejected = ~np.asarray(h.accepted[1 : k + 1])
    assert np.all(np.diff(values)[rejected] == 0)


def test_max_steps_and_tolerance_overrides():
    p = tf.get("rosenbrock")
    capped = jacopt.minimize(p.fun, jnp.asarray(p.x0), max_steps=5)
    assert int(capped.status) == Status.MAX_STEPS and not bool(capped.success)
    assert int(capped.num_steps) == 5
    by_f = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver="lbfgs", gtol=0.0, ftol=1e-6)
    assert int(by_f.status) == Status.FTOL and float(by_f.value) < 1e-3
    by_x = jacopt.minimize(p.fun, jnp.asarray(p.x0), solver="newton", gtol=0.0, xtol=1e-6)
    assert int(by_x.status) == Status.XTOL
    np.testing.assert_allclose(by_x.params, p.x_star, atol=1e-5)


@pytest.mark.parametrize("tol", [-1, "tight", float("nan")])
def test_a_bad_tol_is_named_tol(tol):
    """tol is SciPy's name for gtol; the error names the argument the user passed."""
    with pytest.raises(ValueError, match=r"^tol must be a non-negative number, got ") as info:
        jacopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2), tol=tol)
    assert "gtol" not in str(info.value)

def test_verbose_prints_rows_and_the_stop_reason(capsys):
    jacopt.minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.zeros(2), verbose=2)
    jax.effects_barrier()
    out = capsys.readouterr().out
    assert "BFGS" in out and "GTOL" in out
    assert len([ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]) >= 2


def test_a_warm_direct_call_does_not_trace_fun_again():
    # the output check runs when the solve compiles; it used to trace fun on every call
    traces = []

    def fun(x, c):
        traces.append(1)  # runs only while JAX traces fun
        return jnp.sum((x - c) ** 2) + jnp.sum(x ** 4)

    c = jnp.array([1.0, -2.0, 0.5])
    first = jacopt.minimize(fun, jnp.zeros(3), args=(c,))
    count = len(traces)
    assert count > 0 and bool(first.success)
    second = jacopt.minimize(fun, jnp.ones(3), args=(2 * c,))
    assert len(traces) == count and bool(second.success)
    np.testing.assert_allclose(second.grad, jax.grad(fun)(second.params, 2 * c), atol=1e-12)
    with pytest.raises(ValueError, match="scalar"):  # the check still runs before any work
        jacopt.minimize(lambda x, c: x - c, jnp.zeros(3), args=(c,))


def test_minimize_inside_jit_with_a_closed_over_start():
    # a closed-over x0 is concrete inside the outer jit: its finiteness check must not trace
    x0, c = jnp.zeros(3), jnp.array([1.0, 2.0, 3.0])
    f = lambda p, c: jnp.sum((p - c) ** 2)  # noqa: E731
    params = jax.jit(lambda: jacopt.minimize(f, x0, args=(c,)).params)()
    np.testing.assert_allclose(params, c, atol=1e-8)


def test_derivatives_through_a_closure_over_the_differentiated_variable():
    # fun closes over c instead of taking it in args: c is hoisted into args, so the implicit
    # derivative flows to it (it used to fail with "No constant handler for ... Tracer")
    def solve(c):
        fun = lambda x: jnp.sum((x - c) ** 2) + 0.1 * jnp.sum(x ** 4)  # noqa: E731
        return jacopt.minimize(fun, jnp.zeros(3), gtol=1e-12).params

    c = jnp.array([0.5, -1.0, 2.0])
    jac = jax.jacobian(solve)(c)
    eps = 1e-6
    fd = np.stack([(solve(c.at[i].add(eps)) - solve(c.at[i].add(-eps))) / (2 * eps)
                   for i in range(3)], axis=1)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=2e-6)  # fd: solver tolerance / eps
    # the same derivative as passing c through args
    via_args = jax.jacobian(lambda c: jacopt.minimize(
        lambda x, c: jnp.sum((x - c) ** 2) + 0.1 * jnp.sum(x ** 4), jnp.zeros(3), args=(c,),
        gtol=1e-12).params)(c)
    np.testing.assert_allclose(jac, via_args, rtol=1e-10, atol=1e-12)


_SECOND_PROCESS = r"""
import json, jax, jax.numpy as jnp, numpy as np
from jax import monitoring
import jacopt
compiles = []
monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(event)
    if event.endswith("backend_compile_duration") else None)
rosen = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
r = jacopt.minimize(rosen, np.array([-1.2, 1.0]))
print(json.dumps({"compiles": len(compiles), "x": np.asarray(r.x).tolist(),
                  "dtype": str(r.x.dtype)}))
"""


def test_a_second_process_minimizing_from_numpy_compiles_nothing(tmp_path):
    # x64 off (JAX's default), NumPy float64 x0 as a SciPy script passes it: the solve comes
    # from the cache, and x0 reaches it without an eager conversion, which no cache serves
    env = {**os.environ, "JACOPT_CACHE": "1", "JACOPT_CACHE_DIR": str(tmp_path)}
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _SECOND_PROCESS], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["compiles"] >= 1 and second["compiles"] == 0
    assert second["x"] == first["x"] and second["dtype"] == "float32"
    np.testing.assert_allclose(second["x"], [1.0, 1.0], atol=1e-3)  # Rosenbrock's minimiser
