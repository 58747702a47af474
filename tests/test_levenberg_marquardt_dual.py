"""Levenberg-Marquardt's dual form (fewer residuals than parameters): the damped step against
its closed form, and whole runs against the primal form on the same problem.

Appending zero residuals (with zero Jacobian rows) leaves the problem unchanged but makes
``m >= n``, so the same solve then takes the primal path; the two must produce the same
iterates up to rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt.solvers import LevenbergMarquardt
from jacopt.solvers.least_squares_problem import LeastSquaresProblem
from jacopt.solvers.levenberg_marquardt import dual_factor, is_dual

M, N = 5, 9


def underdetermined(x, c):
    """``M`` smooth residuals of ``N`` parameters with a manifold of zero-residual solutions."""
    z = c @ x
    return jnp.tanh(z) + 0.3 * z ** 2 - 0.5 + 0.1 * x[:M] * x[M:2 * M - 1].sum()


def padded(x, c):
    return jnp.concatenate([underdetermined(x, c), jnp.zeros((N - M + 1,), x.dtype)])


@pytest.fixture(scope="module")
def coeffs():
    return jnp.asarray(np.random.default_rng(3).normal(size=(M, N)) / 3.0)


def test_the_dual_form_is_chosen_when_m_is_below_n_without_bounds():
    free = LeastSquaresProblem(residual=None, jacobian=None, args=())
    boxed = free._replace(lower=jnp.zeros(47), upper=jnp.ones(47))
    assert is_dual(free, 20, 47) and not is_dual(free, 47, 47) and not is_dual(free, 54, 3)
    # an active set can leave as few free parameters as residuals: the primal form then has
    # a Gauss-Newton step, so bounded problems keep it
    assert not is_dual(boxed, 20, 47)


@pytest.mark.parametrize("lam", [1e-8, 0.3, 50.0])
def test_dual_damped_step_matches_the_closed_form(lam):
    rng = np.random.default_rng(0)
    J = rng.normal(size=(M, N))
    r = rng.normal(size=M)
    d = rng.uniform(0.5, 3.0, size=N)
    A = J / d
    Q_top, S = dual_factor(jnp.asarray(A), jnp.asarray(lam))
    q = -np.asarray(Q_top) @ np.linalg.solve(np.asarray(S).T, r)
    p = q / d
    # the damped least-squares problem solved directly (LAPACK's SVD-based lstsq)
    stacked = np.vstack([J, np.sqrt(lam) * np.diag(d)])
    reference = -np.linalg.lstsq(stacked, np.concatenate([r, np.zeros(N)]), rcond=None)[0]
    np.testing.assert_allclose(p, reference, rtol=1e-9, atol=1e-12)
    # S is the triangular factor of A A^T + lam I (never formed by the solver)
    np.testing.assert_allclose(np.asarray(S).T @ np.asarray(S), A @ A.T + lam * np.eye(M),
                               rtol=1e-10, atol=1e-10)


def _histories(result):
    h = result.history
    k = int(result.num_steps) + 1
    return (np.asarray(h.value)[:k], np.asarray(h.damping)[:k], np.asarray(h.accepted)[:k])


@pytest.mark.parametrize("options", [
    {},
    {"x_scale": 1.0},
    {"loss": "soft_l1", "f_scale": 0.2},
    {"solver": LevenbergMarquardt(geodesic=True)},
], ids=["jac-scale", "unit-scale", "soft_l1", "geodesic"])
def test_dual_and_primal_runs_take_the_same_steps(coeffs, options):
    x0 = jnp.linspace(-0.3, 0.5, N)
    dual = jacopt.least_squares(underdetermined, x0, args=(coeffs,), history=True,
                                max_steps=40, **options)
    primal = jacopt.least_squares(padded, x0, args=(coeffs,), history=True, max_steps=40,
                                  **options)
    assert bool(dual.success) and bool(primal.success), (dual.message, primal.message)
    value_d, damping_d, accepted_d = _histories(dual)
    value_p, damping_p, accepted_p = _histories(primal)
    # the same iterates while the cost still resolves them (rounding differs afterwards)
    k = int(np.sum(value_p > value_p[-1] * (1 + 1e-9) + 1e-16))
    assert k > 3
    np.testing.assert_array_equal(accepted_d[:k], accepted_p[:k])
    np.testing.assert_allclose(value_d[:k], value_p[:k], rtol=1e-6, atol=1e-24)
    np.testing.assert_allclose(damping_d[:k], damping_p[:k], rtol=1e-6)
    assert float(dual.cost) < 1e-20


def test_dual_form_under_vmap_and_jit(coeffs):
    starts = jnp.stack([jnp.linspace(-0.3, 0.5, N), jnp.linspace(0.2, -0.1, N),
                        jnp.full((N,), jnp.nan)])
    solve = jax.jit(jax.vmap(lambda x: jacopt.least_squares(underdetermined, x,
                                                            args=(coeffs,))))
    batch = solve(starts)
    assert list(batch.status_name[:2]) != ["NONFINITE", "NONFINITE"]
    assert bool(batch.success[0]) and bool(batch.success[1])
    assert str(batch.status_name[2]) == "NONFINITE"
    residuals = jax.vmap(underdetermined, (0, None))(batch.params[:2], coeffs)
    assert float(jnp.max(jnp.abs(residuals))) < 1e-10
