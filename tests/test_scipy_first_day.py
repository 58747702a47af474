"""What a scipy.optimize user meets on the first day (issue 15): data of shape (m, 1), bad input
named wrongly, SciPy's keywords, jac=True. Each case either answers as SciPy does (checked
against SciPy) or fails before any work naming the argument and what to do instead."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt

T = np.linspace(0.0, 1.0, 15)
Y = 0.5 * np.exp(2.0 * T) - 1.0 + 0.01 * np.cos(9.0 * T)


def residual(p, t, y):
    return p[0] * jnp.exp(p[1] * t) + p[2] - y


def model(t, p):
    return p[0] * jnp.exp(p[1] * t) + p[2]


# --- residuals that broadcast into a matrix ---------------------------------------------------

def test_least_squares_refuses_data_of_shape_m_1_that_broadcast_the_residuals():
    column = Y[:, None]  # as from df[["y"]].values
    with pytest.raises(ValueError, match=r"shape \(15, 15\) is the broadcast of args\[0\] of "
                                         r"shape \(15,\) against args\[1\] of shape \(15, 1\)"):
        jacopt.least_squares(residual, [1.0, 1.0, 0.0], args=(T, column))
    with pytest.raises(ValueError, match=r"args\[0\] of shape \(15, 1\) against args\[1\] of "
                                         r"shape \(15,\)"):
        jacopt.least_squares(residual, [1.0, 1.0, 0.0], args=(T[:, None], Y))
    with pytest.raises(ValueError, match="more than 1 dimension"):  # SciPy refuses it too
        scipy.optimize.least_squares(
            lambda p: p[0] * np.exp(p[1] * T) + p[2] - column, [1.0, 1.0, 0.0])
    # the same data the right way round: SciPy's answer
    fit = jacopt.least_squares(residual, [1.0, 1.0, 0.0], args=(T, column.ravel()))
    ref = scipy.optimize.least_squares(lambda p: p[0] * np.exp(p[1] * T) + p[2] - Y,
                                       [1.0, 1.0, 0.0], xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(fit.x, ref.x, rtol=1e-7)


def test_image_residuals_keep_working():
    """A residual that is an image because the model is one: (m, 1) and (k,) grids against an
    (m, k) image broadcast legitimately; the answer equals the ravelled problem's."""
    u, v = np.linspace(-1, 1, 12)[:, None], np.linspace(-1, 1, 9)
    image = np.exp(-((u - 0.2) ** 2 + (v + 0.1) ** 2) / 0.3)

    def blob(p, u, v, image):
        return p[0] * jnp.exp(-((u - p[1]) ** 2 + (v - p[2]) ** 2) / 0.3) - image

    fit = jacopt.least_squares(blob, jnp.array([0.5, 0.0, 0.0]), args=(u, v, image))
    flat = jacopt.least_squares(lambda p, *a: jnp.ravel(blob(p, *a)), jnp.array([0.5, 0.0, 0.0]),
                                args=(u, v, image))
    assert fit.residuals.shape == (12, 9) and fit.success
    np.testing.assert_allclose(fit.params, flat.params, rtol=1e-12)
    np.testing.assert_allclose(fit.params, [1.0, 0.2, -0.1], atol=1e-8)


def test_curve_fit_names_the_broadcast_with_the_same_message():
    with pytest.raises(ValueError, match=r"residual model\(xdata, p0\) - ydata of shape \(15, 15\)"
                                         r" is the broadcast of model\(xdata, p0\) of shape "
                                         r"\(15,\) against ydata of shape \(15, 1\)"):
        jacopt.curve_fit(model, T, Y[:, None], [1.0, 1.0, 0.0])


# --- bad input, named --------------------------------------------------------------------------

def test_a_length_1_bound_for_two_parameters_is_refused_as_in_scipy():
    with pytest.raises(ValueError, match="Inconsistent shapes"):
        scipy.optimize.least_squares(lambda p: p - 1.0, np.zeros(2), bounds=([-1.0], 2.0))
    with pytest.raises(ValueError, match=r"bounds\[0\] \(lower\) has a leaf of shape \(1,\) "
                                         r"where x0's leaf has shape \(2,\)"):
        jacopt.least_squares(lambda p: p - 1.0, jnp.zeros(2), bounds=(np.array([-1.0]), 2.0))
    with pytest.raises(ValueError, match=r"x_scale has a leaf of shape \(1,\)"):
        jacopt.least_squares(lambda p: p - 1.0, jnp.zeros(2), x_scale=np.array([2.0]))
    # a scalar, or one value per parameter, still works
    fit = jacopt.least_squares(lambda p: p - 3.0, jnp.zeros(2), bounds=(-1.0, [2.0, 4.0]))
    np.testing.assert_allclose(fit.x, [2.0, 3.0])


def test_a_scalar_start_is_a_one_element_array_as_in_scipy():
    fit = jacopt.least_squares(lambda p, t, y: p * t - y, 0.5, args=(T, 2.0 * T))
    ref = scipy.optimize.least_squares(lambda p: p * T - 2.0 * T, 0.5)
    assert fit.x.shape == ref.x.shape == (1,)
    np.testing.assert_allclose(fit.x, ref.x, rtol=1e-10)
    assert jacopt.least_squares(lambda p: p - 2.0, np.float64(1.0)).x.shape == (1,)
    assert jacopt.least_squares(lambda p: p - 2.0, jnp.asarray(1.0)).x.shape == (1,)
    assert jacopt.least_squares(lambda p: p["a"] - jnp.ones(2), {"a": 1.0}).x["a"].shape == ()


@pytest.mark.parametrize("x_scale", [1 + 2j, np.array([1.0, 2j])])
def test_a_complex_x_scale_is_named(x_scale):
    with pytest.raises(TypeError, match="x_scale must hold real numbers.*complex"):
        jacopt.least_squares(lambda p: p - 1.0, jnp.zeros(2), x_scale=x_scale)


def test_curve_fit_names_p0_outside_the_bounds():
    with pytest.raises(ValueError, match=r"^p0 is outside bounds at flat index 0: 5.0"):
        jacopt.curve_fit(lambda x, p: p[0] * x, T, Y, [5.0], bounds=(0.0, 1.0))


@pytest.mark.parametrize("entry", ["least_squares", "minimize", "curve_fit"])
def test_numpy_inside_fun_is_explained(entry):
    calls = {
        "least_squares": lambda: jacopt.least_squares(lambda p: np.exp(p) - 2.0, jnp.zeros(2)),
        "minimize": lambda: jacopt.minimize(lambda x: np.sum(np.exp(x) - x), jnp.zeros(2)),
        "curve_fit": lambda: jacopt.curve_fit(lambda t, p: p[0] * np.exp(p[1] * t), T, Y,
                                              [1.0, 1.0]),
    }
    name = "model" if entry == "curve_fit" else "fun"
    with pytest.raises(TypeError, match=rf"^{name} converts a traced array to NumPy.*jnp\.exp "
                                        rf"instead of np\.exp") as info:
        calls[entry]()
    assert isinstance(info.value.__cause__, jax.errors.TracerArrayConversionError)


def test_a_python_if_on_the_parameters_is_explained():
    def fun(p):
        return p - 1.0 if p[0] > 0 else p + 1.0

    with pytest.raises(TypeError, match=r"^fun needs a concrete value.*jnp\.where"):
        jacopt.least_squares(fun, jnp.ones(2))


def test_curve_fit_lets_the_models_own_errors_through():
    def broken(t, p):
        return p[0] * t + undefined_name  # noqa: F821

    with pytest.raises(NameError, match="undefined_name"):
        jacopt.curve_fit(broken, T, Y, [1.0])

    def looks_up(t, p):
        return p[0] * t + {"offset": 1.0}["ofset"]

    with pytest.raises(KeyError, match="ofset"):
        jacopt.curve_fit(looks_up, T, Y, [1.0, 1.0])
    # a SciPy-style signature f(x, a, b) is jacopt's to explain
    with pytest.raises(TypeError, match=r"model\(xdata, params\); a SciPy model f\(x, \*p\)"):
        jacopt.curve_fit(lambda t, a, b: a * t + b, T, Y, [1.0, 1.0])


# --- SciPy's keywords --------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, instead", [
    ("method", "trf", r"solver= chooses the method: 'lm'"),
    ("max_nfev", 100, r"max_steps= caps the iterations"),
    ("tr_solver", "lsmr", r"solver='lm-matrix-free' is SciPy's tr_solver='lsmr'"),
    ("tr_options", {}, r"solver=jacopt\.solvers\.LevenbergMarquardt"),
    ("diff_step", 1e-6, r"automatic differentiation"),
])
def test_least_squares_names_what_to_use_for_scipy_keywords(key, value, instead):
    with pytest.raises(TypeError, match=rf"^least_squares\(\) got SciPy's keyword argument "
                                        rf"'{key}'; here .*{instead}"):
        jacopt.least_squares(lambda p: p - 1.0, jnp.zeros(2), **{key: value})


@pytest.mark.parametrize("key, value, instead", [
    ("method", "BFGS", r"solver= chooses the method: 'bfgs' \(SciPy's 'BFGS'\)"),
    ("options", {"maxiter": 10}, r"each option is a keyword of its own: max_steps="),
    ("hess", lambda x: np.eye(2), r"solver='newton' uses the exact Hessian"),
    ("callback", print, r"history=True"),
    ("constraints", (), r"general constraints are not supported"),
])
def test_minimize_names_what_to_use_for_scipy_keywords(key, value, instead):
    with pytest.raises(TypeError, match=rf"^minimize\(\) got SciPy's keyword argument "
                                        rf"'{key}'; here {instead}"):
        jacopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2), **{key: value})


def test_unknown_keywords_get_pythons_message():
    with pytest.raises(TypeError, match=r"^least_squares\(\) got an unexpected keyword "
                                        r"argument 'nope'"):
        jacopt.least_squares(lambda p: p - 1.0, jnp.zeros(2), nope=1)
    with pytest.raises(TypeError, match=r"^minimize\(\) got an unexpected keyword argument"):
        jacopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2), nope=1)
    with pytest.raises(TypeError, match=r"^curve_fit\(\) got SciPy's keyword argument "
                                        r"'tr_solver'"):
        jacopt.curve_fit(model, T, Y, [1.0, 1.0, 0.0], tr_solver="exact")


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_minimize_takes_jac_true_like_scipy():
    calls = []

    def value_and_grad(x):
        calls.append(1)  # traced once per compile, not per evaluation
        return jax.value_and_grad(_rosen)(x)

    x0 = np.array([-1.2, 1.0, 0.8, 1.1])
    fit = jacopt.minimize(value_and_grad, x0, jac=True)
    ref = scipy.optimize.minimize(
        lambda x: tuple(np.asarray(v) for v in jax.value_and_grad(_rosen)(jnp.asarray(x))),
        x0, jac=True, method="BFGS")
    assert fit.success and ref.success
    np.testing.assert_allclose(fit.x, ref.x, atol=1e-5)
    np.testing.assert_allclose(fit.x, jacopt.minimize(_rosen, x0).x, rtol=1e-12)
    assert fit.nfev == fit.njev
    # a callable jac, and the given gradient is what the solver uses
    scaled = jacopt.minimize(_rosen, x0, jac=lambda x: 2.0 * jax.grad(_rosen)(x))
    assert not np.allclose(scaled.grad, jax.grad(_rosen)(scaled.x))  # the given one: 2x
    np.testing.assert_allclose(scaled.grad, 2.0 * jax.grad(_rosen)(scaled.x), atol=1e-13)
    # Newton differentiates the given gradient for its Hessian
    newton = jacopt.minimize(value_and_grad, x0, jac=True, solver="newton")
    np.testing.assert_allclose(newton.x, jacopt.minimize(_rosen, x0, solver="newton").x,
                               rtol=1e-10)


def test_jac_true_keeps_implicit_derivatives_with_respect_to_args():
    def f(x, c):
        return jnp.sum((x - c) ** 2 * jnp.arange(1.0, 4.0)) + jnp.sum(x ** 4)

    def solution(c, **kw):
        return jacopt.minimize(f if not kw else jax.value_and_grad(f), jnp.zeros(3), args=(c,),
                               gtol=1e-10, **kw).x

    c = jnp.array([0.3, -0.2, 0.5])
    np.testing.assert_allclose(jax.jacobian(lambda c: solution(c, jac=True))(c),
                               jax.jacobian(solution)(c), rtol=1e-8)


def test_jac_true_checks_what_fun_returns():
    with pytest.raises(ValueError, match=r"must return a pair \(value, gradient\)"):
        jacopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2), jac=True)
    with pytest.raises(ValueError, match="gradient of structure"):
        jacopt.minimize(lambda x: (jnp.sum(x ** 2), 2.0 * x[:1]), jnp.ones(2), jac=True)
    with pytest.raises(TypeError, match="SciPy's '2-point', '3-point' and 'cs' have no use"):
        jacopt.minimize(_rosen, jnp.ones(2), jac="2-point")


def test_tol_is_scipys_gtol():
    """SciPy's BFGS (and trust-region methods) set gtol from tol; so does minimize."""
    x0 = np.array([-1.2, 1.0])
    with_tol = jacopt.minimize(_rosen, x0, tol=1e-3)
    np.testing.assert_array_equal(with_tol.x, jacopt.minimize(_rosen, x0, gtol=1e-3).x)
    assert not np.array_equal(with_tol.x, jacopt.minimize(_rosen, x0).x)
    assert float(jnp.max(jnp.abs(with_tol.grad))) <= 1e-3
    with pytest.raises(TypeError, match="tol and gtol"):
        jacopt.minimize(_rosen, x0, tol=1e-3, gtol=1e-4)
