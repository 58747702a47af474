"""jacopt.curve_fit against scipy.optimize.curve_fit, NIST's certified standard errors and
analytic identities; rank-deficient and under-determined covariance; bad input.

Each new (model, weighting, shape, options) compiles one solve; the default run keeps to a few
of them (the decay fits share one), and the other variants are marked slow."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jacopt.curve_fit import CovarianceWarning, CurveFitResult, _covariance, curve_fit
from jacopt.problems import nist

TIGHT = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)  # for SciPy: run to full precision


def decay(x, p):
    return p[0] * jnp.exp(-p[1] * x) + p[2]


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def decay_jac(x, p):
    e = jnp.exp(-p[1] * x)
    return jnp.stack([e, -p[0] * x * e, jnp.ones_like(x)], axis=1)


@pytest.fixture(scope="module")
def decay_data():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, 40)
    sigma = 0.05 * (1.0 + rng.uniform(size=x.size))
    y = decay_np(x, 2.5, 1.3, 0.5) + sigma * rng.standard_normal(x.size)
    return x, y, sigma


def polished(x, y, sigma, p):
    """Gauss-Newton steps in NumPy from ``p`` with the analytic Jacobian: the exact optimum."""
    p = np.asarray(p, float)
    for _ in range(6):
        e = np.exp(-p[1] * x)
        J = np.stack([e, -p[0] * x * e, np.ones_like(x)], 1) / sigma[:, None]
        p = p - np.linalg.lstsq(J, (decay_np(x, *p) - y) / sigma, rcond=None)[0]
    return p


@pytest.mark.parametrize("case", ["unweighted", "sigma", "absolute_sigma", "bounds"])
def test_matches_scipy_curve_fit(decay_data, case):
    x, y, sigma = decay_data
    kwargs = {
        "unweighted": {},
        "sigma": {"sigma": sigma},
        "absolute_sigma": {"sigma": sigma, "absolute_sigma": True},
        "bounds": {"bounds": ([0.0, 0.0, 0.0], [10.0, 1.2, 10.0])},  # b's bound is active
    }[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean fit must not warn
        fit = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), **kwargs)
    popt, pcov = scipy.optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], **TIGHT, **kwargs)
    assert bool(fit.success) and bool(fit.covariance_valid)
    assert isinstance(fit, CurveFitResult)
    params, covariance = fit  # unpacks like SciPy
    np.testing.assert_allclose(params, popt, rtol=1e-7)
    np.testing.assert_allclose(covariance, pcov, rtol=1e-5)
    np.testing.assert_allclose(fit.stderr, np.sqrt(np.diag(pcov)), rtol=1e-5)
    assert int(fit.rank) == 3 and int(fit.dof) == x.size - 3
    if case == "bounds":
        assert float(params[1]) == pytest.approx(1.2, abs=1e-12)
    else:
        # The solution itself, independently of SciPy: a few exact Gauss-Newton steps move it
        # by less than SciPy's own stopping error.
        w = sigma if "sigma" in kwargs else np.ones_like(x)
        np.testing.assert_allclose(params, polished(x, y, w, params), rtol=1e-9)


def test_absolute_sigma_only_drops_the_residual_variance(decay_data):
    x, y, sigma = decay_data
    rel = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma)
    ab = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma, absolute_sigma=True)
    chi2 = float(np.sum(((decay_np(x, *np.asarray(rel.params)) - y) / sigma) ** 2))
    np.testing.assert_allclose(rel.residual_variance, chi2 / (x.size - 3), rtol=1e-10)
    np.testing.assert_allclose(rel.covariance, ab.covariance * chi2 / (x.size - 3), rtol=1e-10)


def test_masked_padding_leaves_the_fit_and_its_covariance_unchanged(decay_data):
    # shard_rows pads data to a multiple of the device count; the mask's zeros must change
    # neither the parameters nor the covariance: m (the degrees of freedom m - n, and SciPy's
    # rank cutoff eps * max(m, n)) counts the real points only
    x, y, sigma = decay_data
    pad = 8
    xp, yp, sp = np.r_[x, np.full(pad, x[-1])], np.r_[y, np.zeros(pad)], np.r_[sigma, np.ones(pad)]
    mask = np.r_[np.ones(x.size), np.zeros(pad)]
    fit = curve_fit(decay, xp, yp, jnp.array([1.0, 1.0, 0.0]), sigma=sp, mask=mask)
    popt, pcov = scipy.optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, **TIGHT)
    assert bool(fit.covariance_valid) and int(fit.dof) == x.size - 3
    np.testing.assert_allclose(fit.params, popt, rtol=1e-7)
    np.testing.assert_allclose(fit.covariance, pcov, rtol=1e-5)
    np.testing.assert_allclose(fit.params, polished(x, y, sigma, fit.params), rtol=1e-9)
    J = np.asarray(fit.result.jac)[: x.size]  # the exact formula at jacopt's own optimum
    chi2 = 2 * float(fit.result.cost)
    np.testing.assert_allclose(fit.covariance, np.linalg.inv(J.T @ J) * chi2 / (x.size - 3),
                               rtol=1e-10)
    assert np.all(np.asarray(fit.result.jac)[x.size:] == 0)


def test_covariance_from_the_triangular_factor_keeps_scipys_rank_cutoff():
    # singular values of R are those of J: a column at 1e-14 of the others is dropped by the
    # cutoff eps * max(m, n) * s_max (m = 200 here) and kept by a looser one
    rng = np.random.default_rng(1)
    J = rng.standard_normal((200, 3))
    J[:, 2] = J[:, 0] + 1e-14 * rng.standard_normal(200)
    pcov, identifiable, rank, valid, _, _ = _covariance(jnp.asarray(J), jnp.asarray(1.0), True)
    assert int(rank) == 2 and not bool(valid)
    assert np.asarray(identifiable).tolist() == [False, True, False]
    pinv = np.linalg.pinv(J, rcond=200 * np.finfo(float).eps)  # (J^T J)^+ = J^+ J^+T
    np.testing.assert_allclose(pcov, pinv @ pinv.T, rtol=1e-8)
    # fewer rows counted (a mask): m = 2 < n, so no residual variance
    _, _, _, valid, variance, _ = _covariance(jnp.asarray(J), jnp.asarray(1.0), False, m=2)
    assert not bool(valid) and np.isnan(float(variance))


@pytest.mark.slow  # one more compiled solve each
def test_two_dimensional_sigma_matches_scipy(decay_data):
    x, y, sigma = decay_data
    # Correlated noise: an AR(1)-like covariance.
    corr = 0.5 ** np.abs(np.subtract.outer(np.arange(x.size), np.arange(x.size)))
    cov = corr * np.outer(sigma, sigma)
    fit = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=cov)
    popt, pcov = scipy.optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=cov, **TIGHT)
    np.testing.assert_allclose(fit.params, popt, rtol=1e-7)
    np.testing.assert_allclose(fit.covariance, pcov, rtol=1e-5)
    # A diagonal 2-D sigma is the same fit as the 1-D standard deviations.
    diag = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=np.diag(sigma ** 2))
    one_d = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma)
    np.testing.assert_allclose(diag.covariance, one_d.covariance, rtol=1e-8)


@pytest.mark.slow  # one more compiled solve each
def test_user_jacobian_gives_the_same_fit(decay_data):
    x, y, sigma = decay_data
    auto = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma)
    given = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma, jac=decay_jac)
    np.testing.assert_allclose(given.params, auto.params, rtol=1e-10)
    np.testing.assert_allclose(given.covariance, auto.covariance, rtol=1e-8)


@pytest.mark.slow  # one more compiled solve each
def test_robust_loss_covariance_matches_scipy(decay_data):
    x, y, sigma = decay_data
    y = y.copy()
    y[[5, 17, 30]] += np.array([1.0, -0.8, 1.5])  # outliers
    fit = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), loss="soft_l1", f_scale=0.1)
    popt, pcov = scipy.optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], method="trf",
                                          loss="soft_l1", f_scale=0.1, **TIGHT)
    np.testing.assert_allclose(fit.params, popt, rtol=1e-6)
    np.testing.assert_allclose(fit.covariance, pcov, rtol=1e-4)


def misra1a(x, b):
    return nist.load("Misra1a").model(b, x)


def test_misra1a_reproduces_nist_certified_values_and_standard_errors():
    p = nist.load("Misra1a")
    fit = curve_fit(misra1a, p.x, p.y, jnp.asarray(p.starts[0]))
    assert nist.lre(fit.params, p.certified_params) >= 8
    # NIST's certified standard deviations are sqrt(diag(s^2 (J^T J)^-1)), s^2 = RSS / (n - p).
    assert nist.lre(fit.stderr, p.certified_std) >= 6
    np.testing.assert_allclose(2 * float(fit.result.cost), p.certified_rss, rtol=1e-8)


def product_model(x, p):
    return p[0] * p[1] * jnp.exp(-p[2] * x)  # only a*b is identified


def test_rank_deficient_model_warns_and_gives_pseudo_inverse(decay_data):
    x, y, _ = decay_data
    y = 3.0 * np.exp(-0.7 * x) + 0.01 * np.sin(7 * x)
    with pytest.warns(CovarianceWarning, match=r"rank 2 < 3.*p0\[0\], p0\[1\]"):
        fit = curve_fit(product_model, x, y, jnp.array([1.0, 2.0, 1.0]))
    assert bool(fit.success)
    assert not bool(fit.covariance_valid) and int(fit.rank) == 2
    np.testing.assert_array_equal(fit.identifiable, [False, False, True])
    assert np.all(np.isinf(np.asarray(fit.stderr)[:2])) and np.isfinite(float(fit.stderr[2]))
    pcov = np.asarray(fit.covariance)
    assert np.all(np.isfinite(pcov))
    # The identified combination k = a*b: its variance c^T pcov c (c = d(ab)/dp) and the rate's
    # variance equal those of the well-posed fit of k*exp(-c x) (SciPy, independent).
    (k, c), kcov = scipy.optimize.curve_fit(lambda x, k, c: k * np.exp(-c * x), x, y,
                                            p0=[2.0, 1.0], **TIGHT)
    a, b, rate = np.asarray(fit.params)
    np.testing.assert_allclose([a * b, rate], [k, c], rtol=1e-8)
    grad_k = np.array([b, a, 0.0])
    # Both scale by the residual variance, with m - 3 (ours, as SciPy: m - n) against m - 2
    # degrees of freedom.
    dof_ratio = (x.size - 2) / (x.size - 3)
    np.testing.assert_allclose(grad_k @ pcov @ grad_k, kcov[0, 0] * dof_ratio, rtol=1e-5)
    np.testing.assert_allclose(pcov[2, 2], kcov[1, 1] * dof_ratio, rtol=1e-5)


def test_too_few_points_gives_inf_and_warns():
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([3.0, 1.6, 1.1])
    with pytest.warns(CovarianceWarning, match="m=3 data points for n=3 parameters"):
        fit = curve_fit(decay, x, y, jnp.array([2.0, 1.0, 1.0]))
    assert not bool(fit.covariance_valid)
    assert np.all(np.isinf(np.asarray(fit.covariance)))
    assert np.all(np.isinf(np.asarray(fit.stderr)))
    # Known sigma needs no residual variance: the square system has a proper covariance.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        known = curve_fit(decay, x, y, jnp.array([2.0, 1.0, 1.0]), sigma=np.full(3, 0.1),
                          absolute_sigma=True)
    assert bool(known.covariance_valid)
    J = np.asarray(known.result.jac)
    np.testing.assert_allclose(known.covariance, np.linalg.inv(J.T @ J), rtol=1e-8)


def test_non_finite_jacobian_or_cost_gives_inf_covariance():
    J = jnp.array([[1.0, 0.0], [0.0, jnp.nan], [1.0, 1.0]])
    pcov, identifiable, _, valid, _, _ = _covariance(J, jnp.asarray(1.0), False)
    assert not bool(valid) and not np.any(np.asarray(identifiable))
    assert np.all(np.isinf(np.asarray(pcov)))
    J = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pcov, _, _, valid, _, _ = _covariance(J, jnp.asarray(jnp.nan), False)
    assert not bool(valid) and np.all(np.isinf(np.asarray(pcov)))
    pcov, _, _, valid, _, _ = _covariance(J, jnp.asarray(jnp.nan), True)  # sigma known
    assert bool(valid)
    np.testing.assert_allclose(pcov, np.linalg.inv(np.asarray(J.T @ J)), rtol=1e-12)


@pytest.mark.slow  # one more compiled solve each
def test_pytree_parameters_and_labels():
    x = np.linspace(0.0, 3.0, 30)
    y = 2.0 * np.exp(-0.9 * x) + 0.01 * np.cos(5 * x)

    def model(x, p):
        return p["amp"] * jnp.exp(-p["rate"] * x)

    fit = curve_fit(model, x, y, {"amp": jnp.array(1.0), "rate": jnp.array(0.5)})
    popt, pcov = scipy.optimize.curve_fit(lambda x, a, r: a * np.exp(-r * x), x, y, p0=[1, 0.5],
                                          **TIGHT)
    np.testing.assert_allclose([fit.params["amp"], fit.params["rate"]], popt, rtol=1e-7)
    np.testing.assert_allclose(fit.covariance, pcov, rtol=1e-5)  # ravel order: amp, rate
    assert set(fit.stderr) == {"amp", "rate"}

    def product(x, p):
        return p["a"] * p["b"] * jnp.exp(-x)

    with pytest.warns(CovarianceWarning, match=r"\['a'\], p0\['b'\]"):
        curve_fit(product, x, y, {"a": jnp.array(1.0), "b": jnp.array(1.0)})


@pytest.mark.slow  # one more compiled solve each
def test_vmap_over_data_sets_gives_each_its_own_fit(decay_data):
    x, y, sigma = decay_data
    rng = np.random.default_rng(1)
    ys = decay_np(x, 2.5, 1.3, 0.5) + sigma * rng.standard_normal((4, x.size))
    ys[3, 7] = np.nan  # this member fails alone, with an inf covariance
    fits = jax.vmap(lambda y: curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma))(
        jnp.asarray(ys))
    assert fits.covariance.shape == (4, 3, 3)
    np.testing.assert_array_equal(fits.covariance_valid, [True, True, True, False])
    np.testing.assert_array_equal(fits.success, [True, True, True, False])
    assert np.all(np.isinf(np.asarray(fits.covariance[3])))
    for i in range(3):
        popt, pcov = scipy.optimize.curve_fit(decay_np, x, ys[i], p0=[1.0, 1.0, 0.0],
                                              sigma=sigma, **TIGHT)
        np.testing.assert_allclose(fits.params[i], popt, rtol=1e-7)
        np.testing.assert_allclose(fits.covariance[i], pcov, rtol=1e-5)


@pytest.mark.slow  # one more compiled solve each
def test_float32_fit():
    x = np.linspace(0.0, 4.0, 40, dtype=np.float32)
    y = (2.5 * np.exp(-1.3 * x) + 0.5).astype(np.float32)
    fit = curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0], jnp.float32))
    assert fit.params.dtype == jnp.float32 and fit.covariance.dtype == jnp.float32
    np.testing.assert_allclose(fit.params, [2.5, 1.3, 0.5], rtol=1e-4)


# ------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument, before any solving
# ------------------------------------------------------------------------------------------

P0 = jnp.array([1.0, 1.0, 0.0])
X = np.linspace(0.0, 1.0, 10)
Y = np.linspace(1.0, 2.0, 10)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(xdata=np.zeros(9)), ValueError, r"xdata has shape \(9,\).*len\(ydata\)"),
    (dict(ydata=np.r_[Y[:-1], np.nan]), ValueError, "ydata contains non-finite"),
    (dict(xdata=np.r_[X[:-1], np.inf]), ValueError, "xdata contains non-finite"),
    (dict(sigma=np.ones(9)), ValueError, r"sigma has shape \(9,\)"),
    (dict(sigma=np.r_[np.ones(9), -1.0]), ValueError, "sigma must be positive"),
    (dict(sigma=np.r_[np.ones(9), np.nan]), ValueError, "sigma contains non-finite"),
    (dict(sigma=-np.eye(10)), ValueError, "not positive definite"),
    (dict(ydata=np.float64(1.0)), ValueError, "ydata must be a non-empty array"),
    (dict(ydata=Y.astype(np.float32)), TypeError, "ydata has dtype float32 but p0 has dtype"),
    (dict(model=lambda x, p: p[0] * x[:5]), ValueError, r"returns shape \(5,\) but ydata"),
    (dict(model=lambda x, a, b, c: a * x), TypeError, r"lambda x, p: f\(x, \*p\)"),
    (dict(model="decay"), TypeError, "model must be callable"),
    (dict(p0=jnp.array([1.0, jnp.nan, 0.0])), ValueError, "p0"),
    (dict(args=(1,)), TypeError, "does not take 'args'"),
    (dict(solver="lm-matrix-free"), ValueError, "solver: curve_fit needs the Jacobian"),
    (dict(mask=np.ones(9)), ValueError, r"mask has shape \(9,\)"),
    (dict(mask=np.full(10, 0.5)), ValueError, "mask must hold 0s and 1s"),
    (dict(mask=np.zeros(10)), ValueError, "mask is 0 everywhere"),
    (dict(mask=np.ones(10), sigma=np.eye(10)), ValueError, "mask takes 1-D sigma"),
])
def test_bad_input_raises_naming_the_argument(kwargs, error, match):
    call = dict(model=decay, xdata=X, ydata=Y, p0=P0)
    call.update(kwargs)
    with pytest.raises(error, match=match):
        curve_fit(call.pop("model"), call.pop("xdata"), call.pop("ydata"), call.pop("p0"), **call)


def test_integer_ydata_is_converted_to_the_parameter_dtype(decay_data):
    x, y, _ = decay_data
    counts = np.round(100 * y).astype(np.int64)
    fit = curve_fit(decay, x, counts, jnp.array([100.0, 1.0, 0.0]))
    popt, _ = scipy.optimize.curve_fit(decay_np, x, counts, p0=[100.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(fit.params, popt, rtol=1e-7)


def test_a_warm_call_reuses_the_model_output_check(monkeypatch):
    # the output-shape check is remembered per (model, shapes and dtypes), like the solve;
    # jax.eval_shape costs more than a small fit's whole solve even when its trace is cached
    calls = []
    eval_shape = jax.eval_shape

    def counting(*args, **kwargs):
        calls.append(1)
        return eval_shape(*args, **kwargs)

    monkeypatch.setattr(jax, "eval_shape", counting)

    def model(x, p):
        return p[0] * (1.0 - jnp.exp(-p[1] * x))

    x = np.linspace(1.0, 10.0, 14)
    y = 3.0 * (1.0 - np.exp(-0.2 * x))
    first = curve_fit(model, x, y, np.array([1.0, 0.1]))
    count = len(calls)
    assert count > 0
    second = curve_fit(model, x, 1.5 * y, np.array([2.0, 0.3]))
    assert len(calls) == count
    np.testing.assert_allclose(first.params, [3.0, 0.2], rtol=1e-8)
    np.testing.assert_allclose(second.params, [4.5, 0.2], rtol=1e-8)
    with pytest.raises(ValueError, match="is the broadcast of"):  # new shapes: checked again
        curve_fit(model, x[:5], y[:5, None], np.array([1.0, 0.1]))


def test_the_remembered_model_check_keeps_weak_types():
    # a Python-scalar leaf of xdata stays weakly typed in the check as in the solve: a model
    # that insists on float32 arithmetic is not rejected on a float64 promotion the fit never sees
    x = np.linspace(0.1, 4.0, 12).astype(np.float32)
    y = (2.0 * np.exp(-0.7 * x) + 0.3).astype(np.float32)

    def model(xd, p):
        out = p[0] * jnp.exp(-p[1] * xd["t"]) + p[2] * xd["s"]
        if out.dtype != xd["t"].dtype:
            raise ValueError("promoted")
        return out

    for _ in range(2):  # the second call is served from the remembered check
        fit = curve_fit(model, {"t": x, "s": 1.0}, y, np.array([1.0, 0.5, 0.0], np.float32))
        np.testing.assert_allclose(fit.params, [2.0, 0.7, 0.3], rtol=1e-3)


def test_curve_fit_inside_jit_with_closed_over_data():
    # closed-over data are concrete inside the outer jit: their checks must not trace
    x = jnp.linspace(1.0, 10.0, 14)
    y = 3.0 * (1.0 - jnp.exp(-0.2 * x))

    def model(x, p):
        return p[0] * (1.0 - jnp.exp(-p[1] * x))

    for sigma in (0.1 * jnp.ones(14), jnp.diag(jnp.full(14, 0.01))):
        params = jax.jit(lambda: curve_fit(model, x, y, jnp.array([1.0, 0.1]),
                                           sigma=sigma).params)()
        np.testing.assert_allclose(params, [3.0, 0.2], rtol=1e-8)
