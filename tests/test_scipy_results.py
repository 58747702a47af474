"""Results read like SciPy's OptimizeResult (issue 15): ``scipy_status`` gives SciPy's number
for the same stop (checked against SciPy on the same problems), ``popt``/``pcov``,
``hess_inv``, ``njev``, mapping access, short reprs, and a float32 stop that says what it is."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt
from jacopt import Status

T = np.linspace(0.0, 4.0, 25)
Y = 3.0 * np.exp(-0.7 * T) + 0.02 * np.cos(7.0 * T)


def residual(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) - y


def np_residual(p):
    return p[0] * np.exp(-p[1] * T) - Y


@pytest.mark.parametrize("ours, scipys", [
    (dict(gtol=1e-8, ftol=0.0, xtol=0.0), dict(gtol=1e-8, ftol=None, xtol=None)),
    (dict(gtol=0.0, ftol=1e-6, xtol=0.0), dict(gtol=None, ftol=1e-6, xtol=None)),
    (dict(gtol=0.0, ftol=0.0, xtol=1e-6), dict(gtol=None, ftol=None, xtol=1e-6)),
    (dict(max_steps=2), dict(max_nfev=2)),
], ids=["gtol", "ftol", "xtol", "budget"])
def test_least_squares_scipy_status_matches_scipy_on_the_same_stop(ours, scipys):
    fit = jacopt.least_squares(residual, [1.0, 0.1], args=(T, Y), **ours)
    ref = scipy.optimize.least_squares(np_residual, [1.0, 0.1], **scipys)
    assert int(fit.scipy_status) == ref.status
    assert bool(fit.success) == ref.success


def test_least_squares_non_finite_start_is_scipys_improper_input():
    with pytest.raises(ValueError, match="not finite in the initial point"):
        scipy.optimize.least_squares(lambda p: np.sqrt(p), [-1.0, 1.0])
    fit = jacopt.least_squares(lambda p: jnp.sqrt(p), jnp.array([-1.0, 1.0]))
    assert fit.status == Status.NONFINITE and int(fit.scipy_status) == -1


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _scipy_bfgs(fun, x0, **options):
    grad = jax.grad(fun)
    return scipy.optimize.minimize(lambda x: float(fun(jnp.asarray(x))), x0,
                                   jac=lambda x: np.asarray(grad(jnp.asarray(x))),
                                   method="BFGS", options=options)


def _exp_sum(x):
    return jnp.sum(jnp.exp(x) - 1.5 * x) + 0.3 * x[0] * x[1]


@pytest.mark.parametrize("fun, x0, ours, scipys, code", [
    (_rosen, [-1.2, 1.0], {}, {}, 0),
    (_rosen, [-1.2, 1.0], dict(max_steps=5), dict(maxiter=5), 1),
    (_exp_sum, [1.0, -0.5], dict(gtol=1e-20), dict(gtol=1e-20), 2),
    (lambda x: jnp.sum(jnp.sqrt(x)), [-1.0, 1.0], {}, {}, 3),
], ids=["success", "maxiter", "precision-loss", "nan"])
def test_minimize_scipy_status_matches_scipys_bfgs_on_the_same_stop(fun, x0, ours, scipys, code):
    fit = jacopt.minimize(fun, np.array(x0), **ours)
    ref = _scipy_bfgs(fun, np.array(x0), **scipys)
    assert int(fit.scipy_status) == ref.status == code, (fit.status_name, ref.message)
    assert bool(fit.success) == ref.success


def test_scipy_status_batches_and_traces():
    statuses = jnp.array([Status.GTOL, Status.MAX_STEPS, Status.NONFINITE])
    batch = jax.vmap(lambda c: jacopt.minimize(lambda x, c: jnp.sum((x - c) ** 2), jnp.zeros(2),
                                               args=(c,), max_steps=1))(jnp.array([0.0, 2.0]))
    np.testing.assert_array_equal(batch.scipy_status, [0, 1])
    assert list(jacopt.status.scipy_status(np.asarray(statuses), "least_squares")) == [1, 0, -1]
    traced = jax.jit(lambda s: jacopt.status.scipy_status(s, "minimize"))(statuses)
    np.testing.assert_array_equal(traced, [0, 1, 3])
    every = jacopt.status.scipy_status(np.array([int(s) for s in Status]), "minimize")
    assert set(every.tolist()) <= {0, 1, 2, 3}  # every member has a number
    if hasattr(Status, "STALLED"):  # a stall is a failure: SciPy's -1 / precision loss
        stalled = np.array(Status.STALLED)
        assert int(jacopt.status.scipy_status(stalled, "least_squares")) == -1
        assert int(jacopt.status.scipy_status(stalled, "minimize")) == 2


def test_curve_fit_result_has_popt_and_pcov():
    fit = jacopt.curve_fit(lambda t, p: p[0] * jnp.exp(-p[1] * t), T, Y, [1.0, 0.1])
    popt, pcov = scipy.optimize.curve_fit(lambda t, a, b: a * np.exp(-b * t), T, Y, p0=[1.0, 0.1])
    assert fit.popt is fit.params and fit.pcov is fit.covariance
    np.testing.assert_allclose(fit.popt, popt, rtol=1e-6)
    np.testing.assert_allclose(fit.pcov, pcov, rtol=1e-4)
    text = repr(fit)
    assert "popt" not in text and "covariance=float64[2,2]" in text and len(text) < 800


def test_bfgs_result_has_hess_inv_and_njev():
    A = np.array([[3.0, 1.0, 0.2], [1.0, 2.0, 0.5], [0.2, 0.5, 1.0]])

    def quadratic(x):
        return 0.5 * x @ jnp.asarray(A) @ x - jnp.sum(x)

    fit = jacopt.minimize(quadratic, np.zeros(3))
    ref = _scipy_bfgs(quadratic, np.zeros(3))
    assert fit.hess_inv.shape == ref.hess_inv.shape == (3, 3)
    np.testing.assert_allclose(fit.hess_inv, fit.hess_inv.T, atol=1e-14)
    # both approximate inv(A) along the directions the run explored
    np.testing.assert_allclose(fit.hess_inv @ A, np.eye(3), atol=0.1)
    np.testing.assert_allclose(ref.hess_inv @ A, np.eye(3), atol=0.1)
    assert int(fit.njev) == int(fit.ngev) == int(fit.nfev)  # one gradient per evaluation
    assert ref.njev == ref.nfev
    assert jacopt.minimize(quadratic, np.zeros(3), solver="lbfgs").hess_inv is None
    assert jacopt.minimize(quadratic, np.zeros(3), solver="newton").hess_inv is None
    batched = jax.vmap(lambda x0: jacopt.minimize(quadratic, x0))(jnp.zeros((4, 3)))
    assert batched.hess_inv.shape == (4, 3, 3)


def test_results_are_mappings_like_optimize_result():
    fit = jacopt.least_squares(residual, [1.0, 0.1], args=(T, Y))
    ref = scipy.optimize.least_squares(np_residual, [1.0, 0.1])
    for key in ("x", "cost", "fun", "jac", "grad", "optimality", "nfev", "njev", "status",
                "message", "success"):
        assert key in ref and key in fit, key
    assert fit["x"] is fit.params and fit["fun"] is fit.residuals
    assert fit["scipy_status"] == fit.scipy_status and fit["message"] == fit.message
    assert fit[0] is fit.params  # a tuple still
    assert "hess_inv" not in fit and "nope" not in fit and 1.0 not in fit
    with pytest.raises(KeyError):
        fit["nope"]
    result = jacopt.minimize(_rosen, np.array([-1.2, 1.0]))
    ref = scipy.optimize.minimize(scipy.optimize.rosen, [-1.2, 1.0], jac=scipy.optimize.rosen_der)
    assert set(ref.keys()) <= set(result.keys())
    np.testing.assert_allclose(result["x"], ref["x"], atol=1e-5)
    as_dict = dict(result)
    assert as_dict["njev"] == result.ngev and as_dict["jac"] is result.grad


def test_reprs_are_short():
    t = np.linspace(0.0, 4.0, 400)
    fit = jacopt.least_squares(residual, [1.0, 0.1], args=(t, 3.0 * np.exp(-0.7 * t)))
    text = repr(fit)
    assert text.startswith(f"LeastSquaresResult(status={fit.status_name}, success=True, cost=")
    assert "jac=float64[400,2]" in text and "residuals=float64[400]" in text
    assert len(text) < 400, text
    result = jacopt.minimize(_rosen, np.array([-1.2, 1.0]), history=True)
    text = repr(result)
    assert text.startswith("MinimizeResult(status=GTOL, success=True, value=")
    assert "hess_inv=float64[2,2]" in text and "History(value=float64[2001]" in text
    assert len(text) < 600, text
    printed = []
    jax.jit(lambda x0: printed.append(repr(jacopt.minimize(_rosen, x0))) or 0)(jnp.zeros(2))
    assert printed[0].startswith("MinimizeResult(status=int32[]")  # traced: no values


def test_float32_precision_limit_says_what_it_is():
    """BFGS on 50-D Rosenbrock in float32 reaches the minimiser but its gradient cannot get
    below the default gtol = 1e-5: the message says so and names the fixes; it stays a
    failure, as SciPy's "precision loss"."""
    x0 = jnp.tile(jnp.array([-1.2, 1.0], jnp.float32), 25)
    fit = jacopt.minimize(_rosen, x0)
    assert fit.status == Status.PRECISION_LIMIT and not fit.success
    assert int(fit.scipy_status) == 2
    assert float(jnp.max(jnp.abs(fit.x - 1.0))) < 1e-3  # it did converge
    message = fit.message
    assert message.startswith("The gradient cannot be reduced to gtol in float32")
    assert "Raise gtol above" in message and "jax_enable_x64" in message
    assert f"{float(jnp.max(jnp.abs(fit.grad))):.2e}" in message
    loose = jacopt.minimize(_rosen, x0, gtol=1e-3)
    assert loose.success
    # a batch: each member's own message
    members = fit._replace(status=jnp.array([Status.PRECISION_LIMIT, Status.GTOL]),
                           value=jnp.zeros(2, jnp.float32),
                           grad=jnp.array([[3e-5, -4e-5], [1e-6, 0.0]], jnp.float32))
    assert members.message[0].startswith("The gradient cannot") and "4.00e-05" in \
        members.message[0]
    assert members.message[1] == Status.GTOL.message
    # float64 keeps the generic message
    assert jacopt.minimize(_exp_sum, np.array([1.0, -0.5]), gtol=1e-20).message == \
        Status.PRECISION_LIMIT.message
