"""Calls written the way scipy.optimize users write them: lists of numbers for the start, NumPy
scalars for settings, SciPy's names for things jacopt does differently. Each either works as in
SciPy (checked against SciPy or against the same call with arrays) or fails before any work with
a message that names the argument and what to do instead."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jacopt

T = np.linspace(0.0, 4.0, 25)
Y = 3.0 * np.exp(-0.7 * T) + 0.02 * np.cos(7.0 * T)  # deterministic "noise"


def residual(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) - y


def model(t, p):
    return p[0] * jnp.exp(-p[1] * t)


def test_least_squares_takes_a_list_start_with_array_bounds_and_x_scale():
    reference = jacopt.least_squares(residual, jnp.array([1.0, 0.1]), args=(T, Y),
                                     bounds=(np.zeros(2), np.full(2, 5.0)),
                                     x_scale=np.array([1.0, 0.5]))
    listed = jacopt.least_squares(residual, [1.0, 0.1], args=(T, Y),
                                  bounds=(np.zeros(2), np.full(2, 5.0)),
                                  x_scale=np.array([1.0, 0.5]))
    assert isinstance(listed.params, jax.Array) and listed.params.shape == (2,)
    np.testing.assert_array_equal(listed.params, reference.params)
    scipy_fit = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * T) - Y, [1.0, 0.1], bounds=(0.0, 5.0), xtol=1e-15,
        ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(listed.params, scipy_fit.x, rtol=1e-8)


def test_minimize_takes_a_list_start_as_an_array():
    result = jacopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2 * jnp.arange(1.0, 3.0)), [0.0, 0.0])
    assert isinstance(result.params, jax.Array) and result.params.shape == (2,)
    np.testing.assert_allclose(result.params, [1.0, 1.0], atol=1e-5)  # |grad| <= gtol = 1e-5


def test_a_list_start_with_a_traced_entry_is_an_array_too():
    def fit(a):
        return jacopt.least_squares(lambda p: p - jnp.array([2.0, 3.0]), [a, 1.0]).params

    np.testing.assert_allclose(jax.jit(fit)(1.0), [2.0, 3.0])
    np.testing.assert_allclose(jax.grad(lambda a: jnp.sum(fit(a)))(1.0), 0.0, atol=1e-12)
    params = jax.jit(lambda a: jacopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2),
                                               (a, 0.0)).params)(0.5)
    assert isinstance(params, jax.Array) and params.shape == (2,)


def test_a_tuple_of_arrays_and_a_named_tuple_stay_pytrees():
    import collections

    Params = collections.namedtuple("Params", "a b")
    fit = jacopt.least_squares(lambda p, t, y: p.a * jnp.exp(-p.b * t) - y, Params(1.0, 0.1),
                               args=(T, Y))
    assert isinstance(fit.params, Params)
    pair = jacopt.minimize(lambda p: (p[0] - 1.0) ** 2 + jnp.sum((p[1] + 2.0) ** 2),
                           (jnp.zeros(()), jnp.zeros(3)))
    assert isinstance(pair.params, tuple) and pair.params[1].shape == (3,)


def test_curve_fit_takes_lists_for_p0_and_xdata_and_a_scalar_sigma_like_scipy():
    popt, pcov = jacopt.curve_fit(model, list(T), Y, [1.0, 0.1], sigma=0.1, absolute_sigma=True)
    ref_popt, ref_pcov = scipy.optimize.curve_fit(
        lambda t, a, b: a * np.exp(-b * t), T, Y, p0=[1.0, 0.1], sigma=np.full(T.shape, 0.1),
        absolute_sigma=True)
    assert isinstance(popt, jax.Array) and popt.shape == (2,)
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-6)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-4)
    # SciPy's usual bounds: lists of numbers, one per parameter
    bounded, _ = jacopt.curve_fit(model, T, Y, [1.0, 0.1], bounds=([0, 0], [5, 0.5]))
    ref_bounded, _ = scipy.optimize.curve_fit(lambda t, a, b: a * np.exp(-b * t), T, Y,
                                              p0=[1.0, 0.1], bounds=([0, 0], [5, 0.5]))
    np.testing.assert_allclose(bounded, ref_bounded, rtol=1e-5)
    assert float(bounded[1]) == pytest.approx(0.5)  # the upper bound is active
    # absolute sigma: the covariance scales with sigma**2, so the scalar really is used
    _, pcov_2 = jacopt.curve_fit(model, T, Y, [1.0, 0.1], sigma=0.2, absolute_sigma=True)
    np.testing.assert_allclose(pcov_2, 4.0 * np.asarray(pcov), rtol=1e-6)


def test_curve_fit_names_scipy_keywords_it_does_not_take_and_a_missing_p0():
    with pytest.raises(TypeError, match=r"SciPy's keyword argument 'method'; here solver="):
        jacopt.curve_fit(model, T, Y, [1.0, 0.1], method="trf")
    with pytest.raises(TypeError, match=r"'maxfev'; here max_steps="):
        jacopt.curve_fit(model, T, Y, [1.0, 0.1], maxfev=100)
    with pytest.raises(TypeError, match=r"'max_nfev'; here max_steps="):
        jacopt.curve_fit(model, T, Y, [1.0, 0.1], max_nfev=100)
    with pytest.raises(TypeError, match=r"got '2-point'; SciPy's '2-point'"):
        jacopt.curve_fit(model, T, Y, [1.0, 0.1], jac="2-point")
    with pytest.raises(TypeError, match=r"curve_fit\(\) got an unexpected keyword argument 'nope'"):
        jacopt.curve_fit(model, T, Y, [1.0, 0.1], nope=1)
    with pytest.raises(ValueError, match="p0 is required"):
        jacopt.curve_fit(model, T, Y, None)
    # least_squares' own keywords still pass through
    with pytest.warns(UserWarning, match="did not converge"):
        fit = jacopt.curve_fit(model, T, Y, [1.0, 0.1], max_steps=3)
    assert int(fit.result.num_steps) == 3


@pytest.mark.parametrize("make", [np.float32, np.float64, jnp.asarray],
                         ids=["np.float32", "np.float64", "jax 0-d"])
def test_numpy_and_jax_scalars_as_settings_give_the_python_float_answer(make):
    reference = jacopt.least_squares(residual, jnp.array([1.0, 0.1]), args=(T, Y),
                                     loss="huber", f_scale=0.05, gtol=1e-12, xtol=1e-12)
    scalars = jacopt.least_squares(residual, jnp.array([1.0, 0.1]), args=(T, Y), loss="huber",
                                   f_scale=make(0.05), gtol=make(1e-12), xtol=make(1e-12))
    np.testing.assert_allclose(scalars.params, reference.params, rtol=1e-12)
    minimised = jacopt.minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.zeros(2), gtol=make(1e-9))
    np.testing.assert_allclose(minimised.params, [2.0, 2.0], atol=1e-8)


def test_a_bfloat16_scalar_is_a_number_too():
    result = jacopt.minimize(lambda x: jnp.sum((x - 2.0) ** 2), jnp.zeros(2),
                             gtol=jnp.asarray(1e-3, jnp.bfloat16))
    assert result.status_name == "GTOL" and float(jnp.max(jnp.abs(result.grad))) <= 1.01e-3


def test_f_scale_can_be_batched_and_differentiated():
    def fit(f_scale):
        return jacopt.least_squares(residual, jnp.array([1.0, 0.1]), args=(T, Y),
                                    loss="soft_l1", f_scale=f_scale).params

    scales = jnp.array([0.01, 0.05, 0.3])
    batched = jax.vmap(fit)(scales)
    for row, s in zip(batched, scales):
        np.testing.assert_allclose(row, fit(float(s)), rtol=1e-9)
    grad = jax.jacobian(fit)(0.05)
    h = 1e-5
    central = (np.asarray(fit(0.05 + h)) - np.asarray(fit(0.05 - h))) / (2 * h)
    np.testing.assert_allclose(grad, central, rtol=1e-5)
    assert np.all(np.abs(central) > 1e-6)  # the answer does depend on f_scale


@pytest.mark.parametrize("bad", ["2-point", "3-point", "cs", True])
def test_least_squares_explains_scipy_jac_values(bad):
    with pytest.raises(TypeError, match=r"jac must be None \(JAX differentiates fun\)"):
        jacopt.least_squares(residual, jnp.array([1.0, 0.1]), args=(T, Y), jac=bad)


def test_bad_settings_name_themselves():
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2, got 3"):
        jacopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2), verbose=3)
    with pytest.raises(ValueError, match="f_scale must be a positive finite number"):
        jacopt.least_squares(residual, jnp.ones(2), args=(T, Y), f_scale=np.float32(0.0))
    with pytest.raises(ValueError, match="gtol must be a non-negative number, got 'tight'"):
        jacopt.least_squares(residual, jnp.ones(2), args=(T, Y), gtol="tight")
    with pytest.raises(TypeError, match="gtol is a traced value"):
        jax.jit(lambda g: jacopt.minimize(lambda x: jnp.sum(x ** 2), jnp.ones(2), gtol=g).params)(
            1e-6)


def _run_fresh(script: str) -> str:
    """Run ``script`` in a fresh process with x64 off (JAX's default); return its stdout."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                         text=True, env={"JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu",
                                         "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
    return out.stdout


def test_float32_mode_runs_double_precision_input_in_float32_with_one_warning():
    """With x64 off (JAX's default), in a fresh process: NumPy float64 starts and data, and
    starts of Python floats, run in float32 as JAX runs them (a SciPy script ported as it is
    works), and the process gets exactly one jacopt.PrecisionWarning saying so, however many
    calls follow; float32 input gets none."""
    _run_fresh("""
        import warnings
        import jax.numpy as jnp, numpy as np, jacopt
        t = np.linspace(0.0, 4.0, 25, dtype=np.float32)
        y = (3.0 * np.exp(-0.7 * t)).astype(np.float32)
        res = lambda p, t, y: p[0] * jnp.exp(-p[1] * t) - y
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = jacopt.least_squares(res, jnp.array([1.0, 0.1]), args=(t, y))
            assert not caught, [str(w.message) for w in caught]  # float32 in: no warning
            fit = jacopt.least_squares(res, np.array([1.0, 0.1]), args=(t, y))
            assert fit.params.dtype == jnp.float32, fit.params.dtype
            assert abs(float(fit.params[1]) - 0.7) < 1e-4, fit.params
            assert jacopt.least_squares(res, [1.0, 0.1], args=(t, y)).params.dtype == \
                jnp.float32
            assert jacopt.minimize(lambda x: jnp.sum(x ** 2), np.zeros(2)).params.dtype == \
                jnp.float32
            x64 = np.linspace(0.0, 1.0, 20)
            popt, _ = jacopt.curve_fit(lambda x, p: p[0] * x + p[1], x64, 2.0 * x64 + 1.0,
                                       np.ones(2))
            assert popt.dtype == jnp.float32 and np.allclose(popt, [2.0, 1.0], atol=1e-4), popt
            assert jacopt.least_squares(res, [np.float32(1), 0.1], args=(t, y)).params.dtype \
                == jnp.float32
        ours = [w for w in caught if issubclass(w.category, jacopt.PrecisionWarning)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        assert issubclass(jacopt.PrecisionWarning, UserWarning)
        message = str(ours[0].message)
        assert message.startswith("x0 is double precision") and "jax_enable_x64" in message
        assert ours[0].filename.endswith("<string>"), ours[0].filename  # points at the caller
        print("ok")
    """)


@pytest.mark.parametrize("call, name", [
    ("jacopt.least_squares(lambda p, y: p - y, jnp.zeros(3, jnp.float32), args=(np.ones(3),))",
     "args[0]"),
    ("jacopt.minimize(lambda x, c: jnp.sum((x - c) ** 2), jnp.zeros(3, jnp.float32), "
     "args=(np.ones(3),))", "args[0]"),
    ("jacopt.curve_fit(lambda x, p: p[0] * x, np.arange(4.0), np.arange(4.0, dtype=np.float32), "
     "jnp.ones(1, jnp.float32))", "xdata"),
    ("jacopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2), [0.0, 0.0])", "x0"),
])
def test_float32_mode_names_the_double_precision_argument(call, name):
    _run_fresh(f"""
        import warnings
        import jax.numpy as jnp, numpy as np, jacopt
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = {call}
        ours = [w for w in caught if issubclass(w.category, jacopt.PrecisionWarning)]
        assert len(ours) == 1 and str(ours[0].message).startswith("{name} is double"), \
            [str(w.message) for w in caught]
        print("ok")
    """)


def test_results_answer_to_scipy_names():
    fit = jacopt.least_squares(residual, [1.0, 0.1], args=(T, Y))
    ref = scipy.optimize.least_squares(lambda p: p[0] * np.exp(-p[1] * T) - Y, [1.0, 0.1],
                                       xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(fit.x, ref.x, rtol=1e-8)
    np.testing.assert_allclose(fit.fun, ref.fun, atol=1e-10)
    assert fit.nit == fit.num_steps and fit.x is fit.params
    result = jacopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2) + x[0] * x[1], jnp.zeros(2))
    ref = scipy.optimize.minimize(lambda x: np.sum((x - 1.0) ** 2) + x[0] * x[1], np.zeros(2))
    np.testing.assert_allclose(result.x, ref.x, atol=1e-5)
    assert float(result.fun) == pytest.approx(ref.fun, abs=1e-9)
    assert result.jac is result.grad and result.nit == result.num_steps
    # the aliases are properties, not fields: vmapped results batch exactly as before
    batched = jax.vmap(lambda c: jacopt.minimize(lambda x: jnp.sum((x - c) ** 2), jnp.zeros(2)))(
        jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(batched.x, [[1.0, 1.0], [2.0, 2.0]], atol=1e-5)
