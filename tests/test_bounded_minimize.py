"""minimize(bounds=...) with L-BFGS-B: the solution and active set against SciPy's L-BFGS-B and
against exact minima, the Cauchy point and subspace step against brute force, the bound forms
SciPy users write, and everything minimize does (jit, vmap, pytrees, float32, implicit
derivatives against finite differences, history, verbose)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jacopt
from jacopt import Status
from jacopt.problems import bounded as bp
from jacopt.solvers.lbfgsb import cauchy_point, compact_form, subspace_point


def scipy_lbfgsb(fun, x0, lower, upper, **options):
    vg = jax.jit(jax.value_and_grad(fun))

    def fg(x):
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g, np.float64)

    opts = dict(gtol=1e-8, ftol=1e-15, maxiter=2000)
    opts.update(options)
    return so.minimize(fg, np.asarray(x0, np.float64), jac=True, method="L-BFGS-B",
                       bounds=so.Bounds(lower, upper), options=opts)


def active_set(x, lower, upper, tol=1e-9):
    x = np.asarray(x)
    return np.where(x <= lower + tol, -1, np.where(x >= upper - tol, 1, 0))


@pytest.mark.parametrize("solver", ["lbfgsb", "newton"])
@pytest.mark.parametrize("name", ["rosenbrock_bounded", "extended_rosenbrock_bounded_10",
                                  "box_quadratic_n20_cond1e2", "box_quadratic_n100_cond1e2"])
def test_exact_minimiser_and_active_set_as_scipy(name, solver):
    p = bp.get(name)
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0), bounds=(p.lower, p.upper), gtol=1e-6,
                        solver=solver)
    assert int(r.status) == Status.GTOL, r.message
    np.testing.assert_allclose(r.params, p.x_star, atol=1e-5)
    assert float(r.value) == pytest.approx(p.f_star, rel=1e-10, abs=1e-10)
    np.testing.assert_array_equal(active_set(r.params, p.lower, p.upper), p.active)
    ref = scipy_lbfgsb(p.fun, p.x0, p.lower, p.upper)
    np.testing.assert_array_equal(active_set(ref.x, p.lower, p.upper), p.active)
    np.testing.assert_allclose(r.params, ref.x, atol=1e-5)


@pytest.mark.parametrize("solver", ["lbfgsb", "newton"])
@pytest.mark.parametrize("name", ["mgh_beale", "mgh_helical_valley", "mgh_gaussian", "mgh_wood",
                                  "mgh_box_3d", "mgh_brown_dennis"])
def test_gay_bounded_mgh_problems_reach_the_published_minimum_as_scipy(name, solver):
    """Gay's bounded MGH problems (minima from Neumaier's list, as in Ceres): the same value as
    SciPy's L-BFGS-B, within the published minimum's four digits, on the same active set."""
    p = bp.get(name)
    gtol = 1e-8 if name == "mgh_gaussian" else 1e-5  # its gradient is ~1e-6 at x0
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0), bounds=(p.lower, p.upper), solver=solver,
                        gtol=gtol)
    assert bp.solved(p, r.value), (float(r.value), p.f_star)
    ref = scipy_lbfgsb(p.fun, p.x0, p.lower, p.upper, gtol=1e-5)
    assert bp.solved(p, ref.fun)
    np.testing.assert_array_equal(active_set(r.params, p.lower, p.upper, 1e-6),
                                  active_set(ref.x, p.lower, p.upper, 1e-6))
    x = np.asarray(r.params)
    assert np.all(x >= p.lower) and np.all(x <= p.upper)


def test_cauchy_point_and_subspace_step_match_brute_force():
    """The vectorised generalised Cauchy point is the first local minimiser of the model along
    the projected gradient path (dense search), and the subspace step minimises the model over
    the free variables exactly (dense solve), with B from the BFGS recursion."""
    rng = np.random.default_rng(1)
    n, m, theta = 8, 4, 1.7
    for count in (0, 3, 4):
        S = rng.standard_normal((m, n))
        a = rng.standard_normal((n, n))
        Y = S @ (a @ a.T + np.eye(n))
        W, M = compact_form(jnp.asarray(S), jnp.asarray(Y), count, theta)
        B = theta * np.eye(n)
        for i in range(m - count, m):
            s, y = S[i], Y[i]
            Bs = B @ s
            B = B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)
        np.testing.assert_allclose(theta * np.eye(n) - np.asarray(W @ M @ W.T), B, atol=1e-12)
        x = rng.uniform(-1, 1, n)
        g = 3 * rng.standard_normal(n)
        lo, hi = -np.ones(n), np.ones(n)
        lo[0] = x[0]  # on a bound
        x_c, c, free = cauchy_point(*map(jnp.asarray, (x, g, lo, hi)), theta, W, M)
        t = np.linspace(0, 5, 400001)
        z = np.clip(x - t[:, None] * g, lo, hi) - x
        model = z @ g + 0.5 * np.einsum("ij,jk,ik->i", z, B, z)
        k = int(np.argmax(np.diff(model) > 0))
        np.testing.assert_allclose(x_c, x + z[k], atol=5e-5)
        np.testing.assert_allclose(c, np.asarray(W).T @ (np.asarray(x_c) - x), atol=1e-12)
        x_bar = subspace_point(*map(jnp.asarray, (x, g, lo, hi)), theta, W, M, x_c, c, free)
        idx = np.nonzero(np.asarray(free))[0]
        r = g + B @ (np.asarray(x_c) - x)
        du = np.zeros(n)
        du[idx] = -np.linalg.solve(B[np.ix_(idx, idx)], r[idx])
        expected = np.clip(np.asarray(x_c) + du, lo, hi)
        assert g @ (expected - x) < 0  # the projected step is a descent direction here
        np.testing.assert_allclose(x_bar, expected, atol=1e-10)


def test_newton_with_bounds_solves_powell_badly_scaled_where_lbfgsb_stalls():
    """Gay's bounded Powell badly scaled problem: exact Hessians reach the published minimum
    (1.5126e-10), as the curvature-starved L-BFGS-B (and SciPy's) does not; the vmap'ed solve
    gives each member its own status."""
    p = bp.get("mgh_powell_badly_scaled")
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0), bounds=(p.lower, p.upper), solver="newton")
    assert bp.solved(p, r.value) and int(r.status) == Status.GTOL
    x = np.asarray(r.params)
    assert np.all(x >= p.lower) and np.all(x <= p.upper)

    def solve(x0):
        return jacopt.minimize(p.fun, x0, bounds=(p.lower, p.upper), solver="newton",
                               max_steps=10).status

    status = jax.vmap(solve)(jnp.array([[0.0, 1.0], list(np.asarray(r.params))]))
    assert [int(s) for s in status] == [Status.MAX_STEPS, Status.GTOL]


def quad(x):
    return jnp.sum((x - jnp.array([2.0, -3.0, 0.5])) ** 2) + 0.1 * x[0] * x[1]


@pytest.mark.parametrize("bounds", [
    ([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]),  # (lower, upper) as lists
    (np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])),
    (-1.0, 1.0),
    [(-1, 1), (-1, 1), (-1.0, 1.0)],
    so.Bounds(-1.0, 1.0),
    so.Bounds([-1.0] * 3, [1.0] * 3),
])
def test_bound_forms_agree(bounds):
    r = jacopt.minimize(quad, jnp.zeros(3), bounds=bounds)
    ref = scipy_lbfgsb(quad, np.zeros(3), -np.ones(3), np.ones(3))
    np.testing.assert_allclose(r.params, ref.x, atol=1e-6)
    assert np.asarray(r.params)[0] == 1.0 and np.asarray(r.params)[1] == -1.0


def test_none_means_unbounded_and_x0_outside_is_clipped_as_scipy():
    bounds = [(None, 1.0), (0.0, None), (None, None)]
    x0 = np.array([5.0, -4.0, 0.0])  # outside in its first two components
    r = jacopt.minimize(quad, jnp.asarray(x0), bounds=bounds)
    ref = so.minimize(lambda x: float(quad(jnp.asarray(x))), x0,
                      jac=lambda x: np.asarray(jax.grad(quad)(jnp.asarray(x))),
                      method="L-BFGS-B", bounds=bounds, options=dict(gtol=1e-8))
    np.testing.assert_allclose(r.params, ref.x, atol=1e-6)
    assert np.asarray(r.params)[1] == 0.0  # held on its lower bound
    assert bool(r.success)


def test_default_solver_with_bounds_is_lbfgsb_and_names():
    assert jacopt.minimize(quad, jnp.zeros(3), bounds=(0, 1)).num_steps > 0
    for name in ("lbfgsb", "l-bfgs-b"):
        r = jacopt.minimize(quad, jnp.zeros(3), bounds=(0, 1), solver=name)
        np.testing.assert_allclose(r.params, [1.0, 0.0, 0.5], atol=1e-6)


@pytest.mark.parametrize("solver", ["bfgs", "lbfgs", "newton-cg"])
def test_other_solvers_refuse_bounds_naming_lbfgsb(solver):
    with pytest.raises(ValueError, match="lbfgsb"):
        jacopt.minimize(quad, jnp.zeros(3), bounds=(0, 1), solver=solver)


def test_infinite_bounds_are_no_bounds():
    r = jacopt.minimize(quad, jnp.zeros(3), bounds=(-np.inf, np.inf), solver="bfgs")
    assert bool(r.success)


@pytest.mark.parametrize("bounds, match", [
    ((1.0, 0.0), "lower > upper at flat index 0"),
    (([0.0, 2.0, 0.0], 1.0), "lower > upper at flat index 1"),
    ((np.zeros(2), 1.0), r"bounds\[0\] \(lower\) has a leaf of shape \(2,\)"),
    ((0.0, np.nan), "NaN"),
    ("box", "bounds must be"),
    ([(0, 1), (0, 1)], "2 .min, max. pairs for the 3 elements of x0"),
])
def test_bad_bounds_are_refused_naming_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        jacopt.minimize(quad, jnp.zeros(3), bounds=bounds)


def test_pytree_x0_and_bounds():
    def fun(p):
        return jnp.sum((p["w"] - 3.0) ** 2) + (p["b"] + 2.0) ** 2

    x0 = {"w": jnp.zeros((2, 2)), "b": jnp.asarray(0.0)}
    r = jacopt.minimize(fun, x0, bounds=({"w": -1.0, "b": -1.0},
                                         {"w": jnp.array([[1.0, 2.0], [4.0, 5.0]]), "b": 1.0}))
    np.testing.assert_allclose(r.params["w"], [[1.0, 2.0], [3.0, 3.0]], atol=1e-6)
    assert float(r.params["b"]) == -1.0
    assert r.params["w"].shape == (2, 2)


def test_jit_and_vmap_with_per_member_status_and_bounds():
    def solve(x0, upper):
        r = jacopt.minimize(quad, x0, bounds=(-10.0, upper), max_steps=50)
        return r.params, r.status, r.num_steps

    x0s = jnp.array([[0.0, 0.0, 0.0], [1.0, -3.0, 0.5]])
    uppers = jnp.array([[1.0, 1.0, 1.0], [1.0, 10.0, 10.0]])
    params, status, steps = jax.jit(jax.vmap(solve))(x0s, uppers)
    for i in range(2):
        ref = scipy_lbfgsb(quad, np.asarray(x0s[i]), -10 * np.ones(3), np.asarray(uppers[i]))
        np.testing.assert_allclose(params[i], ref.x, atol=1e-6)
        alone = jacopt.minimize(quad, x0s[i], bounds=(-10.0, uppers[i]), max_steps=50)
        assert int(steps[i]) == int(alone.num_steps)
    assert np.all(np.asarray(status) == Status.GTOL)
    assert int(steps[0]) != int(steps[1])


def test_vmap_member_that_runs_out_of_steps_keeps_its_own_status():
    p = bp.get("rosenbrock_bounded")

    def solve(x0):
        r = jacopt.minimize(p.fun, x0, bounds=(p.lower, p.upper), max_steps=8)
        return r.status

    status = jax.vmap(solve)(jnp.array([[0.5, 0.25], [-1.2, 1.0]]))
    assert [int(s) for s in status] == [Status.GTOL, Status.MAX_STEPS]


def test_float32():
    """float32 end to end: on the quadratic (f near -279) the gradient can reach only about
    sqrt(eps32 |f| lambda), so the run may end with PRECISION_LIMIT, at the minimiser as far as
    float32 resolves it; Rosenbrock (f* = 0.25) reaches gtol = 1e-2."""
    p = bp.get("box_quadratic_n20_cond1e2")
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0, jnp.float32),
                        bounds=(p.lower.astype(np.float32), p.upper.astype(np.float32)))
    assert r.params.dtype == jnp.float32
    assert int(r.status) in (Status.GTOL, Status.PRECISION_LIMIT), r.message
    np.testing.assert_allclose(r.params, p.x_star, atol=2e-3)
    np.testing.assert_array_equal(active_set(r.params, p.lower, p.upper, 1e-6), p.active)
    p = bp.get("rosenbrock_bounded")
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0, jnp.float32),
                        bounds=(p.lower.astype(np.float32), p.upper.astype(np.float32)),
                        gtol=1e-2)
    assert bool(r.success), r.message
    np.testing.assert_allclose(r.params, p.x_star, atol=1e-3)


def coupled(x, a):
    """Strictly convex; at a = (0.3, 2, -1.5) with x in [0, 1]^3 the first component is free,
    the second is held on its upper bound and the third on its lower bound."""
    return jnp.sum((x - a) ** 2) + 0.2 * x[0] * x[1] + 0.1 * x[0] * x[2] * a[0]


@pytest.mark.parametrize("solver", ["lbfgsb", "newton"])
def test_implicit_derivatives_pin_active_bounds_against_finite_differences(solver):
    a0 = jnp.array([0.3, 2.0, -1.5])
    weights = jnp.array([1.0, 2.0, 3.0])

    def solution(a, upper=1.0):
        return jacopt.minimize(coupled, jnp.full(3, 0.5), args=(a,), bounds=(0.0, upper),
                               gtol=1e-12, solver=solver).params

    x = solution(a0)
    np.testing.assert_array_equal(active_set(x, 0.0, 1.0), [0, 1, -1])
    grad = jax.grad(lambda a: jnp.sum(weights * solution(a)))(a0)
    h = 1e-5
    fd = np.array([(float(jnp.sum(weights * solution(a0.at[i].add(h))))
                    - float(jnp.sum(weights * solution(a0.at[i].add(-h))))) / (2 * h)
                   for i in range(3)])
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    # a traced upper bound: the pinned component moves with it, the free one through coupling
    d_upper = jax.grad(lambda u: jnp.sum(weights * solution(a0, u)))(1.0)
    fd_upper = (float(jnp.sum(weights * solution(a0, 1.0 + h)))
                - float(jnp.sum(weights * solution(a0, 1.0 - h)))) / (2 * h)
    assert float(d_upper) == pytest.approx(fd_upper, abs=1e-6)


@pytest.mark.parametrize("solver", ["lbfgsb", "newton"])
def test_unbounded_below_does_not_report_convergence(solver):
    """f = sum(x) with the middle variable unbounded below: the projected gradient there is
    -1 at every x (it was computed as P(x - g) - x, which is 0 once |x| > 2 / eps), so no run
    may end with GTOL."""
    r = jacopt.minimize(jnp.sum, jnp.full(3, 0.5), bounds=[(0, 1), (None, 2), (0, 1)],
                        solver=solver, max_steps=200)
    assert int(r.status) != Status.GTOL and not bool(r.success)
    assert float(r.params[1]) < -1e6


def test_history_and_verbose_report_the_projected_gradient(capsys):
    p = bp.get("rosenbrock_bounded")
    r = jacopt.minimize(p.fun, jnp.asarray(p.x0), bounds=(p.lower, p.upper), history=True,
                        verbose=2)
    out = capsys.readouterr().out
    assert "LBFGSB" in out and "GTOL" in out
    n = int(r.num_steps)
    x = np.asarray(r.params)
    g = np.asarray(jax.grad(p.fun)(r.params))
    projected = np.clip(x - g, p.lower, p.upper) - x
    assert float(r.history.grad_norm[n]) == pytest.approx(np.max(np.abs(projected)), rel=1e-6)
    assert float(r.history.grad_norm[n]) <= 1e-5 < np.max(np.abs(g))  # the raw one is not
    np.testing.assert_allclose(r.grad, g, rtol=1e-8)
    assert int(r.nfev) == n + 1


def test_bounded_benchmark_records_match_direct_solves():
    """The benchmark's rows (one problem) report what the solvers return when called
    directly, and name why optax is left out."""
    from jacopt.benchmarks import bounded as bench

    p = bp.get("mgh_beale")
    records = {}
    for method, thunk in bench.methods_for(p, repeats=1):
        records[method] = thunk if isinstance(thunk, str) else thunk()
    direct = jacopt.minimize(p.fun, jnp.asarray(p.x0), bounds=(p.lower, p.upper))
    assert records["jacopt-lbfgsb"]["nfev"] == int(direct.nfev)
    assert records["jacopt-lbfgsb"]["final_loss"] == pytest.approx(float(direct.value), abs=1e-20)
    ref = scipy_lbfgsb(p.fun, p.x0, p.lower, p.upper, gtol=1e-5)
    assert records["scipy-lbfgsb"]["nfev"] == ref.nfev
    assert records["jacopt-lbfgsb"]["solved"] and records["scipy-lbfgsb"]["solved"]
    assert "no bounds" in records["optax-lbfgs"]
    table = bench.format_tables([r for r in records.values() if isinstance(r, dict)])
    assert "jacopt-lbfgsb" in table and "median" in table
