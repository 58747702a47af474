"""Porting scipy.optimize code: the calls a SciPy user writes first (a ``Bounds`` object for
``least_squares`` and ``curve_fit``, ``curve_fit(f, x, y)`` without ``p0``, bounds of the wrong
shape in ``curve_fit``) give SciPy's answer or an error naming the argument the user passed."""
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt

T = np.linspace(0.0, 4.0, 12)
Y = 2.0 * np.exp(-0.7 * T) + 0.01 * np.cos(7.0 * T)


def model(x, p):
    return p[0] * jnp.exp(-p[1] * x)


def test_least_squares_takes_a_scipy_bounds_object_and_agrees_with_scipy():
    def residual(p):
        return model(T, p) - Y

    bounds = scipy.optimize.Bounds([0.0, 0.0], [1.5, 5.0])  # the first bound is active
    ref = scipy.optimize.least_squares(lambda p: p[0] * np.exp(-p[1] * T) - Y, [1.0, 0.1],
                                       bounds=bounds, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    res = jacopt.least_squares(residual, np.array([1.0, 0.1]), bounds=bounds)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7, atol=1e-9)
    assert float(res.x[0]) == pytest.approx(1.5, abs=1e-12)


def test_curve_fit_takes_a_scipy_bounds_object_and_agrees_with_scipy():
    bounds = scipy.optimize.Bounds([0.0, 0.0], [1.5, 5.0])
    popt, _ = scipy.optimize.curve_fit(lambda x, a, b: a * np.exp(-b * x), T, Y, p0=[1.0, 0.1],
                                       bounds=(bounds.lb, bounds.ub), xtol=1e-15, ftol=1e-15,
                                       gtol=1e-15)
    fit = jacopt.curve_fit(model, T, Y, [1.0, 0.1], bounds=bounds)
    np.testing.assert_allclose(fit.popt, popt, rtol=1e-7, atol=1e-9)


def test_curve_fit_bounds_of_the_wrong_shape_name_p0_not_x0():
    with pytest.raises(ValueError, match=r"where p0's leaf has shape \(2,\).*element of p0"):
        jacopt.curve_fit(model, T, Y, [1.0, 0.1], bounds=([0.0], [5.0, 5.0]))


def test_curve_fit_without_p0_says_p0_is_required_as_scipy_users_call_it():
    # SciPy's curve_fit(f, xdata, ydata) guesses p0 from f's signature; here it is required,
    # and the error says so instead of Python's bare "missing 1 required positional argument".
    with pytest.raises(ValueError, match="p0 is required"):
        jacopt.curve_fit(model, T, Y)


def _scipy_model_varargs(x, *p):
    a, b = p
    return a * jnp.exp(-b * x)


def _scipy_model_default(x, a, b=0.5):
    return a * jnp.exp(-b * x)


@pytest.mark.parametrize("scipy_model, error", [(_scipy_model_varargs, ValueError),
                                                (_scipy_model_default, TypeError)])
def test_a_scipy_style_model_keeps_its_own_error_with_a_note_on_the_calling_convention(
        scipy_model, error):
    with pytest.raises(error) as info:
        jacopt.curve_fit(scipy_model, T, Y, [1.0, 0.1])
    assert any("lambda x, p: f(x, *p)" in note for note in getattr(info.value, "__notes__", []))
    # the wrapped form is SciPy's fit
    popt, _ = scipy.optimize.curve_fit(lambda x, a, b: a * np.exp(-b * x), T, Y, p0=[1.0, 0.1])
    fit = jacopt.curve_fit(lambda x, p: scipy_model(x, *p), T, Y, [1.0, 0.1])
    np.testing.assert_allclose(fit.popt, popt, rtol=1e-6)


def test_a_two_argument_model_with_its_own_bug_gets_no_note():
    def model_with_a_bug(x, p):
        return p[0] * jnp.exp(-p[1] * x) + jnp.ones(3)  # a broadcasting error of its own

    with pytest.raises(TypeError) as info:
        jacopt.curve_fit(model_with_a_bug, T, Y, [1.0, 0.1])
    assert not any("f(x, *p)" in note for note in getattr(info.value, "__notes__", []))


def test_numpy_on_the_data_in_args_is_explained_as_traced_too():
    # SciPy passes args as NumPy arrays, so np.log(y) inside fun works there; here args are
    # traced with the parameters, and the message must say so (not "applied to the parameters")
    y = np.exp(np.linspace(0.0, 1.0, 6))
    with pytest.raises(TypeError, match=r"to the data passed with them, which JAX traces too"
                                        r".*NumPy transform of the data alone can be done "
                                        r"before the call"):
        jacopt.least_squares(lambda p, y: p[0] - np.log(y), np.zeros(1), args=(y,))
    res = jacopt.least_squares(lambda p, logy: p[0] - logy, np.zeros(1), args=(np.log(y),))
    np.testing.assert_allclose(res.x, [np.log(y).mean()], rtol=1e-12)

