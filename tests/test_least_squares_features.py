"""least_squares features checked against independent references: SciPy for robust losses and
bounds, finite differences for implicit derivatives, closed forms and published optima."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt
from jacopt import Status
from jacopt.problems import test_functions as tf
from jacopt.solvers import LevenbergMarquardt

from _ls_helpers import decay, decay_np


@pytest.fixture(scope="module")
def outlier_data():
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, 4.0, 40)
    y = 3.0 * np.exp(-1.3 * t) + 0.5 + 0.02 * rng.normal(size=t.size)
    y[[3, 17, 30]] += np.array([2.0, -1.5, 3.0])  # outliers
    return t, y


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_robust_losses_match_scipy(outlier_data, loss):
    # Robust losses are non-convex: both solvers start from the plain least-squares fit (as
    # one does in practice), where they must agree on the nearby robust minimum.
    t, y = outlier_data
    x0 = scipy.optimize.least_squares(decay_np, np.ones(3), args=(t, y), method="lm").x
    ref = scipy.optimize.least_squares(decay_np, x0, args=(t, y), loss=loss, f_scale=0.1,
                                       method="trf", ftol=1e-15, xtol=1e-15, gtol=1e-15)
    res = jacopt.least_squares(decay, jnp.asarray(x0), args=(jnp.asarray(t), jnp.asarray(y)),
                               loss=loss, f_scale=0.1)
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(res.cost), ref.cost, rtol=1e-9)
    # the gradient reported is the robust cost's, and it vanishes at the solution
    g = jax.grad(lambda b: jacopt.losses.get_loss(loss).cost(
        decay(b, jnp.asarray(t), jnp.asarray(y)), 0.1))(res.params)
    np.testing.assert_allclose(res.grad, g, rtol=1e-6, atol=1e-12)
    assert float(res.optimality) < 1e-6  # Huber is only once differentiable at its kink


def test_robust_loss_resists_outliers(outlier_data):
    t, y = outlier_data
    args = (jnp.asarray(t), jnp.asarray(y))
    plain = jacopt.least_squares(decay, jnp.ones(3), args=args)
    robust = jacopt.least_squares(decay, jnp.ones(3), args=args, loss="soft_l1", f_scale=0.05)
    truth = np.array([3.0, 1.3, 0.5])
    assert np.max(np.abs(robust.params - truth)) < 0.5 * np.max(np.abs(plain.params - truth))


def test_bounds_match_scipy_and_report_projected_optimality(outlier_data):
    t, y = outlier_data
    lower, upper = np.array([0.0, 1.5, -np.inf]), np.array([10.0, 5.0, 0.45])
    x0 = np.array([1.0, 2.0, 0.0])
    ref = scipy.optimize.least_squares(decay_np, x0, args=(t, y), bounds=(lower, upper),
                                       method="trf", ftol=1e-15, xtol=1e-15, gtol=1e-15)
    res = jacopt.least_squares(decay, jnp.asarray(x0), args=(jnp.asarray(t), jnp.asarray(y)),
                               bounds=(lower, upper))
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-7, atol=1e-9)
    # b2 and b3 sit on their bounds, with gradients pointing out of the box
    assert float(res.params[1]) == 1.5 and float(res.params[2]) == 0.45
    assert float(res.grad[1]) > 0 and float(res.grad[2]) < 0
    assert float(res.optimality) < 1e-8


def test_bounds_with_gauss_newton_and_scalar_and_pytree_bounds():
    def fun(p):
        return jnp.concatenate([p["a"] - 2.0, 3.0 * (p["b"] + 1.0)])

    x0 = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    bounds = ({"a": 0.0, "b": -0.5}, {"a": jnp.array([1.0, 5.0]), "b": 1.0})
    for solver in ("lm", "gn"):
        res = jacopt.least_squares(fun, x0, bounds=bounds, solver=solver)
        np.testing.assert_allclose(res.params["a"], [1.0, 2.0], atol=1e-10)
        np.testing.assert_allclose(res.params["b"], [-0.5], atol=1e-12)
    res = jacopt.least_squares(fun, x0, bounds=(-0.25, 1.5))
    np.testing.assert_allclose(res.params["a"], [1.5, 1.5])
    np.testing.assert_allclose(res.params["b"], [-0.25])


def test_user_jacobian_and_pytrees():
    def fun(p, t):
        return {"fit": p["amp"] * jnp.exp(-p["rate"] * t) - 2.0 * jnp.exp(-0.7 * t),
                "prior": (p["amp"] - 2.0) * 1e-3}

    def jac(p, t):
        e = jnp.exp(-p["rate"] * t)
        top = jnp.stack([e, -p["amp"] * t * e], axis=1)  # columns: amp, rate (sorted keys)
        return jnp.concatenate([top, jnp.array([[1e-3, 0.0]])])

    t = jnp.linspace(0, 3, 20)
    x0 = {"amp": jnp.array(1.0), "rate": jnp.array(0.2)}
    auto = jacopt.least_squares(fun, x0, args=(t,))
    given = jacopt.least_squares(fun, x0, args=(t,), jac=jac)
    for res in (auto, given):
        np.testing.assert_allclose(res.params["amp"], 2.0, rtol=1e-12)
        np.testing.assert_allclose(res.params["rate"], 0.7, rtol=1e-12)
        assert set(res.residuals) == {"fit", "prior"} and res.residuals["fit"].shape == (20,)
        assert res.jac.shape == (21, 2)
    np.testing.assert_allclose(auto.jac, given.jac, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["rosenbrock", "freudenstein_roth", "powell_badly_scaled",
                                  "beale", "helical_valley", "bard", "box_3d", "wood"])
def test_classic_problems_reach_published_optima(name):
    p = tf.get(name)
    res = jacopt.least_squares(lambda x: p.residual(x), jnp.asarray(p.x0))
    assert bool(res.success), res.message
    # fun = sum r^2 (MGH) and cost = 0.5 sum r^2
    assert 2 * float(res.cost) <= p.f_star + 1e-10 * max(1.0, p.f_star) or any(
        abs(2 * float(res.cost) - f) < 1e-8 * max(1, abs(f)) for _, f in p.local_minima)
    if p.f_star == 0.0 and p.x_star is not None and not p.local_minima:
        np.testing.assert_allclose(res.params, p.x_star, rtol=1e-6, atol=1e-8)


def test_geodesic_acceleration_converges_to_the_same_point():
    p = tf.get("rosenbrock")
    plain = jacopt.least_squares(p.residual, jnp.asarray(p.x0))
    geo = jacopt.least_squares(p.residual, jnp.asarray(p.x0),
                               solver=LevenbergMarquardt(geodesic=True))
    np.testing.assert_allclose(geo.params, [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(plain.params, [1.0, 1.0], rtol=1e-12)
    assert int(geo.nfev) > int(geo.num_steps)  # the extra second-derivative evaluation


def test_implicit_gradient_matches_finite_differences(outlier_data):
    t, y = outlier_data
    t, y = jnp.asarray(t), jnp.asarray(y)

    def fitted_sum(y, loss):
        res = jacopt.least_squares(decay, jnp.array([3.0, 1.3, 0.5]), args=(t, y), loss=loss,
                                   f_scale=0.1)
        return jnp.sum(res.params * jnp.array([1.0, -2.0, 3.0]))

    direction = jnp.asarray(np.random.default_rng(3).normal(size=y.size))
    for loss in ("linear", "cauchy"):
        grad = jax.grad(fitted_sum)(y, loss)
        h = 1e-6
        fd = (fitted_sum(y + h * direction, loss) - fitted_sum(y - h * direction, loss)) / (2 * h)
        np.testing.assert_allclose(jnp.dot(grad, direction), fd, rtol=1e-5)


def test_implicit_gradient_through_a_residual_closing_over_the_data(outlier_data):
    # the residual closes over y (the differentiated variable) instead of taking it in args,
    # with and without a user jac: y is hoisted into args and gets the same derivative
    t, y = map(jnp.asarray, outlier_data)
    weights = jnp.array([1.0, -2.0, 3.0])
    x0 = jnp.array([3.0, 1.3, 0.5])

    def via_args(y):
        return jnp.sum(jacopt.least_squares(decay, x0, args=(t, y)).params * weights)

    def closing(y, with_jac):
        jac = (lambda b, t: jax.jacfwd(decay)(b, t, y)) if with_jac else None
        res = jacopt.least_squares(lambda b, t: decay(b, t, y), x0, args=(t,), jac=jac)
        return jnp.sum(res.params * weights)

    expected = jax.grad(via_args)(y)
    for with_jac in (False, True):
        np.testing.assert_allclose(jax.grad(closing)(y, with_jac), expected, rtol=1e-9,
                                   atol=1e-12)


def test_implicit_gradient_with_an_active_bound_is_zero_for_the_fixed_component(outlier_data):
    t, y = map(jnp.asarray, outlier_data)

    def fitted(y):
        return jacopt.least_squares(decay, jnp.array([3.0, 2.0, 0.4]), args=(t, y),
                                    bounds=([-np.inf, 1.6, -np.inf], np.inf)).params

    assert float(fitted(y)[1]) == 1.6  # the unconstrained optimum has b2 ~ 1.51

    J = jax.jacrev(fitted)(y)
    assert np.all(np.asarray(J[1]) == 0.0)  # b2 fixed at its bound
    h = 1e-6
    d = jnp.zeros_like(y).at[5].set(1.0)
    fd = (fitted(y + h * d) - fitted(y - h * d)) / (2 * h)
    np.testing.assert_allclose(J[:, 5], fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("solver", ["lm", "gn"])
def test_implicit_gradient_with_respect_to_an_active_bound(outlier_data, solver):
    """A traced bound that is active at the solution moves its component one for one, and the
    free components through the fit (they were silently zero, found by a review): forward and
    reverse mode against central differences, together with a derivative in the data."""
    t, y = map(jnp.asarray, outlier_data)

    def fitted(lower_b2, y):
        lower = jnp.array([-jnp.inf, 1.0, -jnp.inf]).at[1].set(lower_b2)
        return jacopt.least_squares(decay, jnp.array([3.0, 2.0, 0.4]), args=(t, y),
                                    solver=solver, bounds=(lower, jnp.inf), gtol=1e-14).params

    assert float(fitted(1.6, y)[1]) == 1.6  # active: the unconstrained optimum has b2 ~ 1.51
    h = 1e-6
    fd = (fitted(1.6 + h, y) - fitted(1.6 - h, y)) / (2 * h)
    assert (float(fd[1]) == pytest.approx(1.0)
            and float(np.max(np.abs(np.asarray(fd)[[0, 2]]))) > 1e-3)
    np.testing.assert_allclose(jax.jacfwd(fitted)(1.6, y), fd, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(jax.jacrev(fitted)(1.6, y), fd, rtol=1e-5, atol=1e-8)
    J_y = jax.jacrev(fitted, argnums=1)(1.6, y)
    assert np.all(np.asarray(J_y[1]) == 0.0)  # the data do not move the pinned component


def test_vmap_batch_with_a_nan_member_keeps_the_others():
    def fun(b, y):
        return jnp.sqrt(b) - y  # NaN for b < 0

    ys = jnp.array([2.0, jnp.nan, 3.0, 0.5])
    starts = jnp.array([[1.0], [1.0], [-1.0], [4.0]])
    solve = jax.jit(jax.vmap(lambda x0, y: jacopt.least_squares(fun, x0, args=(y,))))
    res = solve(starts, ys)
    status = [Status(int(s)) for s in res.status]
    assert status[1] == Status.NONFINITE and not bool(res.success[1])
    np.testing.assert_allclose(res.params[1], [1.0])  # the start, the best finite point
    assert status[2] == Status.NONFINITE  # a non-finite start
    for i, target in ((0, 4.0), (3, 0.25)):
        assert bool(res.success[i]), status[i]
        np.testing.assert_allclose(res.params[i], [target], rtol=1e-12)


def test_trial_into_a_nan_region_is_rejected_and_recovers():
    def fun(b):
        return jnp.array([jnp.log(b[0]) - 1.0, 10.0 * (b[0] - 2.0)])

    res = jacopt.least_squares(fun, jnp.array([0.05]))
    assert bool(res.success), res.message
    assert np.isfinite(float(res.cost))
    direct = scipy.optimize.minimize_scalar(
        lambda b: 0.5 * ((np.log(b) - 1) ** 2 + 100 * (b - 2) ** 2), bounds=(1, 3),
        method="bounded", options={"xatol": 1e-12})
    np.testing.assert_allclose(res.params[0], direct.x, rtol=1e-7)


def test_history_and_verbose(capsys):
    p = tf.get("rosenbrock")
    res = jacopt.least_squares(p.residual, jnp.asarray(p.x0), history=True, verbose=2)
    jax.effects_barrier()
    k = int(res.num_steps)
    h = res.history
    assert h.value.shape[0] == k + 1 or h.value.shape[0] > k
    np.testing.assert_allclose(h.value[0], 0.5 * float(jnp.sum(p.residual(jnp.asarray(p.x0)) ** 2)))
    np.testing.assert_allclose(h.value[k], res.cost)
    assert int(np.sum(np.asarray(h.accepted[1:k + 1]))) == int(res.num_accepted)
    # accepted steps never increase the cost by more than rounding
    accepted_costs = np.asarray(h.value[: k + 1])[np.r_[True, np.asarray(h.accepted[1:k + 1])]]
    assert np.all(np.diff(accepted_costs) <= 1e-12 * accepted_costs[:-1])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert len(rows) == k + 1 and "Stopped after" in out
    # a title line, as minimize prints: solver, loss and sizes
    assert "jacopt.least_squares (LevenbergMarquardt, loss linear, m = 2, n = 2)" in out


def test_float32_runs_in_float32():
    def fun(b, t, y):
        return b[0] * jnp.exp(-b[1] * t) - y

    t = jnp.linspace(0, 2, 15, dtype=jnp.float32)
    y = 2.0 * jnp.exp(-0.8 * t)
    res = jacopt.least_squares(fun, jnp.array([1.0, 0.1], jnp.float32), args=(t, y))
    assert res.params.dtype == jnp.float32 and res.jac.dtype == jnp.float32
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.params, [2.0, 0.8], rtol=1e-5)


def test_results_are_consistent_and_cached():
    def fun(b, t, y):
        return b[0] * (1 - jnp.exp(-b[1] * t)) - y

    t = jnp.linspace(1, 10, 12)
    y = 5 * (1 - jnp.exp(-0.3 * t))
    res = jacopt.least_squares(fun, jnp.array([1.0, 1.0]), args=(t, y))
    r = fun(res.params, t, y)
    np.testing.assert_allclose(res.residuals, r, atol=1e-14)
    np.testing.assert_allclose(res.cost, 0.5 * jnp.sum(r * r), atol=1e-25)
    np.testing.assert_allclose(res.jac, jax.jacfwd(fun)(res.params, t, y), rtol=1e-12)
    np.testing.assert_allclose(res.grad, res.jac.T @ r, atol=1e-14)
    assert int(res.num_accepted) + int(res.num_rejected) == int(res.num_steps)
    assert int(res.nfev) == int(res.num_steps) + 1 and int(res.njev) == int(res.nfev)
    assert isinstance(res.message, str) and res.status_name in ("GTOL", "XTOL", "FTOL",
                                                                "PRECISION_LIMIT")
    # a second call with new data reuses the compiled solve
    from jacopt.least_squares import _solve
    before = _solve.cache_size()
    assert before > 0
    jacopt.least_squares(fun, jnp.array([2.0, 0.5]), args=(t, 2 * y))
    assert _solve.cache_size() == before


@pytest.mark.parametrize("solver", ["lm", "dogleg", "lm-matrix-free", "gn"])
def test_a_nan_wall_is_reported_whatever_the_last_trial(solver):
    """sqrt(p0) is NaN for p0 < 0, and the fit's minimum lies on that edge: every trial that
    moves p0 past 0 is NaN, so the steps collapse there. The status must say so (NONFINITE, not
    a success) even when the last, tiny trial happens to be finite: lm-matrix-free reported
    XTOL, success, with p1 stuck at 0.63 where the fit wants 2 (found by a review)."""
    def res(p):
        return jnp.array([jnp.sqrt(p[0]) + 1.0, p[1] - 2.0])

    x0 = jnp.array([1.0, 0.0])
    result = jacopt.least_squares(res, x0, solver=solver)
    assert result.status_name == "NONFINITE" and not bool(result.success)
    assert np.all(np.isfinite(np.asarray(result.params)))
    assert float(result.cost) < 0.5 * float(jnp.sum(res(x0) ** 2))  # the best point, kept


def test_implicit_gradient_picks_the_bound_the_gradient_presses_on_when_lower_equals_upper():
    """lower == upper == 1.2 for a slope that wants 2: the component sits on the upper bound
    (the gradient pushes up), so d params / d upper is (1, -1/2) here, not 0 (found by a
    review; one-sided differences, raising the upper bound)."""
    t = jnp.linspace(0.0, 1.0, 10)
    y = 2.0 * t + 1.0

    def fitted(u):
        return jacopt.least_squares(lambda p, t, y: p[0] * t + p[1] - y, jnp.array([1.2, 0.5]),
                                    args=(t, y), bounds=(jnp.array([1.2, -jnp.inf]),
                                                         jnp.array([u, jnp.inf]))).params

    h = 1e-6
    one_sided = (fitted(1.2 + h) - fitted(1.2)) / h
    np.testing.assert_allclose(one_sided, [1.0, -0.5], atol=1e-5)
    np.testing.assert_allclose(jax.jacfwd(fitted)(1.2), one_sided, atol=1e-5)
    np.testing.assert_allclose(jax.jacrev(fitted)(1.2), one_sided, atol=1e-5)
